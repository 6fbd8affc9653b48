"""Benchmark 4: per-trial overhead of the sampler plus the storage, up to 1,000 trials.

A study with tuner's default sampler (TPE, multivariate, grouped, seeded) and pruner
(successive halving) on tuner's default storage (a SQLite file opened by
``tuner.storage.make_storage``) runs 1,000 trials of a stand-in objective that does everything
tuner's objective does except training: ``suggest_params`` over the digits study's space, one
report and one ``should_prune`` per epoch (20 epochs), ``record_result`` of a 20-epoch result
into the user attributes, and the final
tell. The time per trial is split into the storage (time inside Optuna's ``RDBStorage`` methods)
and the rest (sampler, pruner, Optuna's bookkeeping), per window of 100 trials.

Usage: ``python bench/bench_storage.py --out bench/out/storage.md [--trials 1000]``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_cfg, load_text, md_table, threads_text, write_section  # noqa: E402

from tuner.engine import EpochReport, TrainResult  # noqa: E402
from tuner.lifecycle import CallableWork, run_lifecycle  # noqa: E402
from tuner.shared_reads import wrap  # noqa: E402
from tuner.space import suggest_params  # noqa: E402
from tuner.storage import make_storage  # noqa: E402
from tuner.storage_guard import GuardedRDBStorage  # noqa: E402
from tuner.study import make_pruner, make_sampler, record_result  # noqa: E402

EPOCHS = 20
WINDOW = 100


class StorageClock:
    """Adds up the wall time spent inside tuner's storage operations: every call into
    Optuna's ``RDBStorage`` goes through ``GuardedRDBStorage._call`` (and the one-transaction
    writes of ``tuner.shared_reads`` too); nested calls are counted once."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._depth = 0
        self._saved: Callable[..., Any] | None = None

    def __enter__(self) -> StorageClock:
        self._saved = saved = GuardedRDBStorage._call

        def timed(storage: Any, *args: Any, **kwargs: Any) -> Any:
            self._depth += 1
            started = time.perf_counter()
            try:
                return saved(storage, *args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds += time.perf_counter() - started

        GuardedRDBStorage._call = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        GuardedRDBStorage._call = self._saved  # type: ignore[method-assign]


def stand_in_objective(cfg: Any) -> Callable[[optuna.Trial], float]:
    """tuner's objective without the training: the values follow a smooth function of the LR."""

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, cfg.space)
        quality = 0.97 - 0.05 * (math.log10(params.lr) + 2.0) ** 2
        result = TrainResult(status="complete", epochs=0, steps=0)
        for epoch in range(1, EPOCHS + 1):
            value = quality * (1 - 0.5 ** epoch)
            report = EpochReport(epoch, epoch * 20, 1.0 / epoch, 1.0 / epoch, value, params.lr)
            result.history.append(report)
            result.lrs += [params.lr] * 20
            result.epochs, result.steps = epoch, epoch * 20
            trial.report(value, epoch)
            if trial.should_prune():
                result.status = "pruned"
                break
        if result.status == "complete":
            result.test_metric, result.test_loss = value, 0.1
        record_result(trial, result, cfg.study.seed + trial.number)
        if result.status == "pruned":
            raise optuna.TrialPruned()
        return value

    return objective


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--trials", type=int, default=1000)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = bench_cfg("digits")
    load_before = load_text()
    windows: list[tuple[int, float, float]] = []  # (last trial, total s, storage s)
    with tempfile.TemporaryDirectory() as tmp, StorageClock() as clock:
        # opened as tuner tune opens it: Optuna's RDB storage behind tuner's cache, which
        # shares reads and writes each trial in one transaction (tuner.shared_reads)
        storage = wrap(make_storage(f"sqlite:///{Path(tmp) / 'tuner.db'}"))
        study = optuna.create_study(
            storage=storage, study_name="bench_storage", direction=cfg.direction,
            sampler=make_sampler(cfg), pruner=make_pruner(cfg),
        )
        objective = stand_in_objective(cfg)
        for start in range(0, args.trials, WINDOW):
            clock.seconds = 0.0
            started = time.perf_counter()
            # tuner's trial lifecycle, as `tuner tune` runs a trial (claim, exact count, ask,
            # reports and should_prune with shared reads, tell)
            run_lifecycle(study, CallableWork(objective),
                          target=start + min(WINDOW, args.trials - start))
            windows.append((start + WINDOW, time.perf_counter() - started, clock.seconds))
        states = [t.state for t in study.get_trials(deepcopy=False)]
        writes = storage.transactions / max(1, len(states))
    n_pruned = sum(s == optuna.trial.TrialState.PRUNED for s in states)
    rows = []
    for last, total, store in windows:
        ms = 1000 / WINDOW
        rows.append([f"{last - WINDOW + 1}-{last}", f"{total * ms:.1f}", f"{store * ms:.1f}",
                     f"{(total - store) * ms:.1f}"])
    total_s = sum(w[1] for w in windows)
    text = f"""
## 4. Per-trial overhead of the sampler and the storage, up to {args.trials:,} trials

tuner's default sampler (TPE, multivariate and grouped, 10 random start-up trials) and pruner
(successive halving) on its default storage (a SQLite file, WAL journal, opened as `tuner tune`
opens it), through tuner's trial lifecycle (`tuner.lifecycle.run_lifecycle`, as `tuner tune`
runs a trial), with a stand-in objective that does all that tuner's objective does except training:
`suggest_params` over the digits space (up to 8 parameters), one report and one `should_prune`
per epoch for {EPOCHS} epochs, `record_result` into the user attributes, and the tell. Time per
trial, averaged over windows of {WINDOW} trials; "storage" is the time inside the storage's
operations (every call into Optuna's `RDBStorage` and tuner's one-transaction writes, through
`GuardedRDBStorage._call`), "sampler, pruner and the rest" is everything else. {n_pruned} of
{len(states)} trials were pruned (a pruned trial reports fewer epochs). Each trial's writes
(parameters, reports, attributes, state) went to the file in {writes:.1f} transactions on
average (`tuner.shared_reads` keeps a running trial's writes and commits them with its end, or
once a second for a long trial).

{md_table(["trials", "ms per trial", "storage ms", "sampler, pruner and the rest ms"], rows)}

{args.trials:,} trials took {total_s:.0f} s in all, {total_s / args.trials * 1000:.0f} ms per trial
on average. For scale, divide the in-memory digits rows of sections 1 and 2 by their 16 trials:
a 20-epoch digits trial trains in less time than this, so on the default storage the per-trial
overhead weighs as much as the training; the dashboard and resumable studies are what it buys.
What remains of the storage's share: creating each trial, its heartbeat-free reads of the
study (one read shared by the sampler's and the pruner's calls of a burst) and the one write.
The sampler's share grows with the number of finished trials (TPE fits its densities to all of
them).

Load: {load_before} before, {load_text()} after. {threads_text()}.
Command: `python bench/bench_storage.py --out bench/out/storage.md` (or
`make bench BENCH=storage`).
"""
    write_section(args.out, text)


if __name__ == "__main__":
    main()
