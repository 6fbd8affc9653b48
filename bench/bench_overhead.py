"""Benchmark 2: the framework's overhead against a bare PyTorch loop training the same
configurations.

The bare loop (``bare_loop`` in bench/_variants.py) does per step what tuner's engine does
(tensors in memory, mini-batches by indexing a seeded permutation, the same fused ``torch.optim``
kernels, the same ``lr_scheduler``), with nothing of tuner or Optuna around it: no study, no
sampler, no reports, no divergence guard, no user attributes. tuner one at a time runs the same
enqueued configurations through ``study.optimize`` and its objective (in-memory storage), and
through ``run_tune`` on a SQLite file (the default storage). Overhead = tuner / bare - 1.

Usage: ``python bench/bench_overhead.py --out bench/out/overhead.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    DESCRIBE,
    equal_work_cfg,
    load_text,
    md_table,
    run_variant,
    sample_params,
    threads_text,
    write_section,
)

from tuner.batched import DEFAULT_BATCH_TRIALS  # noqa: E402

TRIALS = {"digits": 16, "make_classification": 8}
REPEATS = 2
TARGET = 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rows, checks = [], []
    load_before = load_text()
    for study, n in TRIALS.items():
        params = sample_params(equal_work_cfg(study), n, seed=1)
        bare = run_variant("bare", study, params, "memory", REPEATS)["seconds"]
        loop = run_variant("tuner-1-torch", study, params, "memory", REPEATS)["seconds"]
        mem = run_variant("tuner-1", study, params, "memory", REPEATS)["seconds"]
        sql = run_variant("tuner-1", study, params, "sqlite", REPEATS)["seconds"]
        batched = run_variant("tuner-K", study, params, "memory", REPEATS)["seconds"]
        over_loop, over_mem, over_sql = loop / bare - 1, mem / bare - 1, sql / bare - 1
        per_trial_sql = (sql - mem) / n * 1000
        rows.append([
            study, n, f"{bare:.2f}",
            f"{loop:.2f} (**{over_loop:+.1%}**)",
            f"{mem:.2f} (**{over_mem:+.1%}**)",
            f"{sql:.2f} (**{over_sql:+.1%}**; storage {per_trial_sql:.0f} ms/trial)",
            f"{batched:.2f} ({bare / batched:.1f}x faster than bare)",
        ])
        for label, value in (("same loop, in memory", over_loop), ("in memory", over_mem),
                             ("SQLite file", over_sql)):
            met = "met" if value <= TARGET else "MISSED"
            checks.append(f"{study}, {label}: {value:+.1%} (target <= {TARGET:.0%}, {met})")
    text = f"""
## 2. Framework overhead against a bare PyTorch loop

The same configurations as a bare loop would train them (random draws, learning rates in
[1e-4, 1e-2], pruning off), once each: the bare loop (`bare_loop` in
[bench/_variants.py](bench/_variants.py)) does per step exactly the work of tuner's engine
(tensors in memory, mini-batches by indexing a seeded permutation, the same fused `torch.optim`
kernels and `lr_scheduler`, validation every epoch, test at the end) and nothing else. "Same
loop" is tuner training with that very loop (`tuner.engine.train`, autograd and `torch.optim`,
as for models it cannot stack) inside the study, sampler, objective, per-epoch reports and
pruner calls, the divergence guard, training-loss bookkeeping and user attributes, in memory
(`study.optimize` with tuner's objective): the framework's own cost. "One at a time" is what
`tuner tune --batch-trials 1` runs for an MLP (the stacked engine with one member, its forward
and backward passes written out), in memory or on a SQLite file (`run_tune`).
Fastest of {REPEATS} runs each, in a fresh process per variant; overhead = tuner / bare - 1.

- {DESCRIBE['digits']}
- {DESCRIBE['make_classification']}

{md_table(
    ["dataset", "trials", "bare loop s", "tuner, same loop, in memory s (overhead)",
     "tuner one at a time, in memory s (overhead)",
     "tuner one at a time, SQLite file s (overhead)",
     f"tuner batched K={DEFAULT_BATCH_TRIALS}, in memory s"],
    rows,
)}

Target: overhead at most {TARGET:.0%}.
{chr(10).join('- ' + c for c in checks)}

What is left on a SQLite file is the storage: each trial is created in a transaction, gets its
first heartbeat, and is written (parameters, reports, attributes, end) in one more (section 4
measures the storage per trial), and each trial counts the study's trials with one query to
stop at exactly the requested number; "storage" is the SQLite run's extra time over the
in-memory one, per trial.

Load: {load_before} before, {load_text()} after. {threads_text()}.
Command: `python bench/bench_overhead.py --out bench/out/overhead.md` (or
`make bench BENCH=overhead`).
"""
    write_section(args.out, text)


if __name__ == "__main__":
    main()
