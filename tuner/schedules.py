"""Registry of learning-rate schedules, each built from ``torch.optim.lr_scheduler`` classes.

A :class:`Schedule` declares its conditional search parameters (:class:`Param`) and turns a
sampled point into a *scheduler spec*: plain JSON data naming ``torch.optim.lr_scheduler``
classes and their keyword arguments, sized from the real number of optimizer steps of the run.
The same spec builds the scheduler during training (:func:`build_scheduler`) and goes into the
export, so a user can rebuild it in plain PyTorch::

    {"class": "SequentialLR", "interval": "step", "milestones": [40],
     "schedulers": [{"class": "LinearLR", "kwargs": {...}},
                    {"class": "CosineAnnealingLR", "kwargs": {...}}]}

``interval`` says when to call ``scheduler.step()``: ``"step"`` after every optimizer step,
``"epoch"`` once per epoch with the validation metric (reduce-on-plateau).

Sizing rules make every schedule safe for any run length (one step included): step counts are
at least 1, warmup leaves at least one step of annealing where the run has two, and the minimum
learning rate is a positive fraction of the peak, so the learning rate stays finite and positive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # torch is imported where a scheduler is built: the registry stays light
    import torch

__all__ = [
    "Param",
    "Schedule",
    "SCHEDULES",
    "SCHEDULER_CLASS_NAMES",
    "build_scheduler",
    "suggest_schedule_params",
]

# The lr_scheduler classes a spec may name (no getattr on user-given names).
SCHEDULER_CLASS_NAMES = (
    "ConstantLR", "StepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR", "SequentialLR",
    "OneCycleLR", "ReduceLROnPlateau",
)


def _scheduler_classes() -> dict[str, type]:
    from torch.optim import lr_scheduler

    return {name: getattr(lr_scheduler, name) for name in SCHEDULER_CLASS_NAMES}


def __getattr__(name: str) -> Any:
    # SCHEDULER_CLASSES (name -> torch class) imports torch on first use only, so that the study
    # file can be validated against SCHEDULES without importing torch
    if name == "SCHEDULER_CLASSES":
        return _scheduler_classes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SuggestsParams(Protocol):
    """What a schedule needs of an Optuna trial (``optuna.Trial`` satisfies it)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...


