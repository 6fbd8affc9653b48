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
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tuner.datasets import load_split
from tuner.engine import _loss_fn, resolve_device, steps_per_epoch
from tuner.errors import TunerError
from tuner.models import build_model
from tuner.outputs import FileKind
from tuner.space import OPTIMIZERS, TrialParams, build_optimizer

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go
    from rich.console import Console

    from tuner.config import SpaceConfig, StudyConfig
    from tuner.datasets import SplitData

__all__ = [
    "LRFindError",
    "LRSweep",
    "LRAnalysis",
    "AutoBounds",
    "MIN_LR",
    "MAX_LR",
    "STEPS",
    "BETA",
    "DIVERGE_FACTOR",
    "ATTR_KEY",
    "sweep_optimizer_kwargs",
    "smooth",
    "lr_range_test",
    "lr_range_tests",
    "BOUNDS_RULE",
    "optimizer_bounds",
    "auto_bounds",
    "bounds_attrs",
    "recorded_bounds",
    "recorded_sweeps",
    "resolve_lr_bounds",
    "sweep_table",
    "sweep_figure",
    "write_sweep_figure",
    "write_sweep_png",
    "default_figure_path",
    "run_lr_find_command",
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
# Automatic bounds.
LOW_DECADES = 1.0  # low = suggested / 10**LOW_DECADES
HIGH_BACKOFF = 2.0  # high = diverged / HIGH_BACKOFF ("just below divergence")

ATTR_KEY = "lr_find"  # study user attr: the bounds, the rule, the summary per optimizer
SWEEP_ATTR_PREFIX = "lr_find.sweep."  # one study user attr per optimizer: its whole sweep

# Extra keyword arguments of each optimizer during the sweep (the space's defaults).
SWEEP_DEFAULTS: dict[str, dict[str, Any]] = {"sgd": {"momentum": 0.9, "nesterov": False}}


class LRFindError(TunerError):
    """The LR range test gives no usable rate (too few points, or the loss never falls).

    The message says why and what to change (the swept range, the number of steps, the data).
    """


def sweep_optimizer_kwargs(optimizer: str, space: SpaceConfig | None = None) -> dict[str, Any]:
    """The optimizer's keyword arguments during the sweep, besides ``lr``.

    SGD uses momentum 0.9 (or the middle of ``[space] momentum`` if 0.9 lies outside it) without
    Nesterov; the others use their ``torch.optim`` defaults. No weight decay.
    """
    kwargs = dict(SWEEP_DEFAULTS.get(optimizer, {}))
    if "momentum" in kwargs and space is not None:
        low, high = space.momentum
        if not low <= kwargs["momentum"] <= high:
            kwargs["momentum"] = (low + high) / 2
    return kwargs


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


def _sweep_lr(i: int, steps: int, min_lr: float, max_lr: float) -> float:
    return min_lr * (max_lr / min_lr) ** (i / (steps - 1))


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


def lr_range_test(
    cfg: StudyConfig,
    optimizer: str,
    *,
    data: SplitData | None = None,
    min_lr: float = MIN_LR,
    max_lr: float = MAX_LR,
    steps: int = STEPS,
    beta: float = BETA,
    diverge_factor: float = DIVERGE_FACTOR,
    seed: int | None = None,
    device: torch.device | None = None,
) -> LRSweep:
    """Run the LR range test for one optimizer on the study's model, data and batch size.

    Args:
        cfg: the validated study ([model], [training] batch_size and device, [dataset], [split],
            [space] momentum bounds are used).
        optimizer: a key of :data:`tuner.space.OPTIMIZERS`, with
            :func:`sweep_optimizer_kwargs` (SGD: momentum 0.9).
        data: the split (default: ``load_split(cfg.dataset, cfg.split)``); never modified.
        min_lr, max_lr: the first and last rate, 0 < min_lr < max_lr.
        steps: mini-batches at most (>= 2); the last batch of an epoch may be partial, and the
            data are reshuffled every epoch.
        beta: EMA weight in [0, 1).
        diverge_factor: stop once the smoothed loss exceeds this many times its best (> 1).
        seed: seeds the weights and the batch order (default ``[study] seed``).
        device: overrides ``[training] device`` (already resolved).

    Returns:
        The :class:`LRSweep`; read it with ``.analyze()`` or ``.suggestion()``.

    Raises:
        LRFindError: an argument is out of range. DeviceError: the device is not available.
    """
    if optimizer not in OPTIMIZERS:
        raise LRFindError(
            f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}"
        )
    if not (0 < min_lr < max_lr and math.isfinite(max_lr)):
        raise LRFindError(
            f"LR range test: min_lr = {min_lr:g}, max_lr = {max_lr:g} are invalid: need "
            f"0 < min_lr < max_lr, both finite."
        )
    if steps < 2:
        raise LRFindError(f"LR range test: steps = {steps} is invalid: need >= 2 mini-batches.")
    if not 0 <= beta < 1:
        raise LRFindError(f"LR range test: beta = {beta:g} is invalid: need 0 <= beta < 1.")
    if not diverge_factor > 1:
        raise LRFindError(
            f"LR range test: diverge_factor = {diverge_factor:g} is invalid: need > 1."
        )
    device = device or resolve_device(cfg.training.device)
    data = data if data is not None else load_split(cfg.dataset, cfg.split)
    if data.X_train.device != device:
        data = data.to(device)
    started = time.perf_counter()
    seed = cfg.study.seed if seed is None else seed
    kwargs = sweep_optimizer_kwargs(optimizer, cfg.space)
    X, y = data.X_train, data.y_train
    n_rows, batch = len(X), cfg.training.batch_size
    spe = steps_per_epoch(n_rows, batch)
    loss_fn = _loss_fn(data.task)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    stop = "end"
    # the global RNG state (CPU, and this CUDA device) is restored when the sweep ends
    cuda = device.type == "cuda"
    devices = [device.index or 0] if cuda else []
    with torch.random.fork_rng(devices=devices, device_type="cuda" if cuda else "cpu"):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = build_model(cfg.model, data.n_features, data.n_outputs).to(device)
        model.train()
        spec = TrialParams(min_lr, optimizer, "constant", kwargs).optimizer_spec()
        opt = build_optimizer(model.parameters(), spec)
        avg, best = 0.0, math.inf
        order = torch.empty(0, dtype=torch.long)
        for i in range(steps):
            b = i % spe
            if b == 0:
                order = torch.randperm(n_rows, generator=generator).to(device)
            lr = _sweep_lr(i, steps, min_lr, max_lr)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = order[b * batch : (b + 1) * batch]
            loss = loss_fn(model(X[idx]), y[idx])
            value = loss.item()
            lrs.append(lr)
            losses.append(value)
            if not math.isfinite(value):
                smoothed.append(value)
                stop = "nan" if math.isnan(value) else "inf"
                break
            avg = beta * avg + (1 - beta) * value
            s = avg / (1 - beta ** (i + 1))
            smoothed.append(s)
            best = min(best, s)
            if i > 0 and s > diverge_factor * best:
                stop = "diverged"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return LRSweep(
        optimizer=optimizer, optimizer_kwargs=kwargs, lrs=tuple(lrs), losses=tuple(losses),
        smoothed=tuple(smoothed), stop=stop, min_lr=min_lr, max_lr=max_lr, steps=steps,
        beta=beta, diverge_factor=diverge_factor, batch_size=batch, seed=seed,
        seconds=time.perf_counter() - started,
    )


