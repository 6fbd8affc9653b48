"""Lockstep trials of any ``nn.Module`` with ``torch.func``: the functional engine.

The stacked engine (:class:`~tuner.batched.BatchedTrainer`) writes out the backward pass of one
model family (the MLP without dropout). Any other model (a CNN, a user's module, an MLP with
dropout) is trained here, K trials in lockstep, by ``torch.func``: the K members' parameters are
the rows of one (K, P) tensor (each row the member's ``named_parameters`` flattened in order),
the forward pass is ``vmap`` over the rows of the model run with a row's parameters through
``functional_call``, and one autograd backward pass of the members' summed losses gives each
member the gradient of its own loss.

Everything else is the stacked engine's, unchanged (this trainer is a
:class:`~tuner.batched.BatchedTrainer` with another step and forward pass):

- the members' weight initialization and mini-batch order (the same ``torch.manual_seed(seed)``
  model build and seeded generator as :func:`tuner.engine.train`);
- their learning rates, from real ``torch.optim.lr_scheduler`` objects stepped as the engine
  steps them (identical sequences);
- their optimizers: :class:`~tuner.batched.StackedOptimizer` over the (K, P) rows (torch's fused
  SGD/Adam/AdamW kernels per member, ``torch.optim``'s RMSprop rule);
- divergence checks, epoch ends, reports, pruning; members join and leave at epoch boundaries.

So a member's run equals ``tuner.engine.train``'s at the same seed up to floating-point
rounding (tests/test_functional.py), dropout included: on the CPU every ``nn.Dropout`` of the
model draws each member's mask from the member's own generator, exactly as the one-at-a-time
run draws it (:meth:`FunctionalTrainer._masks`), so a member's masks follow from its seed alone.
Any other random op (``F.dropout`` in a forward method, ``Dropout2d``, dropout on a GPU) draws
per member through ``vmap(..., randomness="different")`` from torch's generator, seeded at every
epoch from the members' seeds and epochs: reproducible, but unlike the one-at-a-time draws and
dependent on the members alongside.

Buffers (BatchNorm's running statistics) are stacked per member too, and updated in place by
the model's forward pass as in eager training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from tuner.batched._optimizer import StackedOptimizer
from tuner.batched._trainer import BatchedTrainer, Member
from tuner.engine import metric_values, resolve_device, steps_per_epoch
from tuner.models import build_model

if TYPE_CHECKING:
    from tuner.config import StudyConfig
    from tuner.datasets import SplitData

__all__ = ["Builder", "FunctionalTrainer", "FunctionalUnsupported", "study_builder"]

Builder = Callable[[int, int], nn.Module]
"""``(n_features, n_outputs) -> nn.Module``: a fresh model taking (B, n_features) float32
inputs and returning (B, n_outputs) outputs (logits, or regression values)."""

# validation/test rows evaluated per forward pass (bounds the activations' memory: K x rows)
EVAL_ROWS = 4096


class FunctionalUnsupported(ValueError):
    """``torch.func`` cannot train this model (its forward pass cannot be vmapped)."""


def study_builder(cfg: StudyConfig) -> Builder:
    """The builder of the study's ``[model]``: :func:`tuner.models.build_model`."""

    def build(n_features: int, n_outputs: int) -> nn.Module:
        return build_model(cfg.model, n_features, n_outputs)

    return build


