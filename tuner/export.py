"""Export the best configuration as plain JSON or YAML that rebuilds it without tuner.

The file (``studies/<study name>.best.json`` or ``.best.yaml``) holds, in plain JSON types only
(str, int, float, bool, None, lists and dicts; non-finite numbers as the strings "nan"/"inf"):

- ``format``: the version of this layout (:data:`EXPORT_FORMAT`);
- ``study``, ``storage`` (password redacted), ``metric``, ``direction``;
- ``selected_by``: ``"confirmation"`` when a current ``tuner confirm`` result exists (its winner
  is exported), else ``"single trial"`` (the best single run);
- ``trial``, ``value``, ``seed``, ``test_metric``: the exported trial's own single run;
- ``single_best``: ``{"trial", "value", "test_metric"}`` of the best single run;
- ``confirmation``: ``None`` or the winner's ``val_mean``/``val_std``/``test_mean``/``test_std``
  over the fresh ``seeds``, ``winner_trial``, ``changed_winner``, how it was decided
  (``decision``: in words, ``decided_by``, ``single_best_trial``, ``indistinguishable``, ``test``,
  ``max_seeds``, ``extra_seeds``, ``stability_cutoff``, the winner's ``peak_loss_ratio``) and
  every ``candidates`` row (with its ``comparison`` against the single best, ``peak_loss_ratio``,
  ``near_cutoff`` and ``verdict``; see :func:`tuner.confirm.run_confirm`);
  ``confirmation_note`` says why a stored confirmation was not used (out of date);
- ``params``: the trial's namespaced Optuna parameters (``lr``, ``schedule.*``, ...);
- ``dataset``, ``split``, ``model``, ``training``, ``objective``, ``divergence``: the study
  file's settings;
- ``steps_per_epoch``, ``epochs``, ``total_steps``: how the schedule was sized;
- ``data``: how to rebuild the split with scikit-learn alone (:func:`data_section`): the
  ``sklearn.datasets`` call, the two ``train_test_split`` calls, the rows of each part,
  ``n_features``, ``n_outputs``, the classes, and the training part's scaler (``x_mean``,
  ``x_scale``; ``y_mean``, ``y_scale`` for regression targets);
- ``layers``: the model as ``torch.nn.Sequential`` parts (``{"class", "args"}``), for a
  registered model (mlp, cnn); a factory model has none: ``model`` holds its ``factory``,
  ``kwargs`` and ``folder`` (the study file's, where its module is found);
- ``loop``: how the trial trained (seeding, batch order, validation metric) and the extra
  optimizer keyword arguments it used (``fused``), to reproduce it exactly;
- ``optimizer``: ``{"class": <torch.optim class>, "kwargs": {...}}``;
- ``scheduler``: ``{"class": <torch.optim.lr_scheduler class>, "kwargs": {...},
  "interval": "step" | "epoch"}``; a composite (``SequentialLR``) lists its ``schedulers`` and
  ``milestones``.

The file is written atomically (:func:`tuner.outputs.write_file`); an existing file is replaced
only when it is empty or already a tuner export (:func:`is_export`), anything else is refused.

Rebuild in plain PyTorch (see the README) or with :func:`tuner.load_best`::

    o, s = e["optimizer"], e["scheduler"]
    opt = getattr(torch.optim, o["class"])(model.parameters(), **o["kwargs"])
    sch = getattr(torch.optim.lr_scheduler, s["class"])(opt, **s["kwargs"])
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml

from tuner.config import StudyConfig
from tuner.confirm import (
    confirmation_is_current,
    decision_text,
    load_confirmation,
    no_complete_message,
)
from tuner.datasets import (
    SplitData,
    data_path,
    dataset_task,
    load_record,
    load_split,
    split_kwargs,
)
from tuner.engine import steps_per_epoch
from tuner.errors import ConfigError, NoCompletedTrialError
from tuner.outputs import FileKind, check_file_target, write_file
from tuner.space import FUSED_CLASSES, TrialParams
from tuner.storage import redact_url
from tuner.study import completed

__all__ = [
    "EXPORT_FORMAT",
    "FORMATS",
    "build_export",
    "data_section",
    "layers_section",
    "loop_engines",
    "loop_section",
    "dumps_export",
    "plain",
    "write_atomic",
    "is_export",
    "default_export_path",
    "export_best",
]

EXPORT_FORMAT = 2  # 2: data, layers and loop added (format 1 files still load)
FORMATS = ("json", "yaml")


def default_export_path(cfg: StudyConfig, suffix: str = "json") -> Path:
    """``<folder of the study file>/<study name>.best.<suffix>``."""
    return cfg.study_dir / f"{cfg.name}.best.{suffix}"


def plain(v: Any) -> Any:
    """``v`` as plain JSON types: numpy/torch scalars unwrapped, tuples to lists, dict keys to
    str, non-finite floats to the strings "nan", "inf", "-inf" (strict JSON has no NaN)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v) if math.isfinite(v) else str(v)
    if isinstance(v, Mapping):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [plain(x) for x in v]
    if hasattr(v, "item"):  # numpy / torch scalar
        return plain(v.item())
    return str(v)


