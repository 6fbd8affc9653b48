"""The search space: learning rate (log-uniform), optimizer, schedule and conditional parameters.

Trial parameter names are namespaced so that the dashboard stays readable:

=========================  ==========================================================
``lr``                     learning rate, per optimizer step, log-uniform
``optimizer``              one of ``[space] optimizers``
``optimizer.momentum``     SGD momentum, uniform
``optimizer.nesterov``     SGD Nesterov momentum, True/False
``weight_decay``           L2 / decoupled weight decay, log-uniform (if configured)
``schedule``               one of ``[space] schedules``
``schedule.<param>``       the chosen schedule's conditional parameters
=========================  ==========================================================

:class:`TrialParams` is the sampled point; it turns into an optimizer spec and a scheduler spec
(plain data naming ``torch.optim`` / ``torch.optim.lr_scheduler`` classes), which is what the
engine builds and what the export writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tuner.schedules import SCHEDULES, SuggestsParams, suggest_schedule_params

if TYPE_CHECKING:  # torch is imported where an optimizer is built: the registry stays light
    import torch

__all__ = [
    "OptimizerSpec",
    "OPTIMIZERS",
    "OPTIMIZER_BY_CLASS",
    "OPTIMIZER_CLASS_NAMES",
    "FUSED_CLASSES",
    "TrialParams",
    "SpaceSection",
    "suggest_params",
    "build_optimizer",
]


@dataclass(frozen=True)
class OptimizerSpec:
    """A registered optimizer: the one place that describes it to every part of tuner.

    Attributes:
        name: the ``[space] optimizers`` name and the trial's ``optimizer`` value.
        torch_class: its ``torch.optim`` class name (what optimizer specs and exports name).
        description: one line for people.
        momentum: samples ``optimizer.momentum`` (and ``optimizer.nesterov``).
        fused: torch has a fused kernel for the class on the CPU and CUDA (torch >= 2.4):
            :func:`tuner.engine.build_fast_optimizer` and the stacked optimizer use it.
        update_rule: the stacked optimizer's family of update rules (members of one family
            are updated together: AdamW is Adam with decoupled weight decay).
    """

    name: str
    torch_class: str
    description: str
    update_rule: str
    momentum: bool = False
    fused: bool = False


OPTIMIZERS: dict[str, OptimizerSpec] = {
    o.name: o
    for o in [
        OptimizerSpec("sgd", "SGD", "SGD with momentum, optionally Nesterov", "SGD",
                      momentum=True, fused=True),
        OptimizerSpec("adam", "Adam", "Adam (Kingma & Ba 2015), L2 weight decay", "Adam",
                      fused=True),
        OptimizerSpec("adamw", "AdamW", "AdamW, decoupled weight decay (Loshchilov & Hutter 2019)",
                      "Adam", fused=True),
        OptimizerSpec("rmsprop", "RMSprop", "RMSprop (Hinton 2012)", "RMSprop"),
    ]
}

OPTIMIZER_BY_CLASS: dict[str, OptimizerSpec] = {o.torch_class: o for o in OPTIMIZERS.values()}
"""The registry by ``torch.optim`` class name: the classes an optimizer spec may name (no
getattr on user-given names)."""

OPTIMIZER_CLASS_NAMES = tuple(OPTIMIZER_BY_CLASS)
"""The ``torch.optim`` classes an optimizer spec may name."""

FUSED_CLASSES = tuple(o.torch_class for o in OPTIMIZERS.values() if o.fused)
"""The ``torch.optim`` classes built with ``fused=True`` (one kernel per step for all
parameters instead of a handful of small ops per parameter tensor)."""


def _optimizer_classes() -> dict[str, type[torch.optim.Optimizer]]:
    import torch

    return {name: getattr(torch.optim, name) for name in OPTIMIZER_CLASS_NAMES}


def __getattr__(name: str) -> Any:
    # OPTIMIZER_CLASSES (name -> torch.optim class) imports torch on first use only, so that the
    # study file can be validated against OPTIMIZERS without importing torch
    if name == "OPTIMIZER_CLASSES":
        return _optimizer_classes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class TrialParams:
    """One sampled configuration.

    Attributes:
        lr: float > 0, the learning rate per optimizer step (the peak for one-cycle).
        optimizer: a key of :data:`OPTIMIZERS`.
        optimizer_kwargs: extra ``torch.optim`` keyword arguments (momentum, nesterov,
            weight_decay), plain types.
        schedule: a key of :data:`~tuner.schedules.SCHEDULES`.
        schedule_params: the schedule's parameters, un-namespaced.
    """

    lr: float
    optimizer: str
    schedule: str
    optimizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    schedule_params: Mapping[str, Any] = field(default_factory=dict)

    def optimizer_spec(self) -> dict[str, Any]:
        """``{"class": "SGD", "kwargs": {"lr": ..., ...}}`` in plain types."""
        cls = OPTIMIZERS[self.optimizer].torch_class
        return {"class": cls, "kwargs": {"lr": float(self.lr), **dict(self.optimizer_kwargs)}}

    def scheduler_spec(self, total_steps: int, steps_per_epoch: int, mode: str) -> dict[str, Any]:
        """The scheduler spec for a run of ``total_steps`` optimizer steps (see schedules)."""
        return SCHEDULES[self.schedule].spec(
            self.schedule_params, self.lr, total_steps, steps_per_epoch, mode
        )

    def to_optuna_params(self) -> dict[str, Any]:
        """The namespaced trial parameters (for ``study.enqueue_trial``)."""
        out: dict[str, Any] = {"lr": self.lr, "optimizer": self.optimizer}
        for k, v in self.optimizer_kwargs.items():
            out["weight_decay" if k == "weight_decay" else f"optimizer.{k}"] = v
        out["schedule"] = self.schedule
        out.update({f"schedule.{k}": v for k, v in self.schedule_params.items()})
        return out

    @classmethod
    def from_optuna_params(cls, params: Mapping[str, Any]) -> TrialParams:
        """Rebuild from a finished trial's namespaced ``params``."""
        opt_kwargs: dict[str, Any] = {}
        sched: dict[str, Any] = {}
        for key, value in params.items():
            if key.startswith("optimizer."):
                opt_kwargs[key.removeprefix("optimizer.")] = value
            elif key.startswith("schedule."):
                sched[key.removeprefix("schedule.")] = value
            elif key == "weight_decay":
                opt_kwargs["weight_decay"] = value
        return cls(
            lr=float(params["lr"]),
            optimizer=params["optimizer"],
            schedule=params["schedule"],
            optimizer_kwargs=opt_kwargs,
            schedule_params=sched,
        )

    def describe(self) -> str:
        """Short text such as ``adam lr=3.1e-03 wd=1e-05 | cosine min_lr_ratio=0.01``."""
        opt = " ".join(f"{k}={_fmt(v)}" for k, v in self.optimizer_kwargs.items())
        sch = " ".join(f"{k}={_fmt(v)}" for k, v in self.schedule_params.items())
        return f"{self.optimizer} lr={self.lr:.3g} {opt} | {self.schedule} {sch}".strip()


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


