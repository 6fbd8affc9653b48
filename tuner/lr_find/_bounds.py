"""Automatic learning-rate bounds for ``[space] lr = "auto"``, read off one sweep per
optimizer, and their record in the study's user attributes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tuner.lr_find._curve import LRFindError, LRSweep
from tuner.space import OPTIMIZERS

if TYPE_CHECKING:
    import optuna

    from tuner.config import StudyConfig

__all__ = [
    "AutoBounds",
    "ATTR_KEY",
    "BOUNDS_RULE",
    "optimizer_bounds",
    "auto_bounds",
    "bounds_attrs",
    "record_attr",
    "recorded_attrs",
    "recorded_bounds",
    "recorded_sweeps",
]

LOW_DECADES = 1.0  # low = suggested / 10**LOW_DECADES
HIGH_BACKOFF = 2.0  # high = diverged / HIGH_BACKOFF ("just below divergence")

ATTR_KEY = "lr_find"  # study user attr: the bounds, the rule, the summary per optimizer
SWEEP_ATTR_PREFIX = "lr_find.sweep."  # one study user attr per optimizer: its whole sweep

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


def recorded_attrs(study: optuna.Study) -> dict:
    """The study's LR range test records: system attributes (user attributes before tuner 0.2,
    where optuna-dashboard showed them as raw JSON)."""
    system = study._storage.get_study_system_attrs(study._study_id)
    return {**study.user_attrs, **system}


def record_attr(study: optuna.Study, key: str, value: Any) -> None:
    """Store one LR range test record (plain JSON) as a study system attribute."""
    study._storage.set_study_system_attr(study._study_id, key, value)


def recorded_bounds(study: optuna.Study) -> tuple[float, float] | None:
    """The ``lr`` bounds a study recorded from its LR range test, or None."""
    rec = recorded_attrs(study).get(ATTR_KEY)
    if not isinstance(rec, dict) or not isinstance(rec.get("bounds"), list):
        return None
    low, high = rec["bounds"]
    return float(low), float(high)


def recorded_sweeps(study: optuna.Study) -> list[LRSweep]:
    """The sweeps a study recorded (for figures), in the order run."""
    attrs = recorded_attrs(study)
    return [LRSweep.from_attrs(v) for k, v in attrs.items() if k.startswith(SWEEP_ATTR_PREFIX)]
