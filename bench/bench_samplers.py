"""Benchmark: compute to quality per sampler. Epochs each ``[sampler] name`` needs, with the
default pruner, to reach the final best validation loss of a random search without pruning;
and the wall time its sampling costs.

Digits, 64-128-10 MLP, 20 epochs per trial, objective = validation loss (minimize; finer than
accuracy, which moves in steps of 1/270), the shipped search space. The mark: the median over
seeds of the best value of a random search without pruning after 30 x 20 = 600 epochs
(``RandomSampler``, ``NopPruner``). Arms: each sampler with the shipped study's other settings
(10 start-up trials, successive halving, divergence pruning, K=4 trials in lockstep), run until
it has consumed the same 600 epochs (every epoch of every trial). Sampling seconds: the time
spent in the sampler's calls (``infer_relative_search_space``, ``sample_relative``,
``sample_independent``, ``before_trial``, ``after_trial``), summed over the run.

A second table: GPSampler's sampling time per trial at 40 and 100 trials on the same space
(cheap synthetic objective, no training; the mean of the 5 trials up to that count).

Usage: ``python bench/bench_samplers.py --out bench/out/samplers.md``; TUNER_BENCH_SEEDS
(default 10) sets the seeds per arm, TUNER_BENCH_JOBS (default 2) the runs at once (one process
each, with TUNER_BENCH_THREADS torch threads).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_cfg, load_text, md_table, set_threads, threads_text, write_section  # noqa: E402
from bench_quality import BUDGET, EPOCHS, BudgetSpent, best_at, best_complete, consumed, reach  # noqa: E402

from tuner.batched import DEFAULT_BATCH_TRIALS  # noqa: E402
from tuner.batched_runner import run_batched  # noqa: E402
from tuner.space import suggest_params  # noqa: E402
from tuner.study import make_objective, make_pruner, make_sampler  # noqa: E402

SAMPLERS = ("tpe", "gp", "cmaes", "qmc", "random")
SEEDS = int(os.environ.get("TUNER_BENCH_SEEDS", "10"))
JOBS = int(os.environ.get("TUNER_BENCH_JOBS", "2"))  # runs at once, one process each
ARM_SEEDS_FROM = 100  # the arms' seeds differ from the mark's random searches
# the system attribute a trial gets when the model (not the start-up/independent sampler)
# proposed its point
MODEL_ATTR = {"gp": "gp:relative_params:0", "cmaes": "cma:generation"}
SAMPLER_CALLS = ("infer_relative_search_space", "sample_relative", "sample_independent",
                 "before_trial", "after_trial")


def timed(sampler: optuna.samplers.BaseSampler) -> list[float]:
    """Wrap the sampler's calls to add their seconds up into the returned one-item list."""
    spent = [0.0]
    for name in SAMPLER_CALLS:
        method = getattr(sampler, name)

        def wrapper(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        setattr(sampler, name, wrapper)
    return spent


def run(sampler: str | None, seed: int) -> tuple[list[tuple[int, float, float]], float, str]:
    """One run to the budget: its (epochs consumed, best, seconds) curve, the seconds spent
    sampling, and "m/n" trials whose point the model proposed (gp, cmaes; else "").
    ``sampler`` None: the mark's random search without pruning."""
    overrides: dict[str, Any] = {"study": {"seed": seed}, "objective": {"metric": "loss"}}
    if sampler is None:
        overrides |= {"sampler": {"name": "random"}, "pruner": {"name": "none"}}
    else:
        overrides["sampler"] = {"name": sampler}
    cfg = bench_cfg("digits", **overrides)
    study = optuna.create_study(direction=cfg.direction, sampler=make_sampler(cfg),
                                pruner=make_pruner(cfg))
    spent = timed(study.sampler)
    objective = make_objective(cfg)
    curve: list[tuple[int, float, float]] = []
    started = time.perf_counter()

    def record(_: Any) -> None:
        used = consumed(study, full_epochs=sampler is None)
        curve.append((used, best_complete(study), time.perf_counter() - started))
        if used >= BUDGET:
            raise BudgetSpent

    try:  # random search draws independently of results: batched, it trains the same trials
        run_batched(study, objective, target=10**6, batch_trials=DEFAULT_BATCH_TRIALS,
                    on_trial=record)
    except BudgetSpent:
        pass
    trials = study.get_trials(deepcopy=False)
    attr = MODEL_ATTR.get(sampler or "")
    modelled = f"{sum(attr in t.system_attrs for t in trials)}/{len(trials)}" if attr else ""
    return curve, spent[0], modelled


def gp_seconds_per_trial(counts: tuple[int, ...] = (40, 100)) -> dict[int, float]:
    """GPSampler's mean sampling seconds per trial over the 5 trials up to each count."""
    cfg = bench_cfg("digits", sampler={"name": "gp"})
    study = optuna.create_study(sampler=make_sampler(cfg))
    rng = np.random.default_rng(0)
    seconds: list[float] = []
    for _ in range(max(counts)):
        start = time.perf_counter()
        trial = study.ask()
        params = suggest_params(trial, cfg.space)
        seconds.append(time.perf_counter() - start)
        # a smooth synthetic loss of the parameters, with noise: no training
        value = (np.log10(params.lr) + 2.5) ** 2 + (0.0 if params.optimizer == "adam" else 0.5)
        study.tell(trial, value + 0.1 * rng.standard_normal())
    return {n: statistics.mean(seconds[n - 5:n]) for n in counts}


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return float(q1), float(q2), float(q3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    set_threads()
    load_before = load_text()
    started = time.perf_counter()
    jobs = [(None, seed) for seed in range(SEEDS)]
    jobs += [(name, ARM_SEEDS_FROM + i) for name in SAMPLERS for i in range(SEEDS)]
    samplers, seeds = [j[0] for j in jobs], [j[1] for j in jobs]
    # runs are independent: one per core, each with TUNER_BENCH_THREADS torch threads
    with ProcessPoolExecutor(JOBS, initializer=set_threads) as pool:
        results = dict(zip(jobs, pool.map(run, samplers, seeds), strict=True))
    marks = [best_at(results[(None, seed)][0], BUDGET) for seed in range(SEEDS)]
    target = statistics.median(marks)
    rows = []
    for name in SAMPLERS:
        reached, finals, sampling, modelled = [], [], [], []
        for i in range(SEEDS):
            curve, spent, by_model = results[(name, ARM_SEEDS_FROM + i)]
            modelled.append(by_model)
            hit = reach(curve, target)
            reached.append(float(hit[0]) if hit else float("inf"))
            finals.append(best_at(curve, BUDGET))
            sampling.append(spent)
        q1, q2, q3 = quartiles(reached)  # inf (not reached) counts as the worst
        fmt = lambda x: "not reached" if x == float("inf") else f"{x:.0f}"  # noqa: E731
        n_hit = sum(r != float("inf") for r in reached)
        rows.append([
            f"`{name}`", fmt(q2), f"{fmt(q1)} - {fmt(q3)}", f"{n_hit}/{SEEDS}",
            f"{statistics.median(finals):.4f}", f"{sum(f < target for f in finals)}/{SEEDS}",
            f"{statistics.median(sampling):.2f}", ", ".join(modelled) if any(modelled) else "-",
        ])
    gp = gp_seconds_per_trial()
    runtime = time.perf_counter() - started
    text = f"""
## Compute to quality per sampler

Digits, 64-128-10 MLP, {EPOCHS} epochs per trial, objective: validation loss (minimize), the
shipped search space. The mark is random search's final best without pruning: the median over
{SEEDS} seeds of the best value after {BUDGET} epochs ({BUDGET // EPOCHS} trials x {EPOCHS};
`RandomSampler`, no pruner), **{target:.4f}**, reached when within 0.1%. Each sampler runs with
the shipped study's other settings (10 start-up trials, successive halving with reduction
factor 4, divergence pruning, {DEFAULT_BATCH_TRIALS} trials in lockstep) until it has consumed
{BUDGET} epochs (every epoch of every trial), seeds {ARM_SEEDS_FROM}..{ARM_SEEDS_FROM + SEEDS - 1}.
Epochs to the mark: median and interquartile range over seeds, a seed that never reached it
counting as worst. Sampling seconds: the sampler's own calls, summed over a run (median over
seeds; the whole run trains {BUDGET} epochs besides). The last column: of a run's trials, those
whose point GPSampler or CMA-ES proposed (the others came from the start-up / independent
sampler: both wait for `n_startup_trials` finished trials with a value; tuner's GPSampler and
CMA-ES count a pruned trial at its last value, since successive halving lets few complete).

{md_table(
    ["sampler", "epochs to the mark (median)", "IQR", "seeds that reach it",
     f"median best after {BUDGET}", "better than the mark", "sampling s per run",
     "trials the model proposed, per seed"],
    rows,
)}

GPSampler's sampling time per trial (same space, synthetic objective, no training): at 40
trials {gp[40]:.3f} s, at 100 trials {gp[100]:.3f} s.

Runtime of this section: {runtime:.0f} s ({JOBS} runs at once, TUNER_BENCH_JOBS).
Load: {load_before} before, {load_text()} after.
{threads_text()}. Command: `python bench/bench_samplers.py --out bench/out/samplers.md` (or
`make bench BENCH=samplers`; `TUNER_BENCH_SEEDS=3` for a quick run).
"""
    write_section(args.out, text)


if __name__ == "__main__":
    main()
