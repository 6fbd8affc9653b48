"""The engine entry point: the one place that chooses which engine trains a trial.

Two engines train a trial to the same result (the same learning rates, the same losses up to
floating-point rounding; tests/test_batched.py):

- the stacked engine, :class:`~tuner.batched.BatchedTrainer`: K trials of one model in lockstep,
  written-out backward pass, no autograd tape, no ``torch.optim`` bookkeeping;
- :func:`tuner.engine.train`: an ``nn.Module``, autograd and ``torch.optim``, one trial at a time.

Every caller (the study's objective and trial lifecycle, ``tuner confirm``, ``tuner retrain``)
goes through :func:`make_trainer` or :func:`train_one`, and :func:`autograd_reason` alone says
which engine runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from tuner.batched._trainer import BatchedTrainer, Member, batch_unsupported_reason
from tuner.engine import EpochReport, TrainResult, train
from tuner.space import TrialParams

if TYPE_CHECKING:
    from tuner.config import StudyConfig
    from tuner.datasets import SplitData

__all__ = ["autograd_reason", "OneAtATimeTrainer", "make_trainer", "train_one"]

OnEpoch = Callable[[EpochReport], bool] | None


def autograd_reason(
    cfg: StudyConfig, *, stacked: bool = True, keep_model: bool = False
) -> str | None:
    """Why the study's trials train with :func:`tuner.engine.train`, or None: the stacked engine.

    Args:
        stacked: False asks for the autograd engine (to measure one engine against the other).
        keep_model: the caller needs the trained ``nn.Module`` (retrain); only the autograd
            engine builds one.
    """
    if not stacked:
        return "the autograd engine was asked for"
    if keep_model:
        return "the trained nn.Module is kept"
    return batch_unsupported_reason(cfg)


class OneAtATimeTrainer:
    """The :class:`~tuner.batched.BatchedTrainer` interface over :func:`tuner.engine.train`:
    each added member runs its whole run, one after the other, in the next :meth:`run_epoch`."""

    def __init__(
        self,
        cfg: StudyConfig,
        data: SplitData,
        device: torch.device | None = None,
        *,
        keep_model: bool = False,
    ) -> None:
        self.cfg, self.data, self.device, self.keep_model = cfg, data, device, keep_model
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
                             device=self.device, keep_model=self.keep_model)
            m.ended = True
        return ended


def make_trainer(
    cfg: StudyConfig,
    data: SplitData,
    device: torch.device | None = None,
    *,
    stacked: bool = True,
    keep_model: bool = False,
) -> BatchedTrainer | OneAtATimeTrainer:
    """The trainer for the study's trials: stacked unless :func:`autograd_reason` says why not.

    Args:
        cfg, data, device: as :class:`~tuner.batched.BatchedTrainer`.
        stacked, keep_model: as :func:`autograd_reason`.
    """
    if autograd_reason(cfg, stacked=stacked, keep_model=keep_model) is None:
        return BatchedTrainer(cfg, data, device)
    return OneAtATimeTrainer(cfg, data, device, keep_model=keep_model)


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
) -> TrainResult:
    """One configuration, by the engine :func:`make_trainer` chooses.

    The arguments and the result are those of :func:`tuner.engine.train` (``keep_model``: the
    trained model in ``result.model``, a complete run only); ``stacked`` as
    :func:`autograd_reason`.
    """
    trainer = make_trainer(cfg, data, device, stacked=stacked, keep_model=keep_model)
    member = trainer.add(params, seed, on_epoch)
    while trainer.members:
        trainer.run_epoch()
    return member.result
