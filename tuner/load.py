"""Load an export and rebuild its model, data, optimizer and schedule in your own training loop.

::

    import tuner

    best = tuner.load_best("studies/digits_mlp.best.json")
    data = best.load_data()                      # the study's split, scaled float32 tensors
    model = best.build_model()
    optimizer = best.build_optimizer(model.parameters())
    scheduler = best.build_scheduler(optimizer, best.steps_per_epoch)
    for epoch in range(best.epochs):
        for xb, yb in your_batches:              # best.steps_per_epoch batches per epoch
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            if best.interval == "step":
                scheduler.step()                 # every schedule except plateau
        if best.interval == "epoch":
            scheduler.step(val_metric)           # reduce-on-plateau: once per epoch, on the
                                                 # validation metric (mode already set)

``build_scheduler`` sizes the schedule for *your* number of optimizer steps per epoch (and
epochs): with the study's own ``steps_per_epoch`` and ``epochs`` it is exactly the schedule the
trial trained with; with another batch count (a new batch size, train + validation) the warmup,
decay and cycle lengths are re-sized to the new run, as the study would have sized them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tuner.config import GENERATOR_KEYS, StudyConfig, parse_study_config
from tuner.errors import ConfigError

if TYPE_CHECKING:  # torch is imported by the builders, so `import tuner` stays light
    import torch

__all__ = ["BestConfig", "load_best", "read_export"]

REQUIRED_KEYS = (
    "format", "study", "metric", "direction", "params", "dataset", "split", "model", "training",
    "steps_per_epoch", "epochs", "optimizer", "scheduler",
)


def read_export(path: str | Path) -> dict[str, Any]:
    """Read an export file (``.json``, ``.yaml`` or ``.yml``) into a dict, checked.

    Raises:
        ConfigError: the file is missing, not valid JSON/YAML, from a newer tuner, or lacks a
            key; the message names the file and the key.
    """
    from tuner.export import EXPORT_FORMAT

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such export file; write one with `tuner export STUDY.toml`.")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: not a valid export file: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: not a valid export file: expected a mapping at the top.")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ConfigError(f"{p}: key '{missing[0]}' is missing: not a tuner export file.")
    if not isinstance(data["format"], int) or data["format"] > EXPORT_FORMAT:
        raise ConfigError(
            f"{p}: format = {data['format']!r} is invalid: this tuner reads export formats up to "
            f"{EXPORT_FORMAT}; upgrade tuner."
        )
    return data


@dataclass(frozen=True)
class BestConfig:
    """An exported best configuration (see :mod:`tuner.export` for the fields).

    Attributes:
        data: the export as read (plain dict).
        path: the file it came from.
    """

    data: Mapping[str, Any]
    path: str = "<memory>"

    # --- what the study found -------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The learning rate per optimizer step (the peak for one-cycle)."""
        return float(self.data["optimizer"]["kwargs"]["lr"])

    @property
    def params(self) -> dict[str, Any]:
        """The trial's namespaced Optuna parameters."""
        return dict(self.data["params"])

    @property
    def optimizer_spec(self) -> dict[str, Any]:
        """``{"class": "Adam", "kwargs": {...}}``."""
        return dict(self.data["optimizer"])

    @property
    def scheduler_spec(self) -> dict[str, Any]:
        """The exported scheduler spec, sized for :attr:`steps_per_epoch` x :attr:`epochs`."""
        return dict(self.data["scheduler"])

    @property
    def interval(self) -> str:
        """'step': call ``scheduler.step()`` after every optimizer step; 'epoch': call
        ``scheduler.step(val_metric)`` once per epoch (reduce-on-plateau)."""
        return str(self.data["scheduler"]["interval"])

    # --- training settings ----------------------------------------------------------------
    @property
    def epochs(self) -> int:
        return int(self.data["epochs"])

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch in the study (ceil(train rows / batch size))."""
        return int(self.data["steps_per_epoch"])

    @property
    def batch_size(self) -> int:
        return int(self.data["training"]["batch_size"])

    @property
    def mode(self) -> str:
        """'max' or 'min': the plateau scheduler's mode, from the objective's direction."""
        return "max" if self.data["direction"] == "maximize" else "min"

    def study_config(self) -> StudyConfig:
        """The export's dataset, split, model, training and objective settings as a validated
        :class:`~tuner.config.StudyConfig` (search-space sections at their defaults).

        Raises:
            ConfigError: a setting is invalid for this version of tuner.
        """
        from tuner.datasets import DATASETS

        d = self.data
        dataset = dict(d["dataset"])
        spec = DATASETS.get(dataset.get("name", ""))
        if spec is not None and not spec.generated:
            dataset = {k: v for k, v in dataset.items() if k not in GENERATOR_KEYS}
        sections: dict[str, Any] = {
            "study": {"name": d["study"], "seed": int(d.get("seed", 0))},
            "dataset": dataset,
            "split": dict(d["split"]),
            "model": dict(d["model"]),
            "training": dict(d["training"]),
            "objective": dict(d.get("objective") or {"metric": d["metric"]}),
        }
        if d.get("divergence"):
            sections["divergence"] = dict(d["divergence"])
        return parse_study_config(sections, self.path)

    # --- builders -------------------------------------------------------------------------
    def load_data(self) -> Any:
        """The study's split (:class:`tuner.datasets.SplitData`): train / validation / test
        float32 tensors, scaled with the training part's statistics."""
        from tuner.datasets import load_split

        cfg = self.study_config()
        return load_split(cfg.dataset, cfg.split)

    def build_model(self, n_features: int | None = None, n_outputs: int | None = None
                    ) -> torch.nn.Module:
        """A fresh model with the study's architecture; input and output widths default to the
        study's dataset."""
        from tuner.models import build_model

        cfg = self.study_config()
        if n_features is None or n_outputs is None:
            data = self.load_data()
            n_features = n_features if n_features is not None else data.n_features
            n_outputs = n_outputs if n_outputs is not None else data.n_outputs
        return build_model(cfg.model, n_features, n_outputs)

    def build_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The ``torch.optim`` optimizer over ``params`` with the found learning rate and
        keyword arguments (momentum, nesterov, weight_decay)."""
        from tuner.space import build_optimizer

        return build_optimizer(params, self.data["optimizer"])

    def scheduler_spec_for(self, steps_per_epoch: int, epochs: int | None = None
                           ) -> dict[str, Any]:
        """The scheduler spec re-sized for ``steps_per_epoch`` x ``epochs`` optimizer steps.

        Raises:
            ValueError: ``steps_per_epoch`` or ``epochs`` < 1.
        """
        from tuner.space import TrialParams

        epochs = self.epochs if epochs is None else epochs
        if steps_per_epoch < 1 or epochs < 1:
            raise ValueError(
                f"steps_per_epoch and epochs must be >= 1, got {steps_per_epoch}, {epochs}"
            )
        params = TrialParams.from_optuna_params(self.data["params"])
        return params.scheduler_spec(steps_per_epoch * epochs, steps_per_epoch, self.mode)

    def build_scheduler(
        self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int | None = None
    ) -> Any:
        """The ``torch.optim.lr_scheduler`` schedule for a run of ``steps_per_epoch`` optimizer
        steps per epoch for ``epochs`` epochs (default: the study's).

        Step it as :attr:`interval` says: after every ``optimizer.step()`` for 'step';
        once per epoch with the validation metric (``scheduler.step(val_metric)``) for 'epoch'.

        Args:
            optimizer: a fresh optimizer from :meth:`build_optimizer`.
            steps_per_epoch: your batches per epoch (``ceil(rows / batch_size)``).
            epochs: your epochs; default the study's.
        """
        from tuner.schedules import build_scheduler

        return build_scheduler(optimizer, self.scheduler_spec_for(steps_per_epoch, epochs))


def load_best(path: str | Path) -> BestConfig:
    """Load an export written by ``tuner export`` (JSON or YAML).

    Returns:
        A :class:`BestConfig` with ``build_model()``, ``load_data()``,
        ``build_optimizer(params)`` and ``build_scheduler(optimizer, steps_per_epoch)``.

    Raises:
        ConfigError: the file is missing or is not a tuner export.
    """
    return BestConfig(read_export(path), str(path))
