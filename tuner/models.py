"""Registry of model builders, and the user's own models (``[model] factory``).

A model is either registered here (``[model] name``: "mlp", "cnn"), described as the
``torch.nn.Sequential`` parts it is made of (so that an export can rebuild it with torch alone),
or the user's callable (``[model] factory = "package.module:build"`` with ``[model.kwargs]``):
``build(n_features, n_outputs, **kwargs) -> torch.nn.Module``. :func:`build_model` makes a
fresh model of either kind (call it once per trial; never reuse one across trials).

Every model takes input (batch, n_features) float32 and returns (batch, n_outputs): logits
for classification, standardized values for regression. :func:`check_model` proves that on
the real data before the first trial.

The registry itself is plain data (torch is imported by the builders), so that a study file is
validated against it without importing torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tuner.errors import ConfigError, TunerError

if TYPE_CHECKING:
    from torch import nn

    from tuner.config import StudyConfig
    from tuner.datasets import SplitData

__all__ = [
    "ModelSection",
    "ModelSpec",
    "MODELS",
    "FACTORY_KEYS",
    "build_model",
    "model_layers",
    "sequential",
    "image_shape",
    "check_model",
    "study_split",
    "check_spawnable",
    "register_model_factory",
    "resolve_model_factory",
    "OBJECT_PREFIX",
    "ACTIVATIONS",
]

ACTIVATIONS: dict[str, str] = {
    "relu": "ReLU",
    "gelu": "GELU",
    "tanh": "Tanh",
    "silu": "SiLU",
    "leaky_relu": "LeakyReLU",
}
"""``[model] activation`` name -> its ``torch.nn`` class name."""


class ModelSection(Protocol):
    """What a builder reads of the ``[model]`` section (:class:`tuner.config.ModelConfig`): the
    configuration depends on this registry, never the other way round."""

    @property
    def name(self) -> str | None: ...
    @property
    def hidden(self) -> tuple[int, ...]: ...
    @property
    def channels(self) -> tuple[int, ...]: ...
    @property
    def kernel_size(self) -> int: ...
    @property
    def image_shape(self) -> tuple[int, int] | None: ...
    @property
    def activation(self) -> str: ...
    @property
    def dropout(self) -> float: ...
    @property
    def factory(self) -> str | None: ...
    @property
    def kwargs(self) -> tuple[tuple[str, Any], ...]: ...
    @property
    def root(self) -> str: ...


Layer = dict[str, Any]  # {"class": <torch.nn class name>, "args": [positional arguments]}


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    Attributes:
        name: the ``[model] name``.
        layers: ``(cfg, n_features, n_outputs) -> [{"class", "args"}, ...]``: the model as
            ``torch.nn.Sequential(*(getattr(torch.nn, c)(*args)))`` (the export's ``layers``).
        description: one line for the README and messages.
        keys: the ``[model]`` keys it reads besides ``name``; the others are refused with it.
    """

    name: str
    layers: Callable[[ModelSection, int, int], list[Layer]]
    description: str
    keys: tuple[str, ...]


def mlp_layers(cfg: ModelSection, n_features: int, n_outputs: int) -> list[Layer]:
    """A multi-layer perceptron: [Linear -> activation -> Dropout] per hidden width, then Linear.

    Input (batch, n_features) float32; output (batch, n_outputs) logits or regression values.
    """
    out: list[Layer] = []
    width = n_features
    for hidden in cfg.hidden:
        out += [{"class": "Linear", "args": [width, hidden]},
                {"class": ACTIVATIONS[cfg.activation], "args": []}]
        if cfg.dropout > 0:
            out.append({"class": "Dropout", "args": [float(cfg.dropout)]})
        width = hidden
    out.append({"class": "Linear", "args": [width, n_outputs]})
    return out


def image_shape(cfg: ModelSection, n_features: int) -> tuple[int, int]:
    """(H, W) of the image each input row is: ``[model] image_shape``, else the square
    ``isqrt(n_features)`` when n_features is a perfect square.

    Raises:
        ConfigError: H * W != n_features, or no image_shape and n_features is not a square.
    """
    if cfg.image_shape is not None:
        h, w = cfg.image_shape
        if h * w != n_features:
            raise ConfigError(
                f"[model] image_shape = [{h}, {w}] is invalid for the data's n_features = "
                f"{n_features}: must be [H, W] with H * W = {n_features}."
            )
        return h, w
    side = math.isqrt(n_features)
    if side * side != n_features:
        raise ConfigError(
            f'[model] image_shape is missing: name = "cnn" reads each row as an image, and '
            f"n_features = {n_features} is not a perfect square; set image_shape = [H, W] with "
            f"H * W = {n_features}."
        )
    return side, side