def lr_range_tests(
    cfg: StudyConfig,
    optimizers: Sequence[str] | None = None,
    *,
    on_sweep: Callable[[LRSweep], None] | None = None,
    **kwargs: Any,
) -> list[LRSweep]:
    """:func:`lr_range_test` for each optimizer (default: ``[space] optimizers``), same seed.

    ``on_sweep`` is called after each sweep (for progress); ``kwargs`` go to each sweep.
    """
    names = list(optimizers) if optimizers is not None else list(cfg.space.optimizers)
    data = kwargs.pop("data", None)
    if data is None:
        data = load_split(cfg.dataset, cfg.split)
    out = []
    for name in names:
        sweep = lr_range_test(cfg, name, data=data, **kwargs)
        out.append(sweep)
        if on_sweep is not None:
            on_sweep(sweep)
    return out


# ---------------------------------------------------------------------------------------------
# Automatic bounds for [space] lr = "auto".

BOUNDS_RULE = (
    "per optimizer: low = suggested / 10 (one decade below the steepest descent), high = "
    "max(diverged / 2, min-loss rate) (just below divergence; max_lr if the sweep never "
    "diverged); the study's single [low, high] is the envelope: the lowest low and the highest "
    "high over the optimizers with a suggestion"
)


@dataclass(frozen=True)
class AutoBounds:
    """Learning-rate bounds read off one sweep per optimizer.

    Attributes:
        low, high: the study's log-uniform ``lr`` bounds, 0 < low < high.
        per_optimizer: each usable optimizer's own (low, high).
        suggestions: each usable optimizer's suggested rate, best sweep (lowest smoothed loss)
            first; these are the trials to enqueue.
        failed: optimizer -> why its sweep gives no suggestion (left out of the bounds).
        sweeps: the sweeps, in the order run.
    """

    low: float
    high: float
    per_optimizer: dict[str, tuple[float, float]]
    suggestions: dict[str, float]
    failed: dict[str, str]
    sweeps: tuple[LRSweep, ...]

    @property
    def seconds(self) -> float:
        """Wall-clock seconds of all sweeps together."""
        return sum(s.seconds for s in self.sweeps)