@dataclass(frozen=True)
class Param:
    """One conditional search parameter of a schedule.

    Its trial parameter name is ``schedule.<name>``. ``log=True`` samples log-uniformly
    (scale parameters: decay factors, minimum-LR ratios); ``integer=True`` samples integers.
    """

    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False
    doc: str = ""

    def suggest(self, trial: SuggestsParams) -> float | int:
        key = f"schedule.{self.name}"
        if self.integer:
            return trial.suggest_int(key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(key, self.low, self.high, log=self.log)


SpecFn = Callable[[Mapping[str, Any], float, int, int, str], dict[str, Any]]


@dataclass(frozen=True)
class Schedule:
    """A registered learning-rate schedule.

    Attributes:
        name: the study-file name (``[space] schedules``) and the value of the ``schedule``
            trial parameter.
        description: one line, with its source.
        params: the conditional search parameters.
        make_spec: ``(params, lr, total_steps, steps_per_epoch, mode) -> spec``; ``params`` maps
            un-namespaced names to values, ``lr`` is the sampled learning rate (the peak, per
            optimizer step), ``total_steps`` the optimizer steps of the whole run (>= 1),
            ``mode`` 'min' or 'max' (the objective's direction, for plateau).
    """

    name: str
    description: str
    params: tuple[Param, ...]
    make_spec: SpecFn

    def spec(
        self,
        params: Mapping[str, Any],
        lr: float,
        total_steps: int,
        steps_per_epoch: int,
        mode: str = "min",
    ) -> dict[str, Any]:
        """The scheduler spec (plain JSON types) for a run of ``total_steps`` optimizer steps.

        Raises ValueError if ``total_steps`` or ``steps_per_epoch`` is < 1 or ``lr`` <= 0.
        """
        if total_steps < 1 or steps_per_epoch < 1:
            raise ValueError(
                f"total_steps and steps_per_epoch must be >= 1, got {total_steps}, "
                f"{steps_per_epoch}"
            )
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be finite and > 0, got {lr}")
        return self.make_spec(params, lr, total_steps, steps_per_epoch, mode)


def _per_step(cls: str, **kwargs: Any) -> dict[str, Any]:
    return {"class": cls, "kwargs": kwargs, "interval": "step"}


def _constant(p: Mapping[str, Any], lr: float, total: int, spe: int, mode: str) -> dict:
    return _per_step("ConstantLR", factor=1.0, total_iters=0)


def _step(p: Mapping[str, Any], lr: float, total: int, spe: int, mode: str) -> dict:
    step_size = max(1, round(p["step_fraction"] * total))
    return _per_step("StepLR", step_size=step_size, gamma=float(p["gamma"]))


def _exponential(p: Mapping[str, Any], lr: float, total: int, spe: int, mode: str) -> dict:
    # decays to final_lr_ratio x lr over the run: gamma ** total == final_lr_ratio
    return _per_step("ExponentialLR", gamma=float(p["final_lr_ratio"]) ** (1.0 / total))


def _cosine(p: Mapping[str, Any], lr: float, total: int, spe: int, mode: str) -> dict:
    return _per_step("CosineAnnealingLR", T_max=total, eta_min=lr * float(p["min_lr_ratio"]))


WARMUP_START_FACTOR = 0.01


def _warmup_cosine(p: Mapping[str, Any], lr: float, total: int, spe: int, mode: str) -> dict:
    warmup = min(max(1, round(p["warmup_fraction"] * total)), max(1, total - 1))
    return {
        "class": "SequentialLR",
        "interval": "step",
        "milestones": [warmup],
        "schedulers": [
            {
                "class": "LinearLR",
                "kwargs": {
                    "start_factor": WARMUP_START_FACTOR,
                    "end_factor": 1.0,
                    "total_iters": warmup,
                },
            },
            {
                "class": "CosineAnnealingLR",
                "kwargs": {
                    "T_max": max(1, total - warmup),
                    "eta_min": lr * float(p["min_lr_ratio"]),
                },
            },
        ],
    }


def _one_cycle(p: Mapping[str, Any], lr: float, total: int, spe: int, mode: str) -> dict:
    pct_start = float(p["pct_start"])
    # torch divides by zero when the warm-up phase ends exactly at step 0 (pct_start*total == 1)
    if abs(pct_start * total - 1.0) < 1e-9:
        pct_start = 1.5 / total
    return _per_step(
        "OneCycleLR",
        max_lr=lr,
        total_steps=total,
        pct_start=pct_start,
        div_factor=float(p["div_factor"]),
        final_div_factor=float(p["final_div_factor"]),
        anneal_strategy="cos",
        cycle_momentum=False,
    )


PLATEAU_MIN_LR_RATIO = 1e-4


def _plateau(p: Mapping[str, Any], lr: float, total: int, spe: int, mode: str) -> dict:
    return {
        "class": "ReduceLROnPlateau",
        "interval": "epoch",
        "kwargs": {
            "mode": mode,
            "factor": float(p["factor"]),
            "patience": int(p["patience"]),
            "min_lr": lr * PLATEAU_MIN_LR_RATIO,
        },
    }


SCHEDULES: dict[str, Schedule] = {
    s.name: s
    for s in [
        Schedule("constant", "constant learning rate", (), _constant),
        Schedule(
            "step",
            "step decay: multiply by gamma every step_fraction of the run (StepLR)",
            (
                Param("step_fraction", 0.1, 0.5, doc="decay interval as a fraction of the run"),
                Param("gamma", 0.05, 0.9, log=True, doc="decay factor per interval"),
            ),
            _step,
        ),
        Schedule(
            "exponential",
            "exponential decay to final_lr_ratio x lr at the end of the run (ExponentialLR)",
            (Param("final_lr_ratio", 1e-3, 0.5, log=True, doc="last LR / first LR"),),
            _exponential,
        ),
        Schedule(
            "cosine",
            "cosine annealing to min_lr_ratio x lr (Loshchilov & Hutter 2017, no restarts)",
            (Param("min_lr_ratio", 1e-4, 0.1, log=True, doc="eta_min / lr"),),
            _cosine,
        ),
        Schedule(
            "warmup_cosine",
            "linear warmup from 0.01 x lr, then cosine annealing (Goyal et al. 2017; SequentialLR)",
            (
                Param("warmup_fraction", 0.01, 0.3, doc="warmup steps / total steps"),
                Param("min_lr_ratio", 1e-4, 0.1, log=True, doc="eta_min / lr"),
            ),
            _warmup_cosine,
        ),
        Schedule(
            "one_cycle",
            "one-cycle policy, lr is the peak (Smith & Topin 2017; OneCycleLR)",
            (
                Param("pct_start", 0.1, 0.5, doc="fraction of the run spent increasing"),
                Param("div_factor", 5.0, 100.0, log=True, doc="initial LR = lr / div_factor"),
                Param(
                    "final_div_factor", 10.0, 1e4, log=True,
                    doc="final LR = initial LR / final_div_factor",
                ),
            ),
            _one_cycle,
        ),
        Schedule(
            "plateau",
            "reduce on plateau of the validation metric, stepped per epoch (ReduceLROnPlateau)",
            (
                Param("factor", 0.1, 0.7, log=True, doc="LR multiplier on a plateau"),
                Param("patience", 1, 5, integer=True, doc="epochs without improvement"),
            ),
            _plateau,
        ),
    ]
}


def suggest_schedule_params(schedule: Schedule, trial: SuggestsParams) -> dict[str, Any]:
    """Sample a schedule's conditional parameters; keys are un-namespaced (``min_lr_ratio``)."""
    return {p.name: p.suggest(trial) for p in schedule.params}


def build_scheduler(optimizer: torch.optim.Optimizer, spec: Mapping[str, Any]) -> Any:
    """Build the ``torch.optim.lr_scheduler`` object a spec describes.

    Args:
        optimizer: a fresh optimizer whose ``lr`` is the sampled learning rate.
        spec: a scheduler spec from :meth:`Schedule.spec` (or a loaded export).

    Raises:
        ValueError: the spec names a class outside :data:`SCHEDULER_CLASSES`.
    """
    name = spec["class"]
    if name not in SCHEDULER_CLASS_NAMES:
        raise ValueError(
            f"unknown scheduler class {name!r}; known: {', '.join(SCHEDULER_CLASS_NAMES)}"
        )
    cls = _scheduler_classes()[name]
    if name == "SequentialLR":
        parts = [build_scheduler(optimizer, part) for part in spec["schedulers"]]
        return cls(optimizer, schedulers=parts, milestones=list(spec["milestones"]))
    return cls(optimizer, **spec["kwargs"])
