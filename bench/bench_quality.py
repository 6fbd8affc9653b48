"""Benchmark 3: compute to quality. On the same budget of epochs, the best validation loss
reached against the epochs consumed, tuner's default against random search without pruning.

Digits, 64-128-10 MLP, 20 epochs per trial, objective = validation loss (minimize), the shipped
search space (lr in [1e-4, 1], four optimizers, seven schedules). Budget: random search's
30 trials x 20 epochs = 600 epochs. Arms, each with several seeds (the study seed seeds the
sampler and every trial's torch seed):

- ``random``: ``RandomSampler``, no pruner; every trial counts its full 20 epochs (a random
  search without pruning trains diverged configurations to the end);
- ``tuner``: the shipped study's sampler and pruner, TPE (10 random start-up trials) +
  successive halving + divergence pruning, batched trials (K=4, the default), run until it has
  consumed the same 600 epochs;
- ``tuner K=8``: the same with ``--batch-trials 8``;
- ``tuner one at a time``: the same with ``--batch-trials 1``.

Epochs consumed count every epoch trained by every trial (running ones included, a diverged
trial's last partial epoch as one). The best value is that of the best COMPLETE trial so far.

Usage: ``python bench/bench_quality.py --out bench/out/quality.md [--seeds 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    bench_cfg,
    load_text,
    md_table,
    set_threads,
    threads_text,
    write_section,
)

from tuner.batched import DEFAULT_BATCH_TRIALS  # noqa: E402
from tuner.batched_runner import run_batched  # noqa: E402
from tuner.study import make_objective, make_pruner, make_sampler  # noqa: E402

RANDOM_TRIALS = 30
EPOCHS = 20
BUDGET = RANDOM_TRIALS * EPOCHS
REACH_TOLERANCE = 1e-3
TUNER_SEEDS_FROM = 100  # tuner's seeds differ from random search's: no shared start-up trials


class BudgetSpent(Exception):
    """Raised by the callback once the epoch budget is consumed."""


def best_complete(study: optuna.Study) -> float:
    values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return min(values) if values else float("inf")  # type: ignore[type-var]


def consumed(study: optuna.Study, full_epochs: bool) -> int:
    total = 0
    for t in study.get_trials(deepcopy=False):
        if full_epochs and t.state.is_finished():
            total += EPOCHS
        elif t.state.is_finished():
            total += int(t.user_attrs.get("epochs_run", len(t.intermediate_values)))
        else:
            total += len(t.intermediate_values)
    return total


# the tuner arms: trials trained in lockstep per arm (1: one at a time)
BATCH = {"tuner": DEFAULT_BATCH_TRIALS, "tuner K=8": 8, "tuner one at a time": 1}


def run_arm(arm: str, seed: int) -> list[tuple[int, float, float]]:
    """The (epochs consumed, best validation loss, seconds) curve of one arm and seed."""
    overrides: dict[str, Any] = {"study": {"seed": seed}, "objective": {"metric": "loss"}}
    if arm == "random":
        overrides |= {"sampler": {"name": "random"}, "pruner": {"name": "none"}}
    cfg = bench_cfg("digits", **overrides)  # tuner: the shipped study's sampler and pruner
    study = optuna.create_study(  # named: a Hyperband pruner would assign brackets by name
        study_name=f"quality-{arm}-{seed}",
        direction=cfg.direction, sampler=make_sampler(cfg), pruner=make_pruner(cfg),
    )
    objective = make_objective(cfg)
    curve: list[tuple[int, float, float]] = []
    started = time.perf_counter()

    def record(study: optuna.Study, trial: Any) -> None:
        spent = consumed(study, full_epochs=arm == "random")
        curve.append((spent, best_complete(study), time.perf_counter() - started))
        if spent >= BUDGET:
            raise BudgetSpent

    try:
        if arm != "random":
            run_batched(
                study, objective, target=10**6, batch_trials=BATCH[arm],
                on_trial=lambda t: record(study, t),
            )
        else:
            study.optimize(objective, n_trials=10**6, callbacks=[record])
    except BudgetSpent:
        pass
    return curve


def best_at(curve: list[tuple[int, float, float]], epochs: float) -> float:
    """The best value reached within ``epochs`` consumed (inf before the first complete)."""
    values = [best for spent, best, _ in curve if spent <= epochs]
    return min(values) if values else float("inf")


def reach(curve: list[tuple[int, float, float]], target: float) -> tuple[int, float] | None:
    """(epochs consumed, seconds) when the best value first came within 0.1% of ``target``."""
    for spent, best, seconds in curve:
        if best <= target * (1 + REACH_TOLERANCE):
            return spent, seconds
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    set_threads()
    load_before = load_text()
    arms = ("random", *BATCH)
    curves = {
        arm: [run_arm(arm, seed + (0 if arm == "random" else TUNER_SEEDS_FROM))
              for seed in range(args.seeds)]
        for arm in arms
    }
    random_finals = [best_at(c, BUDGET) for c in curves["random"]]
    target = statistics.median(random_finals)
    shipped = bench_cfg("digits")  # the sampler and pruner the tuner arms run
    pruner = f"{shipped.pruner.name.replace('_', ' ')} (reduction factor " \
        f"{shipped.pruner.reduction_factor})"
    rows, fractions = [], {a: [] for a in arms[1:]}
    seconds: dict[str, list[float]] = {a: [] for a in arms[1:]}
    for i in range(args.seeds):
        row: list[Any] = [i, f"{random_finals[i]:.4f}"]
        for arm in arms[1:]:
            curve = curves[arm][i]
            reached = reach(curve, target)
            frac = reached[0] / BUDGET if reached is not None else float("inf")
            fractions[arm].append(frac)
            seconds[arm].append(reached[1] if reached is not None else float("inf"))
            row += [
                f"{best_at(curve, BUDGET / 3):.4f} / {best_at(curve, BUDGET):.4f}",
                f"{reached[0]} ({frac:.0%}, {reached[1]:.1f} s)" if reached else "not reached",
            ]
        rows.append(row)
    medians = {arm: statistics.median(f) for arm, f in fractions.items()}
    checks = [
        f"{arm}: median {medians[arm]:.0%} of the budget "
        f"({'met' if medians[arm] <= 1 / 3 else 'MISSED'}: target <= 33%); per seed "
        + ", ".join(f"{f:.0%}" if f != float("inf") else "not reached" for f in fractions[arm])
        for arm in fractions
    ] + [
        f"{arm}: median {statistics.median(seconds[arm]):.1f} s of wall time to the mark"
        for arm in seconds
    ]
    for arm in arms[1:]:
        finals = [best_at(c, BUDGET) for c in curves[arm]]
        checks.append(
            f"{arm}, at the full budget: median best {statistics.median(finals):.4f} against "
            f"random search's {target:.4f}; better than the mark in "
            f"{sum(f < target for f in finals)} of {len(finals)} runs"
        )
    text = f"""