def optimizer_bounds(sweep: LRSweep) -> tuple[float, float]:
    """One optimizer's (low, high) by :data:`BOUNDS_RULE`; low < suggested <= high.

    Raises:
        LRFindError: the sweep has no suggestion.
    """
    suggested = sweep.suggestion()
    a = sweep.analyze()
    low = suggested / 10**LOW_DECADES
    if a.diverged_lr is None:
        high = sweep.lrs[-1]
    else:
        high = max(a.diverged_lr / HIGH_BACKOFF, a.min_loss_lr or suggested)
    return low, max(high, suggested)


def auto_bounds(sweeps: Sequence[LRSweep]) -> AutoBounds:
    """The study's ``lr`` bounds from one sweep per optimizer (see :data:`BOUNDS_RULE`).

    Why one envelope: an Optuna study needs the same distribution for ``lr`` in every trial,
    and ``lr`` must stay one parameter (the export, the figures and the dashboard read it).
    The envelope keeps every optimizer's good region; rates that are too high for one optimizer
    end as diverged trials, which the divergence guard stops within their first epoch, and the
    multivariate TPE sampler learns the interaction of ``lr`` and ``optimizer`` from them.

    Raises:
        LRFindError: no sweep gives a suggestion (the message has each reason).
    """
    per: dict[str, tuple[float, float]] = {}
    failed: dict[str, str] = {}
    for s in sweeps:
        reason = s.analyze().reason
        if reason is None:
            per[s.optimizer] = optimizer_bounds(s)
        else:
            failed[s.optimizer] = reason
    if not per:
        raise LRFindError(
            'lr = "auto": the LR range test gives no suggestion for any optimizer; '
            + "; ".join(f"{k}: {v}" for k, v in failed.items())
        )
    usable = sorted((s for s in sweeps if s.optimizer in per), key=_best_loss)
    return AutoBounds(
        low=min(b[0] for b in per.values()),
        high=max(b[1] for b in per.values()),
        per_optimizer=per,
        suggestions={s.optimizer: s.suggestion() for s in usable},
        failed=failed,
        sweeps=tuple(sweeps),
    )


