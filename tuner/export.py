"""Export the best trial as plain JSON that rebuilds the optimizer and schedule without tuner.

The file (``studies/<study name>.best.json`` by default) holds, in plain JSON types:

- ``study``, ``metric``, ``direction``, ``value``, ``trial``, ``seed``, ``test_metric``;
- ``dataset``, ``split``, ``model``, ``training``: the study file's settings;
- ``steps_per_epoch``, ``epochs``, ``total_steps``: how the schedule was sized;
- ``optimizer``: ``{"class": <torch.optim class>, "kwargs": {...}}``;
- ``scheduler``: ``{"class": <torch.optim.lr_scheduler class>, "kwargs": {...},
  "interval": "step" | "epoch"}``; a composite (``SequentialLR``) lists its ``schedulers`` and
  ``milestones``.

Rebuild in plain PyTorch (see the README)::

    o, s = e["optimizer"], e["scheduler"]
    opt = getattr(torch.optim, o["class"])(model.parameters(), **o["kwargs"])
    sch = getattr(torch.optim.lr_scheduler, s["class"])(opt, **s["kwargs"])
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import optuna

from tuner.config import StudyConfig
from tuner.datasets import load_split
from tuner.engine import steps_per_epoch
from tuner.errors import NoCompletedTrialError
from tuner.space import TrialParams
from tuner.storage import redact_url
from tuner.study import completed

__all__ = ["EXPORT_FORMAT", "build_export", "write_atomic", "default_export_path", "export_best"]

EXPORT_FORMAT = 1


def default_export_path(cfg: StudyConfig, suffix: str = "json") -> Path:
    """``<folder of the study file>/<study name>.best.<suffix>``."""
    return cfg.study_dir / f"{cfg.name}.best.{suffix}"


def build_export(study: optuna.Study, cfg: StudyConfig, storage_url: str) -> dict[str, Any]:
    """The export dict of the best COMPLETE trial, plain JSON types only.

    Raises:
        NoCompletedTrialError: the study has no COMPLETE trial.
    """
    best = completed(study)
    if not best:
        raise NoCompletedTrialError(
            f"study '{study.study_name}' has no complete trial (all pruned, diverged or failed), "
            f"so there is nothing to export; run more trials or widen [space] lr."
        )
    trial = best[0]
    params = TrialParams.from_optuna_params(trial.params)
    data = load_split(cfg.dataset, cfg.split)
    spe = steps_per_epoch(len(data.X_train), cfg.training.batch_size)
    total = spe * cfg.training.epochs
    mode = "max" if cfg.direction == "maximize" else "min"
    plain = cfg.to_dict()
    return {
        "format": EXPORT_FORMAT,
        "study": study.study_name,
        "storage": redact_url(storage_url),
        "metric": cfg.objective.metric,
        "direction": cfg.direction,
        "value": float(trial.value),  # type: ignore[arg-type]
        "trial": trial.number,
        "seed": int(trial.user_attrs.get("seed", cfg.study.seed + trial.number)),
        "test_metric": trial.user_attrs.get("test_metric"),
        "params": {k: _plain(v) for k, v in trial.params.items()},
        "dataset": plain["dataset"],
        "split": plain["split"],
        "model": plain["model"],
        "training": plain["training"],
        "steps_per_epoch": spe,
        "epochs": cfg.training.epochs,
        "total_steps": total,
        "optimizer": params.optimizer_spec(),
        "scheduler": params.scheduler_spec(total, spe, mode),
    }


def _plain(v: Any) -> Any:
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace``: never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_best(
    study: optuna.Study, cfg: StudyConfig, storage_url: str, out: Path | None = None
) -> Path:
    """Write the export JSON atomically; returns its path.

    Raises:
        NoCompletedTrialError: no COMPLETE trial (no file is written).
    """
    data = build_export(study, cfg, storage_url)
    path = out or default_export_path(cfg)
    write_atomic(path, json.dumps(data, indent=2) + "\n")
    return path