class SpaceSection(Protocol):
    """What :func:`suggest_params` reads of the ``[space]`` section
    (:class:`tuner.config.SpaceConfig`): the configuration depends on this module, never the
    other way round."""

    @property
    def lr(self) -> tuple[float, float] | str: ...
    @property
    def optimizers(self) -> tuple[str, ...]: ...
    @property
    def schedules(self) -> tuple[str, ...]: ...
    @property
    def weight_decay(self) -> tuple[float, float] | None: ...
    @property
    def momentum(self) -> tuple[float, float]: ...
    @property
    def nesterov(self) -> bool: ...


def suggest_params(
    trial: SuggestsParams, space: SpaceSection, lr_bounds: tuple[float, float] | None = None
) -> TrialParams:
    """Sample one configuration from the space.

    Args:
        trial: an ``optuna.Trial`` (anything with ``suggest_float/int/categorical``).
        space: the ``[space]`` section (:class:`tuner.config.SpaceConfig`).
        lr_bounds: (low, high) learning-rate bounds; required when ``space.lr`` is "auto"
            (the bounds then come from the LR range test).

    Raises:
        ValueError: ``space.lr`` is "auto" and no ``lr_bounds`` were given.
    """
    bounds = lr_bounds if lr_bounds is not None else space.lr
    if not isinstance(bounds, tuple):
        raise ValueError('space.lr is "auto": pass the bounds found by the LR range test')
    lr = trial.suggest_float("lr", bounds[0], bounds[1], log=True)
    opt_name = trial.suggest_categorical("optimizer", list(space.optimizers))
    opt = OPTIMIZERS[opt_name]
    kwargs: dict[str, Any] = {}
    if opt.momentum:
        kwargs["momentum"] = trial.suggest_float("optimizer.momentum", *space.momentum)
        kwargs["nesterov"] = (
            trial.suggest_categorical("optimizer.nesterov", [False, True])
            if space.nesterov
            else False
        )
    if space.weight_decay is not None:
        kwargs["weight_decay"] = trial.suggest_float(
            "weight_decay", space.weight_decay[0], space.weight_decay[1], log=True
        )
    sched_name = trial.suggest_categorical("schedule", list(space.schedules))
    sched_params = suggest_schedule_params(SCHEDULES[sched_name], trial)
    return TrialParams(lr, opt_name, sched_name, kwargs, sched_params)


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter], spec: Mapping[str, Any]
) -> torch.optim.Optimizer:
    """Build the ``torch.optim`` optimizer an optimizer spec describes.

    Raises:
        ValueError: the spec names a class outside :data:`OPTIMIZER_CLASSES`.
    """
    name = spec["class"]
    if name not in OPTIMIZER_CLASS_NAMES:
        raise ValueError(
            f"unknown optimizer class {name!r}; known: {', '.join(OPTIMIZER_CLASS_NAMES)}"
        )
    return _optimizer_classes()[name](parameters, **spec["kwargs"])