DATA_PROCEDURE = [
    "X, y = sklearn.datasets.<load.function>(**load.kwargs); or your own data: the file "
    "load.file (column load.target is y, the other columns in file order are X; a .npz file's "
    "arrays X and y) or load.factory(); X as float64",
    "X_train, X_rest, y_train, y_rest = sklearn.model_selection.train_test_split(X, y, "
    "test_size=split.test_size[0], random_state=split.random_state, "
    "stratify=y if split.stratify else None)",
    "X_val, X_test, y_val, y_test = train_test_split(X_rest, y_rest, "
    "test_size=split.test_size[1], random_state=split.random_state, "
    "stratify=y_rest if split.stratify else None)",
    "inputs: float32((X - x_mean) / x_scale), computed in float64 (the training part's "
    "StandardScaler)",
    "targets: classification, int64 index of the label in classes; regression, "
    "float32((y - y_mean) / y_scale) of shape (rows, 1)",
]

LOOP_PROCEDURE = [
    "torch.manual_seed(seed); gen = torch.Generator().manual_seed(seed); then build the model "
    "(torch.nn.Sequential of layers; a factory model: model.factory(data.n_features, "
    "data.n_outputs, **model.kwargs), its module found in model.folder or on the Python "
    "path), the optimizer (kwargs and loop.optimizer_kwargs) and the "
    "scheduler, in that order",
    "each epoch: order = torch.randperm(rows.train, generator=gen); X, y = X_train[order], "
    "y_train[order]; steps_per_epoch mini-batches X[b*batch_size:(b+1)*batch_size] (the last "
    "may be partial)",
    "each mini-batch: loss (cross_entropy for classification, mse_loss for regression), "
    "optimizer.zero_grad(), loss.backward(), optimizer.step(), then scheduler.step() when "
    "scheduler.interval is 'step'",
    "after each epoch: model.eval(); the metric on all validation rows at once (accuracy: "
    "argmax; loss; rmse: sqrt(mse) * y_scale); model.train(); scheduler.step(metric) when "
    "scheduler.interval is 'epoch'",
    "value is the validation metric after the last epoch. engine 'torch': the trial trained "
    "with autograd and torch.optim as above, and this procedure reproduces value exactly; "
    "engine 'stacked': tuner's batched engine trained it (an MLP without dropout: the same "
    "weights, batch order and learning rates, the arithmetic in another order), and this "
    "procedure agrees with value up to floating-point rounding; engine 'functional': trials "
    "trained in lockstep with torch.func (the same weights, batch order, learning rates and "
    "dropout masks, the arithmetic in another order), and this procedure agrees with value up "
    "to floating-point rounding",
]


def data_section(cfg: StudyConfig, data: SplitData) -> dict[str, Any]:
    """The export's ``data``: how scikit-learn alone rebuilds ``data`` (see DATA_PROCEDURE)."""
    classification = data.task == "classification"
    return plain({
        "procedure": DATA_PROCEDURE,
        "task": data.task,
        "load": load_record(cfg.dataset),
        "split": {"test_size": list(split_kwargs(cfg.split)), "random_state": cfg.split.seed,
                  "stratify": classification},
        "rows": {"train": len(data.X_train), "validation": len(data.X_val),
                 "test": len(data.X_test)},
        "n_features": data.n_features,
        "n_outputs": data.n_outputs,
        "classes": list(data.classes) if classification else None,
        "x_mean": list(data.x_mean),
        "x_scale": list(data.x_scale),
        "y_mean": None if classification else data.y_mean,
        "y_scale": None if classification else data.target_scale,
    })


def layers_section(model: Any, n_features: int, n_outputs: int) -> list[dict[str, Any]] | None:
    """The export's ``layers``: ``torch.nn.Sequential(*(getattr(torch.nn, c)(*args)))`` builds
    the same module as :func:`tuner.models.build_model` (same parameter names and init order);
    None for a factory model (the export's ``model`` names the factory and its kwargs)."""
    from tuner.models import model_layers

    return model_layers(model, n_features, n_outputs)


