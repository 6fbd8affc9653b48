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

A folder written by ``tuner retrain BEST.json --out DIR`` loads the same way,
``tuner.load_best(DIR)``, and ``load_model()`` then returns the retrained model (its
``model.pt`` weights loaded, in eval mode).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tuner.config import (
    GENERATOR_KEYS,
    MAX_RANDOM_STATE,
    METRICS,
    Bool,
    Constraint,
    Float,
    Int,
    Name,
    OneOf,
    OptionalStr,
    StudyConfig,
    TrainingConfig,
    _hint,
    _show,
    parse_study_config,
)
from tuner.errors import ConfigError

if TYPE_CHECKING:  # torch is imported by the builders, so `import tuner` stays light
    import torch

__all__ = ["BestConfig", "EXPORT_KEYS", "check_export", "load_best", "read_export"]

# the files of a `tuner retrain --out DIR` folder (tuner.retrain writes them)
RETRAIN_WEIGHTS = "model.pt"
RETRAIN_EXPORT = "export.json"
RETRAIN_METRICS = "metrics.json"


def _stat() -> Constraint:
    """A measured value as the export writes it: a finite number, "nan", "inf", "-inf" or null."""
    return Constraint(
        lambda v: v is None
        or v in ("nan", "inf", "-inf")
        or (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)),
        'a finite number, "nan", "inf", "-inf" or null',
    )


def _mapping(what: str, nullable: bool = False) -> Constraint:
    return Constraint(
        lambda v: isinstance(v, dict) or (nullable and v is None),
        f"a mapping ({what})" + (" or null" if nullable else ""),
    )


_CONFIRMATION_STATS = ("val_mean", "val_std", "test_mean", "test_std")


def _confirmation() -> Constraint:
    """null, or the confirmed winner: its means and deviations are finite or null (no run)."""

    def finite_or_none(v: Any) -> bool:
        return v is None or (
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        )

    return Constraint(
        lambda v: v is None
        or (isinstance(v, dict) and all(finite_or_none(v.get(k)) for k in _CONFIRMATION_STATS)),
        "null, or a mapping whose " + ", ".join(_CONFIRMATION_STATS)
        + " are finite numbers or null",
    )


# key -> (required, constraint): the export's own keys, as data (tuner.config's constraints).
# The sections copied from the study file (dataset ... divergence) are then validated by
# tuner.config.parse_study_config itself, so an export never accepts what a study file refuses.
EXPORT_KEYS: dict[str, tuple[bool, Constraint]] = {
    "format": (True, Int(1)),
    "study": (True, Name()),
    "storage": (False, OptionalStr()),
    "metric": (True, OneOf(*METRICS)),
    "direction": (True, OneOf("maximize", "minimize")),
    "selected_by": (False, OneOf("confirmation", "single trial")),
    "trial": (True, Int(0)),
    "value": (False, _stat()),
    "seed": (False, Int(0, MAX_RANDOM_STATE)),
    "test_metric": (False, _stat()),
    "single_best": (False, _mapping("the best single trial", nullable=True)),
    "confirmation": (False, _confirmation()),
    "confirmation_note": (False, OptionalStr()),
    "params": (True, _mapping("the trial's Optuna parameters")),
    "dataset": (True, _mapping("the study file's [dataset]")),
    "split": (True, _mapping("the study file's [split]")),
    "model": (True, _mapping("the study file's [model]")),
    "training": (True, _mapping("the study file's [training]")),
    "objective": (False, _mapping("the study file's [objective]", nullable=True)),
    "divergence": (False, _mapping("the study file's [divergence]", nullable=True)),
    # optimizer steps per epoch: at most one per training row (n_samples <= 10,000,000)
    "steps_per_epoch": (True, Int(1, 10_000_000)),
    "epochs": (True, TrainingConfig.__dataclass_fields__["epochs"].metadata["constraint"]),
    "total_steps": (False, Int(1)),
    "optimizer": (True, _mapping("a torch.optim class and its kwargs")),
    "scheduler": (True, _mapping("a torch.optim.lr_scheduler spec")),
    # format 2: how to rebuild the split, the model and the training loop without tuner
    "data": (False, _mapping("how scikit-learn rebuilds the split")),
    "layers": (False, Constraint(
        lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
        'a list of {"class": <torch.nn class>, "args": [...]}')),
    "loop": (False, _mapping("the training procedure and optimizer_kwargs")),
}


