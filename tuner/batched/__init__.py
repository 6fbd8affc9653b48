"""Batched trials: K configurations of one model trained in lockstep as one stacked model.

``_activations`` (activations and their derivatives), ``_optimizer`` (the stacked optimizer),
``_trainer`` (the lockstep trainer), ``_functional`` (lockstep trials of any ``nn.Module`` with
``torch.func``), ``_entry`` (the one place that chooses the engine).
"""

from tuner.batched._activations import ACTIVATION_GRADS, ActivationGrad
from tuner.batched._entry import (
    FUNCTIONAL_MIN_K,
    Engine,
    OneAtATimeTrainer,
    autograd_reason,
    choose_engine,
    functional_min_k,
    make_trainer,
    model_kind,
    train_one,
)
from tuner.batched._functional import FunctionalTrainer, FunctionalUnsupported
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
    "FunctionalTrainer",
    "FunctionalUnsupported",
    "OneAtATimeTrainer",
    "autograd_reason",
    "choose_engine",
    "Engine",
    "FUNCTIONAL_MIN_K",
    "functional_min_k",
    "model_kind",
    "make_trainer",
    "train_one",
]