def loop_engines(cfg: StudyConfig) -> tuple[str, ...]:
    """The engines that can train the study's trials, the default first: ('stacked',) where
    the stacked engine takes the model, else ('torch', 'functional') (one at a time, or in
    lockstep with torch.func from a number of trials at a time)."""
    from tuner.batched import autograd_reason

    return ("stacked",) if autograd_reason(cfg, batch_trials=1) is None else (
        "torch", "functional")


def loop_section(
    optimizer_class: str, cfg: StudyConfig, engine: str | None = None
) -> dict[str, Any]:
    """The export's ``loop``: the training procedure, the engine that trained the trial
    (``engine``: its recorded user attribute ``engine``; default for a trial that has none, from
    before it was recorded: the first of :func:`loop_engines`) and the optimizer's extra
    keyword arguments (``fused=True`` where torch has a fused kernel, as
    :func:`tuner.engine.train` uses it: it rounds differently in the last bits)."""
    engines = loop_engines(cfg)
    return {
        "procedure": LOOP_PROCEDURE,
        "engine": engine if engine in engines else engines[0],
        "optimizer_kwargs": {"fused": True} if optimizer_class in FUSED_CLASSES else {},
    }


def _trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def build_export(study: optuna.Study, cfg: StudyConfig, storage_url: str) -> dict[str, Any]:
    """The export dict of the best configuration, plain JSON types only.

    The confirmed winner is exported when the study holds a current confirmation (see
    :func:`tuner.confirm.confirmation_is_current`), else the best COMPLETE trial.

    Raises:
        NoCompletedTrialError: the study has no COMPLETE trial.
    """
    best = completed(study)
    if not best:
        raise NoCompletedTrialError(no_complete_message(study, "export"))
    single = best[0]
    conf = load_confirmation(study)
    confirmation: dict[str, Any] | None = None
    note: str | None = None
    trial = single
    if conf is not None and confirmation_is_current(conf, study, cfg):
        winner = conf["candidates"][0]
        trial = _trial(study, int(conf["winner_trial"]))
        confirmation = {
            "winner_trial": int(conf["winner_trial"]),
            "changed_winner": bool(conf["changed_winner"]),
            "val_mean": winner["val_mean"],
            "val_std": winner["val_std"],
            "test_mean": winner["test_mean"],
            "test_std": winner["test_std"],
            "n_runs": winner["n_runs"],
            "n_diverged": winner["n_diverged"],
            "seeds": conf["seeds"],
            "epochs": conf["epochs"],
            "top_k": conf["top_k"],
            "ranked_by": (
                f"paired test of validation {conf['metric']} against the single best on the "
                "same seeds (validation loss on ties), then stability margin, then mean"
                if "test" in conf else
                f"mean validation {conf['metric']} (fewest diverged runs first)"
            ),
            "decision": decision_text(conf),
            "decided_by": conf.get("decided_by"),
            "single_best_trial": conf["single_best_trial"],
            "indistinguishable": conf.get("indistinguishable"),
            "test": conf.get("test"),
            "max_seeds": conf.get("max_seeds"),
            "extra_seeds": conf.get("extra_seeds"),
            "divergence_factor": conf.get("divergence_factor"),
            "stability_cutoff": conf.get("stability_cutoff"),
            "peak_loss_ratio": winner.get("peak_loss_ratio"),
            "near_cutoff": winner.get("near_cutoff"),
            "candidates": [
                {k: c.get(k) for k in ("rank", "trial", "single_value", "val_mean", "val_std",
                                       "test_mean", "test_std", "n_runs", "n_diverged",
                                       "val_loss_mean", "peak_loss_ratio", "near_cutoff",
                                       "comparison", "verdict")}
                for c in conf["candidates"]
            ],
        }
    elif conf is not None:
        note = (
            "a stored confirmation is out of date (the study's top trials or settings changed "
            f"since): the best single trial is exported; run `tuner confirm {cfg.path}` to "
            "confirm the present top trials, then export again"
        )
    params = TrialParams.from_optuna_params(trial.params)
    data = load_split(cfg.dataset, cfg.split)
    spe = steps_per_epoch(len(data.X_train), cfg.training.batch_size)
    total = spe * cfg.training.epochs
    mode = "max" if cfg.direction == "maximize" else "min"
    settings = cfg.to_dict()
    if dataset_task(cfg.dataset) == "regression":  # n_classes: make_classification only
        settings["dataset"].pop("n_classes", None)
    if cfg.dataset.path is not None:  # found wherever the export is; its sha256 is checked
        settings["dataset"]["path"] = str(data_path(cfg.dataset).resolve())
    if cfg.model.factory is not None:  # its module is found there (or on the Python path)
        settings["model"]["folder"] = cfg.model.root
    out: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "study": study.study_name,
        "storage": redact_url(storage_url),
        "metric": cfg.objective.metric,
        "direction": cfg.direction,
        "selected_by": "confirmation" if confirmation else "single trial",
        "trial": trial.number,
        "value": trial.value,
        "seed": int(trial.user_attrs.get("seed", cfg.study.seed + trial.number)),
        "test_metric": trial.user_attrs.get("test_metric"),
        "single_best": {
            "trial": single.number,
            "value": single.value,
            "test_metric": single.user_attrs.get("test_metric"),
        },
        "confirmation": confirmation,
        "params": dict(trial.params),
        "dataset": settings["dataset"],
        "split": settings["split"],
        "model": settings["model"],
        "training": settings["training"],
        "objective": settings["objective"],
        "divergence": settings["divergence"],
        "steps_per_epoch": spe,
        "epochs": cfg.training.epochs,
        "total_steps": total,
        "optimizer": params.optimizer_spec(),
        "scheduler": params.scheduler_spec(total, spe, mode),
        "data": data_section(cfg, data),
        "layers": layers_section(cfg.model, data.n_features, data.n_outputs),
        "loop": loop_section(params.optimizer_spec()["class"], cfg,
                             trial.user_attrs.get("engine")),
    }
    if out["layers"] is None:  # a factory model: its code is not data
        del out["layers"]
    if note:
        out["confirmation_note"] = note
    return plain(out)


