"""The study file: one TOML file that describes a study completely, validated before any trial.

A study file has the sections ``[study]``, ``[dataset]``, ``[split]``, ``[model]``,
``[training]``, ``[objective]``, ``[space]``, ``[sampler]``, ``[pruner]``, ``[divergence]``
and ``[tracking]``; each becomes one frozen dataclass below, and :class:`StudyConfig` holds them
all. Every field declares its constraint as data (``_field(default, constraint, doc)``), in the
manner of scikit-learn's parameter validation, so that one message template serves every
violation::

    studies/x.toml: [space] lr = [0.1, 0.001] is invalid: must be [low, high] with 0 < low < high.

:func:`load_study_config` raises :class:`~tuner.errors.ConfigError` for a misspelt key, a wrong
type, an unknown name or an impossible bound, before anything touches a storage.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

# The registries are plain data that import torch and scikit-learn only when a model or a
# dataset is built, so validating a study file stays quick; they never import this module.
from tuner.datasets import (
    ALIASES,
    DATA_SUFFIXES,
    DATASETS,
    GENERATOR_KEYS,
    NOT_SINGLE_TARGET,
    SIGNATURES,
    check_data_file,
    check_memory,
    check_not_fetch,
    dataset_task,
    infer_file_task,
)
from tuner.errors import ConfigError
from tuner.models import ACTIVATIONS, FACTORY_KEYS, MODELS, OBJECT_PREFIX, model_dict
from tuner.schedules import SCHEDULES
from tuner.space import OPTIMIZERS

__all__ = [
    "StudySection",
    "DatasetConfig",
    "SplitConfig",
    "ModelConfig",
    "TrainingConfig",
    "ObjectiveConfig",
    "SpaceConfig",
    "SamplerConfig",
    "PrunerConfig",
    "DivergenceConfig",
    "StudyConfig",
    "load_study_config",
    "parse_study_config",
    "read_study_file",
    "METRICS",
]


# ---------------------------------------------------------------------------------------------
# Constraints: a predicate and the words that say what is allowed.


@dataclass(frozen=True)
class Constraint:
    """A check on one value and the text that says what is allowed."""

    check: Callable[[Any], bool]
    allowed: str
    convert: Callable[[Any], Any] = lambda v: v
    choices: tuple[str, ...] = ()  # the allowed names, for "Did you mean ...?"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


MAX_SEED = 2**31 - 1
"""Largest ``[study] seed``: trial k seeds torch and numpy with seed + k, and numpy takes seeds
below 2**32 (so up to 2**31 trials fit)."""
MAX_RANDOM_STATE = 2**32 - 1
"""Largest scikit-learn ``random_state`` (numpy's seed range)."""


def Int(low: int | None = None, high: int | None = None) -> Constraint:  # noqa: N802
    text = "an integer"
    if low is not None and high is not None:
        text += f" in [{low}, {high}]"
    elif low is not None:
        text += f" >= {low}"
    return Constraint(
        lambda v: _is_int(v)
        and (low is None or v >= low)
        and (high is None or v <= high),
        text,
    )


def Float(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Constraint:  # noqa: N802
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    if low is not None and high is not None:
        text = f"a number in {lo}{low}, {high}{hi}"
    elif low is not None:
        text = f"a number {'>' if low_open else '>='} {low}"
    else:
        text = "a finite number"

    def check(v: Any) -> bool:
        if not _is_number(v):
            return False
        if low is not None and (v <= low if low_open else v < low):
            return False
        if high is not None and (v >= high if high_open else v > high):
            return False
        return True

    return Constraint(check, text, float)


def OneOf(*choices: str) -> Constraint:  # noqa: N802
    return Constraint(
        lambda v: isinstance(v, str) and v in choices,
        "one of " + ", ".join(repr(c) for c in choices),
        choices=choices,
    )


def Bool() -> Constraint:  # noqa: N802
    return Constraint(lambda v: isinstance(v, bool), "true or false")


def Name() -> Constraint:  # noqa: N802
    pattern = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    return Constraint(
        lambda v: isinstance(v, str) and bool(pattern.match(v)),
        "a name of letters, digits, '_', '.' and '-' (at most 100 characters)",
    )


def OptionalStr() -> Constraint:  # noqa: N802
    return Constraint(lambda v: v is None or (isinstance(v, str) and v != ""), "a non-empty string")


def Optional(inner: Constraint) -> Constraint:  # noqa: N802
    return Constraint(
        lambda v: v is None or inner.check(v),
        inner.allowed + " (or left out)",
        lambda v: None if v is None else inner.convert(v),
        inner.choices,
    )


def LogRange(*, allow_auto: bool = False) -> Constraint:  # noqa: N802
    """A ``[low, high]`` pair for a log-uniform parameter: 0 < low < high, both finite."""

    def check(v: Any) -> bool:
        if allow_auto and v == "auto":
            return True
        return (
            isinstance(v, list | tuple)
            and len(v) == 2
            and all(_is_number(x) for x in v)
            and 0 < v[0] < v[1]
        )

    text = "[low, high] with 0 < low < high"
    if allow_auto:
        text += ', or "auto" (set by the LR range test)'
    return Constraint(check, text, lambda v: v if v == "auto" else (float(v[0]), float(v[1])))


def UnitRange() -> Constraint:  # noqa: N802
    """A ``[low, high]`` pair inside [0, 1) with low < high (for momentum)."""
    return Constraint(
        lambda v: isinstance(v, list | tuple)
        and len(v) == 2
        and all(_is_number(x) for x in v)
        and 0 <= v[0] < v[1] < 1,
        "[low, high] with 0 <= low < high < 1",
        lambda v: (float(v[0]), float(v[1])),
    )


def IntList(  # noqa: N802
    low: int = 1, high: int | None = None, max_len: int | None = None
) -> Constraint:
    text = f"a list of integers >= {low}" + (f" and <= {high}" if high is not None else "")
    if max_len is not None:
        text += f", at most {max_len} of them"
    return Constraint(
        lambda v: isinstance(v, list)
        and (max_len is None or len(v) <= max_len)
        and all(_is_int(x) and x >= low and (high is None or x <= high) for x in v),
        text + " (e.g. [128, 64])",
        tuple,
    )


def Subset(registry: Mapping[str, Any], what: str) -> Constraint:  # noqa: N802
    """A non-empty list of distinct names from a registry."""
    names = tuple(registry)

    def check(v: Any) -> bool:
        return (
            isinstance(v, list)
            and len(v) > 0
            and len(set(v)) == len(v)
            and all(isinstance(x, str) and x in names for x in v)
        )

    return Constraint(
        check, f"a non-empty list of distinct {what} from: " + ", ".join(names), tuple, names
    )


def _field(default: Any, constraint: Constraint, doc: str) -> Any:
    kwargs: dict[str, Any] = {"metadata": {"constraint": constraint, "doc": doc}}
    if default is MISSING:
        return field(**kwargs)
    if isinstance(default, list | dict):
        return field(default_factory=lambda: default, **kwargs)
    return field(default=default, **kwargs)


def DatasetName() -> Constraint:  # noqa: N802
    return OneOf(*DATASETS)


def FactoryRef() -> Constraint:  # noqa: N802
    ident = r"[A-Za-z_][A-Za-z0-9_]*"
    pattern = re.compile(rf"^{ident}(\.{ident})*:{ident}$")
    return Constraint(
        lambda v: isinstance(v, str) and bool(pattern.match(v)),
        '"package.module:function" (a function returning (X, y))',
    )


def Sha256() -> Constraint:  # noqa: N802
    return Constraint(
        lambda v: isinstance(v, str) and bool(re.fullmatch(r"[0-9a-f]{64}", v)),
        "a SHA-256 hex digest (64 characters 0-9a-f)",
    )


def ModelName() -> Constraint:  # noqa: N802
    return OneOf(*MODELS)


DEVICE_PATTERN = re.compile(r"^(cpu|auto|cuda(:\d+)?|mps)$")

# metric -> (task it applies to, direction)
METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("classification", "maximize"),
    "loss": ("any", "minimize"),
    "rmse": ("regression", "minimize"),
}


# the largest MLP a study file (or an export) may ask for: a 16,384-wide layer is already 1 GiB
# of float32 weights next to another such layer
MAX_HIDDEN_WIDTH = 16_384
MAX_HIDDEN_LAYERS = 64

# ---------------------------------------------------------------------------------------------
# The sections.


@dataclass(frozen=True)
class StudySection:
    """``[study]``: the study's identity and budget."""

    name: str = _field(MISSING, Name(), "Study name in the storage; running again resumes it.")
    n_trials: int = _field(30, Int(1, 100_000), "Finished trials (complete + pruned) to reach.")
    seed: int = _field(0, Int(0, MAX_SEED),
                       "Seed of the sampler; trial k seeds torch with seed + k.")
    storage: str | None = _field(
        None,
        OptionalStr(),
        "Optuna storage URL; default: the SQLite file tuner.db next to the study file.",
    )
    timeout: float | None = _field(
        None, Optional(Float(0, low_open=True)), "Stop starting trials after this many seconds."
    )


TASKS = ("classification", "regression")


@dataclass(frozen=True)
class DatasetConfig:
    """``[dataset]``: exactly one of a scikit-learn ``name`` (a shipped ``load_*`` set or a
    ``make_*`` generator, with the function's own keywords), a data file ``path`` or a
    ``factory``."""

    name: str | None = _field(
        None, Optional(DatasetName()), "Registered scikit-learn dataset (load_* or make_*)."
    )
    path: str | None = _field(
        None, OptionalStr(), "Data file (.csv, .npz, .parquet), relative to the study file."
    )
    target: str | None = _field(None, OptionalStr(), "The label column of a .csv/.parquet path.")
    task: str | None = _field(
        None, Optional(OneOf(*TASKS)), "path/factory: inferred from the labels when obvious."
    )
    factory: str | None = _field(
        None, Optional(FactoryRef()), "'module:function' returning (X, y) arrays."
    )
    sha256: str | None = _field(
        None, Optional(Sha256()), "path: the file's content hash (filled in; must match)."
    )
    n_samples: int = _field(2000, Int(20, 10_000_000), "Rows (generated datasets only).")
    n_features: int = _field(20, Int(1, 100_000), "Features (generated datasets only).")
    n_informative: int = _field(10, Int(1, 100_000), "Informative features (generated only).")
    n_classes: int = _field(2, Int(2, 1000), "Classes (generators that take n_classes).")
    noise: float = _field(0.1, Float(0), "Label noise: flip fraction or Gaussian sd (generated).")
    seed: int = _field(0, Int(0, MAX_RANDOM_STATE),
                       "random_state of the generator (generated datasets only).")
    # not study-file keys: the function's other keywords as given ((key, value) pairs, lists
    # as tuples) and the folder a relative path or a factory module is found in
    kwargs: tuple[tuple[str, Any], ...] = field(
        default=(), metadata={"internal": True, "doc": "The function's other keywords."}
    )
    root: str = field(
        default="", metadata={"internal": True, "doc": "The folder of path / factory."}
    )

USER_KEYS = {"path": ("path", "target", "task", "sha256"), "factory": ("factory", "task")}

@dataclass(frozen=True)
class SplitConfig:
    """``[split]``: train / validation / test fractions (sum 1), stratified for classification."""

    train: float = _field(0.7, Float(0, 1, low_open=True, high_open=True), "Training fraction.")
    validation: float = _field(
        0.15, Float(0, 1, low_open=True, high_open=True), "Validation fraction (the objective)."
    )
    test: float = _field(
        0.15, Float(0, 1, low_open=True, high_open=True), "Held-out test fraction (report only)."
    )
    seed: int = _field(0, Int(0, MAX_RANDOM_STATE), "random_state of the split.")


def ModelFactoryRef() -> Constraint:  # noqa: N802
    ident = r"[A-Za-z_][A-Za-z0-9_]*"
    pattern = re.compile(rf"^({ident}(\.{ident})*|{re.escape(OBJECT_PREFIX)}):{ident}$")
    return Constraint(
        lambda v: isinstance(v, str) and bool(pattern.match(v)),
        '"package.module:function" (a function (n_features, n_outputs, **kwargs) returning a '
        "torch.nn.Module)",
    )


def ImageShape() -> Constraint:  # noqa: N802
    return Constraint(
        lambda v: isinstance(v, list) and len(v) == 2
        and all(_is_int(x) and 1 <= x <= MAX_IMAGE_SIDE for x in v),
        f"[H, W]: two integers in [1, {MAX_IMAGE_SIDE}] with H * W = n_features",
        tuple,
    )


def Channels() -> Constraint:  # noqa: N802
    inner = IntList(1, MAX_CHANNELS, MAX_CONV_LAYERS)
    return Constraint(
        lambda v: inner.check(v) and len(v) > 0,
        f"a non-empty list of integers >= 1 and <= {MAX_CHANNELS}, at most {MAX_CONV_LAYERS} "
        "of them (e.g. [16, 32])",
        tuple,
    )


def KernelSize() -> Constraint:  # noqa: N802
    return Constraint(
        lambda v: _is_int(v) and 1 <= v <= MAX_KERNEL and v % 2 == 1,
        f"an odd integer in [1, {MAX_KERNEL}] (padding kernel_size // 2 keeps the image size)",
    )


MAX_CHANNELS = 1024
MAX_CONV_LAYERS = 16
MAX_KERNEL = 15
MAX_IMAGE_SIDE = 100_000


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: the network: a registered ``name`` (an MLP by default) with its keys, or
    the user's ``factory`` with its ``[model.kwargs]``. The keys a model does not read are
    refused (:data:`tuner.models.MODELS` lists each model's keys)."""

    name: str | None = _field("mlp", Optional(ModelName()), "Registered model name.")
    hidden: tuple[int, ...] = _field(
        [128],
        IntList(1, MAX_HIDDEN_WIDTH, MAX_HIDDEN_LAYERS),
        "mlp: hidden layer widths, input to output; [] is a linear model.",
    )
    channels: tuple[int, ...] = _field(
        [16, 32], Channels(), "cnn: convolution widths (each: conv, activation, 2x2 max-pool)."
    )
    kernel_size: int = _field(3, KernelSize(), "cnn: convolution kernel side.")
    image_shape: tuple[int, int] | None = _field(
        None, Optional(ImageShape()),
        "cnn: [H, W] of each row; default square (isqrt(n_features)).",
    )
    activation: str = _field(
        "relu", OneOf(*ACTIVATIONS), "Activation function (mlp, cnn)."
    )
    dropout: float = _field(
        0.0, Float(0, 1, high_open=True),
        "Dropout probability (mlp: after each hidden layer; cnn: before the last Linear).",
    )
    factory: str | None = _field(
        None, Optional(ModelFactoryRef()),
        "'module:function' (n_features, n_outputs, **kwargs) -> torch.nn.Module.",
    )
    # not study-file keys: the [model.kwargs] table ((key, value) pairs, lists as tuples) and
    # the folder the factory module is found in
    kwargs: tuple[tuple[str, Any], ...] = field(
        default=(), metadata={"internal": True, "doc": "factory: its keyword arguments."}
    )
    root: str = field(
        default="", metadata={"internal": True, "doc": "The folder of the factory module."}
    )


@dataclass(frozen=True)
class TrainingConfig:
    """``[training]``: the fixed training budget of every trial."""

    epochs: int = _field(20, Int(1, 100_000), "Epochs per trial (the pruners' max resource).")
    batch_size: int = _field(64, Int(1, 10_000_000), "Mini-batch size (last batch may be partial).")
    device: str = _field(
        "cpu",
        Constraint(
            lambda v: isinstance(v, str) and bool(DEVICE_PATTERN.match(v)),
            "'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'",
        ),
        "torch device.",
    )


@dataclass(frozen=True)
class ObjectiveConfig:
    """``[objective]``: the validation metric the study optimizes."""

    metric: str = _field(
        "accuracy",
        OneOf(*METRICS),
        "'accuracy' (classification, maximize), 'loss' (minimize) or 'rmse' (regression, min).",
    )

    @property
    def direction(self) -> str:
        """'maximize' or 'minimize', implied by the metric."""
        return METRICS[self.metric][1]


@dataclass(frozen=True)
class SpaceConfig:
    """``[space]``: the search space. Scale parameters are sampled log-uniformly."""

    lr: tuple[float, float] | str = _field(
        [1e-4, 1.0], LogRange(allow_auto=True), "Learning-rate bounds, per optimizer step."
    )
    optimizers: tuple[str, ...] = _field(
        ["sgd", "adam", "adamw", "rmsprop"], Subset(OPTIMIZERS, "optimizers"), "Optimizers."
    )
    schedules: tuple[str, ...] = _field(
        ["constant", "step", "exponential", "cosine", "warmup_cosine", "one_cycle", "plateau"],
        Subset(SCHEDULES, "schedules"),
        "Learning-rate schedules.",
    )
    weight_decay: tuple[float, float] | None = _field(
        [1e-6, 1e-2], Optional(LogRange()), "Weight-decay bounds (log-uniform); omit for none."
    )
    momentum: tuple[float, float] = _field(
        [0.8, 0.99], UnitRange(), "SGD momentum bounds (uniform)."
    )
    nesterov: bool = _field(True, Bool(), "Let SGD choose Nesterov momentum.")


@dataclass(frozen=True)
class SamplerConfig:
    """``[sampler]``: the Optuna sampler (seeded with ``[study] seed``)."""

    name: str = _field(
        "tpe", OneOf("tpe", "random", "qmc", "gp", "cmaes"), "Optuna sampler (see Samplers)."
    )
    n_startup_trials: int = _field(
        10, Int(0),
        "tpe, gp, cmaes: finished trials before the model is used (the first are random).",
    )


@dataclass(frozen=True)
class PrunerConfig:
    """``[pruner]``: the Optuna pruner that stops lagging trials per epoch."""

    name: str = _field(
        "successive_halving",
        OneOf("successive_halving", "hyperband", "median", "none"),
        "Optuna pruner (successive halving: one bracket, so TPE learns from every trial).",
    )
    min_resource: int = _field(
        1, Int(1), "Successive halving, Hyperband: epochs before the first pruning rung."
    )
    reduction_factor: int = _field(
        4, Int(2), "Successive halving, Hyperband: 1/this of the trials go on at each rung."
    )
    n_startup_trials: int = _field(5, Int(0), "Median: trials before pruning starts.")
    n_warmup_steps: int = _field(2, Int(0), "Median: epochs of a trial before it can be pruned.")


@dataclass(frozen=True)
class DivergenceConfig:
    """``[divergence]``: when a trial counts as diverged (checked at every optimizer step)."""

    factor: float = _field(
        5.0, Float(1, low_open=True), "Diverged once the training loss exceeds factor x initial."
    )


def BoolOrStr() -> Constraint:  # noqa: N802
    return Constraint(
        lambda v: isinstance(v, bool) or (isinstance(v, str) and v.strip() != ""),
        "true, false, or an MLflow tracking URI or folder (a non-empty string)",
    )


@dataclass(frozen=True)
class TrackingConfig:
    """``[tracking]``: optional MLflow logging of every finished trial (``tuner.tracking``)."""

    mlflow: bool | str = _field(
        False, BoolOrStr(),
        "Log each trial to MLflow: true (the folder mlruns next to the study file), a tracking "
        "URI, or a folder (relative to the study file); needs pip install -e .[mlflow].",
    )


# the [pruner] keys each pruner reads
PRUNER_KEYS: dict[str, tuple[str, ...]] = {
    "successive_halving": ("min_resource", "reduction_factor"),
    "hyperband": ("min_resource", "reduction_factor"),
    "median": ("n_startup_trials", "n_warmup_steps"),
    "none": (),
}

SECTIONS: dict[str, type] = {
    "study": StudySection,
    "dataset": DatasetConfig,
    "split": SplitConfig,
    "model": ModelConfig,
    "training": TrainingConfig,
    "objective": ObjectiveConfig,
    "space": SpaceConfig,
    "sampler": SamplerConfig,
    "pruner": PrunerConfig,
    "divergence": DivergenceConfig,
    "tracking": TrackingConfig,
}
REQUIRED_SECTIONS = ("study", "dataset")


@dataclass(frozen=True)
class StudyConfig:
    """A whole, validated study file. Build it with :func:`load_study_config`."""

    study: StudySection
    dataset: DatasetConfig
    split: SplitConfig
    model: ModelConfig
    training: TrainingConfig
    objective: ObjectiveConfig
    space: SpaceConfig
    sampler: SamplerConfig
    pruner: PrunerConfig
    divergence: DivergenceConfig
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig())
    path: str = "<memory>"

    @property
    def name(self) -> str:
        return self.study.name

    @property
    def direction(self) -> str:
        return self.objective.direction

    @property
    def study_dir(self) -> Path:
        """The folder of the study file; the default storage lives there."""
        return Path(self.path).resolve().parent if self.path != "<memory>" else Path("studies")

    def to_dict(self) -> dict[str, Any]:
        """Plain-typed dict of every section (lists, not tuples), for export and notes."""
        out: dict[str, Any] = {}
        for section in SECTIONS:
            obj = getattr(self, section)
            out[section] = {
                f.name: _plain(getattr(obj, f.name)) for f in fields(obj)
            }
        out["dataset"] = _dataset_dict(self.dataset)
        out["model"] = model_dict(self.model)
        return out


def _dataset_dict(d: DatasetConfig) -> dict[str, Any]:
    """The ``[dataset]`` keys that apply, as a study file would give them (settings, export)."""
    if d.name is None:
        keys = USER_KEYS["path" if d.path is not None else "factory"]
        return {k: getattr(d, k) for k in keys}
    out: dict[str, Any] = {"name": d.name}
    spec = DATASETS[d.name]
    applies = spec.tuner_keys
    if d.name in ("make_classification", "make_regression"):
        applies = GENERATOR_KEYS  # as tuner has always recorded them (stored study settings)
    out |= {k: getattr(d, k) for k in applies}
    out |= {k: _plain(v) for k, v in d.kwargs}
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


# ---------------------------------------------------------------------------------------------
# Loading.


def _fail(
    where: str, section: str, key: str | None, value: Any, allowed: str,
    choices: tuple[str, ...] = (),
) -> ConfigError:
    target = f"[{section}] {key}" if key else f"[{section}]"
    shown = _show(value)
    hint = _hint(value, choices)
    return ConfigError(f"{where}: {target} = {shown} is invalid: must be {allowed}.{hint}")


def closest_name(word: str, names: Sequence[str], cutoff: float = 0.7) -> str | None:
    """The name ``word`` most likely misspells, or None.

    Case and ``-``/``_`` are ignored first (``adamW`` -> ``adamw``, ``One-Cycle`` ->
    ``one_cycle``); then the closest by :func:`difflib.get_close_matches`, case-insensitively.
    """
    def fold(text: str) -> str:
        return text.lower().replace("-", "_")

    folded = {fold(n): n for n in names}
    if fold(word) in folded:
        return folded[fold(word)]
    close = difflib.get_close_matches(fold(word), list(folded), n=1, cutoff=cutoff)
    return folded[close[0]] if close else None


def _hint(value: Any, choices: tuple[str, ...]) -> str:
    """' Did you mean "x"?' for a misspelt name among ``choices``."""
    words = value if isinstance(value, list) else [value]
    for word in words:
        if isinstance(word, str) and word not in choices:
            close = closest_name(word, choices)
            if close:
                return f' Did you mean "{close}"?'
    return ""


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{...}"
    return repr(value)


def _unknown(where: str, section: str | None, key: str, allowed: list[str]) -> ConfigError:
    close = closest_name(key, allowed, cutoff=0.6)
    hint = f" Did you mean '{close}'?" if close else ""
    target = f"[{section}] key '{key}'" if section else f"section [{key}]"
    return ConfigError(
        f"{where}: unknown {target}.{hint} Allowed: {', '.join(allowed)}."
    )


def _build_section(cls: type, table: Any, where: str, section: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{section}] must be a table (a [{section}] header).")
    known = {f.name: f for f in fields(cls) if "constraint" in f.metadata}
    for key in table:
        if key not in known:
            raise _unknown(where, section, key, list(known))
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        constraint: Constraint = f.metadata["constraint"]
        if name not in table:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(
                    f"{where}: [{section}] {name} is missing: it must be {constraint.allowed}."
                )
            continue
        value = table[name]
        if not constraint.check(value):
            raise _fail(where, section, name, value, constraint.allowed, constraint.choices)
        kwargs[name] = constraint.convert(value)
    obj = cls(**kwargs)
    # defaults given as lists become tuples, so the whole config stays hashable
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, list):
            object.__setattr__(obj, f.name, tuple(v))
    return obj