## 3. Compute to quality: best validation loss against epochs consumed

Digits, 64-128-10 MLP, {EPOCHS} epochs per trial, objective: validation loss (minimize), the
shipped search space (lr in [1e-4, 1], SGD/Adam/AdamW/RMSprop, seven schedules). Budget: the
{RANDOM_TRIALS} x {EPOCHS} = {BUDGET} epochs of a random search without pruning (`RandomSampler`,
no pruner; each of its trials counts {EPOCHS} epochs, diverged or not). tuner's default (TPE with
{shipped.sampler.n_startup_trials} random start-up trials, {pruner}, divergence pruning,
batched K={DEFAULT_BATCH_TRIALS}), the same with 8 trials in lockstep (`--batch-trials 8`)
and one trial at a time (`--batch-trials 1`) run until they have consumed as many
epochs (every epoch of every trial, running ones included). The best value is the best
complete trial's so far. Run i uses seed i for random search and seed {TUNER_SEEDS_FROM} + i for
tuner (a seed seeds the sampler and each trial's weights and batches; different seeds, so that
tuner's random start-up trials are not random search's first trials). The mark to reach is the
median of random search's final bests, **{target:.4f}**, within {REACH_TOLERANCE:.1%}.
Trials in lockstep are asked before the results of the others are known (the sampler sees only
finished trials), so the more trials run together, the more epochs it takes to use what they
teach; in exchange each epoch costs less wall time (the seconds below, in memory, one process).

{md_table(
    ["run", "random: best after 600 epochs",
     *[h for arm in BATCH for h in (f"{arm}: best after 200 / 600",
                                    f"{arm}: epochs (seconds) to the mark")]],
    rows,
)}

Target: tuner reaches random search's final best within a third of its epochs (200).
{chr(10).join('- ' + c for c in checks)}

Load: {load_before} before, {load_text()} after. {threads_text()}.
Command: `python bench/bench_quality.py --out bench/out/quality.md` (or
`make bench BENCH=quality`).
"""
    write_section(args.out, text)


if __name__ == "__main__":
    main()