def dumps_export(data: Mapping[str, Any], fmt: str = "json") -> str:
    """The export as text: indented strict JSON, or block-style YAML (keys in order).

    Raises:
        ConfigError: ``fmt`` is not one of :data:`FORMATS`.
    """
    if fmt == "json":
        return json.dumps(data, indent=2, allow_nan=False) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False,
                              allow_unicode=True)
    raise ConfigError(f"--format {fmt!r} is invalid: must be one of {', '.join(FORMATS)}.")


def is_export(path: Path) -> bool:
    """True when ``path`` holds a tuner export (JSON or YAML with this module's keys)."""
    try:
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except ValueError:
            data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return (
        isinstance(data, dict)
        and isinstance(data.get("format"), int)
        and EXPORT_KEYS <= set(data)
    )


EXPORT_KEYS = frozenset({"format", "study", "params", "optimizer", "scheduler", "metric"})
EXPORT_KIND = FileKind("export", is_export)


def write_atomic(path: Path, text: str, kind: FileKind = EXPORT_KIND) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace``: never half-written.

    An existing ``path`` is replaced only when it is empty or a tuner ``kind`` file (default: an
    export); see :func:`tuner.outputs.write_file`.

    Raises:
        OutputError: ``path`` is a folder or a file tuner did not write (nothing is written).
    """
    write_file(path, text, kind)


def export_format(out: Path | None, fmt: str | None) -> str:
    """The format to write: ``fmt`` if given, else from ``out``'s suffix, else JSON."""
    if fmt is not None:
        return fmt
    if out is not None and out.suffix.lower() in (".yaml", ".yml"):
        return "yaml"
    return "json"


def export_best(
    study: optuna.Study,
    cfg: StudyConfig,
    storage_url: str,
    out: Path | None = None,
    fmt: str | None = None,
) -> Path:
    """Write the export (JSON or YAML) atomically; returns its path.

    Args:
        out: the file to write; default ``<study folder>/<study name>.best.<json|yaml>``.
        fmt: 'json' or 'yaml'; default from ``out``'s suffix, else 'json'.

    Raises:
        NoCompletedTrialError: no COMPLETE trial (no file is written).
        ConfigError: an unknown format (no file is written).
        OutputError: ``out`` is a folder, or an existing file that is not a tuner export (it is
            left untouched).
    """
    fmt = export_format(out, fmt)
    path = out or default_export_path(cfg, fmt)
    check_file_target(path, EXPORT_KIND)  # before the work
    data = build_export(study, cfg, storage_url)
    text = dumps_export(data, fmt)
    write_atomic(path, text)
    return path
