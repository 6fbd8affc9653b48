"""The training loop of one trial. It knows nothing of Optuna: it reports through a callback.

The whole split lives as tensors on the device; mini-batches are drawn by indexing a seeded
permutation (no DataLoader in the hot path); evaluation runs under ``torch.inference_mode``.
Per epoch:

1. shuffle the training rows with the run's own generator;
2. for each mini-batch (the last one may be partial): forward, loss, divergence check (every
   step), backward, optimizer step, then the scheduler if it steps per optimizer step;
3. evaluate on the validation split; step a per-epoch scheduler (plateau) on the metric;
4. call ``on_epoch(report)``; a True return stops the run as PRUNED.

The test split is evaluated once, at the end of a complete run, for reporting only.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from tuner import _private
from tuner.divergence import Divergence, DivergenceGuard
from tuner.errors import DeviceError
from tuner.models import build_model
from tuner.schedules import build_scheduler
from tuner.space import FUSED_CLASSES, TrialParams, build_optimizer

_private.apply_for_command()  # the tuner command: build torch.optim optimizers without dynamo

if TYPE_CHECKING:
    from tuner.config import StudyConfig
    from tuner.datasets import SplitData

__all__ = [
    "EpochReport",
    "TrainResult",
    "train",
    "resolve_device",
    "evaluate",
    "metric_values",
    "end_epoch",
    "steps_per_epoch",
    "step_scheduler",
    "build_fast_optimizer",
    "training_threads",
]


@dataclass(frozen=True)
class EpochReport:
    """What one epoch produced.

    Attributes:
        epoch: 1-based epoch number (the intermediate-value step reported to Optuna).
        steps: optimizer steps taken so far in the run.
        train_loss: mean training loss over the epoch's mini-batches (row-weighted).
        val_loss: validation loss (cross-entropy, or MSE on standardized targets).
        val_metric: the objective's validation metric (accuracy, loss or RMSE in target units).
        lr: the learning rate used by the epoch's first optimizer step.
    """

    epoch: int
    steps: int
    train_loss: float
    val_loss: float
    val_metric: float
    lr: float


@dataclass
class TrainResult:
    """The outcome of one run.

    Attributes:
        status: 'complete', 'pruned' (the callback asked to stop) or 'diverged'.
        epochs: epochs run (the last one may be partial for a diverged run).
        steps: optimizer steps taken.
        history: one :class:`EpochReport` per finished epoch.
        lrs: the learning rate of every optimizer step taken, in order.
        divergence: why the run diverged, for status 'diverged'.
        peak_loss_ratio: the largest mini-batch loss / first mini-batch loss over the steps the
            divergence guard checked (>= 1; None before the first finite loss): how close the
            run came to ``[divergence] factor``.
        test_metric / test_loss: held-out test split, for a complete run only.
        seconds: wall-clock seconds of the run.
        model: the trained model, when :func:`train` was asked to keep it (else None).
        engine: what trained it: 'torch' (:func:`train`, autograd and ``torch.optim``),
            'stacked' or 'functional' (:mod:`tuner.batched`, trials in lockstep).
    """

    status: str
    epochs: int
    steps: int
    history: list[EpochReport] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    divergence: Divergence | None = None
    peak_loss_ratio: float | None = None
    test_metric: float | None = None
    test_loss: float | None = None
    seconds: float = 0.0
    model: torch.nn.Module | None = field(default=None, repr=False)
    engine: str = "torch"

    @property
    def val_metric(self) -> float | None:
        return self.history[-1].val_metric if self.history else None

    @property
    def val_loss(self) -> float | None:
        return self.history[-1].val_loss if self.history else None


def resolve_device(name: str) -> torch.device:
    """``'auto'`` -> cuda if available else cpu; otherwise the named device, checked.

    Raises:
        DeviceError: the device is not available here (e.g. 'cuda' on a CPU-only build).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"[training] device = \"{name}\" but torch {torch.__version__} sees no CUDA "
                f"device here; use device = \"cpu\" or \"auto\", or install a CUDA build of "
                f"torch (make install TORCH_SPEC='torch==X.Y.Z' TORCH_INDEX=...)."
            )
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"[training] device = \"{name}\": only {torch.cuda.device_count()} CUDA "
                f"device(s) here."
            )
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeviceError('[training] device = "mps" is not available here; use "cpu".')
    return torch.device(name)