def parse_study_config(data: Mapping[str, Any], where: str = "<memory>") -> StudyConfig:
    """Validate a parsed study file (a dict of sections) into a :class:`StudyConfig`.

    Raises ConfigError naming ``where``, the key, the bad value and what is allowed.
    """
    for key in data:
        if key not in SECTIONS:
            raise _unknown(where, None, key, list(SECTIONS))
    for key in REQUIRED_SECTIONS:
        if key not in data:
            raise ConfigError(f"{where}: section [{key}] is missing; it is required.")
    table, kwargs = _dataset_table(data["dataset"], where)
    model_table, model_kwargs = _model_table(data.get("model", {}), where)
    data = {**data, "dataset": table, "model": model_table}
    parts = {
        name: _build_section(cls, data.get(name, {}), where, name)
        for name, cls in SECTIONS.items()
    }
    parts["dataset"] = _resolve_dataset(replace(parts["dataset"], kwargs=kwargs), data, where)
    if parts["model"].factory is not None:
        root = Path(where).resolve().parent if where != "<memory>" else Path.cwd()
        parts["model"] = replace(parts["model"], name=None, kwargs=model_kwargs, root=str(root))
    _check_cross(parts, data, where)
    return StudyConfig(**parts, path=where)


def _dataset_table(table: Any, where: str) -> tuple[Any, tuple[tuple[str, Any], ...]]:
    """``[dataset]`` with its scikit-learn keywords taken out (checked against the function's
    signature, recorded in tuner.datasets.SIGNATURES) and ``load_<name>`` read as ``<name>``."""
    if not isinstance(table, dict):
        return table, ()  # _build_section says it must be a table
    sources = [k for k in ("name", "path", "factory") if k in table]
    if len(sources) != 1:
        has = " and ".join(sources) if sources else "none of them"
        raise ConfigError(
            f"{where}: [dataset] needs exactly one of name (a scikit-learn dataset), path (a data "
            f"file: {', '.join(DATA_SUFFIXES)}) or factory (\"module:function\" returning "
            f"(X, y)); it has {has}."
        )
    if sources[0] != "name":
        allowed = USER_KEYS[sources[0]]
        for key in table:
            if key not in allowed:
                raise _unknown(where, "dataset", key, list(allowed))
        return table, ()
    name = table["name"]
    if not isinstance(name, str):
        return table, ()
    check_not_fetch(name, where)
    if name in NOT_SINGLE_TARGET:
        raise ConfigError(
            f'{where}: [dataset] name = "{name}" is invalid: {NOT_SINGLE_TARGET[name]}; tuner '
            f"trains single-target classification or regression models on one (X, y) set."
        )
    name = ALIASES.get(name, name)
    if name not in DATASETS:
        return table, ()  # _build_section names the allowed datasets
    spec = DATASETS[name]
    for key, value in table.items():
        if key == "name" or key in spec.allowed_keys:
            continue
        if key == "n_targets" and "n_targets" in SIGNATURES[spec.source]:
            raise ConfigError(
                f"{where}: [dataset] n_targets = {_show(value)} is invalid: tuner trains "
                f"single-target models; multi-output sets are not supported (leave it out)."
            )
        if key in GENERATOR_KEYS and not spec.generated:
            continue  # _check_cross: "apply only to generated datasets"
        if key == "n_classes" and spec.generated:
            continue  # _check_cross: which generators take n_classes
        allowed = [*spec.allowed_keys]
        if "seed" in allowed:
            allowed[allowed.index("seed")] = "seed (its random_state)"
        close = closest_name("seed" if key == "random_state" else key,
                             list(spec.allowed_keys), cutoff=0.6)
        hint = f" Did you mean '{close}'?" if close else ""
        raise ConfigError(
            f"{where}: [dataset] key '{key}' is not a keyword of "
            f"sklearn.datasets.{spec.source} as tuner calls it.{hint} Allowed: "
            f"{', '.join(allowed) or 'none'}."
        )
    kwargs = []
    for key in spec.keywords:
        if key in table:
            if not _is_keyword_value(table[key]):
                raise ConfigError(
                    f"{where}: [dataset] {key} = {_show(table[key])} is invalid: must be a "
                    f"number, a string, true/false or a list of them (sklearn.datasets."
                    f"{spec.source} checks the value itself)."
                )
            kwargs.append((key, _frozen(table[key])))
    rest = {k: v for k, v in table.items() if k not in spec.keywords}
    return {**rest, "name": name}, tuple(kwargs)


