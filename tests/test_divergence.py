"""The divergence guard fires at the first NaN, infinite or exploding loss."""

from __future__ import annotations

import json
import math

import pytest

from tuner.divergence import DivergenceGuard


def test_guard_accepts_ordinary_losses_and_fires_on_explosion() -> None:
    guard = DivergenceGuard(factor=5.0)
    assert guard.check(2.3, step=1, epoch=1) is None
    assert guard.check(11.0, step=2, epoch=1) is None  # below 5 x 2.3
    d = guard.check(12.0, step=3, epoch=1)
    assert d is not None and d.reason == "explosion" and d.step == 3
    assert d.initial_loss == 2.3 and "5 x initial 2.3" in d.message()


@pytest.mark.parametrize(("loss", "reason"), [(float("nan"), "nan"), (float("inf"), "inf")])
def test_guard_fires_on_non_finite_even_at_the_first_step(loss: float, reason: str) -> None:
    d = DivergenceGuard(4.0).check(loss, step=1, epoch=1)
    assert d is not None and d.reason == reason
    attrs = d.to_attrs()
    json.dumps(attrs)  # storable as an Optuna user attribute
    assert attrs["loss"] == str(loss) and math.isnan(d.initial_loss)


def test_factor_must_exceed_one() -> None:
    with pytest.raises(ValueError, match="must be > 1"):
        DivergenceGuard(1.0)


def test_guard_keeps_the_peak_loss_ratio() -> None:
    guard = DivergenceGuard(factor=5.0)
    assert guard.peak_ratio is None
    guard.check(2.0, step=1, epoch=1)
    assert guard.peak_ratio == 1.0
    for step, loss in enumerate([1.5, 9.8, 3.0, 0.5], start=2):  # rises to 4.9x, then falls
        assert guard.check(loss, step=step, epoch=1) is None
    assert guard.peak_ratio == pytest.approx(4.9)
    guard.check(float("nan"), step=7, epoch=1)  # a non-finite loss is no ratio
    assert guard.peak_ratio == pytest.approx(4.9)
    assert guard.check(12.0, step=8, epoch=1) is not None
    assert guard.peak_ratio == pytest.approx(6.0)  # the explosion it stopped