def cnn_layers(cfg: ModelSection, n_features: int, n_outputs: int) -> list[Layer]:
    """A small convolutional network for image-shaped rows.

    Input (batch, n_features) float32, unflattened to (batch, 1, H, W) (:func:`image_shape`);
    per width c of ``channels``: Conv2d(c_in, c, kernel_size, stride 1, padding
    kernel_size // 2) -> activation -> MaxPool2d(2) while both sides are >= 2 (halving them,
    rounded down); then Flatten to (batch, channels[-1] * H' * W') -> Dropout (when > 0) ->
    Linear to (batch, n_outputs).
    """
    h, w = image_shape(cfg, n_features)
    k = cfg.kernel_size
    out: list[Layer] = [{"class": "Unflatten", "args": [1, [1, h, w]]}]
    width = 1
    for c in cfg.channels:
        out += [{"class": "Conv2d", "args": [width, c, k, 1, k // 2]},
                {"class": ACTIVATIONS[cfg.activation], "args": []}]
        if h >= 2 and w >= 2:
            out.append({"class": "MaxPool2d", "args": [2]})
            h, w = h // 2, w // 2
        width = c
    out.append({"class": "Flatten", "args": []})
    if cfg.dropout > 0:
        out.append({"class": "Dropout", "args": [float(cfg.dropout)]})
    out.append({"class": "Linear", "args": [width * h * w, n_outputs]})
    return out


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec(
        "mlp", mlp_layers, "multi-layer perceptron (hidden widths, activation, dropout)",
        ("hidden", "activation", "dropout"),
    ),
    "cnn": ModelSpec(
        "cnn", cnn_layers,
        "small convolutional network on rows read as H x W images (channels, kernel_size, "
        "image_shape, activation, dropout)",
        ("channels", "kernel_size", "image_shape", "activation", "dropout"),
    ),
}

FACTORY_KEYS = ("factory", "kwargs")
"""The ``[model]`` keys of a factory model (``kwargs`` is the ``[model.kwargs]`` table)."""


def sequential(layers: list[Layer]) -> nn.Sequential:
    """``torch.nn.Sequential(*(getattr(torch.nn, c)(*args) for each {"class": c, "args"}))``."""
    from torch import nn

    return nn.Sequential(*(getattr(nn, part["class"])(*part["args"]) for part in layers))


def model_layers(cfg: ModelSection, n_features: int, n_outputs: int) -> list[Layer] | None:
    """A registered model's ``torch.nn.Sequential`` parts; None for a factory model."""
    if cfg.factory is not None:
        return None
    return MODELS[cfg.name].layers(cfg, n_features, n_outputs)  # type: ignore[index]


def build_model(cfg: ModelSection, n_features: int, n_outputs: int) -> nn.Module:
    """A fresh model: the registered ``cfg.name`` (validated by the config), or the user's
    ``cfg.factory`` called as ``factory(n_features, n_outputs, **kwargs)``.

    Raises:
        ConfigError: one line: a cnn whose image shape does not fit n_features; a factory that
            cannot be imported or resolved, raises, or returns something else than a
            ``torch.nn.Module``.
    """
    layers = model_layers(cfg, n_features, n_outputs)
    if layers is not None:
        return sequential(layers)
    return _call_factory(cfg, n_features, n_outputs)


def _factory_what(cfg: ModelSection) -> str:
    return f'[model] factory = "{cfg.factory}"'


def _call_factory(cfg: ModelSection, n_features: int, n_outputs: int) -> nn.Module:
    from torch import nn

    from tuner.datasets import one_line

    fn = resolve_model_factory(cfg.factory or "", cfg.root)
    kwargs = {k: _unfrozen(v) for k, v in cfg.kwargs}
    call = f"{_callable_name(fn)}({n_features}, {n_outputs}" + "".join(
        f", {k}={v!r}" for k, v in kwargs.items()) + ")"
    try:
        model = fn(n_features, n_outputs, **kwargs)
    except Exception as exc:  # the user's code: report it in one line
        raise ConfigError(f"{_factory_what(cfg)}: {call} raised {one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"{_factory_what(cfg)}: {call} returned {type(model).__name__}; it must return a "
            f"torch.nn.Module."
        )
    return model


def _unfrozen(v: Any) -> Any:
    return [_unfrozen(x) for x in v] if isinstance(v, tuple) else v


def _callable_name(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
               or type(fn).__name__)


# ---------------------------------------------------------------------------------------------
# Python objects as factories, within one process (``tuner.tune(..., model=callable)``).

OBJECT_PREFIX = "<object>"
"""A ``[model] factory`` of the form ``"<object>:name"`` names a callable registered in this
process by :func:`register_model_factory`."""

_OBJECTS: dict[str, Callable[..., Any]] = {}


def register_model_factory(fn: Callable[..., Any]) -> str:
    """Make a Python callable usable as ``[model] factory`` within this process.

    Args:
        fn: ``fn(n_features, n_outputs, **kwargs) -> torch.nn.Module``.

    Returns:
        ``"<object>:<name>"`` (``name`` from ``fn.__name__``, with a number appended when
        another callable of that name is registered already); registering the same ``fn``
        again returns the same string. Worker processes (``--workers N``) and exports cannot
        resolve it: it lives only in this process.

    Raises:
        ConfigError: ``fn`` is not callable.
    """
    if not callable(fn):
        raise ConfigError(
            f"model = {type(fn).__name__} is invalid: must be a callable (n_features, "
            f"n_outputs, **kwargs) -> torch.nn.Module."
        )
    for key, known in _OBJECTS.items():
        if known is fn:
            return f"{OBJECT_PREFIX}:{key}"
    # an ASCII identifier, as [model] factory takes it ("<lambda>" -> "lambda")
    base = re.sub(r"[^A-Za-z0-9_]+", "_", str(getattr(fn, "__name__", "") or "model")).strip("_")
    base = base if base and not base[0].isdigit() else f"model_{base}".rstrip("_")
    key, n = base, 2
    while key in _OBJECTS:
        key, n = f"{base}_{n}", n + 1
    _OBJECTS[key] = fn
    return f"{OBJECT_PREFIX}:{key}"


def resolve_model_factory(spec: str, root: str = "") -> Callable[..., Any]:
    """The callable ``[model] factory`` names: ``"<object>:name"`` from
    :func:`register_model_factory`, else ``"package.module:function"`` imported from ``root``
    (the study file's folder) or the Python path, by the rules of ``[dataset] factory``.

    Raises:
        ConfigError: one line: not registered in this process, no such module, the module
            failing to import, or no such function in it.
    """
    from tuner.datasets import import_callable

    what = f'[model] factory = "{spec}"'
    if spec.startswith(OBJECT_PREFIX + ":"):
        fn = _OBJECTS.get(spec.partition(":")[2])
        if fn is None:
            raise ConfigError(
                f"{what} is a Python object registered in another process (model= of "
                f"tuner.tune, tuner.models.register_model_factory); pass model= again in this "
                f'process, or name an importable "package.module:function".'
            )
        return fn
    return import_callable(spec, root, what)


# ---------------------------------------------------------------------------------------------
# The check before the first trial.

_CHECKED: set[tuple[Any, int, int, int]] = set()  # models that passed check_model in this process


def check_model(cfg: StudyConfig, data: SplitData) -> None:
    """Prove that the study's model fits its data, before any trial trains it.

    Builds the model on the real shapes (``data.n_features``, ``data.n_outputs``) and runs a
    forward pass on the first mini-batch of training rows (``[training] batch_size`` rows at
    most, on the CPU, without gradients); the output must be a floating-point tensor of shape
    (rows, n_outputs). Then one training step's forward and backward pass, on that batch and on
    the epoch's last, smaller batch where there is one (``n_train % batch_size`` rows: a
    BatchNorm layer refuses a batch of 1 in training mode), must run and reach a trainable
    parameter. A model configuration that passed once is not checked again in this process.

    Raises:
        ConfigError: one line naming ``[model] factory`` (or ``name``): the factory cannot be
            imported, raises, or returns no ``torch.nn.Module``; a cnn's image shape does not
            fit; the model has no trainable parameter; the forward or backward pass raises;
            the output has the wrong shape or is not floating point, or does not depend on
            any trainable parameter.
    """
    import torch

    from tuner.datasets import one_line

    key = (cfg.model, cfg.training.batch_size, data.n_features, data.n_outputs)
    if key in _CHECKED:
        return
    what = _factory_what(cfg.model) if cfg.model.factory else f'[model] name = "{cfg.model.name}"'
    with torch.random.fork_rng(devices=[]):  # the check leaves the seeded RNG as it was
        model = build_model(cfg.model, data.n_features, data.n_outputs).to("cpu").train()
        x = data.X_train[: cfg.training.batch_size].cpu()
        try:
            with torch.no_grad():
                out = model(x)
        except Exception as exc:  # the user's forward(): one line
            raise ConfigError(
                f"{what}: the forward pass on a batch of training data (shape "
                f"{tuple(x.shape)}) raised {one_line(exc)}"
            ) from None
        want = (len(x), data.n_outputs)
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        if shape != want:
            got = f"shape {shape}" if shape is not None else f"a {type(out).__name__}"
            outputs = (f"{data.n_outputs} classes" if data.task == "classification"
                       else "1 regression target")
            raise ConfigError(
                f"{what}: the model maps a batch of training data (shape {tuple(x.shape)}) to "
                f"{got}; it must return a tensor of shape (batch, n_outputs) = {want} "
                f"({outputs})."
            )
        if not out.is_floating_point():
            raise ConfigError(
                f"{what}: the model returns a tensor of dtype {out.dtype}; it must return "
                f"floating-point values (logits or regression values), e.g. float32."
            )
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError(
                f"{what}: the model has no trainable parameter (none with requires_grad=True): "
                f"a learning rate has nothing to train."
            )
        _check_training_step(model, data, cfg.training.batch_size, what)
    _CHECKED.add(key)


def _check_training_step(model: nn.Module, data: SplitData, batch_size: int, what: str) -> None:
    """One forward and backward pass in training mode on the first batch and on the epoch's
    last, smaller batch (where there is one); ConfigError in one line if either fails."""
    from tuner.datasets import one_line

    n_train = len(data.X_train)
    sizes = [min(batch_size, n_train)]
    if n_train > batch_size and n_train % batch_size:
        sizes.append(n_train % batch_size)
    for rows in sizes:
        x = data.X_train[:rows].cpu()
        try:
            out = model(x)
            if not out.requires_grad:
                raise ConfigError(
                    f"{what}: the model's output does not depend on any trainable parameter "
                    f"(no gradient reaches them: a detach(), or every parameter frozen on "
                    f"the way); a learning rate has nothing to train."
                )
            out.float().sum().backward()
        except ConfigError:
            raise
        except Exception as exc:
            last = " (the epoch's last, smaller batch)" if rows != sizes[0] else ""
            raise ConfigError(
                f"{what}: a training step (forward and backward pass) on {rows} rows of "
                f"training data{last} raised {one_line(exc)}"
            ) from None
        model.zero_grad(set_to_none=True)


def check_spawnable(cfg: StudyConfig) -> None:
    """Refuse a ``"<object>:name"`` factory where trials train in spawned worker processes
    (``--workers N``): they cannot see a Python object of this process.

    Raises:
        ConfigError: one line naming the study and the factory.
    """
    factory = cfg.model.factory
    if factory is not None and factory.startswith(OBJECT_PREFIX + ":"):
        raise ConfigError(
            f'{cfg.path}: [model] factory = "{factory}" is a Python object of this process, '
            f"and worker processes (--workers N, workers=N) cannot see it; run with one worker, "
            f'or make it an importable "package.module:function" factory.'
        )


def study_split(cfg: StudyConfig) -> SplitData:
    """The study's split (:func:`tuner.datasets.load_split`, cached), its model checked on it
    (:func:`check_model`): what every command that trains (tune, its workers, lr-find,
    confirm, retrain) loads before it writes anything.

    Raises:
        ConfigError: the data or the model is invalid; the message starts with ``cfg.path``
            (the study file or the export).
    """
    from tuner.datasets import load_split

    try:
        data = load_split(cfg.dataset, cfg.split)
        check_model(cfg, data)
    except TunerError as exc:  # name the study file, as every other setting's message does
        raise type(exc)(f"{cfg.path}: {exc}") from None
    return data


def model_dict(cfg: ModelSection) -> dict[str, Any]:
    """The ``[model]`` keys that apply, as a study file gives them (settings, exports): the
    registered model's name and keys, or ``factory`` and ``kwargs``."""
    if cfg.factory is not None:
        return {"factory": cfg.factory, "kwargs": {k: _unfrozen(v) for k, v in cfg.kwargs}}
    spec = MODELS[cfg.name]  # type: ignore[index]
    out: dict[str, Any] = {"name": cfg.name}
    for key in spec.keys:
        value = getattr(cfg, key)
        if key == "image_shape" and value is None:
            continue
        out[key] = _unfrozen(value)
    return out
