"""``tuner retrain BEST.json``: train the exported configuration from scratch on train +
validation and measure it once on the held-out test split.

With the validation rows added, an epoch has more mini-batches than in the study, so the
schedule is re-sized to the new number of optimizer steps (``ceil((train + validation rows) /
batch size)`` per epoch, same epochs): warmup, decay intervals and cycles keep their fractions
of the run, as the study sizes them. The inputs keep the scaling fitted on the training part in
the study. There is no held-out validation any more: the per-epoch metric (which a
reduce-on-plateau schedule steps on) is measured on the training rows themselves.

``tuner retrain BEST.json --out DIR`` keeps the result (:func:`save_retrain`): a folder with
``model.pt`` (the trained ``state_dict``, CPU tensors), ``export.json`` (the export it came from)
and ``metrics.json`` (test metric and loss, seed, rows, per-epoch history), written atomically
through :func:`tuner.outputs.write_folder` (kind :data:`RETRAIN_KIND`). Load it back with
``tuner.load_best(DIR).load_model()``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from tuner.batched import train_one
from tuner.datasets import SplitData
from tuner.engine import TrainResult, resolve_device, steps_per_epoch
from tuner.errors import TunerError
from tuner.load import RETRAIN_EXPORT, RETRAIN_METRICS, RETRAIN_WEIGHTS, BestConfig
from tuner.models import study_split
from tuner.outputs import FolderKind, check_folder_target, write_folder
from tuner.space import TrialParams

__all__ = [
    "RETRAIN_KIND", "RetrainOutcome", "check_retrain_target", "merge_train_validation",
    "retrain", "save_retrain",
]

METRICS_FORMAT = 1
RETRAIN_KIND = FolderKind(
    "retrain", owns=lambda name: name in (RETRAIN_WEIGHTS, RETRAIN_EXPORT, RETRAIN_METRICS)
)
"""A retrain folder: the marker, model.pt, export.json and metrics.json, nothing else."""


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
    data = merge_train_validation(study_split(cfg))  # the model checked first (one line)
    params = TrialParams.from_optuna_params(best.params)
    try:
        device = resolve_device(cfg.training.device)
    except TunerError as exc:  # name the export
        raise type(exc)(f"{best.path}: {exc}") from None
    result = train_one(cfg, data, params, seed, device=device, keep_model=True)
    return RetrainOutcome(
        result=result,
        seed=seed,
        train_rows=len(data.X_train),
        steps_per_epoch_study=best.steps_per_epoch,
        steps_per_epoch_now=steps_per_epoch(len(data.X_train), cfg.training.batch_size),
    )


def check_retrain_target(out: Path) -> None:
    """Raise unless ``out`` may receive a retrain folder (before the training, not after).

    Raises:
        OutputError: ``out`` is a file, a symbolic link, or a folder holding anything but a
            previous retrain (see :func:`tuner.outputs.check_folder_target`).
    """
    check_folder_target(Path(out), RETRAIN_KIND)


def retrain_metrics(best: BestConfig, outcome: RetrainOutcome) -> dict[str, Any]:
    """What ``metrics.json`` holds: plain JSON types (non-finite numbers as strings)."""
    from tuner.export import plain

    r = outcome.result
    return plain({
        "format": METRICS_FORMAT,
        "study": best.data["study"],
        "trial": best.data["trial"],
        "metric": best.data["metric"],
        "test_metric": r.test_metric,
        "test_loss": r.test_loss,
        "seed": outcome.seed,
        "train_rows": outcome.train_rows,
        "steps_per_epoch": outcome.steps_per_epoch_now,
        "epochs": r.epochs,
        "steps": r.steps,
        "seconds": r.seconds,
        "history": [
            {"epoch": h.epoch, "train_loss": h.train_loss, "train_metric": h.val_metric,
             "lr": h.lr}
            for h in r.history
        ],
    })


def save_retrain(out: Path, best: BestConfig, outcome: RetrainOutcome) -> Path:
    """Write a complete retrain's folder at ``out`` atomically; returns ``out``.

    Raises:
        ValueError: the retrain did not complete (no trained model to save).
        OutputError: ``out`` is not a new, empty or previous retrain folder (nothing written).
    """
    from tuner.export import dumps_export

    model = outcome.result.model
    if outcome.result.status != "complete" or model is None:
        raise ValueError("only a complete retrain has a model to save")
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    metrics = json.dumps(retrain_metrics(best, outcome), indent=2, allow_nan=False) + "\n"

    def build(folder: Path) -> None:
        torch.save(weights, folder / RETRAIN_WEIGHTS)
        (folder / RETRAIN_EXPORT).write_text(dumps_export(best.data, "json"), encoding="utf-8")
        (folder / RETRAIN_METRICS).write_text(metrics, encoding="utf-8")

    write_folder(Path(out), build, RETRAIN_KIND)
    return Path(out)