def _best_loss(sweep: LRSweep) -> float:
    finite = [x for x in sweep.smoothed if math.isfinite(x)]
    return min(finite) if finite else math.inf


def _enqueue_params(cfg: StudyConfig, sweep: LRSweep, lr: float) -> dict[str, Any]:
    """The fixed parameters of the trial that tries a sweep's suggestion (the rest is sampled)."""
    params: dict[str, Any] = {"lr": lr, "optimizer": sweep.optimizer}
    if OPTIMIZERS[sweep.optimizer].momentum:
        params["optimizer.momentum"] = sweep.optimizer_kwargs.get("momentum", 0.9)
        if cfg.space.nesterov:
            params["optimizer.nesterov"] = bool(sweep.optimizer_kwargs.get("nesterov", False))
    return params


def bounds_attrs(cfg: StudyConfig, bounds: AutoBounds) -> dict[str, Any]:
    """The ``lr_find`` study user attribute: plain JSON (the sweeps go in their own attrs)."""
    by_name = {s.optimizer: s for s in bounds.sweeps}
    return {
        "bounds": [bounds.low, bounds.high],
        "rule": BOUNDS_RULE,
        "seconds": round(bounds.seconds, 4),
        "optimizers": {
            name: {
                **asdict(s.analyze()),
                "bounds": list(bounds.per_optimizer[name]) if name in bounds.per_optimizer
                else None,
                "seconds": round(s.seconds, 4),
            }
            for name, s in by_name.items()
        },
        "enqueued": [
            _enqueue_params(cfg, by_name[name], lr) for name, lr in bounds.suggestions.items()
        ],
    }


def recorded_bounds(study: optuna.Study) -> tuple[float, float] | None:
    """The ``lr`` bounds a study recorded from its LR range test, or None."""
    rec = study.user_attrs.get(ATTR_KEY)
    if not isinstance(rec, dict) or not isinstance(rec.get("bounds"), list):
        return None
    low, high = rec["bounds"]
    return float(low), float(high)


def recorded_sweeps(study: optuna.Study) -> list[LRSweep]:
    """The sweeps a study recorded (for figures), in the order run."""
    attrs = study.user_attrs
    return [LRSweep.from_attrs(v) for k, v in attrs.items() if k.startswith(SWEEP_ATTR_PREFIX)]


