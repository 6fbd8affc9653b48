"""The engine entry point: the one place that chooses which engine trains a trial.

Three engines train a trial to the same result (the same learning rates, the same losses up to
floating-point rounding; tests/test_batched.py, tests/test_functional.py):

- the stacked engine, :class:`~tuner.batched.BatchedTrainer`: K trials of one model in lockstep,
  written-out backward pass, no autograd tape, no ``torch.optim`` bookkeeping (the built-in MLP
  without dropout);
- the functional engine, :class:`~tuner.batched.FunctionalTrainer`: K trials of any
  ``nn.Module`` in lockstep with ``torch.func`` (``vmap`` over ``functional_call``);
- :func:`tuner.engine.train`: an ``nn.Module``, autograd and ``torch.optim``, one trial at a time.

A model the stacked engine cannot train goes to the functional engine only where lockstep is
faster than one trial at a time: from K = :func:`functional_min_k` trials, a property of the
model kind measured by bench/bench_models.py. Every caller (the study's objective and trial
lifecycle, ``tuner confirm``, ``tuner retrain``) goes through :func:`make_trainer` or
:func:`train_one`, and :func:`autograd_reason` (with :func:`choose_engine`, which names the
engine for the run's first lines) alone says which engine runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from tuner.batched._functional import Builder, FunctionalTrainer, FunctionalUnsupported
from tuner.batched._trainer import BatchedTrainer, Member, batch_unsupported_reason
from tuner.engine import EpochReport, TrainResult, train
from tuner.space import TrialParams

if TYPE_CHECKING:
    from tuner.config import StudyConfig
    from tuner.datasets import SplitData

__all__ = [
    "Engine",
    "FUNCTIONAL_MIN_K",
    "autograd_reason",
    "choose_engine",
    "functional_min_k",
    "model_kind",
    "OneAtATimeTrainer",
    "make_trainer",
    "train_one",
]

_log = logging.getLogger("tuner")

OnEpoch = Callable[[EpochReport], bool] | None

FUNCTIONAL_MIN_K: dict[str, int | None] = {
    "mlp": 4,
    "cnn": 8,
    "factory": 4,
}
"""Per model kind (:func:`model_kind`), the smallest number of trials in lockstep from which the
functional engine trains it clearly faster than one trial at a time on the CPU, or None where
one at a time was faster at every K measured (bench/bench_models.py, BENCHMARKS.md: one torch
thread, CPU time per trial-epoch on digits, K = 1, 2, 4, 8). Measured: a dropout MLP (built in,
or a user's ``nn.Module``) 0.8x at K = 2, 1.2x at 4, 1.6x at 8; a small CNN (two conv blocks)
0.9x at 2, 1.05x at 4 (within the noise, and trials in lockstep delay what the sampler learns),
1.2x at 8. "mlp" is the built-in MLP where the stacked engine cannot take it (dropout); a kind
not listed counts as "factory" (a user's module). A new model kind plugs in with one line."""

# on an accelerator one small step costs kernel launches more than arithmetic, which lockstep
# shares among the K trials (not measured here: this value is an assumption, not a measurement)
ACCELERATOR_MIN_K = 2


@dataclass(frozen=True)
class Engine:
    """The engine that trains a study's trials: ``name`` 'stacked', 'functional' or 'autograd';
    ``why`` one line for the run's first lines (for 'functional' and 'autograd': why not the
    stacked engine, and for 'autograd' why not the functional one either)."""

    name: str
    why: str


def model_kind(cfg: StudyConfig, builder: Builder | None = None) -> str:
    """The study's model kind: 'factory' for a user's model (``[model] factory``, or a
    ``builder`` given instead of ``[model]``), else the ``[model] name`` ('mlp', ...)."""
    if builder is not None or getattr(cfg.model, "factory", None):
        return "factory"
    return cfg.model.name


def functional_min_k(
    cfg: StudyConfig, device: torch.device | None = None, builder: Builder | None = None
) -> int | None:
    """The smallest K from which the functional engine beats one trial at a time for the
    model kind (:func:`model_kind`) on ``device`` (default: ``[training] device``), or None:
    never."""
    if device is None:  # the configured device's type, not checked here (the run checks it)
        name = cfg.training.device
        auto = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(auto if name == "auto" else name)
    if device.type != "cpu":
        return ACCELERATOR_MIN_K
    return FUNCTIONAL_MIN_K.get(model_kind(cfg, builder), FUNCTIONAL_MIN_K["factory"])


def _stacked_reason(cfg: StudyConfig, builder: Builder | None) -> str | None:
    if builder is not None:
        return "a model from a builder has no stacked form"
    return batch_unsupported_reason(cfg)


def autograd_reason(
    cfg: StudyConfig,
    *,
    stacked: bool = True,
    keep_model: bool = False,
    batch_trials: int = 1,
    device: torch.device | None = None,
    builder: Builder | None = None,
) -> str | None:
    """Why the study's trials train one at a time with :func:`tuner.engine.train`, or None: a
    lockstep engine trains them (the stacked one where it can, else the functional one).

    Args:
        stacked: False asks for the autograd engine (to measure one engine against the other).
        keep_model: the caller needs the trained ``nn.Module`` (retrain); only the autograd
            engine builds one.
        batch_trials: trials trained in lockstep (K); the functional engine is chosen only
            from K = :func:`functional_min_k`.
        device: where the trials train (default: ``[training] device``).
        builder: a model builder ``(n_features, n_outputs) -> nn.Module`` used instead of
            ``[model]`` (only the functional and autograd engines take one).
    """
    if not stacked:
        return "the autograd engine was asked for"
    if keep_model:
        return "the trained nn.Module is kept"
    reason = _stacked_reason(cfg, builder)
    if reason is None:
        return None
    min_k = functional_min_k(cfg, device, builder)
    if min_k is None:
        return (f"{reason}, and lockstep with torch.func was slower than one trial at a time "
                f"for this model kind (bench/bench_models.py)")
    if batch_trials < min_k:
        return f"{reason}, and lockstep with torch.func pays off from {min_k} trials at a time"
    return None


def choose_engine(
    cfg: StudyConfig,
    *,
    stacked: bool = True,
    keep_model: bool = False,
    batch_trials: int = 1,
    device: torch.device | None = None,
    builder: Builder | None = None,
) -> Engine:
    """The engine :func:`make_trainer` uses, with one line saying why (arguments as
    :func:`autograd_reason`)."""
    reason = autograd_reason(cfg, stacked=stacked, keep_model=keep_model,
                             batch_trials=batch_trials, device=device, builder=builder)
    if reason is not None:
        return Engine("autograd", reason)
    stacked_reason = _stacked_reason(cfg, builder)
    if stacked_reason is None:
        return Engine("stacked", "the MLP's backward pass written out")
    return Engine("functional", stacked_reason)


class OneAtATimeTrainer:
    """The :class:`~tuner.batched.BatchedTrainer` interface over :func:`tuner.engine.train`:
    each added member runs its whole run, one after the other, in the next :meth:`run_epoch`.

    ``builder`` as :func:`tuner.engine.train`'s (default: the study's ``[model]``)."""

    def __init__(
        self,
        cfg: StudyConfig,
        data: SplitData,
        device: torch.device | None = None,
        *,
        keep_model: bool = False,
        builder: Builder | None = None,
    ) -> None:
        self.cfg, self.data, self.device, self.keep_model = cfg, data, device, keep_model
        self.builder = builder
        self.pending: list[Member] = []

    @property
    def members(self) -> list[Member]:
        """Members that have not run yet."""
        return list(self.pending)

    def add(
        self, params: TrialParams, seed: int, on_epoch: OnEpoch = None, tag: Any = None
    ) -> Member:
        """Queue a member; it runs at the next :meth:`run_epoch`."""
        member = Member(params, seed, on_epoch, tag)
        self.pending.append(member)
        return member

    def run_epoch(self) -> list[Member]:
        """Run every queued member to its end; they all ended."""
        ended, self.pending = self.pending, []
        for m in ended:
            m.result = train(self.cfg, self.data, m.params, m.seed, m.on_epoch,
                             device=self.device, keep_model=self.keep_model,
                             builder=self.builder)
            m.ended = True
        return ended


def make_trainer(
    cfg: StudyConfig,
    data: SplitData,
    device: torch.device | None = None,
    *,
    stacked: bool = True,
    keep_model: bool = False,
    batch_trials: int = 1,
    builder: Builder | None = None,
) -> BatchedTrainer | FunctionalTrainer | OneAtATimeTrainer:
    """The trainer of :func:`choose_engine`'s engine for the study's trials.

    A model the functional engine cannot transform (its forward pass fails under ``vmap``:
    :class:`~tuner.batched.FunctionalUnsupported`) trains one at a time instead, with one
    warning line saying why.

    Args:
        cfg, data, device: as :class:`~tuner.batched.BatchedTrainer`.
        stacked, keep_model, batch_trials, builder: as :func:`autograd_reason`.
    """
    engine = choose_engine(cfg, stacked=stacked, keep_model=keep_model,
                           batch_trials=batch_trials, device=device, builder=builder)
    if engine.name == "stacked":
        return BatchedTrainer(cfg, data, device)
    if engine.name == "functional":
        try:
            return FunctionalTrainer(cfg, data, device, builder=builder)
        except FunctionalUnsupported as exc:
            _log.warning("trials run one at a time: %s", exc)
    return OneAtATimeTrainer(cfg, data, device, keep_model=keep_model, builder=builder)


def train_one(
    cfg: StudyConfig,
    data: SplitData,
    params: TrialParams,
    seed: int,
    on_epoch: OnEpoch = None,
    *,
    device: torch.device | None = None,
    stacked: bool = True,
    keep_model: bool = False,
    builder: Builder | None = None,
) -> TrainResult:
    """One configuration, by the engine :func:`make_trainer` chooses.

    The arguments and the result are those of :func:`tuner.engine.train` (``keep_model``: the
    trained model in ``result.model``, a complete run only); ``stacked`` as
    :func:`autograd_reason`; ``builder`` as :func:`tuner.engine.train`.
    """
    trainer = make_trainer(cfg, data, device, stacked=stacked, keep_model=keep_model,
                           builder=builder)
    member = trainer.add(params, seed, on_epoch)
    while trainer.members:
        trainer.run_epoch()
    return member.result
