"""Registry of model builders.

A builder takes the ``[model]`` section (:class:`~tuner.config.ModelConfig`, or anything with
the attributes of :class:`ModelSection`) and the data's input and output widths and
returns a fresh ``torch.nn.Module`` (call it once per trial; never reuse one across trials).

The registry itself is plain data (torch is imported by the builders), so that a study file is
validated against it without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ModelSection", "ModelSpec", "MODELS", "build_model", "ACTIVATIONS"]

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
    def name(self) -> str: ...
    @property
    def hidden(self) -> tuple[int, ...]: ...
    @property
    def activation(self) -> str: ...
    @property
    def dropout(self) -> float: ...


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: ``build(cfg, n_features, n_outputs) -> nn.Module``."""

    name: str
    build: Callable[[ModelSection, int, int], nn.Module]
    description: str


def build_mlp(cfg: ModelSection, n_features: int, n_outputs: int) -> nn.Sequential:
    """A multi-layer perceptron: [Linear -> activation -> Dropout] per hidden width, then Linear.

    Input (batch, n_features) float32; output (batch, n_outputs) logits or regression values.
    """
    from torch import nn

    activation = getattr(nn, ACTIVATIONS[cfg.activation])
    layers: list[nn.Module] = []
    width = n_features
    for hidden in cfg.hidden:
        layers += [nn.Linear(width, hidden), activation()]
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        width = hidden
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec(
        "mlp", build_mlp, "multi-layer perceptron (hidden widths, activation, dropout)"
    ),
}


def build_model(cfg: ModelSection, n_features: int, n_outputs: int) -> nn.Module:
    """Build a fresh model from the registry (``cfg.name`` is validated by the config)."""
    return MODELS[cfg.name].build(cfg, n_features, n_outputs)