def _numbers(nullable: bool = False) -> Constraint:
    return Constraint(
        lambda v: (nullable and v is None) or (isinstance(v, list) and all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
            for x in v)),
        "a list of finite numbers" + (" or null" if nullable else ""),
    )


def _finite(nullable: bool = True) -> Constraint:
    return Constraint(
        lambda v: (nullable and v is None)
        or (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)),
        "a finite number" + (" or null" if nullable else ""),
    )


DATA_KEYS: dict[str, tuple[bool, Constraint]] = {
    "procedure": (False, Constraint(
        lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of text")),
    "task": (True, OneOf("classification", "regression")),
    "load": (True, _mapping("sklearn.datasets function and kwargs, or the file or factory")),
    "split": (True, _mapping("the train_test_split arguments")),
    "rows": (True, _mapping("rows of train, validation, test")),
    "n_features": (True, Int(1)),
    "n_outputs": (True, Int(1)),
    "classes": (True, Constraint(lambda v: v is None or isinstance(v, list),
                                 "a list of class labels or null")),
    "x_mean": (True, _numbers()),
    "x_scale": (True, _numbers()),
    "y_mean": (True, _finite()),
    "y_scale": (True, _finite()),
}
LOOP_KEYS: dict[str, tuple[bool, Constraint]] = {
    "procedure": DATA_KEYS["procedure"],
    "engine": (True, OneOf("torch", "stacked", "functional")),
    "optimizer_kwargs": (True, _mapping("extra torch.optim keyword arguments")),
}
REQUIRED_KEYS = tuple(k for k, (required, _) in EXPORT_KEYS.items() if required)


def _bad(where: str, key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(
        f"{where}: key '{key}' = {_show(value)} is invalid: must be {allowed}."
        f"{_hint(value, allowed)}"
    )


def _unknown_key(where: str, key: str, allowed: Iterable[str]) -> ConfigError:
    import difflib

    names = list(allowed)
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{where}: unknown key '{key}'.{hint} Allowed: {', '.join(names)}.")


def _param_constraints(params: Mapping[str, Any]) -> dict[str, tuple[bool, Constraint]]:
    """``params`` key -> (required, constraint) for the optimizer and schedule ``params`` name
    (unknown names get only the keys that do not depend on them)."""
    from tuner.schedules import SCHEDULES
    from tuner.space import OPTIMIZERS

    out: dict[str, tuple[bool, Constraint]] = {
        "lr": (True, Float(0, low_open=True)),
        "optimizer": (True, OneOf(*OPTIMIZERS)),
        "weight_decay": (False, Float(0)),
        "schedule": (True, OneOf(*SCHEDULES)),
    }
    opt = OPTIMIZERS.get(params.get("optimizer"))  # type: ignore[arg-type]
    if opt is not None and opt.momentum:
        out["optimizer.momentum"] = (False, Float(0, 1, high_open=True))
        out["optimizer.nesterov"] = (False, Bool())
    sched = SCHEDULES.get(params.get("schedule"))  # type: ignore[arg-type]
    for p in sched.params if sched is not None else ():
        c = Int(int(p.low), int(p.high)) if p.integer else Float(p.low, p.high)
        out[f"schedule.{p.name}"] = (True, c)
    return out


def _check_keys(where: str, data: Mapping[str, Any], spec: Mapping[str, tuple[bool, Constraint]],
                prefix: str = "") -> None:
    # the known keys first: which others are allowed may depend on them (params.optimizer)
    for key, (required, constraint) in spec.items():
        if key not in data:
            if required:
                raise ConfigError(
                    f"{where}: key '{prefix}{key}' is missing: it must be "
                    f"{constraint.allowed}; not a complete tuner export file."
                )
            continue
        if not constraint.check(data[key]):
            raise _bad(where, prefix + key, data[key], str(constraint.allowed))
    for key in data:
        if key not in spec:
            raise _unknown_key(where, prefix + key, [prefix + k for k in spec])


def _study_sections(d: Mapping[str, Any]) -> dict[str, Any]:
    """The study-file sections an export carries, as :func:`parse_study_config` takes them."""
    from tuner.datasets import DATASETS

    dataset = dict(d["dataset"])
    spec = DATASETS.get(dataset.get("name", "")) if isinstance(dataset.get("name"), str) else None
    if spec is not None and not spec.generated:
        dataset = {k: v for k, v in dataset.items() if k not in GENERATOR_KEYS}
    if spec is not None and spec.task == "regression" and dataset.get("n_classes") == 2:
        # earlier exports wrote make_regression's unused default n_classes = 2: still load them
        del dataset["n_classes"]
    sections: dict[str, Any] = {
        "study": {"name": d["study"], "seed": int(d.get("seed", 0))},
        "dataset": dataset,
        "split": dict(d["split"]),
        "model": {k: v for k, v in d["model"].items() if k != "folder"},
        "training": dict(d["training"]),
        "objective": dict(d.get("objective") or {"metric": d["metric"]}),
    }
    if d.get("divergence"):
        sections["divergence"] = dict(d["divergence"])
    return sections


def _parse(d: Mapping[str, Any], where: str) -> StudyConfig:
    """The export's study settings; a factory model's module is found in ``model.folder`` (the
    study file's folder, recorded by the export), else in the export's folder, or on the
    Python path."""
    model = d["model"]
    folder = model.get("folder")
    if "folder" in model and not (isinstance(folder, str) and folder and "factory" in model):
        allowed = ("a non-empty string (the study file's folder, where the factory's module is "
                   "found)" if "factory" in model else "absent: only a factory model has one")
        raise ConfigError(
            f"{where}: key 'model.folder' = {_show(folder)} is invalid: must be {allowed}."
        )
    cfg = parse_study_config(_study_sections(d), where)
    if folder is not None:
        cfg = replace(cfg, model=replace(cfg.model, root=folder))
    return cfg


def check_export(data: Any, where: str = "<memory>") -> StudyConfig:
    """Validate a parsed export as a study file is validated; returns its study settings.

    Every key has a constraint (:data:`EXPORT_KEYS`, the trial's ``params`` by the registered
    optimizers and schedules and their parameter ranges); the study-file sections go through
    :func:`tuner.config.parse_study_config`; ``epochs``, ``total_steps``, ``direction``, and the
    ``optimizer`` and ``scheduler`` specs must agree with the rest (they are written from it).

    Raises:
        ConfigError: one line naming ``where``, the key, the bad value and what is allowed.
    """
    from tuner.export import EXPORT_FORMAT, plain
    from tuner.space import TrialParams

    if not isinstance(data, dict):
        raise ConfigError(f"{where}: not a valid export file: expected a mapping at the top.")
    fmt = data.get("format")
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > EXPORT_FORMAT:
        raise ConfigError(
            f"{where}: format = {fmt!r} is invalid: this tuner reads export formats up to "
            f"{EXPORT_FORMAT}; upgrade tuner."
        )
    _check_keys(where, data, EXPORT_KEYS)
    cfg = _parse(data, where)
    params = data["params"]
    _check_keys(where, params, _param_constraints(params), "params.")
    if params.get("optimizer.nesterov") and not params.get("optimizer.momentum"):
        raise _bad(where, "params.optimizer.nesterov", True,
                   "false when params.optimizer.momentum is 0 or missing (torch's SGD)")
    expected: dict[str, Any] = {
        "metric": cfg.objective.metric,
        "direction": cfg.direction,
        "epochs": cfg.training.epochs,
    }
    if "total_steps" in data:
        expected["total_steps"] = data["steps_per_epoch"] * cfg.training.epochs
    trial = TrialParams.from_optuna_params(params)
    mode = "max" if cfg.direction == "maximize" else "min"
    expected["optimizer"] = plain(trial.optimizer_spec())
    expected["scheduler"] = plain(
        trial.scheduler_spec(data["steps_per_epoch"] * cfg.training.epochs,
                             data["steps_per_epoch"], mode)
    )
    why = {
        "metric": "the [objective] metric",
        "direction": f"the direction of the metric '{cfg.objective.metric}'",
        "epochs": "[training] epochs",
        "total_steps": "steps_per_epoch x epochs",
        "optimizer": "written from params",
        "scheduler": "written from params, steps_per_epoch and epochs",
    }
    why |= _check_rebuild(where, data, cfg, expected)
    for key, want in expected.items():
        value = data[key.split(".")[0]]
        if "." in key:
            value = value[key.split(".")[1]]
        if value != want:
            raise ConfigError(
                f"{where}: key '{key}' = {json.dumps(value)} is invalid: must be "
                f"{json.dumps(want)} ({why[key]}); edit the export's params and settings, "
                "not what is derived from them."
            )
    return cfg


def _check_rebuild(where: str, data: Mapping[str, Any], cfg: StudyConfig,
                   expected: dict[str, Any]) -> dict[str, str]:
    """Check the format-2 keys ``data``, ``layers``, ``loop``: types, and (into ``expected``)
    what is derived from the settings; returns why each derived key must be so."""
    from tuner.export import layers_section, loop_engines, loop_section
    from tuner.space import TrialParams

    why: dict[str, str] = {}
    if "data" in data:
        d = data["data"]
        _check_keys(where, d, DATA_KEYS, "data.")
        for key in ("x_mean", "x_scale"):
            if len(d[key]) != d["n_features"]:
                raise _bad(where, f"data.{key}", d[key], f"a list of data.n_features = "
                           f"{d['n_features']} numbers")
        if any(v <= 0 for v in d["x_scale"]):
            raise _bad(where, "data.x_scale", d["x_scale"], "a list of numbers > 0")
        from tuner.datasets import dataset_task, load_record, split_kwargs

        classification = dataset_task(cfg.dataset) == "classification"
        expected["data.task"] = dataset_task(cfg.dataset)
        expected["data.load"] = load_record(cfg.dataset)
        expected["data.split"] = {"test_size": list(split_kwargs(cfg.split)),
                                  "random_state": cfg.split.seed, "stratify": classification}
        why |= dict.fromkeys(("data.task", "data.load", "data.split"),
                             "written from [dataset] and [split]; to change those, "
                             "remove the keys data and layers")
    if "layers" in data and cfg.model.factory is not None:
        raise ConfigError(
            f"{where}: key 'layers' is invalid with model.factory = \"{cfg.model.factory}\": a "
            "factory model is built by its factory, not from layers; remove the key."
        )
    if "layers" in data:
        if "data" not in data:
            raise ConfigError(f"{where}: key 'layers' needs the key 'data' (its widths).")
        expected["layers"] = layers_section(cfg.model, data["data"]["n_features"],
                                            data["data"]["n_outputs"])
        why["layers"] = "written from [model] and data.n_features, data.n_outputs"
    if "loop" in data:
        _check_keys(where, data["loop"], LOOP_KEYS, "loop.")
        cls = TrialParams.from_optuna_params(data["params"]).optimizer_spec()["class"]
        loop = loop_section(cls, cfg, data["loop"].get("engine"))
        expected["loop.optimizer_kwargs"] = loop["optimizer_kwargs"]
        expected["loop.engine"] = loop["engine"]
        why["loop.optimizer_kwargs"] = "written from params.optimizer"
        why["loop.engine"] = (f"written from [model] and the trial's engine: one of "
                              f"{', '.join(loop_engines(cfg))}")
    return why


def read_export(path: str | Path) -> dict[str, Any]:
    """Read an export file (``.json``, ``.yaml`` or ``.yml``) into a dict, checked.

    Raises:
        ConfigError: the file is missing, not UTF-8 JSON/YAML, from a newer tuner, or any key
            is missing or invalid (see :func:`check_export`); the message names the file, the
            key, the bad value and what is allowed.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such export file; write one with `tuner export STUDY.toml`.")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"{p}: not a valid export file: not UTF-8 text (an export is JSON or YAML)."
        ) from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: not a valid export file: {str(exc).splitlines()[0]}") from None
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting 100,000 deep
        what = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        raise ConfigError(f"{p}: not a valid export file: {what}.") from None
    check_export(data, str(p))
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
    retrained: str | None = None

    # --- a retrain folder (`tuner retrain --out DIR`) ---------------------------------------
    def load_model(self, map_location: str | torch.device = "cpu") -> torch.nn.Module:
        """The retrained model: :meth:`build_model` with the weights of ``model.pt`` loaded
        (only for ``load_best(DIR)`` of a ``tuner retrain --out DIR`` folder).

        Raises:
            ConfigError: this is not a retrain folder, or its ``model.pt`` does not fit the
                model (one line naming the file).
        """
        import torch

        if self.retrained is None:
            raise ConfigError(
                f"{self.path}: an export holds no trained weights; write a retrain folder with "
                f"`tuner retrain {self.path} --out DIR` and load that: load_best(DIR)."
            )
        weights = Path(self.retrained) / RETRAIN_WEIGHTS
        model = self.build_model()
        try:
            state = torch.load(weights, map_location=map_location, weights_only=True)
            model.load_state_dict(state)
        except (OSError, RuntimeError, ValueError, EOFError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"{weights}: not the weights of this export's model: {first}"
            ) from None
        model.eval()
        return model

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
        return _parse(self.data, self.path)

    # --- builders -------------------------------------------------------------------------
    def load_data(self) -> Any:
        """The study's split (:class:`tuner.datasets.SplitData`): train / validation / test
        float32 tensors, scaled with the training part's statistics.

        Raises:
            ConfigError: the generator or the split refuses the settings (names the file).
        """
        from tuner.datasets import load_split
        from tuner.errors import TunerError

        cfg = self.study_config()
        try:
            return load_split(cfg.dataset, cfg.split)
        except TunerError as exc:  # name the export, as every other message about it does
            raise type(exc)(f"{self.path}: {exc}") from None

    def build_model(self, n_features: int | None = None, n_outputs: int | None = None
                    ) -> torch.nn.Module:
        """A fresh model with the study's architecture; input and output widths default to the
        study's dataset."""
        from tuner.models import build_model

        cfg = self.study_config()
        widths = self.data.get("data") or {}  # format 2: the widths without loading the data
        n_features = widths.get("n_features") if n_features is None else n_features
        n_outputs = widths.get("n_outputs") if n_outputs is None else n_outputs
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


def load_best(path: str | Path, model: Any = None) -> BestConfig:
    """Load an export written by ``tuner export`` (JSON or YAML), or a retrain folder written
    by ``tuner retrain BEST.json --out DIR`` (its ``export.json``; then ``load_model()``
    returns the trained model).

    Args:
        path: the export file or retrain folder.
        model: for a study whose model was a Python callable (``model.factory =
            "<object>:name"``, which lives only in the process that ran the study): that
            callable again, ``(n_features, n_outputs, **kwargs) -> torch.nn.Module``.

    Returns:
        A :class:`BestConfig` with ``build_model()``, ``load_data()``,
        ``build_optimizer(params)``, ``build_scheduler(optimizer, steps_per_epoch)`` and, for a
        retrain folder, ``load_model()``.

    Raises:
        ConfigError: the file is missing or is not a tuner export; the folder is not a retrain
            folder; the model was a Python callable that is not registered in this process and
            ``model`` is not given.
    """
    p = Path(path)
    if p.is_dir():
        export = p / RETRAIN_EXPORT
        if not (export.is_file() and (p / RETRAIN_WEIGHTS).is_file()):
            raise ConfigError(
                f"{p}: a folder, but not a retrain folder (no {RETRAIN_EXPORT} and "
                f"{RETRAIN_WEIGHTS}); pass an export file or a `tuner retrain --out` folder."
            )
        data, where, retrained = read_export(export), str(export), str(p)
    else:
        data, where, retrained = read_export(p), str(path), None
    return BestConfig(_object_model(data, where, model), where, retrained=retrained)


def _object_model(data: dict[str, Any], where: str, model: Any) -> dict[str, Any]:
    """The export with its ``"<object>:name"`` factory resolvable in this process: ``model``
    registered in its place, or the one registered here under that name."""
    from tuner.models import OBJECT_PREFIX, register_model_factory, resolve_model_factory

    factory = data["model"].get("factory")
    is_object = isinstance(factory, str) and factory.startswith(OBJECT_PREFIX + ":")
    if model is not None and not is_object:
        name = data["model"].get("name", "mlp")
        what = f'model.factory = "{factory}"' if factory else f'model.name = "{name}"'
        raise ConfigError(
            f"{where}: model= is only for an export whose model was a Python object "
            f'("<object>:name"); this export rebuilds its own model ({what}).'
        )
    if model is not None:
        spec = register_model_factory(model)
        return {**data, "model": {**data["model"], "factory": spec}}
    if is_object:
        try:
            resolve_model_factory(factory)
        except ConfigError:
            raise ConfigError(
                f'{where}: model.factory = "{factory}" was a Python object of the process that '
                f"ran the study; pass the callable again: tuner.load_best({where!r}, model=fn) "
                f"(or tuner.models.register_model_factory(fn) first); to retrain it from the "
                f'command line, make it an importable "package.module:function" factory.'
            ) from None
    return data
