"""Benchmark: speed per model kind, one trial at a time (autograd) against lockstep engines.

Three model kinds on digits (1,257 training rows, batch 64), the same 8 trial configurations
(random draws from the study's space, learning rates in [1e-4, 1e-2], no pruning), each trained
``EPOCHS`` epochs:

- a small CNN (Conv2d(1,16,3) -> ReLU -> MaxPool -> Conv2d(16,32,3) -> ReLU -> MaxPool ->
  Linear; the 64 features as one 8x8 image), a model only autograd and ``torch.func`` train;
- a user's MLP with dropout 0.1, written as a plain ``nn.Module`` (64-128-10);
- the built-in MLP (``[model] name = "mlp"``, 64-128-10, no dropout), for reference: the
  stacked engine trains it.

Engines: ``tuner.engine.train`` one trial at a time (autograd + fused ``torch.optim``); the
functional engine (:class:`tuner.batched.FunctionalTrainer`, ``torch.func`` lockstep) with K =
1, 2, 4, 8; the stacked engine (:class:`tuner.batched.BatchedTrainer`) with K = 1, 2, 4, 8 for
the built-in MLP. Every variant trains the 8 trials, K at a time; the clock covers the training
(warm-up run first, outside the clock); the fastest of ``REPEATS`` interleaved repeats.

Usage: ``python bench/bench_models.py --out bench/out/models.md`` (``make bench BENCH=models``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    equal_work_cfg,
    load_text,
    md_table,
    sample_params,
    threads_text,
    write_section,
)
from torch import nn  # noqa: E402

from tuner.batched import BatchedTrainer, FunctionalTrainer  # noqa: E402
from tuner.datasets import load_split  # noqa: E402
from tuner.engine import train  # noqa: E402
from tuner.space import TrialParams  # noqa: E402

EPOCHS = 3
TRIALS = 8
REPEATS = 3
KS = (1, 2, 4, 8)


def digits_cnn(n_features: int, n_outputs: int) -> nn.Module:
    """The benchmark's CNN: (B, 64) -> (B, 1, 8, 8) -> two conv blocks -> Linear."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, n_outputs),
    )


class UserMLP(nn.Module):
    """A user's model as a plain module: Linear -> ReLU -> Dropout(0.1) -> Linear."""

    def __init__(self, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(n_features, 128)
        self.drop = nn.Dropout(0.1)
        self.out = nn.Linear(128, n_outputs)

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.out(self.drop(self.hidden(x).relu()))


KINDS: dict[str, Callable[[int, int], nn.Module] | None] = {
    "CNN (2 conv blocks)": digits_cnn,
    "user MLP, dropout 0.1 (nn.Module)": UserMLP,
    "built-in MLP (stacked engine)": None,
}


def run(variant: str, k: int, builder, cfg, data, params: list[TrialParams]):  # noqa: ANN001, ANN201
    """(CPU seconds, wall seconds) to train every configuration, ``k`` at a time, with one
    engine."""
    started, cpu = time.perf_counter(), time.process_time()
    if variant == "autograd":
        for seed, p in enumerate(params):
            train(cfg, data, p, seed, builder=builder)
        return time.process_time() - cpu, time.perf_counter() - started
    for first in range(0, len(params), k):
        if variant == "functional":
            trainer = FunctionalTrainer(cfg, data, builder=builder)
        else:
            trainer = BatchedTrainer(cfg, data)
        for seed, p in enumerate(params[first : first + k], start=first):
            trainer.add(p, seed)
        while trainer.members:
            trainer.run_epoch()
    return time.process_time() - cpu, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    threads = threads_text()
    base = equal_work_cfg("digits")
    cfg = replace(base, training=replace(base.training, epochs=EPOCHS))
    data = load_split(cfg.dataset, cfg.split)
    params = [TrialParams.from_optuna_params(p) for p in sample_params(cfg, TRIALS, seed=0)]
    load_before = load_text()
    tables: dict[str, list[list[str]]] = {"cpu": [], "wall": []}
    winners = []
    for kind, builder in KINDS.items():
        variants = [("autograd", 1)] + [("functional", k) for k in KS]
        if builder is None:
            variants += [("stacked", k) for k in KS]
        for v, k in variants:  # warm-up: one-time costs (lazy imports, kernels) off the clock
            run(v, k, builder, cfg, data, params[:k])
        best = {clock: {vk: float("inf") for vk in variants} for clock in tables}
        for _ in range(REPEATS):
            for v, k in variants:
                cpu, wall = run(v, k, builder, cfg, data, params)
                best["cpu"][(v, k)] = min(best["cpu"][(v, k)], cpu)
                best["wall"][(v, k)] = min(best["wall"][(v, k)], wall)
        for clock, rows in tables.items():
            per_epoch = {vk: s / (TRIALS * EPOCHS) * 1e3 for vk, s in best[clock].items()}
            ref = per_epoch[("autograd", 1)]
            row = [kind, f"{ref:.1f}"]
            for v in ("functional", "stacked"):
                for k in KS:
                    s = per_epoch.get((v, k))
                    row.append("-" if s is None else f"{s:.1f} ({ref / s:.2f}x)")
            rows.append(row)
            if clock != "cpu":
                continue
            (wv, wk) = min(per_epoch, key=per_epoch.get)
            name = "autograd one at a time" if wv == "autograd" else f"{wv} K={wk}"
            beat = [k for k in KS if per_epoch[("functional", k)] < ref]
            winners.append(
                f"{kind}: fastest {name} ({per_epoch[(wv, wk)]:.1f} CPU ms per trial-epoch); "
                f"functional lockstep beats one at a time for K in {beat or 'none'}"
            )
    headers = ["model", "autograd, one at a time", *[f"functional K={k}" for k in KS],
               *[f"stacked K={k}" for k in KS]]
    text = f"""
## Speed per model kind: one at a time against lockstep (torch.func, stacked)

CPU milliseconds per trial-epoch (training, validation, test; lower is better; the process's
CPU time, with one torch thread: robust to other work on a shared machine, unlike wall time,
given below too), and the speed-up over one trial at a time with `tuner.engine.train`
(autograd + fused `torch.optim`).
{TRIALS} configurations (random draws from the study's space, learning rates in [1e-4, 1e-2]) of
{EPOCHS} epochs on digits (1,257 training rows, batch 64), trained K at a time; the fastest of
{REPEATS} interleaved repeats, after a warm-up run. "functional" is
`tuner.batched.FunctionalTrainer` (K trials in lockstep with `torch.func.vmap` over
`functional_call`, one backward pass, the stacked optimizer); "stacked" is
`tuner.batched.BatchedTrainer` (the built-in MLP only). The CNN is Conv2d(1,16,3,pad 1) ->
ReLU -> MaxPool2d(2) -> Conv2d(16,32,3,pad 1) -> ReLU -> MaxPool2d(2) -> Linear on the 64
features as one 8x8 image; the user MLP is a plain `nn.Module` (64-128-10, dropout 0.1).

{md_table(headers, tables["cpu"])}

{chr(10).join('- ' + w for w in winners)}

Wall milliseconds per trial-epoch, the same runs:

{md_table(headers, tables["wall"])}

Load: {load_before} before, {load_text()} after. {threads}.
Command: `python bench/bench_models.py --out bench/out/models.md` (or `make bench BENCH=models`).
"""
    write_section(args.out, text)


if __name__ == "__main__":
    main()