def resolve_lr_bounds(
    cfg: StudyConfig,
    storage_url: str,
    *,
    console: Console | None = None,
) -> tuple[float, float] | None:
    """The ``lr`` bounds of a study whose ``[space] lr`` is ``"auto"``; None otherwise.

    A study that recorded its bounds (a resumed study) reuses them: no new sweep. Otherwise the
    LR range test runs for each optimizer in ``[space] optimizers`` (before the study is created
    or touched, so that a failing sweep writes nothing), then the study gets, in its user
    attributes, ``lr_find`` (the bounds, the rule, each optimizer's rates, the enqueued trials)
    and ``lr_find.sweep.<optimizer>`` (each whole sweep), and one enqueued trial per usable
    optimizer at its suggested rate, the optimizer with the lowest sweep loss first (for SGD
    also the sweep's momentum 0.9 without Nesterov; the other parameters are sampled).

    Args:
        cfg: the validated study.
        storage_url: the study's Optuna storage URL.
        console: where the table of the sweeps goes (default: stderr).

    Raises:
        LRFindError: no optimizer gives a suggestion. StorageError, DeviceError, ConfigError.
    """
    if cfg.space.lr != "auto":
        return None
    from rich.console import Console

    from tuner.study import open_study

    console = console or Console(stderr=True)
    existing = _existing_study(cfg, storage_url)
    if existing is not None:
        found = recorded_bounds(existing)
        if found is not None:
            console.print(
                f'lr = "auto": reusing the bounds recorded by the LR range test: '
                f"[{found[0]:.3g}, {found[1]:.3g}]"
            )
            swept = set(existing.user_attrs[ATTR_KEY].get("optimizers", {}))
            if swept != set(cfg.space.optimizers):
                console.print(
                    f"[yellow]note:[/yellow] they come from sweeps of {', '.join(sorted(swept))}"
                    f"; [space] optimizers is now {', '.join(cfg.space.optimizers)} (a new "
                    f"study name sweeps again)"
                )
            return found
    console.print(
        f'lr = "auto": LR range test for {", ".join(cfg.space.optimizers)} '
        f"({STEPS} mini-batches at most each, lr {MIN_LR:g} .. {MAX_LR:g})"
    )
    with console.status("LR range test ...") as status:
        sweeps = lr_range_tests(
            cfg, on_sweep=lambda s: status.update(f"LR range test: {s.optimizer} done")
        )
    bounds = auto_bounds(sweeps)
    study = open_study(cfg, storage_url)
    found = recorded_bounds(study)  # another process may have been faster
    if found is not None:
        return found
    for s in sweeps:
        study.set_user_attr(SWEEP_ATTR_PREFIX + s.optimizer, s.to_attrs())
    attrs = bounds_attrs(cfg, bounds)
    for params in attrs["enqueued"]:
        study.enqueue_trial(params, skip_if_exists=True)
    study.set_user_attr(ATTR_KEY, attrs)  # last: its presence means "recorded"
    console.print(sweep_table(sweeps, bounds))
    console.print(
        f"enqueued {len(attrs['enqueued'])} trial(s) at the suggested rates: "
        + ", ".join(f"{p['optimizer']} {p['lr']:.3g}" for p in attrs["enqueued"])
    )
    for name, reason in bounds.failed.items():
        console.print(f"[yellow]note:[/yellow] no suggestion for {name}: {reason}")
    return bounds.low, bounds.high


def _existing_study(cfg: StudyConfig, storage_url: str) -> optuna.Study | None:
    import optuna

    from tuner.storage import make_storage, storage_file

    file = storage_file(storage_url)
    if file is not None and not file.exists():
        return None
    storage = make_storage(storage_url)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(storage)]
    if cfg.name not in names:
        return None
    return optuna.load_study(study_name=cfg.name, storage=storage)


# ---------------------------------------------------------------------------------------------
# Presentation: a rich table and a plotly figure.


def sweep_table(sweeps: Sequence[LRSweep], bounds: AutoBounds | None = None) -> Any:
    """A ``rich.table.Table``: per optimizer the rates, how the sweep ended, its seconds, and
    (with ``bounds``) its own [low, high]."""
    from rich import box
    from rich.table import Table

    title = "LR range test"
    if bounds is not None:
        title += f": lr bounds [{bounds.low:.3g}, {bounds.high:.3g}]"
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
        padding=(0, 1, 0, 0),
        caption=f"sweep time {sum(s.seconds for s in sweeps):.2f} s", caption_justify="left",
    )
    columns = ["optimizer", "suggested", "falls from", "diverged", "batches", "s"]
    if bounds is not None:
        columns += ["low", "high"]
    for col in columns:
        table.add_column(col, justify="left" if col == "optimizer" else "right", no_wrap=True)

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3g}"

    for s in sweeps:
        a = s.analyze()
        diverged = fmt(a.diverged_lr) + (f" ({s.stop})" if s.stop in ("nan", "inf") else "")
        row = [
            s.optimizer, fmt(a.suggested_lr) if a.reason is None else "[red]none[/red]",
            fmt(a.falling_lr), diverged, str(len(s.lrs)), f"{s.seconds:.1f}",
        ]
        if bounds is not None:
            b = bounds.per_optimizer.get(s.optimizer)
            row += ["-", "-"] if b is None else [fmt(b[0]), fmt(b[1])]
        table.add_row(*row)
    return table


# One line style per optimizer, so that equal curves (Adam and AdamW sweep alike: neither has
# weight decay in the sweep) stay visible: a dashed line over a solid one shows both colours.
SWEEP_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


