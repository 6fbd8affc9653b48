"""Running the LR range test: one short run per optimizer with an exponentially growing rate.

See :mod:`tuner.lr_find` for the sweep's definition.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from tuner.engine import _loss_fn, resolve_device, steps_per_epoch
from tuner.lr_find._curve import BETA, DIVERGE_FACTOR, MAX_LR, MIN_LR, STEPS, LRFindError, LRSweep
from tuner.models import build_model, study_split
from tuner.space import OPTIMIZERS, TrialParams, build_optimizer

if TYPE_CHECKING:
    from tuner.config import SpaceConfig, StudyConfig
    from tuner.datasets import SplitData

__all__ = ["sweep_optimizer_kwargs", "lr_range_test", "lr_range_tests"]

# Extra keyword arguments of each optimizer during the sweep (the space's defaults).
SWEEP_DEFAULTS: dict[str, dict[str, Any]] = {"sgd": {"momentum": 0.9, "nesterov": False}}


def sweep_optimizer_kwargs(optimizer: str, space: SpaceConfig | None = None) -> dict[str, Any]:
    """The optimizer's keyword arguments during the sweep, besides ``lr``.

    SGD uses momentum 0.9 (or the middle of ``[space] momentum`` if 0.9 lies outside it) without
    Nesterov; the others use their ``torch.optim`` defaults. No weight decay.
    """
    kwargs = dict(SWEEP_DEFAULTS.get(optimizer, {}))
    if "momentum" in kwargs and space is not None:
        low, high = space.momentum
        if not low <= kwargs["momentum"] <= high:
            kwargs["momentum"] = (low + high) / 2
    return kwargs


def _sweep_lr(i: int, steps: int, min_lr: float, max_lr: float) -> float:
    return min_lr * (max_lr / min_lr) ** (i / (steps - 1))


def lr_range_test(
    cfg: StudyConfig,
    optimizer: str,
    *,
    data: SplitData | None = None,
    min_lr: float = MIN_LR,
    max_lr: float = MAX_LR,
    steps: int = STEPS,
    beta: float = BETA,
    diverge_factor: float = DIVERGE_FACTOR,
    seed: int | None = None,
    device: torch.device | None = None,
) -> LRSweep:
    """Run the LR range test for one optimizer on the study's model, data and batch size.

    Args:
        cfg: the validated study ([model], [training] batch_size and device, [dataset], [split],
            [space] momentum bounds are used).
        optimizer: a key of :data:`tuner.space.OPTIMIZERS`, with
            :func:`sweep_optimizer_kwargs` (SGD: momentum 0.9).
        data: the split (default: ``tuner.models.study_split(cfg)``); never modified.
        min_lr, max_lr: the first and last rate, 0 < min_lr < max_lr.
        steps: mini-batches at most (>= 2); the last batch of an epoch may be partial, and the
            data are reshuffled every epoch.
        beta: EMA weight in [0, 1).
        diverge_factor: stop once the smoothed loss exceeds this many times its best (> 1).
        seed: seeds the weights and the batch order (default ``[study] seed``).
        device: overrides ``[training] device`` (already resolved).

    Returns:
        The :class:`LRSweep`; read it with ``.analyze()`` or ``.suggestion()``.

    Raises:
        LRFindError: an argument is out of range. DeviceError: the device is not available.
    """
    if optimizer not in OPTIMIZERS:
        raise LRFindError(
            f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}"
        )
    if not (0 < min_lr < max_lr and math.isfinite(max_lr)):
        raise LRFindError(
            f"LR range test: min_lr = {min_lr:g}, max_lr = {max_lr:g} are invalid: need "
            f"0 < min_lr < max_lr, both finite."
        )
    if steps < 2:
        raise LRFindError(f"LR range test: steps = {steps} is invalid: need >= 2 mini-batches.")
    if not 0 <= beta < 1:
        raise LRFindError(f"LR range test: beta = {beta:g} is invalid: need 0 <= beta < 1.")
    if not diverge_factor > 1:
        raise LRFindError(
            f"LR range test: diverge_factor = {diverge_factor:g} is invalid: need > 1."
        )
    device = device or resolve_device(cfg.training.device)
    data = data if data is not None else study_split(cfg)
    if data.X_train.device != device:
        data = data.to(device)
    started = time.perf_counter()
    seed = cfg.study.seed if seed is None else seed
    kwargs = sweep_optimizer_kwargs(optimizer, cfg.space)
    X, y = data.X_train, data.y_train
    n_rows, batch = len(X), cfg.training.batch_size
    spe = steps_per_epoch(n_rows, batch)
    loss_fn = _loss_fn(data.task)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    stop = "end"
    # the global RNG state (CPU, and this CUDA device) is restored when the sweep ends
    cuda = device.type == "cuda"
    devices = [device.index or 0] if cuda else []
    with torch.random.fork_rng(devices=devices, device_type="cuda" if cuda else "cpu"):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = build_model(cfg.model, data.n_features, data.n_outputs).to(device)
        model.train()
        spec = TrialParams(min_lr, optimizer, "constant", kwargs).optimizer_spec()
        opt = build_optimizer(model.parameters(), spec)
        avg, best = 0.0, math.inf
        order = torch.empty(0, dtype=torch.long)
        for i in range(steps):
            b = i % spe
            if b == 0:
                order = torch.randperm(n_rows, generator=generator).to(device)
            lr = _sweep_lr(i, steps, min_lr, max_lr)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = order[b * batch : (b + 1) * batch]
            loss = loss_fn(model(X[idx]), y[idx])
            value = loss.item()
            lrs.append(lr)
            losses.append(value)
            if not math.isfinite(value):
                smoothed.append(value)
                stop = "nan" if math.isnan(value) else "inf"
                break
            avg = beta * avg + (1 - beta) * value
            s = avg / (1 - beta ** (i + 1))
            smoothed.append(s)
            best = min(best, s)
            if i > 0 and s > diverge_factor * best:
                stop = "diverged"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return LRSweep(
        optimizer=optimizer, optimizer_kwargs=kwargs, lrs=tuple(lrs), losses=tuple(losses),
        smoothed=tuple(smoothed), stop=stop, min_lr=min_lr, max_lr=max_lr, steps=steps,
        beta=beta, diverge_factor=diverge_factor, batch_size=batch, seed=seed,
        seconds=time.perf_counter() - started,
    )


def lr_range_tests(
    cfg: StudyConfig,
    optimizers: Sequence[str] | None = None,
    *,
    on_sweep: Callable[[LRSweep], None] | None = None,
    **kwargs: Any,
) -> list[LRSweep]:
    """:func:`lr_range_test` for each optimizer (default: ``[space] optimizers``), same seed.

    ``on_sweep`` is called after each sweep (for progress); ``kwargs`` go to each sweep.
    """
    names = list(optimizers) if optimizers is not None else list(cfg.space.optimizers)
    data = kwargs.pop("data", None)
    if data is None:
        data = study_split(cfg)
    out = []
    for name in names:
        sweep = lr_range_test(cfg, name, data=data, **kwargs)
        out.append(sweep)
        if on_sweep is not None:
            on_sweep(sweep)
    return out
