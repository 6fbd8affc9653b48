"""Batched trials: K configurations of one model trained in lockstep as one stacked model.

``_activations`` (activations and their derivatives), ``_optimizer`` (the stacked optimizer),
``_trainer`` (the lockstep trainer), ``_entry`` (the one place that chooses the engine).
"""

from tuner.batched._activations import ACTIVATION_GRADS, ActivationGrad
from tuner.batched._entry import OneAtATimeTrainer, autograd_reason, make_trainer, train_one
from tuner.batched._optimizer import MemberHyper, StackedOptimizer
from tuner.batched._trainer import (
    DEFAULT_BATCH_TRIALS,
    BatchedTrainer,
    Member,
    batch_unsupported_reason,
    train_batched,
)

__all__ = [
    "DEFAULT_BATCH_TRIALS",
    "ACTIVATION_GRADS",
    "ActivationGrad",
    "batch_unsupported_reason",
    "MemberHyper",
    "StackedOptimizer",
    "Member",
    "BatchedTrainer",
    "train_batched",
    "OneAtATimeTrainer",
    "autograd_reason",
    "make_trainer",
    "train_one",
]