def training_threads(requested: int | None = None) -> int:
    """torch threads for a process that trains: ``requested`` (``tuner tune --threads``), else
    ``$OMP_NUM_THREADS`` when set, else 1.

    One by default: these models are too small to gain much from splitting each matrix product
    across cores, and torch's intra-op threads spin while they wait for each other, so a thread
    on a core that something else is using can make every step many times slower (BENCHMARKS.md).
    To use more cores, train trials side by side (``--workers N``).

    Raises:
        ValueError: ``requested`` < 1.
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else 1


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    """Optimizer steps per epoch: ceil(n_rows / batch_size), partial last batch included."""
    return max(1, math.ceil(n_rows / batch_size))


def _loss_fn(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return F.cross_entropy if task == "classification" else F.mse_loss


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, data: SplitData, metric: str
) -> tuple[float, float]:
    """(loss, metric) of ``model`` on (X, y); the metric is 'accuracy', 'loss' or 'rmse'.

    RMSE is in target units (``data.target_scale``). Non-finite outputs give nan/inf values,
    never an exception.
    """
    was_training = model.training
    model.eval()
    out = model(X)
    loss = float(_loss_fn(data.task)(out, y))
    model.train(was_training)
    return loss, metric_values(metric, out.unsqueeze(0), y, [loss], data.target_scale)[0]


def metric_values(
    metric: str, out: torch.Tensor, y: torch.Tensor, losses: Sequence[float], target_scale: float
) -> list[float]:
    """The objective's metric of K models on one split, from their outputs and losses.

    Args:
        metric: 'accuracy', 'loss' or 'rmse'.
        out: the outputs, (K, N, C).
        y: the targets, (N,) class indices (accuracy) or (N, C).
        losses: each model's mean loss on the split (K values).
        target_scale: the target's standard deviation (RMSE is in target units).

    Returns:
        K values; nan where a loss is not finite and the metric is RMSE of a negative loss.
    """
    if metric == "accuracy":
        return (out.argmax(dim=-1) == y).float().mean(dim=-1).tolist()
    if metric == "rmse":
        return [math.sqrt(v) * target_scale if v >= 0 else float("nan") for v in losses]
    return list(losses)


def train(
    cfg: StudyConfig,
    data: SplitData,
    params: TrialParams,
    seed: int,
    on_epoch: Callable[[EpochReport], bool] | None = None,
    *,
    device: torch.device | None = None,
    check_every_step: bool | None = None,
    keep_model: bool = False,
    builder: Callable[[int, int], torch.nn.Module] | None = None,
) -> TrainResult:
    """Train a fresh model with one configuration.

    Args:
        cfg: the validated study (model, training, objective, divergence sections are used).
        data: the split; moved to the device if it is not there yet.
        params: the sampled learning rate, optimizer and schedule.
        seed: seeds weight initialization and shuffling (the study uses seed + trial number).
        on_epoch: called after each epoch; return True to stop the run (status 'pruned').
        device: overrides ``cfg.training.device`` (already resolved).
        check_every_step: read each step's loss back at once (default on the CPU, where it is
            free) rather than once per epoch (default on accelerators, where a read-back stalls
            the queue). Either way every step's loss is checked, and a diverged run's result
            ends at the offending step; deferring only spends the rest of that epoch's compute.
        keep_model: put the trained model in ``result.model`` (a complete run only).
        builder: ``(n_features, n_outputs) -> nn.Module`` building the model instead of the
            study's ``[model]`` (called after ``torch.manual_seed(seed)``).

    Returns:
        A :class:`TrainResult`; a diverged run stops at the offending optimizer step.
    """
    started = time.perf_counter()
    device = device or resolve_device(cfg.training.device)
    if check_every_step is None:
        check_every_step = device.type == "cpu"
    if data.X_train.device != device:
        data = data.to(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if builder is None:
        model = build_model(cfg.model, data.n_features, data.n_outputs).to(device)
    else:
        model = builder(data.n_features, data.n_outputs).to(device)
    optimizer = build_fast_optimizer(model.parameters(), params.optimizer_spec())
    n_rows = len(data.X_train)
    batch = cfg.training.batch_size
    spe = steps_per_epoch(n_rows, batch)
    total = spe * cfg.training.epochs
    mode = "max" if cfg.objective.direction == "maximize" else "min"
    spec = params.scheduler_spec(total, spe, mode)
    scheduler = build_scheduler(optimizer, spec)
    per_step = spec["interval"] == "step"
    rows_per_step = [min(batch, n_rows - i * batch) for i in range(spe)]
    loss_fn = _loss_fn(data.task)
    guard = DivergenceGuard(cfg.divergence.factor)
    result = TrainResult(status="complete", epochs=0, steps=0)
    model.train()
    for epoch in range(1, cfg.training.epochs + 1):
        # this epoch's shuffled rows, gathered once; each mini-batch is a slice (a view) of them
        order = torch.randperm(n_rows, generator=generator).to(device)
        X, y = data.X_train[order], data.y_train[order]
        first_lr = optimizer.param_groups[0]["lr"]
        losses: list[Any] = []  # floats, or device tensors while the check is deferred
        for b in range(spe):
            result.lrs.append(float(optimizer.param_groups[0]["lr"]))
            loss = loss_fn(model(X[b * batch : (b + 1) * batch]), y[b * batch : (b + 1) * batch])
            result.steps += 1
            if check_every_step:
                losses.append(loss.item())
                diverged = guard.check(losses[-1], result.steps, epoch)
                if diverged is not None:
                    return _diverged(result, diverged, epoch, started, guard)
            else:
                losses.append(loss.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if per_step:
                step_scheduler(scheduler)
        if not check_every_step:
            losses = torch.stack(losses).tolist()
        ended = end_epoch(
            result, guard, epoch, losses,
            unchecked=not check_every_step,
            rows_per_step=rows_per_step,
            validate=lambda: evaluate(model, data.X_val, data.y_val, data, cfg.objective.metric),
            first_lr=float(first_lr),
            scheduler=None if per_step else scheduler,
            on_epoch=on_epoch,
        )
        if ended == "diverged":
            result.seconds = time.perf_counter() - started
            return result
        if ended == "pruned":
            break
    result.peak_loss_ratio = guard.peak_ratio
    if result.status == "complete":
        result.test_loss, result.test_metric = evaluate(
            model, data.X_test, data.y_test, data, cfg.objective.metric
        )
        if keep_model:
            result.model = model
    result.seconds = time.perf_counter() - started
    return result


def _diverged(
    result: TrainResult, divergence: Divergence, epoch: int, started: float,
    guard: DivergenceGuard,
) -> TrainResult:
    _stop_diverged(result, divergence, epoch, guard)
    result.seconds = time.perf_counter() - started
    return result


def _stop_diverged(
    result: TrainResult, divergence: Divergence, epoch: int, guard: DivergenceGuard
) -> str:
    result.status, result.divergence, result.epochs = "diverged", divergence, epoch
    result.peak_loss_ratio = guard.peak_ratio
    return "diverged"


def end_epoch(
    result: TrainResult,
    guard: DivergenceGuard,
    epoch: int,
    losses: Sequence[float],
    *,
    unchecked: bool,
    rows_per_step: Sequence[int],
    validate: Callable[[], tuple[float, float]],
    first_lr: float,
    scheduler: Any,
    on_epoch: Callable[[EpochReport], bool] | None,
) -> str | None:
    """The end of one epoch of one run, the same in both engines (this and the stacked one).

    In order: the divergence check of the epoch's step losses (where they were not checked
    step by step), validation, the divergence check of the validation loss, the per-epoch
    scheduler step (plateau, on the metric), the :class:`EpochReport`, ``on_epoch``.

    Args:
        result: the run so far; ``result.steps`` already counts this epoch's steps, and
            ``result.lrs`` their learning rates. Updated in place.
        losses: the epoch's mini-batch losses, one per step.
        unchecked: the losses still need the divergence check.
        rows_per_step: the rows of each mini-batch (the last one may be partial).
        validate: returns (validation loss, validation metric), as :func:`evaluate`.
        first_lr: the learning rate of the epoch's first step.
        scheduler: stepped once on the metric (None: it steps per optimizer step).
        on_epoch: the run's callback; True stops the run.

    Returns:
        'diverged' (the result ends at the offending step), 'pruned', or None: the run goes on.
    """
    first = result.steps - len(losses) + 1
    if unchecked:
        for i, value in enumerate(losses):
            diverged = guard.check(value, first + i, epoch)
            if diverged is not None:
                del result.lrs[first + i :]
                result.steps = first + i
                return _stop_diverged(result, diverged, epoch, guard)
    loss_sum = sum(v * n for v, n in zip(losses, rows_per_step, strict=True))
    val_loss, val_metric = validate()
    if not math.isfinite(val_loss):
        # the weights blew up on the last step: the validation loss shows it first
        diverged = guard.check(val_loss, result.steps, epoch)
        if diverged is not None:
            return _stop_diverged(result, diverged, epoch, guard)
    result.peak_loss_ratio = guard.peak_ratio
    if scheduler is not None:
        step_scheduler(scheduler, val_metric if math.isfinite(val_metric) else None)
    report = EpochReport(
        epoch, result.steps, loss_sum / sum(rows_per_step), val_loss, val_metric, first_lr
    )
    result.history.append(report)
    result.epochs = epoch
    if on_epoch is not None and on_epoch(report):
        result.status = "pruned"
        return "pruned"
    return None


def build_fast_optimizer(
    parameters: Iterable[torch.nn.Parameter], spec: Mapping[str, Any]
) -> torch.optim.Optimizer:
    """The optimizer an optimizer spec describes, with torch's fused kernel where it has one.

    Same update rule as the spec's ``torch.optim`` class (the fused kernel only rounds
    differently, in the last bits); ``fused`` is not written into the spec, so exports and
    rebuilt optimizers are unchanged. Falls back to the default implementation where this
    torch build or device has no fused kernel.
    """
    parameters = list(parameters)
    if spec["class"] in FUSED_CLASSES:
        try:
            fused = {**spec, "kwargs": {**spec["kwargs"], "fused": True}}
            return build_optimizer(parameters, fused)
        except (RuntimeError, TypeError, ValueError):
            pass  # no fused kernel for this device / torch version
    return build_optimizer(parameters, spec)


def step_scheduler(scheduler: Any, metric: float | None = None) -> None:
    """Step a scheduler once: per-step ones without a metric, plateau with a finite metric."""
    if metric is not None:
        scheduler.step(metric)
    elif not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step()