class _MaskedDropout(nn.Module):
    """``nn.Dropout`` whose mask (already scaled by 1 / (1 - p)) the trainer passes in as the
    buffer ``mask`` at every step (:meth:`FunctionalTrainer._masks`)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.register_buffer("mask", torch.ones(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask if self.training else x


class FunctionalTrainer(BatchedTrainer):
    """Train members (trials) of one study in lockstep with ``torch.func``, one epoch per
    :meth:`run_epoch`; the interface of :class:`~tuner.batched.BatchedTrainer`.

    Args:
        cfg: the validated study (training, objective, divergence sections; ``[model]`` when
            no ``builder`` is given).
        data: the split; moved to the device if it is not there yet.
        device: overrides ``cfg.training.device`` (already resolved).
        builder: ``(n_features, n_outputs) -> nn.Module``, called once per member after
            ``torch.manual_seed(seed)`` (default: the study's ``[model]``).

    Raises:
        FunctionalUnsupported: the model's forward and backward passes cannot be run under
            ``vmap`` (checked once, on two training rows, at construction), or a parameter
            is not float32 or is frozen.
    """

    ENGINE = "functional"

    def __init__(
        self,
        cfg: StudyConfig,
        data: SplitData,
        device: torch.device | None = None,
        *,
        builder: Builder | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = device or resolve_device(cfg.training.device)
        self.data = data if data.X_train.device == self.device else data.to(self.device)
        self.builder = builder or study_builder(cfg)
        self.n_rows = len(self.data.X_train)
        self.batch = cfg.training.batch_size
        self.spe = steps_per_epoch(self.n_rows, self.batch)
        self.total_steps = self.spe * cfg.training.epochs
        self.mode = "max" if cfg.objective.direction == "maximize" else "min"
        with torch.random.fork_rng(self._rng_devices()):  # the caller's RNG stays untouched
            torch.manual_seed(0)
            self.template = self.builder(self.data.n_features, self.data.n_outputs).to(
                self.device
            )
        named = list(self.template.named_parameters())
        bad = [n for n, p in named if p.dtype != torch.float32]
        if bad:
            raise FunctionalUnsupported(f"parameters {bad} are not float32")
        frozen = [n for n, p in named if not p.requires_grad]
        if frozen:  # torch.optim leaves them alone; the stacked rows would all be updated
            raise FunctionalUnsupported(f"parameters {frozen} are frozen (requires_grad False)")
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.buffer_names = [n for n, _ in self.template.named_buffers()]
        self.buffers: dict[str, torch.Tensor] = {
            n: b.detach().new_empty((0, *b.shape)) for n, b in self.template.named_buffers()
        }
        self._new_buffers: dict[str, torch.Tensor] | None = None
        self._new_rng: torch.Tensor | None = None
        self.dropouts = self._exact_dropouts()
        self.running: list[Member] = []
        self.pending: list[Member] = []
        self.flat = torch.zeros(0, sum(self.sizes), device=self.device)
        self.optimizer = StackedOptimizer(self.flat, [])
        # each member's outputs on its own inputs (training), or on inputs shared by all
        self._outputs = vmap(self._member_out, randomness="different")
        self._shared_outputs = vmap(
            self._member_out, in_dims=(0, 0, None), randomness="different"
        )
        self._probe()

    def _rng_devices(self) -> list[torch.device]:
        return [self.device] if self.device.type == "cuda" else []

    def _exact_dropouts(self) -> list[tuple[str, float, tuple[int, ...]]]:
        """Replace the template's ``nn.Dropout`` modules by :class:`_MaskedDropout`, whose
        masks each member draws as :func:`tuner.engine.train` does (see :meth:`_masks`).

        Returns:
            (module name, p, input shape past the batch dimension) per replaced module, in the
            order the forward pass calls them. Empty (every random op left to ``vmap``'s
            per-member draws) off the CPU (where torch's dropout kernel draws otherwise), or
            when a dropout is not called exactly once per forward pass on (rows, ...) inputs.
        """
        if self.device.type != "cpu":
            return []
        found = {name: mod for name, mod in self.template.named_modules()
                 if type(mod) is nn.Dropout and mod.p > 0}
        if not found:
            return []
        calls: list[tuple[str, tuple[int, ...]]] = []

        def record(name: str) -> Callable[..., None]:
            return lambda _mod, args: calls.append((name, tuple(args[0].shape)))

        hooks = [mod.register_forward_pre_hook(record(name)) for name, mod in found.items()]
        try:
            with torch.random.fork_rng([]), torch.no_grad():
                self.template.train()
                self.template(self.data.X_train[:2])
        except Exception:  # noqa: BLE001 - the probe says what fails, in one line
            return []
        finally:
            for hook in hooks:
                hook.remove()
        if sorted(n for n, _ in calls) != sorted(found) or any(s[0] != 2 for _, s in calls):
            return []
        for name, _ in calls:
            parent, _, child = name.rpartition(".")
            setattr(self.template.get_submodule(parent), child, _MaskedDropout(found[name].p))
        return [(name, float(found[name].p), shape[1:]) for name, shape in calls]

    def _masks(self, rows: int) -> dict[str, torch.Tensor]:
        """Every running member's dropout masks for a step of ``rows`` rows: (K, rows, ...)
        per replaced module, keyed ``<module>.mask``.

        Member by member, module by module in call order, from the member's own generator
        (torch's generator state right after its model was built, as in
        :func:`tuner.engine.train`): ``empty_like(input).bernoulli_(1 - p).div_(1 - p)``,
        the noise torch's CPU dropout kernel draws and multiplies the input by. So a member's
        masks are the one-at-a-time run's, whatever members run beside it.
        """
        per_name: dict[str, list[torch.Tensor]] = {name: [] for name, _, _ in self.dropouts}
        for m in self.running:
            gen = m.dropout_gen  # type: ignore[attr-defined]
            for name, p, rest in self.dropouts:
                noise = torch.empty(rows, *rest).bernoulli_(1 - p, generator=gen)
                per_name[name].append(noise.div_(1 - p))
        return {f"{name}.mask": torch.stack(v) for name, v in per_name.items()}

    def _probe(self) -> None:
        """One lockstep step and forward pass of the template on two rows, whose results are
        thrown away: a model ``torch.func`` cannot transform is refused here, up front."""
        row = torch.cat([p.detach().reshape(-1) for p in self.template.parameters()])
        buffers = {n: b.detach().clone().unsqueeze(0) for n, b in self.template.named_buffers()
                   if n in self.buffer_names}
        x, y = self.data.X_train[:2].unsqueeze(0), self.data.y_train[:2].unsqueeze(0)
        masks = {f"{name}.mask": torch.ones(1, 2, *rest) for name, _, rest in self.dropouts}
        try:
            with torch.random.fork_rng(self._rng_devices()):
                self.template.train()
                flat = row.unsqueeze(0).requires_grad_(True)
                out = self._outputs(flat, {**buffers, **masks}, x)
                self._losses(out, y).sum().backward()
                self.template.eval()
                with torch.no_grad():
                    self._shared_outputs(flat, buffers, x[0])
        except Exception as exc:  # any failure of a user's module under vmap/grad
            text = " ".join(str(exc).split())
            raise FunctionalUnsupported(
                f"torch.func cannot train the model ({type(exc).__name__}: {text[:160]})"
            ) from exc
        finally:
            self.template.train()

    # -----------------------------------------------------------------------------------------
    # One member's model, run through functional_call (vmapped over the members' rows).

    def _params_of(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = row.split(self.sizes)
        return {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes, strict=True)}

    def _member_out(
        self, row: torch.Tensor, buffers: dict[str, torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        return functional_call(self.template, (self._params_of(row), buffers), (x,))

    # -----------------------------------------------------------------------------------------
    # BatchedTrainer's hooks.

    def _build(self) -> nn.Module:
        return self.builder(self.data.n_features, self.data.n_outputs)

    def _row_of(self, model: nn.Module) -> torch.Tensor:
        named = list(model.named_parameters())
        layout = [(n, tuple(p.shape)) for n, p in named]
        expected = list(zip(self.names, self.shapes, strict=True))
        if layout != expected:
            raise ValueError(f"the builder made parameters {layout}, not {expected}")
        self._new_buffers = {n: b.detach().to(self.device) for n, b in model.named_buffers()}
        self._new_rng = torch.get_rng_state()  # what the member's dropout masks draw from
        return torch.cat([p.detach().reshape(-1) for _, p in named])

    def add(
        self,
        params: Any,
        seed: int,
        on_epoch: Callable[[Any], bool] | None = None,
        tag: Any = None,
    ) -> Member:
        """Queue a member; it starts at the next :meth:`run_epoch`."""
        member = super().add(params, seed, on_epoch, tag)
        member.init_buffers = self._new_buffers  # type: ignore[attr-defined]
        if self.dropouts:
            member.dropout_gen = torch.Generator()  # type: ignore[attr-defined]
            member.dropout_gen.set_state(self._new_rng)  # type: ignore[attr-defined]
        self._new_buffers = self._new_rng = None
        return member

    def _reorder_state(self, index: torch.Tensor, pending: list[Member]) -> None:
        for name in self.buffer_names:
            new = [m.init_buffers[name].unsqueeze(0) for m in pending]  # type: ignore[attr-defined]
            self.buffers[name] = torch.cat([self.buffers[name], *new])[index]
        for m in pending:
            m.init_buffers = None  # type: ignore[attr-defined]

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One forward and backward pass of every member on its mini-batch.

        Args:
            x: inputs (K, B, n_features); y: targets (K, B) class indices or (K, B, n_outputs).

        Returns:
            Each member's mean loss (K,); member k's gradient is row k of ``self.flat.grad``.
            One backward pass of the members' summed losses gives every member the gradient
            of its own loss (members never mix): plain autograd through the vmapped forward
            pass, which measured faster here than ``vmap(grad(...))``.
        """
        flat = self.flat.detach().requires_grad_(True)
        buffers = {**self.buffers, **self._masks(x.shape[1])} if self.dropouts else self.buffers
        losses = self._losses(self._outputs(flat, buffers, x), y)
        (self.flat.grad,) = torch.autograd.grad(losses.sum(), flat)
        return losses.detach()

    def forward(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Outputs (K, N, n_outputs) of the K members (eval mode) on inputs x (N, n_features)
        shared by all of them."""
        self.template.eval()
        try:
            with torch.no_grad():
                chunks = [
                    self._shared_outputs(flat, self.buffers, x[i : i + EVAL_ROWS])
                    for i in range(0, len(x), EVAL_ROWS)
                ]
        finally:
            self.template.train()
        return torch.cat(chunks, dim=1)

    def evaluate(self, X: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
        """Per-member (losses, metrics) on a split, as :func:`tuner.engine.evaluate`."""
        k = self.flat.shape[0]
        out = self.forward(self.flat.detach(), X)
        loss_list = self._losses(out, y.expand(k, *y.shape)).tolist()
        metric, scale = self.cfg.objective.metric, self.data.target_scale
        return loss_list, metric_values(metric, out, y, loss_list, scale)

    def run_epoch(self) -> list[Member]:
        """Run one epoch of every member (admitting pending ones first); the members whose run
        ended in it. Random layers draw from torch's generator seeded from the members' seeds
        and epochs (the caller's generator state is restored afterwards)."""
        self._layout()
        key = repr([(m.seed, m.epoch) for m in self.running]).encode()
        seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
        with torch.random.fork_rng(self._rng_devices()):
            torch.manual_seed(seed)
            return super().run_epoch()