SAME_CURVE = 0.01  # curves within 1 % of each other at every point are labelled as such


def _same_curve(a: LRSweep, b: LRSweep) -> bool:
    """The two sweeps drew the same smoothed curve, to :data:`SAME_CURVE` at every rate."""
    if len(a.lrs) != len(b.lrs) or not np.allclose(a.lrs, b.lrs, rtol=1e-6, atol=0):
        return False
    x, y = np.asarray(a.smoothed, dtype=float), np.asarray(b.smoothed, dtype=float)
    return bool(np.allclose(x, y, rtol=SAME_CURVE, atol=0, equal_nan=True))


def sweep_figure(sweeps: Sequence[LRSweep], bounds: AutoBounds | None = None) -> go.Figure:
    """Loss against learning rate (log axis), one colour and one line style per optimizer.

    Raw mini-batch losses are faint dots, the smoothed loss a line (solid, dashed, dotted, ...:
    a curve equal to an earlier one stays visible, and its legend says so, as do its smaller
    markers on top of the earlier one's); the suggested rate is a
    star, the lowest falling rate a triangle, the divergence rate an 'x' (all on the smoothed
    line); ``bounds`` adds the study's [low, high] as dashed vertical lines.
    """
    import plotly.graph_objects as go
    from plotly.colors import DEFAULT_PLOTLY_COLORS

    fig = go.Figure()
    top = 0.0
    for n, s in enumerate(sweeps):
        color = DEFAULT_PLOTLY_COLORS[n % len(DEFAULT_PLOTLY_COLORS)]
        dash = SWEEP_DASHES[n % len(SWEEP_DASHES)]
        same = [o.optimizer for o in sweeps[:n] if _same_curve(o, s)]
        finite = [(lr, v) for lr, v in zip(s.lrs, s.smoothed, strict=True) if math.isfinite(v)]
        top = max([top, *(v for _, v in finite)])
        fig.add_trace(go.Scatter(
            x=list(s.lrs), y=[v if math.isfinite(v) else None for v in s.losses],
            mode="markers", name=f"{s.optimizer} raw", legendgroup=s.optimizer,
            marker={"color": color, "size": 4, "opacity": 0.3}, showlegend=False,
        ))
        fig.add_trace(go.Scatter(
            x=[lr for lr, _ in finite], y=[v for _, v in finite], mode="lines",
            name=f"{s.optimizer} (smoothed"
            + (f"; within {SAME_CURVE:.0%} of {same[0]})" if same else ")"),
            legendgroup=s.optimizer, line={"color": color, "dash": dash, "width": 2 + n % 2},
        ))
        a = s.analyze()
        marks = [("suggested", a.suggested_lr, "star"), ("falls from", a.falling_lr,
                 "triangle-up"), ("diverged", a.diverged_lr, "x")]
        for label, lr, symbol in marks:
            if lr is None or not finite:
                continue
            y = float(np.interp(math.log(lr), [math.log(x) for x, _ in finite],
                                [v for _, v in finite]))
            fig.add_trace(go.Scatter(
                x=[lr], y=[y], mode="markers", legendgroup=s.optimizer, showlegend=False,
                name=f"{s.optimizer} {label}",
                hovertemplate=f"{s.optimizer} {label}: lr {lr:.3g}<extra></extra>",
                marker={"symbol": symbol, "size": 16 - 4 * (n % 2), "color": color,
                        "line": {"color": "black", "width": 1}},
            ))
    if bounds is not None:
        for label, x in (("low", bounds.low), ("high", bounds.high)):
            fig.add_trace(go.Scatter(
                x=[x, x], y=[0, top * 1.15 or 1.0], mode="lines", name=f"bound {label}",
                line={"color": "gray", "dash": "dash"},
                hovertemplate=f"lr bound {label}: {x:.3g}<extra></extra>",
            ))
    fig.update_layout(
        title=f"{PAGE_TITLE} "
        "(star: suggested, triangle: falls from, x: diverged)",
        xaxis={"title": "learning rate (log)", "type": "log"},
        yaxis={"title": "training loss (mini-batch)", "range": [0, top * 1.15 or 1.0]},
    )
    return fig


