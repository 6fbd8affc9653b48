"""Activations with their derivatives, for the stacked engine's written-out backward pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tuner.models import ACTIVATIONS

__all__ = ["ActivationGrad", "DERIVATIVES", "ACTIVATION_GRADS"]

_aten = torch.ops.aten


@dataclass(frozen=True)
class ActivationGrad:
    """A ``torch.nn`` activation class and its derivative.

    ``forward(z)`` maps pre-activations to outputs (any shape); ``backward(grad, z, h)`` takes
    the gradient with respect to the outputs ``h = forward(z)`` and returns the gradient with
    respect to ``z`` (same shape). The derivative is the kernel autograd itself runs for the
    ``torch.nn`` module (``torch.ops.aten.<name>_backward``, with the module's defaults:
    ``nn.GELU(approximate="none")``, ``nn.LeakyReLU(negative_slope=0.01)``).
    """

    torch_class: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


_LEAKY_SLOPE = nn.LeakyReLU().negative_slope

DERIVATIVES: dict[str, ActivationGrad] = {
    a.torch_class: a
    for a in (
        ActivationGrad("ReLU", torch.relu, lambda g, z, h: _aten.threshold_backward(g, h, 0)),
        ActivationGrad("GELU", F.gelu, lambda g, z, h: _aten.gelu_backward(g, z)),
        ActivationGrad("Tanh", torch.tanh, lambda g, z, h: _aten.tanh_backward(g, h)),
        ActivationGrad("SiLU", F.silu, lambda g, z, h: _aten.silu_backward(g, z)),
        ActivationGrad(
            "LeakyReLU",
            lambda z: F.leaky_relu(z, _LEAKY_SLOPE),
            lambda g, z, h: _aten.leaky_relu_backward(g, z, _LEAKY_SLOPE, False),
        ),
    )
}
"""``torch.nn`` activation class name -> its forward and derivative (a fact about torch, not a
second registry: tuner's activations are :data:`tuner.models.ACTIVATIONS`)."""

ACTIVATION_GRADS: dict[str, ActivationGrad] = {
    name: DERIVATIVES[cls] for name, cls in ACTIVATIONS.items() if cls in DERIVATIVES
}
"""``[model] activation`` name -> the derivative of its ``torch.nn`` class, for every
activation of :data:`tuner.models.ACTIVATIONS` that has one."""
