"""Your own model for a tuner study: studies/example_data_custom_model.toml names it as

    [model]
    factory = "example_model:build"     # module example_model (this folder), function build

    [model.kwargs]                      # keyword arguments of build
    hidden = 64
    dropout = 0.1

tuner imports this file from the study file's folder (or the Python path), calls
build(n_features, n_outputs, **kwargs) once per trial, and checks before the first trial that
the model maps a batch (batch, n_features) to (batch, n_outputs).
"""

from torch import nn


def build(n_features: int, n_outputs: int, hidden: int = 64, dropout: float = 0.1) -> nn.Module:
    """A residual MLP block: input (batch, n_features) float32 -> (batch, n_outputs) logits."""
    return ResidualMLP(n_features, n_outputs, hidden, dropout)


class ResidualMLP(nn.Module):
    """Linear -> [LayerNorm -> GELU -> Dropout -> Linear] + skip -> Linear."""

    def __init__(self, n_features: int, n_outputs: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.inp = nn.Linear(n_features, hidden)
        self.block = nn.Sequential(
            nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden)
        )
        self.out = nn.Linear(hidden, n_outputs)

    def forward(self, x):  # (batch, n_features) -> (batch, n_outputs)
        h = self.inp(x)
        return self.out(h + self.block(h))
