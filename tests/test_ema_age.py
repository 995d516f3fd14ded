"""The EMA's mean age (lowdiff.ema) against brute-force simulations on a scalar."""

from __future__ import annotations

import pytest
import torch

from lowdiff.ema import ema_mean_age, ema_warning
from lowdiff.engine import BatchedEMA, TrainConfig


def literal_ema_of_step_counts(num_steps: int, beta: float, every: int, warmup: int) -> float:
    """The EMA of a scalar that equals j after j optimiser steps, written from protocol §1
    (ema-pytorch defaults): after step s (counter s = 0, 1, ...) on multiples of `every`: a plain
    copy while s <= warmup and on the first update after it, then lerp with decay
    min(beta, 1 − (1+e)^−2/3), e = s − warmup. Its end value is Σ_j a_j j, so N minus it is the
    mean age."""
    shadow, initialised = 0.0, False
    for counter in range(num_steps):
        weights = counter + 1.0  # θ after counter + 1 optimiser steps
        if counter % every:
            continue
        if counter <= warmup or not initialised:
            shadow, initialised = weights, counter > warmup
            if counter <= warmup:
                continue
        epoch = counter - warmup
        decay = min(beta, 1.0 - (1.0 + epoch) ** (-2.0 / 3.0)) if epoch > 0 else 0.0
        shadow = decay * shadow + (1.0 - decay) * weights
    return num_steps - shadow


CASES = [
    dict(num_steps=10_000),  # the protocol
    dict(num_steps=2_500),
    dict(num_steps=1_500),
    dict(num_steps=1_500, ema_beta=0.99, ema_update_every=1),
    dict(num_steps=1_003, ema_beta=0.9, ema_update_every=7, ema_warmup_steps=13),
    dict(num_steps=50, ema_update_every=10, ema_warmup_steps=100),  # only the warm-up copies
]


@pytest.mark.parametrize("case", CASES)
def test_mean_age_matches_a_scalar_simulation(case: dict) -> None:
    config = TrainConfig(**case)
    expected = literal_ema_of_step_counts(
        config.num_steps, config.ema_beta, config.ema_update_every, config.ema_warmup_steps
    )
    assert ema_mean_age(config) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("case", CASES[2:5])
def test_mean_age_matches_the_engine_ema_on_a_scalar(case: dict) -> None:
    config = TrainConfig(**case)
    model = torch.nn.Linear(1, 1, bias=False).double()
    ema = BatchedEMA(model, config.ema_beta, config.ema_update_every, config.ema_warmup_steps)
    with torch.no_grad():
        for step in range(config.num_steps):
            model.weight.fill_(step + 1.0)  # the "optimiser step" sets θ to its step count
            ema.update(model)
    shadow = float(ema.model.weight.item())
    assert ema_mean_age(config) == pytest.approx(config.num_steps - shadow, rel=1e-9)


def test_the_warning_fires_above_ten_percent_of_the_budget() -> None:
    short = TrainConfig(num_steps=1_500)  # the protocol's EMA: mean age 720 steps, 48 %
    assert 700 < ema_mean_age(short) < 740
    assert "48%" in ema_warning(short) and "1,500-step" in ema_warning(short)
    fitted = TrainConfig(num_steps=1_500, ema_beta=0.99, ema_update_every=1)
    assert ema_mean_age(fitted) < 150 and ema_warning(fitted) is None
    # the steady state u·β/(1 − β) = 1,990 steps is 20 % of the protocol's 10,000: it warns too
    assert ema_warning(TrainConfig()) is not None
    assert ema_warning(TrainConfig(num_steps=100_000)) is None
