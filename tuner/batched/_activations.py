"""Activations with their derivatives, for the stacked engine's written-out backward pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ActivationGrad", "ACTIVATION_GRADS"]

_aten = torch.ops.aten


@dataclass(frozen=True)
class ActivationGrad:
    """An activation of :data:`tuner.models.ACTIVATIONS` and its derivative.

    ``forward(z)`` maps pre-activations to outputs (any shape); ``backward(grad, z, h)`` takes
    the gradient with respect to the outputs ``h = forward(z)`` and returns the gradient with
    respect to ``z`` (same shape). The derivative is the kernel autograd itself runs for the
    ``torch.nn`` module (``torch.ops.aten.<name>_backward``, with the module's defaults:
    ``nn.GELU(approximate="none")``, ``nn.LeakyReLU(negative_slope=0.01)``).
    """

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


_LEAKY_SLOPE = nn.LeakyReLU().negative_slope

ACTIVATION_GRADS: dict[str, ActivationGrad] = {
    a.name: a
    for a in (
        ActivationGrad("relu", torch.relu, lambda g, z, h: _aten.threshold_backward(g, h, 0)),
        ActivationGrad("gelu", F.gelu, lambda g, z, h: _aten.gelu_backward(g, z)),
        ActivationGrad("tanh", torch.tanh, lambda g, z, h: _aten.tanh_backward(g, h)),
        ActivationGrad("silu", F.silu, lambda g, z, h: _aten.silu_backward(g, z)),
        ActivationGrad(
            "leaky_relu",
            lambda z: F.leaky_relu(z, _LEAKY_SLOPE),
            lambda g, z, h: _aten.leaky_relu_backward(g, z, _LEAKY_SLOPE, False),
        ),
    )
}
