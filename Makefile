# Two entry points (README): `make run` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-clusters lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,ray,slurm,mlflow,tensorboard,safetensors,notebook]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## the main job: a short baseline experiment with a report and figures
	$(BIN)/lowdiff run experiments/quickstart.toml --threads 2

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	@# one pytest worker per CPU (pytest-xdist); exit 5 means no test was collected: a failure
	$(BIN)/python -m pytest -q -n auto || { status=$$?; [ $$status -ne 5 ] || \
		echo "make test: pytest collected no tests (exit 5)" >&2; exit $$status; }

test-clusters: $(STAMP)  ## real Ray (two nodes) and Slurm clusters on loopback; Slurm needs root
	LOWDIFF_CLUSTER_TESTS=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/clusters || \
		{ status=$$?; [ $$status -ne 5 ] || \
		echo "make test-clusters: no cluster test collected (exit 5)" >&2; exit $$status; }

bench: $(STAMP)
	$(BIN)/python benchmarks/train_speed.py

clean:
	rm -rf $(VENV) runs