PAGE_MARKER = '<meta name="generator" content="tuner lr-find">'
PAGE_TITLE = "LR range test: loss against learning rate"


def is_sweep_page(path: Path) -> bool:
    """True when ``path`` is a page :func:`write_sweep_figure` wrote (its generator tag, or for
    pages from before the tag, a plotly page with the sweep figure's title)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(1024)
            if PAGE_MARKER in head:
                return True
            if not head.lstrip().lower().startswith(("<!doctype html>", "<html>")):
                return False
            return PAGE_TITLE in head + fh.read()
    except OSError:
        return False


SWEEP_PAGE = FileKind("lr-find page", is_sweep_page)


def write_sweep_figure(fig: go.Figure, path: Path) -> Path:
    """Write the figure as one self-contained HTML file (plotly.js inlined, works offline).

    An existing ``path`` is replaced only when it is a previous lr-find page.

    Raises:
        OutputError: ``path`` is a folder or a file that is not an lr-find page (nothing is
            written).
    """
    from tuner.outputs import write_file

    page = fig.to_html(include_plotlyjs=True, full_html=True)
    page = page.replace("<head>", f"<head>{PAGE_MARKER}", 1)
    return write_file(path, page, SWEEP_PAGE)


# The PNG copy of the plot carries a tEXt chunk naming its writer, so that a later lr-find
# replaces its own PNG and never a picture it did not write.
PNG_TEXT = b"Software\x00tuner lr-find"
PNG_SIZE = {"width": 1000, "height": 560}


def _png_with_text(png: bytes) -> bytes:
    """``png`` with the :data:`PNG_TEXT` chunk after its IHDR chunk (the first, 33 bytes in)."""
    import struct
    import zlib

    chunk = b"tEXt" + PNG_TEXT
    text = struct.pack(">I", len(PNG_TEXT)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return png[:33] + text + png[33:]


def is_sweep_png(path: Path) -> bool:
    """True when ``path`` is a PNG :func:`write_sweep_png` wrote (its tEXt chunk)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(128)
    except OSError:
        return False
    return head.startswith(b"\x89PNG\r\n\x1a\n") and PNG_TEXT in head


SWEEP_PNG = FileKind("lr-find PNG", is_sweep_png)


def write_sweep_png(fig: go.Figure, path: Path, browser: str) -> Path:
    """Render the figure as a PNG (:data:`PNG_SIZE` pixels) with kaleido and ``browser`` (a
    Chromium), written atomically to ``path``.

    Raises:
        OutputError: ``path`` exists and is not a PNG an earlier lr-find wrote (nothing is
            written).
        LRFindError: rendering failed (nothing is written).
    """
    import os
    import tempfile

    import kaleido

    from tuner.outputs import check_file_target

    check_file_target(path, SWEEP_PNG)  # missing, empty, or an earlier lr-find PNG
    try:
        png = kaleido.calc_fig_sync(
            fig, opts={**PNG_SIZE, "format": "png"}, kopts={"path": browser, "mathjax": False}
        )
    except Exception as exc:  # kaleido and choreographer raise many kinds
        raise LRFindError(
            f"PNG export with kaleido and {browser} failed: {type(exc).__name__}: {exc}"
        ) from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(_png_with_text(bytes(png)))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------
# `tuner lr-find`


def default_figure_path(cfg: StudyConfig) -> Path:
    """``reports/<study name>.lr_find.html`` in the study file's folder (git-ignored)."""
    return cfg.study_dir / "reports" / f"{cfg.name}.lr_find.html"


