"""The LR range test (Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017).

One short run per optimizer: a fresh model is trained on the study's data and batch size while
the learning rate grows exponentially, one mini-batch at a time, from ``min_lr`` to ``max_lr``::

    lr(i) = min_lr * (max_lr / min_lr) ** (i / (steps - 1)),   i = 0 .. steps - 1

The loss of each mini-batch (computed before the optimizer step taken at ``lr(i)``) is smoothed
with a bias-corrected exponential moving average (as in Adam):
``avg(i) = beta * avg(i-1) + (1 - beta) * loss(i)``, ``smoothed(i) = avg(i) / (1 - beta^(n))``
over the ``n`` finite losses so far. The sweep stops once the loss is non-finite or the smoothed
loss exceeds ``diverge_factor`` times its best value so far (the rate at which it diverged).

From the curve, :meth:`LRSweep.analyze` reads three rates (cf. Lightning's LR finder, whose
NaN-robust ``suggestion()`` this imitates). Non-finite points and the first ``SKIP_BEGIN``
points are left out; ``start`` is the median smoothed loss of the first tenth of what is left,
``lowest`` its minimum:

- the **lowest falling** rate: from this rate on (up to the minimum) the smoothed loss stays
  below ``start - FALL_FRACTION * (start - lowest)``, i.e. it has made 10 % of its whole fall;
- the **suggested** rate: the steepest descent of the smoothed loss between the lowest falling
  rate and the minimum, i.e. the most negative ``d smoothed / d log(lr)``, taken as a central
  difference over +-``1 / (1 - beta)`` points (the EMA's memory) so that mini-batch noise does
  not make a steep point out of a wiggle;
- the **divergence** rate: the rate at which the sweep stopped (None if it reached ``max_lr``).

Where no suggestion is possible (too few finite points, or a loss that never falls by
``MIN_DROP`` of its starting value), :meth:`LRSweep.suggestion` raises :class:`LRFindError`
and :meth:`LRSweep.analyze` returns the reason; it never returns an empty value silently.

Automatic bounds (``[space] lr = "auto"``): see :func:`auto_bounds` for the rule and
:func:`resolve_lr_bounds` for how a study records and reuses them.

Each sweep builds a fresh model (no state surgery), seeds it inside ``torch.random.fork_rng``
so the global RNG state is left as it was, and never modifies the data tensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuner.errors import TunerError

__all__ = [
    "LRFindError",
    "LRSweep",
    "LRAnalysis",
    "MIN_LR",
    "MAX_LR",
    "STEPS",
    "BETA",
    "DIVERGE_FACTOR",
    "smooth",
]

# Defaults of the sweep (Lightning: 1e-8..1, 100 steps; fastai: 1e-7..10, 100 steps).
MIN_LR = 1e-7
MAX_LR = 10.0
STEPS = 200  # mini-batches per optimizer: 8 decades in steps of 10**(8/199) = x1.097
BETA = 0.9  # EMA weight: about 10 steps (0.4 decades) of memory
DIVERGE_FACTOR = 4.0  # stop once smoothed loss > 4 x its best so far
# Reading the curve.
SKIP_BEGIN = 5  # the first smoothed points average too few losses to trust
MIN_POINTS = 5  # finite points (after SKIP_BEGIN) needed for a suggestion
MIN_DROP = 0.05  # the smoothed loss must fall by 5 % of its starting value
FALL_FRACTION = 0.1  # "falls" once 10 % of the total fall is covered


class LRFindError(TunerError):
    """The LR range test gives no usable rate (too few points, or the loss never falls).

    The message says why and what to change (the swept range, the number of steps, the data).
    """


def smooth(losses: Sequence[float], beta: float = BETA) -> list[float]:
    """Bias-corrected exponential moving average of ``losses``.

    A non-finite loss is passed through unchanged at its own position and left out of the
    average, so that the finite points after it stay finite.
    """
    out: list[float] = []
    avg, n = 0.0, 0
    for loss in losses:
        if not math.isfinite(loss):
            out.append(float(loss))
            continue
        n += 1
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**n))
    return out


@dataclass(frozen=True)
class LRAnalysis:
    """What a sweep says. Rates are per optimizer step; None where the sweep does not say.

    Attributes:
        suggested_lr: the steepest descent of the smoothed loss (None with a ``reason``).
        falling_lr: the lowest rate at which the smoothed loss falls (see module docstring).
        diverged_lr: the rate at which the sweep stopped diverging (None: reached max_lr).
        min_loss_lr: the rate at the minimum of the smoothed loss.
        reason: why there is no suggestion, or None.
    """

    suggested_lr: float | None
    falling_lr: float | None
    diverged_lr: float | None
    min_loss_lr: float | None
    reason: str | None = None


@dataclass(frozen=True)
class LRSweep:
    """One LR range test: the rates tried and the losses seen, and how it ended.

    Attributes:
        optimizer: a key of :data:`tuner.space.OPTIMIZERS`.
        optimizer_kwargs: its extra keyword arguments during the sweep (momentum, ...).
        lrs: the rate of each mini-batch, increasing.
        losses: the raw mini-batch training loss at each rate (may end in nan/inf).
        smoothed: the bias-corrected EMA of ``losses`` (see :func:`smooth`).
        stop: 'diverged' (smoothed > diverge_factor x best), 'nan', 'inf', or 'end' (max_lr).
        min_lr, max_lr, steps: the planned sweep; ``len(lrs) <= steps``.
        beta, diverge_factor: the smoothing weight and stop rule.
        batch_size, seed: the mini-batch size and the seed of weights and batch order.
        seconds: wall-clock seconds of the sweep.
    """

    optimizer: str
    optimizer_kwargs: Mapping[str, Any]
    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    stop: str
    min_lr: float = MIN_LR
    max_lr: float = MAX_LR
    steps: int = STEPS
    beta: float = BETA
    diverge_factor: float = DIVERGE_FACTOR
    batch_size: int = 0
    seed: int = 0
    seconds: float = 0.0
    _cache: dict[str, LRAnalysis] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @classmethod
    def from_losses(
        cls, lrs: Sequence[float], losses: Sequence[float], *, optimizer: str = "sgd",
        beta: float = BETA, stop: str | None = None, **kwargs: Any,
    ) -> LRSweep:
        """A sweep from given rates and raw losses (smoothed here); for tests and replays."""
        if stop is None:
            last = float(losses[-1]) if len(losses) else 0.0
            stop = "nan" if math.isnan(last) else "inf" if math.isinf(last) else "end"
        return cls(
            optimizer=optimizer, optimizer_kwargs=kwargs.pop("optimizer_kwargs", {}),
            lrs=tuple(float(x) for x in lrs), losses=tuple(float(x) for x in losses),
            smoothed=tuple(smooth(losses, beta)), stop=stop, beta=beta, **kwargs,
        )

    @property
    def diverged_lr(self) -> float | None:
        """The rate at which the sweep stopped for divergence; None if it reached max_lr."""
        return self.lrs[-1] if self.stop != "end" and self.lrs else None

    def analyze(self) -> LRAnalysis:
        """Read the suggested, lowest falling and divergence rates off the curve.

        Never raises: where there is no suggestion, ``reason`` says why.
        """
        if "analysis" not in self._cache:
            self._cache["analysis"] = self._analyze()
        return self._cache["analysis"]

    def _analyze(self) -> LRAnalysis:
        lrs = np.asarray(self.lrs, dtype=float)
        sm = np.asarray(self.smoothed, dtype=float)
        raw = np.asarray(self.losses, dtype=float)
        diverged = self.diverged_lr
        finite = np.flatnonzero(np.isfinite(sm) & np.isfinite(raw))
        window = finite[finite >= SKIP_BEGIN]
        if len(window) < MIN_POINTS:
            where = (
                f"it stopped ({self.stop}) at lr {diverged:.3g} after {len(self.lrs)} "
                f"mini-batches" if diverged is not None else f"it has {len(self.lrs)} points"
            )
            return LRAnalysis(
                None, None, diverged, None,
                f"too few points: {len(window)} finite points after the first {SKIP_BEGIN}, "
                f"{MIN_POINTS} needed; {where}. Start lower (--min-lr) or sweep more "
                f"mini-batches (--steps).",
            )
        curve, loglr = sm[window], np.log(lrs[window])
        k_min = int(np.argmin(curve))
        # the starting level: the median of the first tenth of the curve (robust to noise)
        start = float(np.median(curve[: max(MIN_POINTS, len(curve) // 10)]))
        lowest = float(curve[k_min])
        min_loss_lr = float(lrs[window[k_min]])
        drop = (start - lowest) / max(abs(start), 1e-12)
        if drop < MIN_DROP or k_min == 0:
            return LRAnalysis(
                None, None, diverged, min_loss_lr,
                f"the loss never falls: the smoothed loss starts at {start:.4g} and its lowest "
                f"value is {lowest:.4g} (a fall of {100 * drop:.1f} %, {100 * MIN_DROP:g} % "
                f"needed) between lr {lrs[window[0]]:.3g} and {lrs[window[-1]]:.3g}. Sweep to "
                f"a higher rate (--max-lr), use more mini-batches (--steps), or check that the "
                f"model can learn the data.",
            )
        # falling: from the last rate (up to the minimum) after which the loss stays below
        # start - FALL_FRACTION x (start - lowest)
        threshold = start - FALL_FRACTION * (start - lowest)
        above = np.flatnonzero(curve[: k_min + 1] > threshold)
        j_fall = int(above[-1]) + 1 if len(above) else 0
        # steepest descent between there and the minimum; the slope d smoothed / d log(lr) is
        # a central difference over +-h points, h = the EMA's memory (1 / (1 - beta) points)
        h = max(1, round(1 / (1 - self.beta)))
        js = np.arange(j_fall, k_min + 1)
        hi = np.minimum(js + h, len(curve) - 1)
        lo = np.maximum(js - h, 0)
        slope = (curve[hi] - curve[lo]) / (loglr[hi] - loglr[lo])
        suggested = float(lrs[window[js[int(np.argmin(slope))]]])
        falling = float(lrs[window[j_fall]])
        return LRAnalysis(suggested, falling, diverged, min_loss_lr, None)

    def suggestion(self) -> float:
        """The suggested rate (steepest descent of the smoothed loss), finite and > 0.

        Raises:
            LRFindError: no suggestion is possible; the message says why.
        """
        a = self.analyze()
        if a.suggested_lr is None:
            raise LRFindError(f"LR range test ({self.optimizer}): no suggestion: {a.reason}")
        return a.suggested_lr

    def to_attrs(self) -> dict[str, Any]:
        """Plain JSON (6 significant digits; non-finite losses as null) for study user attrs."""
        a = self.analyze()
        return {
            "optimizer": self.optimizer,
            "optimizer_kwargs": dict(self.optimizer_kwargs),
            "min_lr": self.min_lr,
            "max_lr": self.max_lr,
            "steps": self.steps,
            "beta": self.beta,
            "diverge_factor": self.diverge_factor,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "seconds": round(self.seconds, 4),
            "stop": self.stop,
            "suggested_lr": a.suggested_lr,
            "falling_lr": a.falling_lr,
            "diverged_lr": a.diverged_lr,
            "min_loss_lr": a.min_loss_lr,
            "reason": a.reason,
            "lrs": [_round(x) for x in self.lrs],
            "losses": [_round(x) for x in self.losses],
            "smoothed": [_round(x) for x in self.smoothed],
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> LRSweep:
        """Rebuild a sweep recorded by :meth:`to_attrs` (null losses become nan)."""

        def floats(xs: Iterable[Any]) -> tuple[float, ...]:
            return tuple(float("nan") if x is None else float(x) for x in xs)

        keys = ("min_lr", "max_lr", "steps", "beta", "diverge_factor", "batch_size", "seed",
                "seconds")
        return cls(
            optimizer=attrs["optimizer"], optimizer_kwargs=dict(attrs["optimizer_kwargs"]),
            lrs=floats(attrs["lrs"]), losses=floats(attrs["losses"]),
            smoothed=floats(attrs["smoothed"]), stop=attrs["stop"],
            **{k: attrs[k] for k in keys if k in attrs},
        )


def _round(x: float) -> float | None:
    return float(f"{x:.6g}") if math.isfinite(x) else None
