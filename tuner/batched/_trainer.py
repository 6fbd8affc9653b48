"""Batched trials: K configurations of one model trained in lockstep as one stacked model.

The models tuner searches over are small, so one trial at a time spends most of its time in
per-step overhead (Python, dispatch, a dozen tiny kernels), not arithmetic. Here K trials of
the same architecture share every step: their weights are rows of one ``(K, P)`` tensor, each
layer is one batched matrix product (``torch.baddbmm``) over the K members. The backward pass
is written out (the chain rule through the layers, :func:`_backward`) rather than recorded by
autograd: for these models autograd's bookkeeping, and the concatenation of the per-layer
gradients back into one (K, P) tensor, cost more than the arithmetic. It uses the same
derivative kernels as autograd (``aten.threshold_backward``, ``gelu_backward``, ... for the
activations) and writes every layer's gradient straight into its slice of the (K, P) gradient;
each member's gradient is that of its own mean loss (members never mix).

Each member keeps what makes it a separate trial:

- its own weight initialization and mini-batch order: the same ``torch.manual_seed(seed)`` model
  build and the same seeded generator as :func:`tuner.engine.train`, so a member sees exactly
  the rows the one-at-a-time run sees, in the same order;
- its own learning rate, from a real ``torch.optim.lr_scheduler`` (built from the trial's
  scheduler spec on a one-parameter ``torch.optim`` optimizer of the member's class) stepped
  exactly as the engine steps it: the learning-rate sequence is identical;
- its own optimizer state and hyperparameters: :class:`StackedOptimizer` applies the update
  rules of ``torch.optim.SGD`` (momentum, Nesterov, weight decay), ``Adam``, ``AdamW`` and
  ``RMSprop`` as written in torch's reference implementation, with per-member coefficients;
- its own divergence guard, epoch counter, reports and stop: a member that diverges, is pruned
  or completes leaves the batch at the end of that epoch, and a new member can take its place
  (members join at epoch boundaries, where every member's mini-batches line up).

Results agree with the one-at-a-time engine up to floating-point rounding (a batched matrix
product and a fused loop add in a different order), so losses match within a small tolerance
and the learning-rate sequences match exactly (tests/test_batched.py checks both).

Divergence is checked on every step's loss, read back once per epoch (one device sync per
epoch, not per step): a diverged member's result ends at the offending step, as in the engine;
its row keeps computing (harmlessly: rows never mix) until the epoch ends.

Supported: the ``mlp`` model without dropout (:func:`batch_unsupported_reason`). Other models
train in lockstep with ``torch.func`` (:class:`~tuner.batched.FunctionalTrainer`, a subclass
with another step and forward pass) or one at a time: :func:`tuner.batched.autograd_reason`.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from tuner.batched._activations import ACTIVATION_GRADS
from tuner.batched._optimizer import MemberHyper, StackedOptimizer
from tuner.divergence import DivergenceGuard
from tuner.engine import (
    EpochReport,
    TrainResult,
    end_epoch,
    metric_values,
    resolve_device,
    step_scheduler,
    steps_per_epoch,
)
from tuner.models import build_model
from tuner.schedules import build_scheduler
from tuner.space import TrialParams, build_optimizer

if TYPE_CHECKING:
    from tuner.config import StudyConfig
    from tuner.datasets import SplitData

__all__ = [
    "DEFAULT_BATCH_TRIALS",
    "batch_unsupported_reason",
    "Member",
    "BatchedTrainer",
    "train_batched",
]

# trials trained in lockstep by default. Not more: trials in lockstep are asked before the
# others' results are known, so the sampler learns later (the trade-off against throughput is
# measured by bench/bench_quality.py: BENCHMARKS.md)
DEFAULT_BATCH_TRIALS = 4
# the most bytes the trainer gathers at once to give every member its epoch's shuffled rows; a
# larger split is gathered mini-batch by mini-batch instead
EPOCH_GATHER_BYTES = 256 * 2**20


def batch_unsupported_reason(cfg: StudyConfig) -> str | None:
    """Why the study's trials cannot be batched, or None if they can."""
    if cfg.model.factory is not None:
        return (f'a factory model ("{cfg.model.factory}") has no batched form (only "mlp" '
                f"has)")
    if cfg.model.name != "mlp":
        return f'model "{cfg.model.name}" has no batched form (only "mlp" has)'
    if cfg.model.dropout > 0:
        return "dropout > 0, which the stacked engine does not implement"
    if cfg.model.activation not in ACTIVATION_GRADS:
        return f'activation "{cfg.model.activation}" has no batched derivative'
    return None


