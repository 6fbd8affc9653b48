"""The stacked optimizer: ``torch.optim``'s update rules over the rows of a (K, P) parameter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tuner import _private
from tuner.space import OPTIMIZER_BY_CLASS

__all__ = ["MemberHyper", "StackedOptimizer"]


@dataclass(frozen=True)
class MemberHyper:
    """One member's optimizer: its ``torch.optim`` class name and hyperparameters.

    Read from a real optimizer's ``param_groups[0]`` (:meth:`from_optimizer`), so torch's own
    defaults apply (e.g. AdamW's weight decay 0.01, RMSprop's alpha 0.99).
    """

    cls: str
    weight_decay: float = 0.0
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    alpha: float = 0.99

    @property
    def rule(self) -> str:
        """The update rule's family: members of one family are updated together, with one set
        of kernels per step (SGD with and without Nesterov; Adam and AdamW)."""
        return OPTIMIZER_BY_CLASS[self.cls].update_rule

    @classmethod
    def from_optimizer(cls, optimizer: torch.optim.Optimizer) -> MemberHyper:
        """The hyperparameters of a one-group ``SGD``/``Adam``/``AdamW``/``RMSprop``.

        Raises:
            ValueError: a class or option the stacked update does not implement (amsgrad,
                centered RMSprop, RMSprop momentum, SGD dampening, maximize).
        """
        name = type(optimizer).__name__
        g = optimizer.param_groups[0]
        unsupported = [
            key
            for key, bad in (
                ("maximize", g.get("maximize", False)),
                ("amsgrad", g.get("amsgrad", False)),
                ("centered", g.get("centered", False)),
                ("dampening", g.get("dampening", 0) != 0),
                ("momentum", name == "RMSprop" and g.get("momentum", 0) != 0),
            )
            if bad
        ]
        if name not in OPTIMIZER_BY_CLASS or unsupported:
            raise ValueError(
                f"batched trials support {', '.join(OPTIMIZER_BY_CLASS)} with their default "
                f"options; got {name}{' with ' + ', '.join(unsupported) if unsupported else ''}"
            )
        return cls(
            cls=name,
            weight_decay=float(g.get("weight_decay", 0.0)),
            momentum=float(g.get("momentum", 0.0)),
            nesterov=bool(g.get("nesterov", False)),
            betas=tuple(float(b) for b in g.get("betas", (0.9, 0.999))),  # type: ignore[arg-type]
            eps=float(g.get("eps", 1e-8)),
            alpha=float(g.get("alpha", 0.99)),
        )


class StackedOptimizer:
    """``torch.optim``'s update rules applied to K members stacked as rows of one parameter.

    Args:
        param: a leaf tensor of shape (K, P) (member k's parameters are row k); its ``.grad``
            (same shape) is read by :meth:`step`.
        hypers: one :class:`MemberHyper` per row. Rows with the same rule should be
            contiguous (each contiguous run is updated with one set of kernels).

        fused: update SGD, Adam and AdamW members with torch's fused kernel, one call per member
            (``torch.ops.aten._fused_adam_`` and co.: the kernel ``torch.optim.<cls>(...,
            fused=True)`` runs, with the same arguments, so the update is exactly that of the
            fused ``torch.optim`` optimizer). None (default): where this torch build has the
            kernels and the device is a CPU or CUDA. RMSprop has no fused kernel.

    Without the fused kernels, the update of row k equals that of ``torch.optim.<cls>`` with
    ``hypers[k]`` (the single-tensor reference implementation, ``foreach=False``), up to
    floating-point rounding: the same operations in the same order, with per-member coefficients
    as (n, 1) tensors. State per member: the step count (Adam, AdamW, RMSprop) and the moment
    buffers.
    """

    def __init__(
        self, param: torch.Tensor, hypers: Sequence[MemberHyper], fused: bool | None = None
    ) -> None:
        if param.dim() != 2 or param.shape[0] != len(hypers):
            raise ValueError(
                f"param must be (K, P) with K = {len(hypers)} members, got {tuple(param.shape)}"
            )
        self.param = param
        self.hypers = list(hypers)
        self.steps = [0] * len(hypers)
        self.state: dict[str, torch.Tensor] = {}  # buffer name -> (K, P), rows of unused: 0
        if fused is None:
            fused = _fused_kernels_work(param.device)
        self.fused = fused
        self._step_t: torch.Tensor | None = None  # step counts on the device, for fused Adam
        self._lrs: list[list[float]] = []  # the planned steps' learning rates, per member
        self._segments = self._split_segments()
        # per segment: (steps, n, coefficients) on the device, or for a one-member segment the
        # host rows (steps of [coefficients]): its kernels then take Python floats
        self._plan: list[torch.Tensor | list[list[float]] | None] = []
        self._planned = self._taken = 0

    def _split_segments(self) -> list[_Segment]:
        segments: list[_Segment] = []
        start = 0
        for k in range(1, len(self.hypers) + 1):
            if k == len(self.hypers) or self.hypers[k].rule != self.hypers[start].rule:
                seg = _Segment(start, k, self.hypers[start:k], self.param.device)
                seg.fused = self.fused and all(OPTIMIZER_BY_CLASS[h.cls].fused for h in seg.hypers)
                segments.append(seg)
                start = k
        return segments

    def _buffer(self, name: str) -> torch.Tensor:
        if name not in self.state:
            self.state[name] = torch.zeros_like(self.param, memory_format=torch.contiguous_format)
        return self.state[name]

    def prepare(self, lr_table: Sequence[Sequence[float]]) -> None:
        """Plan the next ``len(lr_table)`` steps; row t holds every member's LR at step t.

        The per-member coefficients of those steps (learning rates, Adam's bias corrections)
        are computed on the host exactly as torch.optim computes them (in double precision)
        and moved to the device in one copy per segment, so the steps themselves launch no
        host-to-device copy (on CUDA such a copy would wait for the queue at every step).
        """
        self._plan = []
        self._lrs = [[float(lr) for lr in lrs] for lrs in lr_table]
        for seg in self._segments:
            if seg.fused:  # the fused kernels take each member's LR as a float
                self._plan.append(None)
                continue
            rows = []
            for t, lrs in enumerate(lr_table):
                row = []
                for i, h in enumerate(seg.hypers):
                    lr = float(lrs[seg.start + i])
                    if seg.rule == "Adam":
                        step = self.steps[seg.start + i] + t + 1
                        beta1, beta2 = h.betas
                        step_size = lr / (1 - beta1**step)
                        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
                        decay = 1 - lr * h.weight_decay if h.cls == "AdamW" else 1.0
                        row.append([-step_size, bias_correction2_sqrt, decay])
                    else:
                        row.append([-lr])
                rows.append(row)
            if seg.stop - seg.start == 1:
                self._plan.append([r[0] for r in rows])
                continue
            coef = torch.tensor(rows, dtype=self.param.dtype)
            if self.param.device.type == "cuda":
                coef = coef.pin_memory()  # so that the copy below is truly asynchronous
            self._plan.append(coef.to(self.param.device, non_blocking=True))
        self._planned, self._taken = len(lr_table), 0

    @torch.no_grad()
    def step(self, lrs: Sequence[float] | None = None) -> None:
        """One optimizer step of every member: member k with learning rate ``lrs[k]``, or,
        without ``lrs``, the next step planned by :meth:`prepare`.

        Raises:
            RuntimeError: no ``lrs`` and no planned step left, or ``param.grad`` is not set.
        """
        if self.param.grad is None:
            raise RuntimeError("StackedOptimizer.step: param.grad is not set")
        if lrs is not None:
            self.prepare([lrs])
        if self._taken >= self._planned:
            raise RuntimeError("no planned step left: call prepare() or pass lrs")
        t = self._taken
        self._taken += 1
        grad = self.param.grad
        p_all = self.param.detach()
        for seg, coef in zip(self._segments, self._plan, strict=True):
            for k in range(seg.start, seg.stop):
                self.steps[k] += 1
            if coef is None:
                self._fused_step(seg, p_all, grad, self._lrs[t])
                continue
            rows = slice(seg.start, seg.stop)
            p, g = p_all[rows], grad[rows]
            # per member (n, 1) columns, or floats for a one-member segment
            c = coef[t]
            cols = [c[:, i : i + 1] for i in range(c.shape[1])] if torch.is_tensor(c) else c
            if seg.rule == "SGD":
                self._sgd(seg, p, g, neg_lr=cols[0])
            elif seg.rule == "Adam":
                self._adam(seg, p, g, neg_step_size=cols[0], bc2_sqrt=cols[1], decay=cols[2])
            else:
                self._rmsprop(seg, p, g, neg_lr=cols[0])

    def _fused_step(
        self, seg: _Segment, p: torch.Tensor, g: torch.Tensor, lrs: Sequence[float]
    ) -> None:
        # what torch.optim.SGD/Adam/AdamW(fused=True).step() runs for a one-tensor group
        if seg.rule == "Adam":
            if self._step_t is None:  # the device copy of the (already counted) steps
                self._step_t = torch.tensor(self.steps, dtype=torch.float32, device=p.device)
            else:
                self._step_t[seg.start : seg.stop].add_(1)
            exp_avg, exp_avg_sq = self._buffer("exp_avg"), self._buffer("exp_avg_sq")
            for k in range(seg.start, seg.stop):
                h = self.hypers[k]
                _FUSED_OPS[h.cls](  # type: ignore[misc]
                    [p[k]], [g[k]], [exp_avg[k]], [exp_avg_sq[k]], [], [self._step_t[k]],
                    lr=lrs[k], beta1=h.betas[0], beta2=h.betas[1], weight_decay=h.weight_decay,
                    eps=h.eps, amsgrad=False, maximize=False,
                )
            return
        for k in range(seg.start, seg.stop):
            h = self.hypers[k]
            buffers = [self._buffer("momentum_buffer")[k]] if h.momentum != 0 else []
            _FUSED_OPS["SGD"](  # type: ignore[misc]
                [p[k]], [g[k]], buffers, weight_decay=h.weight_decay, momentum=h.momentum,
                lr=lrs[k], dampening=0.0, nesterov=h.nesterov, maximize=False,
                is_first_step=self.steps[k] == 1,
            )

    def _sgd(self, seg: _Segment, p: torch.Tensor, g: torch.Tensor, neg_lr: Coef) -> None:
        # torch.optim.sgd._single_tensor_sgd (dampening 0)
        if seg.any_weight_decay:
            g = _add_scaled(g, p, seg.weight_decay)  # grad.add(param, alpha=weight_decay)
        if seg.any_momentum:
            buf = self._buffer("momentum_buffer")[seg.start : seg.stop]
            buf.mul_(seg.momentum).add_(g)  # first step: 0 * m + g = g.clone()
            if seg.all_nesterov:
                g = _add_scaled(g, buf, seg.momentum)  # grad.add(buf, alpha=momentum)
            elif seg.any_nesterov:
                g = torch.where(seg.nesterov, _add_scaled(g, buf, seg.momentum), buf)
            else:
                g = buf
        _add_scaled_(p, g, neg_lr)  # param.add_(grad, alpha=-lr)

    def _adam(
        self,
        seg: _Segment,
        p: torch.Tensor,
        g: torch.Tensor,
        neg_step_size: Coef,
        bc2_sqrt: Coef,
        decay: Coef,
    ) -> None:
        # torch.optim.adam._single_tensor_adam (amsgrad False, not capturable); AdamW is Adam
        # with decoupled weight decay: its members shrink the parameter, Adam's add to the grad
        if seg.any_decoupled_weight_decay:
            p.mul_(decay)  # param.mul_(1 - lr * weight_decay); 1.0 for Adam members
        if seg.any_l2_weight_decay:
            g = _add_scaled(g, p, seg.l2_weight_decay)  # 0 for AdamW members
        exp_avg = self._buffer("exp_avg")[seg.start : seg.stop]
        exp_avg_sq = self._buffer("exp_avg_sq")[seg.start : seg.stop]
        exp_avg.lerp_(g, seg.one_minus_beta1)
        _add_product_(exp_avg_sq.mul_(seg.beta2), g, g, seg.one_minus_beta2)
        denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(seg.eps)
        _add_quotient_(p, exp_avg, denom, neg_step_size)  # addcdiv_(exp_avg, denom, -step_size)

    def _rmsprop(self, seg: _Segment, p: torch.Tensor, g: torch.Tensor, neg_lr: Coef) -> None:
        # torch.optim.rmsprop._single_tensor_rmsprop (not centered, no momentum)
        if seg.any_weight_decay:
            g = _add_scaled(g, p, seg.weight_decay)
        square_avg = self._buffer("square_avg")[seg.start : seg.stop]
        _add_product_(square_avg.mul_(seg.alpha), g, g, seg.one_minus_alpha)
        avg = square_avg.sqrt().add_(seg.eps)
        _add_quotient_(p, g, avg, neg_lr)  # param.addcdiv_(grad, avg, value=-lr)

    def select(
        self, param: torch.Tensor, rows: Sequence[int | None], hypers: Sequence[MemberHyper]
    ) -> StackedOptimizer:
        """A new optimizer over ``param`` whose member i continues this one's row ``rows[i]``
        (its step count and buffers), or starts fresh where ``rows[i]`` is None."""
        new = StackedOptimizer(param, hypers, fused=self.fused)
        for i, row in enumerate(rows):
            if row is not None:
                new.steps[i] = self.steps[row]
        if self.state:
            n_old = self.param.shape[0]
            index = torch.tensor(
                [n_old if r is None else r for r in rows], device=param.device, dtype=torch.long
            )
            for name, buf in self.state.items():
                padded = torch.cat([buf, buf.new_zeros(1, buf.shape[1])])
                new.state[name] = padded.index_select(0, index)
        return new


# torch's fused update kernels, by torch.optim class (None where this torch build lacks one)
_FUSED_OPS = _private.fused_update_ops()

_FUSED_WORKS: dict[str, bool] = {}


def _fused_kernels_work(device: torch.device) -> bool:
    """Whether torch's fused SGD/Adam/AdamW kernels run on ``device``'s type (checked once per
    type on one-element tensors: a torch build may have the operators without a kernel for the
    device, e.g. the CPU before torch 2.4)."""
    if device.type not in _FUSED_WORKS:
        works = device.type in ("cpu", "cuda") and all(_FUSED_OPS.values())
        if works:
            try:
                t = [torch.zeros(1, device=device) for _ in range(4)]
                step = [torch.ones(1, device=device)]
                for cls in ("Adam", "AdamW"):
                    _FUSED_OPS[cls](  # type: ignore[misc]
                        [t[0]], [t[1]], [t[2]], [t[3]], [], step, lr=0.0, beta1=0.9,
                        beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False,
                    )
                _FUSED_OPS["SGD"](  # type: ignore[misc]
                    [t[0]], [t[1]], [t[2]], weight_decay=0.0, momentum=0.9, lr=0.0,
                    dampening=0.0, nesterov=False, maximize=False, is_first_step=True,
                )
            except (RuntimeError, NotImplementedError, TypeError):
                works = False
        _FUSED_WORKS[device.type] = works
    return _FUSED_WORKS[device.type]


# A per-member coefficient: an (n, 1) column over the members' rows, or one float for all of
# them (the members share it, or there is one member). Floats go to the kernels as scalars,
# exactly as torch.optim's single-tensor implementation passes them; columns broadcast.
Coef = torch.Tensor | float


def _add_scaled(t: torch.Tensor, other: torch.Tensor, coef: Coef) -> torch.Tensor:
    """t + other * coef, a new tensor."""
    if isinstance(coef, float):
        return t.add(other, alpha=coef)
    return torch.addcmul(t, other, coef)


def _add_scaled_(t: torch.Tensor, other: torch.Tensor, coef: Coef) -> None:
    """t += other * coef."""
    if isinstance(coef, float):
        t.add_(other, alpha=coef)
    else:
        t.addcmul_(other, coef)


def _add_product_(t: torch.Tensor, a: torch.Tensor, b: torch.Tensor, coef: Coef) -> None:
    """t += a * b * coef (``addcmul_(a, b, value=coef)``)."""
    if isinstance(coef, float):
        t.addcmul_(a, b, value=coef)
    else:
        t.addcmul_(a * coef, b)


def _add_quotient_(t: torch.Tensor, a: torch.Tensor, b: torch.Tensor, coef: Coef) -> None:
    """t += a / b * coef (``addcdiv_(a, b, value=coef)``)."""
    if isinstance(coef, float):
        t.addcdiv_(a, b, value=coef)
    else:
        t.addcdiv_(a * coef, b)


class _Segment:
    """A contiguous run of members sharing one update rule, with their coefficients (constant
    per member: built once per layout), each a :data:`Coef`."""

    def __init__(
        self, start: int, stop: int, hypers: Sequence[MemberHyper], device: torch.device
    ) -> None:
        self.start, self.stop, self.hypers = start, stop, list(hypers)
        self.rule = self.hypers[0].rule
        self.fused = False  # set by the optimizer: its members use torch's fused kernels

        def column(values: list[float]) -> Coef:
            if len(set(values)) == 1:
                return float(values[0])
            return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1)

        self.weight_decay = column([h.weight_decay for h in hypers])
        self.any_weight_decay = any(h.weight_decay != 0 for h in hypers)
        decoupled = [h.cls == "AdamW" for h in hypers]
        self.any_decoupled_weight_decay = any(
            d and h.weight_decay != 0 for d, h in zip(decoupled, hypers, strict=True)
        )
        self.l2_weight_decay = column(
            [0.0 if d else h.weight_decay for d, h in zip(decoupled, hypers, strict=True)]
        )
        self.any_l2_weight_decay = any(
            not d and h.weight_decay != 0 for d, h in zip(decoupled, hypers, strict=True)
        )
        self.momentum = column([h.momentum for h in hypers])
        self.any_momentum = any(h.momentum != 0 for h in hypers)
        self.nesterov = torch.tensor([h.nesterov for h in hypers], device=device).view(-1, 1)
        self.any_nesterov = any(h.nesterov for h in hypers)
        self.all_nesterov = all(h.nesterov for h in hypers)
        self.one_minus_beta1 = column([1 - h.betas[0] for h in hypers])
        self.beta2 = column([h.betas[1] for h in hypers])
        self.one_minus_beta2 = column([1 - h.betas[1] for h in hypers])
        self.eps = column([h.eps for h in hypers])
        self.alpha = column([h.alpha for h in hypers])
        self.one_minus_alpha = column([1 - h.alpha for h in hypers])