def _write_png_beside(fig: go.Figure, html_path: Path, console: Console) -> None:
    """The plot's PNG copy next to its page (``.png`` for ``.html``); a missing Chromium or a
    failed rendering is a warning on stderr (the page is written)."""
    from tuner.outputs import OutputError
    from tuner.report import find_browser

    png = html_path.with_suffix(".png")
    browser = find_browser()
    if browser is None:
        print("tuner: warning: no Chromium found for the PNG copy ($TUNER_CHROMIUM, "
              "$BROWSER_PATH or chromium on the PATH); wrote the HTML only", file=sys.stderr)
        return
    try:
        console.print(f"wrote {write_sweep_png(fig, png, browser)}")
    except (LRFindError, OutputError) as exc:
        print(f"tuner: warning: no PNG copy: {exc}", file=sys.stderr)


def run_lr_find_command(
    cfg: StudyConfig,
    *,
    optimizers: Sequence[str] | None = None,
    out: Path | None = None,
    min_lr: float | None = None,
    max_lr: float | None = None,
    steps: int | None = None,
    console: Console | None = None,
) -> int:
    """``tuner lr-find``: sweep, print the rates and the sweep time, write the plot (HTML, and
    a PNG copy beside it when a Chromium is found).

    Returns 0, or 2 when a sweep gives no suggestion (its reason is printed on stderr; the
    table and the plot are still written, they show why).

    Raises:
        LRFindError: an unknown optimizer or an invalid sweep range (before any sweep).
        OutputError: ``out`` is a folder or a file that is not an lr-find page (before any
            sweep; it is left untouched).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from tuner.outputs import check_file_target

    console = console or Console()
    path = out or default_figure_path(cfg)
    check_file_target(path, SWEEP_PAGE)  # before the sweep, not after it
    names = list(optimizers) if optimizers else list(cfg.space.optimizers)
    for name in names:
        if name not in OPTIMIZERS:
            raise LRFindError(
                f"--optimizer {name!r} is invalid: must be one of {', '.join(OPTIMIZERS)}."
            )
    kwargs: dict[str, Any] = {
        "min_lr": MIN_LR if min_lr is None else min_lr,
        "max_lr": MAX_LR if max_lr is None else max_lr,
        "steps": STEPS if steps is None else steps,
    }
    if not kwargs["min_lr"] < kwargs["max_lr"]:
        raise LRFindError(
            f"--min-lr {kwargs['min_lr']:g} and --max-lr {kwargs['max_lr']:g} are invalid: "
            f"need min-lr < max-lr."
        )
    console.print(
        f"LR range test of study [bold]{cfg.name}[/bold] ({cfg.path}): {', '.join(names)}; "
        f"lr {kwargs['min_lr']:g} .. {kwargs['max_lr']:g} over {kwargs['steps']} mini-batches "
        f"of {cfg.training.batch_size} at most"
    )
    with Progress(
        TextColumn("[bold]LR range test"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), console=console, transient=True,
    ) as bar:
        task = bar.add_task("sweep", total=len(names), status="")
        sweeps = lr_range_tests(
            cfg, names, on_sweep=lambda s: bar.update(task, advance=1, status=s.optimizer),
            **kwargs,
        )
    try:
        bounds: AutoBounds | None = auto_bounds(sweeps)
    except LRFindError:
        bounds = None
    console.print(sweep_table(sweeps, bounds))
    path = write_sweep_figure(sweep_figure(sweeps, bounds), path)
    if bounds is not None:
        console.print(
            f'lr = "auto" would search [{bounds.low:.3g}, {bounds.high:.3g}] and start with '
            + ", ".join(f"{k} at {v:.3g}" for k, v in bounds.suggestions.items())
        )
    console.print(f"wrote {path}")
    _write_png_beside(sweep_figure(sweeps, bounds), path, console)
    failed = [s for s in sweeps if s.analyze().reason is not None]
    for s in failed:
        print(f"tuner: error: no suggested rate for {s.optimizer}: {s.analyze().reason}",
              file=sys.stderr)
    return 2 if failed else 0