# ---------------------------------------------------------------------------------------------
# The layers' batched products. A product with a narrow result (an output layer of 2 or 10
# classes) runs faster on the CPU as the transposed product, C^T = B^T A^T (the matrix-multiply
# kernels are tuned for wide results). Same result, another order of the same sums.

NARROW = 16  # result columns below which the transposed product is used


def _affine(b: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """h @ w + b per member: h (K, B, in), w (K, in, out), b (K, 1, out) -> (K, B, out)."""
    if w.shape[-1] < NARROW < h.shape[-2]:
        return torch.baddbmm(b.mT, w.mT, h.mT).mT.contiguous()  # (w^T h^T + b^T)^T
    return torch.baddbmm(b, h, w)


def _weight_grad(h: torch.Tensor, g: torch.Tensor, out: torch.Tensor) -> None:
    """out = h^T @ g per member: h (K, B, in), g (K, B, out) -> out (K, in, out), in place."""
    if g.shape[-1] < NARROW < h.shape[-1]:
        out.copy_(torch.bmm(g.mT, h).mT)  # (g^T h)^T
    else:
        torch.bmm(h.mT, g, out=out)


# ---------------------------------------------------------------------------------------------
# Members and the lockstep trainer.


def _holds_lr_only(_optimizer: torch.optim.Optimizer, closure: Any = None) -> None:
    """The ``step`` of a member's LR-holding optimizer: the stacked optimizer does the update."""


@dataclass(eq=False)
class Member:
    """One trial's run inside a batch.

    Attributes:
        params: the trial's learning rate, optimizer and schedule.
        seed: seeds the member's weight initialization and mini-batch order (as in the engine).
        on_epoch: called after each of the member's epochs; True stops it (status 'pruned').
        tag: the caller's handle (the batched runner keeps the Optuna trial here).
        result: the member's :class:`~tuner.engine.TrainResult`, final once it has ended.
            ``seconds`` is its share of the batch's wall time (each epoch's time divided by
            the members that ran it).
        epoch: epochs the member has run.
        ended: True once the member is complete, pruned or diverged.
    """

    params: TrialParams
    seed: int
    on_epoch: Callable[[EpochReport], bool] | None = None
    tag: Any = None
    result: TrainResult = field(default_factory=lambda: TrainResult("complete", 0, 0))
    epoch: int = 0
    ended: bool = False
    # run state, set by BatchedTrainer.add
    hyper: MemberHyper = field(init=False, repr=False)
    optimizer: torch.optim.Optimizer = field(init=False, repr=False)  # holds the LR only
    scheduler: Any = field(init=False, repr=False)
    per_step: bool = field(init=False, repr=False)
    guard: DivergenceGuard = field(init=False, repr=False)
    generator: torch.Generator = field(init=False, repr=False)
    init_row: torch.Tensor | None = field(init=False, repr=False)

    @property
    def lr(self) -> float:
        """The learning rate of the member's next optimizer step."""
        return float(self.optimizer.param_groups[0]["lr"])


class BatchedTrainer:
    """Train members (trials) of one study in lockstep, one epoch per :meth:`run_epoch`.

    Members are added with :meth:`add` and join at the start of the next epoch; each runs
    ``cfg.training.epochs`` epochs of its own unless it diverges or its ``on_epoch`` stops it.

    Args:
        cfg: the validated study (model, training, objective, divergence sections are used);
            its model must be batchable (:func:`batch_unsupported_reason`).
        data: the split; moved to the device if it is not there yet.
        device: overrides ``cfg.training.device`` (already resolved).

    Raises:
        ValueError: the model cannot be batched.
    """

    ENGINE = "stacked"
    """The name a trial's result records (``TrainResult.engine``, the export's loop.engine)."""

    def __init__(self, cfg: StudyConfig, data: SplitData, device: torch.device | None = None):
        reason = batch_unsupported_reason(cfg)
        if reason is not None:
            raise ValueError(f"cannot batch trials: {reason}")
        self.cfg = cfg
        self.device = device or resolve_device(cfg.training.device)
        self.data = data if data.X_train.device == self.device else data.to(self.device)
        self.widths = [data.n_features, *cfg.model.hidden, data.n_outputs]
        self.layers = list(zip(self.widths[:-1], self.widths[1:], strict=True))
        self.sizes = [n for a, b in self.layers for n in (a * b, b)]  # W (in, out), then bias
        self.activation = ACTIVATION_GRADS[cfg.model.activation]
        self.n_rows = len(self.data.X_train)
        self.batch = cfg.training.batch_size
        self.spe = steps_per_epoch(self.n_rows, self.batch)
        self.total_steps = self.spe * cfg.training.epochs
        self.mode = "max" if cfg.objective.direction == "maximize" else "min"
        self.running: list[Member] = []  # the members in the stack, row i = running[i]
        self.pending: list[Member] = []  # added, joining at the next epoch
        self.flat = torch.zeros(0, sum(self.sizes), device=self.device)
        self.optimizer = StackedOptimizer(self.flat, [])

    @property
    def members(self) -> list[Member]:
        """Members that have not ended (running and pending)."""
        return [m for m in self.running if not m.ended] + self.pending

    def add(
        self,
        params: TrialParams,
        seed: int,
        on_epoch: Callable[[EpochReport], bool] | None = None,
        tag: Any = None,
    ) -> Member:
        """Queue a member; it starts at the next :meth:`run_epoch`."""
        m = Member(params, seed, on_epoch, tag)
        m.result.engine = self.ENGINE
        # exactly what tuner.engine.train does before its first step, in the same order
        torch.manual_seed(seed)
        m.generator = torch.Generator().manual_seed(seed)
        model = self._build()
        m.init_row = self._row_of(model).to(self.device)
        m.optimizer = build_optimizer([torch.zeros(1, requires_grad=True)], params.optimizer_spec())
        m.hyper = MemberHyper.from_optimizer(m.optimizer)
        spec = params.scheduler_spec(self.total_steps, self.spe, self.mode)
        # the optimizer only holds the learning rate: its step updates nothing (and so skips
        # torch.optim's step bookkeeping, which imports torch._dynamo on first use)
        m.optimizer.step = types.MethodType(_holds_lr_only, m.optimizer)  # type: ignore[method-assign]
        m.scheduler = build_scheduler(m.optimizer, spec)
        m.optimizer.step()  # tells the scheduler its optimizer stepped
        m.per_step = spec["interval"] == "step"
        m.guard = DivergenceGuard(self.cfg.divergence.factor)
        self.pending.append(m)
        return m

    def _build(self) -> nn.Module:
        """A fresh model of the study (after the member's ``torch.manual_seed``)."""
        return build_model(self.cfg.model, self.data.n_features, self.data.n_outputs)

    def _reorder_state(self, index: torch.Tensor, pending: list[Member]) -> None:
        """Rearrange per-row state beyond the parameters as :meth:`_layout` rearranges the rows
        (row i of the new stack is row ``index[i]`` of the old rows followed by ``pending``'s).
        None here; subclasses with such state override it."""

    def _row_of(self, model: nn.Module) -> torch.Tensor:
        linears = [mod for mod in model.modules() if isinstance(mod, nn.Linear)]
        shapes = [(lin.in_features, lin.out_features) for lin in linears]
        if shapes != self.layers:
            raise ValueError(f"model layers {shapes} do not match the batched layout {self.layers}")
        parts = []
        for lin in linears:
            parts += [lin.weight.detach().t().reshape(-1), lin.bias.detach()]
        return torch.cat(parts)

    def _layout(self) -> None:
        """Drop ended members, admit pending ones, order rows by update rule."""
        keep = [m for m in self.running if not m.ended]
        if len(keep) == len(self.running) and not self.pending:
            return
        rows = {id(m): i for i, m in enumerate(self.running)}
        members = sorted(keep + self.pending, key=lambda m: m.hyper.rule)  # stable
        new_rows = [m.init_row for m in self.pending]
        source = torch.cat([self.flat.detach(), *(r.view(1, -1) for r in new_rows)])
        n_old = len(self.running)
        pending_index = {id(m): n_old + j for j, m in enumerate(self.pending)}
        index = [rows.get(id(m), pending_index.get(id(m))) for m in members]
        index_t = torch.tensor(index, dtype=torch.long, device=self.device)
        flat = source[index_t]
        self._reorder_state(index_t, self.pending)
        flat.grad = torch.zeros_like(flat)  # filled by _train_step, read by the optimizer
        old_rows = [rows.get(id(m)) for m in members]
        self.optimizer = self.optimizer.select(flat, old_rows, [m.hyper for m in members])
        self.flat = flat
        for m in self.pending:
            m.init_row = None
        self.running, self.pending = members, []

    def forward(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Outputs (K, B, n_outputs) of the K members for inputs x of shape (K, B, n_features)."""
        k = flat.shape[0]
        parts = flat.split(self.sizes, dim=1)
        h = x
        for i, (fan_in, fan_out) in enumerate(self.layers):
            w = parts[2 * i].view(k, fan_in, fan_out)
            h = _affine(parts[2 * i + 1].view(k, 1, fan_out), h, w)
            if i < len(self.layers) - 1:
                h = self.activation.forward(h)
        return h

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One forward and backward pass of every member on its mini-batch.

        Args:
            x: inputs (K, B, n_features); y: targets (K, B) class indices or (K, B, n_outputs).

        Returns:
            Each member's mean loss over its B rows, (K,). Member k's gradient of that loss
            is written into row k of ``self.flat.grad``.
        """
        k, rows = self.flat.shape[0], x.shape[1]
        parts = self.flat.split(self.sizes, dim=1)
        grads = self.flat.grad.split(self.sizes, dim=1)  # type: ignore[union-attr]
        last = len(self.layers) - 1
        inputs, pre = [x], []  # each layer's input; each hidden layer's pre-activation
        h = x
        for i, (fan_in, fan_out) in enumerate(self.layers):
            w = parts[2 * i].view(k, fan_in, fan_out)
            h = _affine(parts[2 * i + 1].view(k, 1, fan_out), h, w)
            if i < last:
                pre.append(h)
                h = self.activation.forward(h)
                inputs.append(h)
        losses, grad = self._loss_and_grad(h, y, rows)
        for i in range(last, -1, -1):
            fan_in, fan_out = self.layers[i]
            _weight_grad(inputs[i], grad, out=grads[2 * i].view(k, fan_in, fan_out))
            torch.sum(grad, dim=1, out=grads[2 * i + 1])
            if i > 0:
                grad = torch.bmm(grad, parts[2 * i].view(k, fan_in, fan_out).transpose(1, 2))
                grad = self.activation.backward(grad, pre[i - 1], inputs[i])
        return losses

    def _loss_and_grad(
        self, out: torch.Tensor, y: torch.Tensor, rows: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member mean loss (K,) of outputs (K, B, C), and its gradient (K, B, C).

        Cross-entropy: loss = logsumexp(out) - out[y] per row, gradient (softmax(out) -
        onehot(y)) / B. MSE: loss = mean((out - y)^2), gradient 2 (out - y) / (B C). The same
        values as ``F.cross_entropy`` / ``F.mse_loss`` with reduction "mean" per member.
        """
        if self.data.task == "classification":
            target = y.unsqueeze(-1)
            shifted = out - out.amax(dim=-1, keepdim=True)
            exp = shifted.exp()
            total = exp.sum(dim=-1, keepdim=True)
            losses = (total.log() - shifted.gather(-1, target)).mean(dim=(1, 2))
            grad = exp.div_(total)
            grad.scatter_add_(-1, target, torch.full_like(grad[..., :1], -1.0))
            return losses, grad.mul_(1.0 / rows)
        diff = out - y
        losses = diff.square().mean(dim=(1, 2))
        return losses, diff.mul_(2.0 / (rows * out.shape[-1]))

    def _losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-member mean loss (K,) of outputs (K, B, C) against targets (K, B[, 1])."""
        k = out.shape[0]
        if self.data.task == "classification":
            per_row = F.cross_entropy(
                out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none"
            )
            return per_row.view(k, -1).mean(dim=1)
        return F.mse_loss(out, y, reduction="none").mean(dim=(1, 2))

    @torch.inference_mode()
    def evaluate(self, X: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
        """Per-member (losses, metrics) on a split, as :func:`tuner.engine.evaluate` defines
        them (accuracy, loss, or RMSE in target units)."""
        k = self.flat.shape[0]
        out = self.forward(self.flat.detach(), X.expand(k, -1, -1))
        losses = self._losses(out, y.expand(k, *y.shape))
        loss_list = losses.tolist()
        metric, scale = self.cfg.objective.metric, self.data.target_scale
        return loss_list, metric_values(metric, out, y, loss_list, scale)

    def run_epoch(self) -> list[Member]:
        """Run one epoch of every member (admitting pending ones first).

        Returns:
            The members whose run ended in this epoch (complete, pruned or diverged); their
            ``result`` is final. Empty if there was no member to run.
        """
        self._layout()
        members = self.running
        if not members:
            return []
        started = time.perf_counter()
        k, batch, data = len(members), self.batch, self.data
        orders = torch.stack(
            [torch.randperm(self.n_rows, generator=m.generator) for m in members]
        ).to(self.device)
        # the learning rates of the whole epoch: each member's scheduler stepped as the engine
        # steps it (per step; plateau only at the epoch's end, on the validation metric)
        lr_table = []
        for _ in range(self.spe):
            lrs = [m.lr for m in members]
            lr_table.append(lrs)
            for m, lr in zip(members, lrs, strict=True):
                m.result.lrs.append(lr)
                if m.per_step:
                    step_scheduler(m.scheduler)
        self.optimizer.prepare(lr_table)
        # each member's shuffled rows, gathered once per epoch when that fits in memory; each
        # mini-batch is then a slice (a view) of them
        gather_once = k * self.n_rows * data.X_train[0].numel() * 4 <= EPOCH_GATHER_BYTES
        if gather_once:
            X_epoch, y_epoch = data.X_train[orders], data.y_train[orders]
        step_losses = []
        for b in range(self.spe):
            rows = slice(b * batch, (b + 1) * batch)
            if gather_once:
                x, y = X_epoch[:, rows], y_epoch[:, rows]
            else:
                x, y = data.X_train[orders[:, rows]], data.y_train[orders[:, rows]]
            step_losses.append(self._train_step(x, y))
            self.optimizer.step()
        values = torch.stack(step_losses).t().tolist()  # (K, steps): one read-back per epoch
        ended = self._end_epoch(members, values, lr_table[0])
        share = (time.perf_counter() - started) / k
        for m in members:
            m.result.seconds += share
        return ended

    def _end_epoch(
        self, members: list[Member], values: list[list[float]], first_lrs: list[float]
    ) -> list[Member]:
        """Each member's :func:`tuner.engine.end_epoch` (the engine's own epoch end), then the
        test split of the members that completed."""
        val_losses, val_metrics = self.evaluate(self.data.X_val, self.data.y_val)
        rows_per_step = [min(self.batch, self.n_rows - i * self.batch) for i in range(self.spe)]
        ended: list[Member] = []
        completing: list[int] = []
        for k, m in enumerate(members):
            m.epoch += 1
            m.result.steps += self.spe
            stop = end_epoch(
                m.result, m.guard, m.epoch, values[k],
                unchecked=True,
                rows_per_step=rows_per_step,
                validate=lambda k=k: (val_losses[k], val_metrics[k]),
                first_lr=first_lrs[k],
                scheduler=None if m.per_step else m.scheduler,
                on_epoch=m.on_epoch,
            )
            if stop is None and m.epoch < self.cfg.training.epochs:
                continue
            if stop is None:
                completing.append(k)
            m.ended = True
            ended.append(m)
        if completing:
            test_losses, test_metrics = self.evaluate(self.data.X_test, self.data.y_test)
            for k in completing:
                members[k].result.test_loss = test_losses[k]
                members[k].result.test_metric = test_metrics[k]
        return ended


def train_batched(
    cfg: StudyConfig,
    data: SplitData,
    runs: Sequence[tuple[TrialParams, int]],
    on_epoch: Sequence[Callable[[EpochReport], bool] | None] | None = None,
    *,
    device: torch.device | None = None,
) -> list[TrainResult]:
    """Train several configurations at once, in lockstep; the batched :func:`~tuner.engine.train`.

    Args:
        cfg: the validated study (its model must be batchable).
        data: the split.
        runs: (params, seed) per member; member k gets the result the engine gives
            ``train(cfg, data, params, seed)``, up to floating-point rounding.
        on_epoch: one callback (or None) per run, as the engine's ``on_epoch``.
        device: overrides ``cfg.training.device``.

    Returns:
        One :class:`~tuner.engine.TrainResult` per run, in the order of ``runs``.
    """
    trainer = BatchedTrainer(cfg, data, device)
    callbacks = list(on_epoch) if on_epoch is not None else [None] * len(runs)
    members = [
        trainer.add(p, seed, cb) for (p, seed), cb in zip(runs, callbacks, strict=True)
    ]
    while trainer.members:
        trainer.run_epoch()
    return [m.result for m in members]
