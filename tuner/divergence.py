"""The divergence guard: stops a run at the first optimizer step whose loss is NaN, infinite, or
larger than ``factor`` times the initial loss.

A diverged trial ends PRUNED (not FAIL), so the sampler learns where divergence begins; the
:class:`Divergence` record (reason, step, loss) goes into the trial's user attributes.

The guard also keeps the run's **peak loss ratio**: the largest finite loss / initial loss it has
checked (1.0 after the first step; above ``factor`` for a run it stopped as an explosion). A run
that completes with a peak near ``factor`` survived close to the cut-off (its stability margin,
which ``tuner confirm`` records per run).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["Divergence", "DivergenceGuard"]


@dataclass(frozen=True)
class Divergence:
    """Why and where a run diverged.

    Attributes:
        reason: 'nan', 'inf' or 'explosion' (loss > factor x initial loss).
        step: 1-based optimizer step at which the guard fired.
        epoch: 1-based epoch of that step.
        loss: the training loss of that mini-batch (may be nan/inf).
        initial_loss: the loss of the first mini-batch.
        factor: the configured explosion factor.
    """

    reason: str
    step: int
    epoch: int
    loss: float
    initial_loss: float
    factor: float

    def message(self) -> str:
        """One line for people: 'loss nan at step 12 (epoch 1)'."""
        if self.reason == "explosion":
            return (
                f"loss {self.loss:.4g} > {self.factor:g} x initial {self.initial_loss:.4g} "
                f"at step {self.step} (epoch {self.epoch})"
            )
        return f"loss {self.loss} at step {self.step} (epoch {self.epoch})"

    def to_attrs(self) -> dict[str, object]:
        """Plain JSON-safe dict (non-finite losses become strings)."""
        out = asdict(self)
        for key in ("loss", "initial_loss"):
            if not math.isfinite(out[key]):
                out[key] = str(out[key])
        out["message"] = self.message()
        return out


class DivergenceGuard:
    """Checks every optimizer step's training loss.

    Args:
        factor: float > 1; a finite loss above ``factor * initial_loss`` counts as diverged.

    Raises:
        ValueError: factor <= 1.
    """

    def __init__(self, factor: float) -> None:
        if not factor > 1:
            raise ValueError(f"divergence factor must be > 1, got {factor}")
        self.factor = float(factor)
        self.initial_loss: float | None = None
        # largest finite loss / initial_loss checked so far (None before the first finite loss)
        self.peak_ratio: float | None = None

    def check(self, loss: float, step: int, epoch: int) -> Divergence | None:
        """The divergence at this step, or None if the loss is acceptable.

        A finite loss also raises :attr:`peak_ratio` when ``loss / initial_loss`` exceeds it
        (one division per step; nothing when the initial loss is 0).
        """
        if math.isnan(loss):
            reason = "nan"
        elif math.isinf(loss):
            reason = "inf"
        elif self.initial_loss is None:
            self.initial_loss = loss
            self.peak_ratio = 1.0
            return None
        else:
            if self.initial_loss > 0 and loss > self.peak_ratio * self.initial_loss:
                self.peak_ratio = loss / self.initial_loss
            if loss <= self.factor * self.initial_loss:
                return None
            reason = "explosion"
        initial = self.initial_loss if self.initial_loss is not None else float("nan")
        return Divergence(reason, step, epoch, float(loss), float(initial), self.factor)