def _model_table(table: Any, where: str) -> tuple[Any, tuple[tuple[str, Any], ...]]:
    """``[model]`` with its ``[model.kwargs]`` table taken out (a factory's keyword arguments);
    a key the chosen model does not read is refused, naming the key and the model."""
    if not isinstance(table, dict):
        return table, ()  # _build_section says it must be a table
    if "name" in table and "factory" in table:
        raise ConfigError(
            f"{where}: [model] needs one of name (a registered model: {', '.join(MODELS)}) or "
            f'factory ("package.module:function"); it has name and factory.'
        )
    known = {f.name for f in fields(ModelConfig) if "constraint" in f.metadata}
    rest = {k: v for k, v in table.items() if k != "kwargs"}
    if "factory" in table:
        for key in rest:
            if key in known and key not in FACTORY_KEYS:
                raise ConfigError(
                    f"{where}: [model] {key} is invalid with factory = {_show(table['factory'])}"
                    f": a factory model takes only factory and [model.kwargs] (the keyword "
                    f"arguments it is called with)."
                )
        kwargs = table.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise ConfigError(
                f"{where}: [model] kwargs = {_show(kwargs)} is invalid: must be a table "
                f"([model.kwargs] with one key per keyword argument of the factory)."
            )
        for key, value in kwargs.items():
            if not _is_keyword_value(value):
                raise ConfigError(
                    f"{where}: [model.kwargs] {key} = {_show(value)} is invalid: must be a "
                    f"number, a string, true/false or a list of them."
                )
        return rest, tuple((k, _frozen(v)) for k, v in kwargs.items())
    name = table.get("name", "mlp")
    spec = MODELS.get(name) if isinstance(name, str) else None
    for key in table:
        if key == "kwargs" or key == "factory":
            continue
        if spec is not None and key in known and key != "name" and key not in spec.keys:
            raise ConfigError(
                f'{where}: [model] {key} is invalid with name = "{name}": that model takes '
                f"{', '.join(spec.keys)}."
            )
    if "kwargs" in table:
        raise ConfigError(
            f"{where}: [model.kwargs] is invalid with name = {_show(name)}: keyword arguments "
            f'are for a factory model ([model] factory = "package.module:function").'
        )
    return table, ()


