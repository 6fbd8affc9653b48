"""``tuner retrain BEST.json``: train the exported configuration from scratch on train +
validation and measure it once on the held-out test split.

With the validation rows added, an epoch has more mini-batches than in the study, so the
schedule is re-sized to the new number of optimizer steps (``ceil((train + validation rows) /
batch size)`` per epoch, same epochs): warmup, decay intervals and cycles keep their fractions
of the run, as the study sizes them. The inputs keep the scaling fitted on the training part in
the study. There is no held-out validation any more: the per-epoch metric (which a
reduce-on-plateau schedule steps on) is measured on the training rows themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from tuner.datasets import SplitData
from tuner.engine import TrainResult, resolve_device, steps_per_epoch, train
from tuner.errors import TunerError
from tuner.load import BestConfig
from tuner.space import TrialParams

__all__ = ["RetrainOutcome", "merge_train_validation", "retrain"]


@dataclass(frozen=True)
class RetrainOutcome:
    """What a retrain did: the result, the seed and how the schedule was re-sized."""

    result: TrainResult
    seed: int
    train_rows: int
    steps_per_epoch_study: int
    steps_per_epoch_now: int


def merge_train_validation(data: SplitData) -> SplitData:
    """The split with validation rows appended to the training rows; the per-epoch evaluation
    set is the merged training set (nothing is held out but the test split)."""
    X = torch.cat([data.X_train, data.X_val])
    y = torch.cat([data.y_train, data.y_val])
    return replace(data, X_train=X, y_train=y, X_val=X, y_val=y)


def retrain(best: BestConfig, seed: int | None = None) -> RetrainOutcome:
    """Train ``best`` from scratch on train + validation; the test metric is in the result.

    Args:
        best: a loaded export (:func:`tuner.load_best`).
        seed: torch seed (weights, shuffling); default the exported trial's seed.

    Raises:
        ConfigError: the export's settings are invalid; DeviceError: no such device here.
    """
    cfg = best.study_config()
    seed = int(best.data.get("seed", 0)) if seed is None else seed
    data = merge_train_validation(best.load_data())
    params = TrialParams.from_optuna_params(best.params)
    try:
        device = resolve_device(cfg.training.device)
    except TunerError as exc:  # name the export
        raise type(exc)(f"{best.path}: {exc}") from None
    result = train(cfg, data, params, seed, device=device)
    return RetrainOutcome(
        result=result,
        seed=seed,
        train_rows=len(data.X_train),
        steps_per_epoch_study=best.steps_per_epoch,
        steps_per_epoch_now=steps_per_epoch(len(data.X_train), cfg.training.batch_size),
    )
