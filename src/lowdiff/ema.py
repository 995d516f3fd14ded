"""How old the EMA's weights are at the end of training, and when that deserves a warning.

Torch-free (the report imports it). `ema_mean_age` follows the EMA of protocol §1 as
`lowdiff.engine.BatchedEMA` implements it — the warm-up of the `ema-pytorch` defaults: a plain
copy while the update counter s ≤ warm-up (and on the first update after it), then a lerp with
decay min(β, 1 − (1 + e)^(−2/3)), e = s − warm-up, on every `update_every`-th step — and
`ema_warning` turns an age above 10 % of the training budget into a sentence for the report:
a short run whose EMA still averages over much of its training compares early learning seen
through a lagging average.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["EMA_AGE_WARNING_FRACTION", "EMASettings", "ema_mean_age", "ema_warning"]


class EMASettings(Protocol):
    """What the age depends on: the fields of the training config (`TrainConfig`)."""

    num_steps: int
    ema_beta: float
    ema_update_every: int
    ema_warmup_steps: int


EMA_AGE_WARNING_FRACTION = 0.1  # warn when the EMA's mean age exceeds this share of the budget


def ema_mean_age(train_config: EMASettings) -> float:
    """Mean age, in optimiser steps, of what the EMA weights hold at the end of training.

    The EMA is a weighted average Σ_j a_j θ_j of the online weights θ_j after j steps
    (Σ a_j = 1); its mean age is Σ_j a_j (N − j). Following `BatchedEMA` update by update (the
    call after step s = 0, u, 2u, ... sees θ_{s+1}): a copy resets the age to 0; a lerp with
    decay d ages the average by the steps since the last update and keeps a share d of it,
    age ← d · (age + Δ), since the fresh weights have age 0; after the last update the age
    grows by the remaining steps. In the steady state this is about u · β / (1 − β) (1,990
    steps for β = 0.995, u = 10: 20 % of the protocol's 10,000 steps); the warm-up and a short
    budget make it smaller (720 steps, 48 %, at 1,500 steps).
    """
    beta, every, warmup = (
        train_config.ema_beta,
        train_config.ema_update_every,
        train_config.ema_warmup_steps,
    )
    age, last, initialised = 0.0, 0, False
    for step in range(0, train_config.num_steps, every):
        now = step + 1  # the weights of this update have seen step + 1 optimiser steps
        if step <= warmup or not initialised:  # a plain copy
            age, last, initialised = 0.0, now, step > warmup
            if step <= warmup:
                continue
        epoch = max(step - warmup, 0)  # BatchedEMA.decay with its counter at step + 1
        decay = 0.0 if epoch <= 0 else min(beta, max(0.0, 1.0 - (1.0 + epoch) ** (-2.0 / 3.0)))
        age, last = decay * (age + now - last), now
    return age + train_config.num_steps - last


def ema_warning(train_config: EMASettings) -> str | None:
    """A sentence for the report when the EMA's mean age exceeds 10 % of the budget, else None.

    Then the sampled (EMA) model lags the trained one by a sizeable part of training, so short
    runs rank early learning seen through a lagging average."""
    age, budget = ema_mean_age(train_config), train_config.num_steps
    if age <= EMA_AGE_WARNING_FRACTION * budget:
        return None
    return (
        f"The EMA of the weights (beta {train_config.ema_beta}, updated every "
        f"{train_config.ema_update_every} steps) has a mean age of {age:,.0f} steps at the end of "
        f"training, {age / budget:.0%} of the {budget:,}-step budget (above "
        f"{EMA_AGE_WARNING_FRACTION:.0%}): the samples come from an average that lags the "
        "trained weights, so this budget compares early learning seen through that lag. Choose "
        "an EMA whose mean age is below 10 % of the budget (e.g. ema_beta 0.99, "
        "ema_update_every 1 for 1,500 steps)."
    )