def _is_keyword_value(v: Any) -> bool:
    if isinstance(v, list):
        return all(_is_keyword_value(x) for x in v)
    return isinstance(v, str | bool | int) or _is_number(v)


def _frozen(v: Any) -> Any:
    return tuple(_frozen(x) for x in v) if isinstance(v, list) else v


def _resolve_dataset(d: DatasetConfig, data: Mapping[str, Any], where: str) -> DatasetConfig:
    """A path or factory ``[dataset]`` with its folder, content hash and task filled in.

    The task is the one stated; else the one the labels make obvious (see
    :func:`tuner.datasets.infer_file_task`); else the one an explicit ``[objective] metric``
    implies (accuracy: classification, rmse: regression).
    """
    if d.name is not None:
        return d
    root = Path(where).resolve().parent if where != "<memory>" else Path.cwd()
    d = replace(d, root=str(root))
    inferred = None
    try:
        if d.path is not None:
            d = replace(d, sha256=check_data_file(d))
            inferred = infer_file_task(d)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    objective = data.get("objective")
    metric = objective.get("metric") if isinstance(objective, dict) else None
    implied = METRICS[metric][0] if metric in METRICS else "any"
    task = d.task or inferred or (implied if implied != "any" else None)
    if task is None:
        why = (
            f'the labels of target "{d.target}" are integers with more than two values'
            if d.path is not None else "tuner cannot look at a factory's data before loading it"
        )
        raise ConfigError(
            f'{where}: [dataset] task is missing: {why}; set task = "classification" or '
            f'"regression" (or [objective] metric = "accuracy" or "rmse").'
        )
    return replace(d, task=task)


