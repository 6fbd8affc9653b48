"""Benchmark: budget-aware pruning. The default successive-halving pruner with reduction factor
2, 3, 4 and min_resource 1, 2, each given the same total number of epochs.

Digits, 64-128-10 MLP, 20 epochs per trial, objective = validation loss (minimize), the shipped
search space, sampler and batching (TPE, 10 start-up trials, K=4 trials in lockstep). Equal
total epochs: every setting runs until its trials have trained the same budget of epochs in
all (every epoch of every trial, running ones included; the run stops at the epoch that
reaches it), so the number of trials is whatever the setting fits into the budget - a harsher
pruner tries more configurations, a gentler one finishes more of them. Reported per setting
(median over seeds): trials started, COMPLETE trials, the best validation loss, and the test
loss of that best trial (the held-out split, never used to choose: a check that a lower
validation loss is not just luck on the validation split). No confirmation runs (retraining
the best trial with new seeds would cost more than the search itself here).

Usage: ``python bench/bench_pruning.py --out bench/out/pruning.md``; TUNER_BENCH_SEEDS
(default 10) sets the seeds per setting, TUNER_BENCH_EPOCHS (default 600) the budget,
TUNER_BENCH_JOBS (default 2) the runs at once (one process each).
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
from optuna.trial import TrialState
from scipy.stats import rankdata  # ties share their mean rank

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_cfg, load_text, md_table, set_threads, threads_text, write_section  # noqa: E402
from bench_quality import EPOCHS, BudgetSpent, consumed  # noqa: E402

from tuner.batched import DEFAULT_BATCH_TRIALS  # noqa: E402
from tuner.batched_runner import run_batched  # noqa: E402
from tuner.study import best_trial, make_objective, make_pruner, make_sampler  # noqa: E402

SEEDS = int(os.environ.get("TUNER_BENCH_SEEDS", "10"))
BUDGET = int(os.environ.get("TUNER_BENCH_EPOCHS", "600"))
JOBS = int(os.environ.get("TUNER_BENCH_JOBS", "2"))  # runs at once, one process each
SETTINGS = [(rf, mr) for mr in (1, 2) for rf in (2, 3, 4)]  # (reduction_factor, min_resource)


def rungs(rf: int, mr: int) -> str:
    """The epochs at which the pruner compares trials (below [training] epochs)."""
    out, r = [], mr
    while r < EPOCHS:
        out.append(r)
        r *= rf
    return ", ".join(map(str, out))


def run(rf: int, mr: int, seed: int) -> dict[str, float]:
    cfg = bench_cfg("digits", study={"seed": seed}, objective={"metric": "loss"},
                    pruner={"reduction_factor": rf, "min_resource": mr})
    assert cfg.pruner.name == "successive_halving"
    study = optuna.create_study(direction=cfg.direction, sampler=make_sampler(cfg),
                                pruner=make_pruner(cfg))

    def record(_: Any) -> None:
        if consumed(study, full_epochs=False) >= BUDGET:
            raise BudgetSpent

    try:
        run_batched(study, make_objective(cfg), target=10**6,
                    batch_trials=DEFAULT_BATCH_TRIALS, on_trial=record)
    except BudgetSpent:
        pass
    best = best_trial(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return {
        "trials": len(study.get_trials(deepcopy=False)),
        "complete": len(complete),
        "epochs": consumed(study, full_epochs=False),
        "best": float(best.value) if best else float("inf"),
        "test": float(best.user_attrs["test_metric"]) if best else float("inf"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    set_threads()
    load_before = load_text()
    started = time.perf_counter()
    jobs = [(rf, mr, seed) for rf, mr in SETTINGS for seed in range(SEEDS)]
    # runs are independent: one per core, each with TUNER_BENCH_THREADS torch threads
    with ProcessPoolExecutor(JOBS, initializer=set_threads) as pool:
        done = list(pool.map(run, *([j[k] for j in jobs] for k in range(3))))
    results = {s: [done[jobs.index((*s, seed))] for seed in range(SEEDS)] for s in SETTINGS}
    # rank the settings on every seed (seed i: the same TPE seed and trial seeds everywhere)
    ranks = np.array([rankdata([results[s][i]["best"] for s in SETTINGS]) for i in range(SEEDS)])
    rows = []
    for j, (rf, mr) in enumerate(SETTINGS):
        r = results[(rf, mr)]

        def med(key: str, fmt: str, r: list[dict[str, float]] = r) -> str:
            return format(statistics.median(x[key] for x in r), fmt)

        q1, q3 = np.percentile([x["best"] for x in r], [25, 75])
        default = " (default)" if (rf, mr) == (4, 1) else ""
        rows.append([
            f"{rf}, {mr}{default}", rungs(rf, mr), med("trials", ".0f"), med("complete", ".0f"),
            med("epochs", ".0f"), f"{med('best', '.4f')} ({q1:.4f} - {q3:.4f})",
            f"{statistics.mean(ranks[:, j]):.1f}", med("test", ".4f"),
        ])
    runtime = time.perf_counter() - started
    text = f"""
## Budget-aware pruning: successive halving's reduction factor and min_resource

Digits, 64-128-10 MLP, {EPOCHS} epochs per trial, objective: validation loss (minimize), the
shipped search space, sampler (TPE, 10 start-up trials) and K={DEFAULT_BATCH_TRIALS} trials in
lockstep; `[pruner] name = "successive_halving"` with each reduction factor and min_resource.
Equal total epochs: each setting runs until its trials have trained {BUDGET} epochs in all
(every epoch of every trial); the number of trials is what the setting fits into that budget.
{SEEDS} seeds (seed i is the same sampler seed and trial seeds for every setting); medians
over seeds, the best validation loss with its interquartile range, and each setting's mean
rank among the six on the same seed (1 = lowest loss, ties share their mean rank). Test
loss: that of the best trial on the held-out split (never used to choose). Best validation,
not confirmed (a confirmation retrains the best with new seeds: more than the search costs).

{md_table(
    ["reduction factor, min_resource", "rungs (epochs)", "trials", "complete", "epochs",
     "best validation loss (IQR)", "mean rank", "test loss of the best"],
    rows,
)}

Runtime of this section: {runtime:.0f} s ({JOBS} runs at once, TUNER_BENCH_JOBS).
Load: {load_before} before, {load_text()} after.
{threads_text()}. Command: `python bench/bench_pruning.py --out bench/out/pruning.md` (or
`make bench BENCH=pruning`; `TUNER_BENCH_SEEDS=3` for a quick run).
"""
    write_section(args.out, text)


if __name__ == "__main__":
    main()