def _check_cross(parts: dict[str, Any], data: Mapping[str, Any], where: str) -> None:
    split: SplitConfig = parts["split"]
    total = split.train + split.validation + split.test
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(
            f"{where}: [split] train + validation + test = {total:g} is invalid: "
            f"the three fractions must sum to 1."
        )
    dcfg: DatasetConfig = parts["dataset"]
    given = data.get("dataset", {})
    ds = DATASETS[dcfg.name] if dcfg.name is not None else None
    label = f"'{dcfg.name}'" if ds is not None else f"from {dcfg.path or dcfg.factory}"
    task = dataset_task(dcfg)
    if ds is not None and not ds.generated:
        extra = [k for k in GENERATOR_KEYS if k in given]
        if extra:
            raise ConfigError(
                f"{where}: [dataset] {extra[0]} is invalid for dataset '{ds.name}': "
                f"size, features, noise and seed apply only to generated datasets "
                f"({', '.join(n for n, d in DATASETS.items() if d.generated)})."
            )
    elif ds is not None:
        if "n_informative" in ds.tuner_keys and dcfg.n_informative > dcfg.n_features:
            raise ConfigError(
                f"{where}: [dataset] n_informative = {dcfg.n_informative} is invalid: "
                f"must be <= n_features ({dcfg.n_features})."
            )
        if "n_classes" not in ds.tuner_keys and "n_classes" in given:
            takes = [n for n, d in DATASETS.items() if "n_classes" in d.tuner_keys]
            raise ConfigError(
                f"{where}: [dataset] n_classes is invalid for dataset '{ds.name}': "
                f"it applies only to {' and '.join(takes)}."
            )
        check_memory(dcfg, where)  # before anything allocates: a clear line, not a MemoryError
    pruner: PrunerConfig = parts["pruner"]
    for key in data.get("pruner", {}):
        if key != "name" and key not in PRUNER_KEYS[pruner.name]:
            uses = ", ".join(PRUNER_KEYS[pruner.name]) or "no other key"
            raise ConfigError(
                f'{where}: [pruner] {key} is invalid with name = "{pruner.name}": that pruner '
                f"takes {uses}."
            )
    metric = parts["objective"].metric
    needs = METRICS[metric][0]
    if needs != "any" and needs != task:
        allowed = [m for m, (t, _) in METRICS.items() if t in ("any", task)]
        raise ConfigError(
            f'{where}: [objective] metric = "{metric}" is invalid for the {task} dataset '
            f"{label}: must be one of {', '.join(repr(m) for m in allowed)}."
        )


def load_study_config(path: str | Path) -> StudyConfig:
    """Read and validate a study file.

    Args:
        path: a TOML study file, e.g. ``studies/digits_mlp.toml``.

    Returns:
        The validated :class:`StudyConfig`; its ``path`` is the file given.

    Raises:
        ConfigError: the file is missing, is not valid TOML, or any value is invalid. The
            message names the file, the key, the bad value and what is allowed.
    """
    return parse_study_config(read_study_file(path), str(path))


def read_study_file(path: str | Path) -> dict[str, Any]:
    """A study file's TOML as a dict of sections, not yet validated
    (:func:`parse_study_config` does that).

    Raises:
        ConfigError: the file is missing, is not UTF-8 or is not valid TOML.
    """
    p = Path(path)
    where = str(path)
    if not p.is_file():
        hint = ""
        studies = Path("studies")
        if studies.is_dir():
            names = sorted(str(s) for s in studies.glob("*.toml"))
            if names:
                hint = " Study files here: " + ", ".join(names) + "."
        raise ConfigError(f"{where}: no such study file.{hint}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not a UTF-8 text file.") from None
