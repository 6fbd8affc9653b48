"""Benchmark: ``[space] lr = "auto"`` (LR range test bounds + seeded first trials) against the
wide default bounds [1e-4, 1.0], on the same trial budget and seeds.

For each dataset and seed, three studies run with the same sampler seed, trial budget, model,
schedules and pruner; the objective is the validation loss (minimize), so that values compare:

- ``wide``: ``lr = [1e-4, 1.0]`` (the shipped default);
- ``auto``: ``lr = "auto"``: bounds from the LR range test and one enqueued trial per optimizer
  at its suggested rate (what ``tuner tune`` does);
- ``auto bounds only``: the same bounds given as fixed numbers, no enqueued trials (to tell the
  two effects apart).

Usage: ``python bench/bench_lr_auto.py --out bench/out/lr_auto.md [--seeds 5] [--trials 15]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from tuner.config import StudyConfig, parse_study_config
from tuner.lr_find import auto_bounds, lr_range_tests
from tuner.runner import run_tune
from tuner.study import best_value, trial_kind

ALL_OPTIMIZERS = ["sgd", "adam", "adamw", "rmsprop"]
MAKE_CLASSIFICATION = {
    "name": "make_classification", "n_samples": 5000, "n_features": 20, "n_informative": 10,
}
# label -> (dataset section, [space] optimizers). With all four optimizers the bounds are the
# envelope over them; the Adam-only cases show what the bounds do for a single optimizer.
CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "digits": ({"name": "digits"}, ALL_OPTIMIZERS),
    "breast_cancer": ({"name": "breast_cancer"}, ALL_OPTIMIZERS),
    "make_classification (5,000 rows)": (MAKE_CLASSIFICATION, ALL_OPTIMIZERS),
    "digits, Adam only": ({"name": "digits"}, ["adam"]),
    "breast_cancer, Adam only": ({"name": "breast_cancer"}, ["adam"]),
}
WIDE = [1e-4, 1.0]
ARMS = ("wide", "auto", "auto bounds only")


def study_config(
    dataset: dict[str, Any], optimizers: list[str], seed: int, trials: int, lr: Any
) -> StudyConfig:
    data = {
        "study": {"name": "bench_lr_auto", "n_trials": trials, "seed": seed},
        "dataset": dataset,
        "split": {"train": 0.7, "validation": 0.15, "test": 0.15, "seed": 0},
        "model": {"hidden": [128]},
        "training": {"epochs": 20, "batch_size": 64, "device": "cpu"},
        "objective": {"metric": "loss"},
        "space": {"lr": lr, "optimizers": optimizers},
        "sampler": {"name": "tpe", "n_startup_trials": 10},
        "pruner": {"name": "hyperband"},
    }
    return parse_study_config(data, "<bench>")


def run_arm(cfg: StudyConfig, folder: Path) -> dict[str, Any]:
    url = f"sqlite:///{folder / 'bench.db'}"
    cfg = replace(cfg, path=str(folder / "bench.toml"))
    started = time.perf_counter()
    quiet = Console(file=open("/dev/null", "w"))  # noqa: SIM115 (closed with the process)
    outcome = run_tune(cfg, url, console=quiet, progress=False)
    seconds = time.perf_counter() - started
    kinds = [trial_kind(t) for t in outcome.study.get_trials(deepcopy=False)]
    rec = outcome.study.user_attrs.get("lr_find", {})
    return {
        "best": best_value(outcome.study),  # finite COMPLETE values only
        "diverged": kinds.count("diverged"),
        "seconds": seconds,
        "sweep_seconds": rec.get("seconds", 0.0),
        "bounds": rec.get("bounds"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=15)
    args = parser.parse_args()
    # the MLPs are too small to gain from intra-op threads; on a shared 2-core machine two
    # threads made a digits study ~3x slower (18 s against 5.5 s, same result). Both arms alike.
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    bounds_seen: dict[str, list[list[float]]] = {}
    for label, (dataset, optimizers) in CASES.items():
        for seed in seeds:
            auto_cfg = study_config(dataset, optimizers, seed, args.trials, "auto")
            b = auto_bounds(lr_range_tests(auto_cfg))  # same seed: the bounds 'auto' finds
            lrs = {"wide": WIDE, "auto": "auto", "auto bounds only": [b.low, b.high]}
            bounds_seen.setdefault(label, []).append([b.low, b.high])
            for arm in ARMS:
                cfg = study_config(dataset, optimizers, seed, args.trials, lrs[arm])
                with tempfile.TemporaryDirectory() as tmp:
                    r = run_arm(cfg, Path(tmp))
                results.setdefault((label, arm), []).append(r)
                print(f"{label} seed {seed} {arm}: best {r['best']:.4f}, "
                      f"{r['diverged']} diverged, {r['seconds']:.1f} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results, bounds_seen, seeds, args.trials))
    print(f"wrote {args.out}")
    return 0


def render(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    bounds_seen: dict[str, list[list[float]]],
    seeds: list[int],
    trials: int,
) -> str:
    lines = [
        '## LR range test: `lr = "auto"` against wide bounds',
        "",
        f"Best validation loss (cross-entropy, lower is better) after {trials} trials, per "
        f"seed ({', '.join(map(str, seeds))}: the sampler and trial seeds; the same for every "
        "arm), MLP [128], 20 epochs, batch 64, TPE (10 startup trials), Hyperband pruner, all "
        "four optimizers (or Adam only) and all schedules, torch on 1 thread.",
        "",
        "- `wide`: lr in [1e-4, 1.0] (the shipped default);",
        "- `auto`: bounds from the LR range test plus one enqueued trial per optimizer at its "
        "suggested rate (what `tuner tune` does with `lr = \"auto\"`);",
        "- `auto bounds only`: the same bounds as fixed numbers, nothing enqueued.",
        "",
        "Seconds: wall time of the arm's studies, summed over seeds (for `auto` including the "
        "sweeps). 'Better than wide': seeds on which the arm's best loss is lower.",
        "",
        "| case | arm | best val loss per seed | mean | better than wide | diverged trials "
        "| seconds |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for label in CASES:
        wide = [r["best"] for r in results[(label, "wide")]]
        for arm in ARMS:
            rs = results[(label, arm)]
            best = [r["best"] for r in rs]
            wins = "" if arm == "wide" else (
                f"{sum(b < w for b, w in zip(best, wide, strict=True))}/{len(best)}"
            )
            lines.append(
                f"| {label} | {arm} | {' / '.join(f'{b:.4f}' for b in best)} | "
                f"{statistics.mean(best):.4f} | {wins} | {sum(r['diverged'] for r in rs)} | "
                f"{sum(r['seconds'] for r in rs):.0f} |"
            )
    n = sum(len(results[(label, "wide")]) for label in CASES)
    lines += [""]
    for arm in ARMS[1:]:
        wins = sum(
            a["best"] < w["best"]
            for label in CASES
            for a, w in zip(results[(label, arm)], results[(label, "wide")], strict=True)
        )
        lines.append(f"- `{arm}` has a lower best validation loss than `wide` on {wins} of {n} "
                     "(case, seed) pairs.")
    diverged = {arm: sum(r["diverged"] for label in CASES for r in results[(label, arm)])
                for arm in ARMS}
    lines.append("- Diverged trials in all: " + ", ".join(
        f"`{arm}` {count}" for arm, count in diverged.items()) + f" (of {n * trials} each).")
    lines += ["", "Bounds found by the LR range test (per seed) and sweep seconds (all "
              "optimizers, per seed):", ""]
    for label in CASES:
        rs = results[(label, "auto")]
        shown = ", ".join(f"[{lo:.2g}, {hi:.2g}]" for lo, hi in bounds_seen[label])
        secs = ", ".join(f"{r['sweep_seconds']:.1f}" for r in rs)
        lines.append(f"- {label}: {shown}; sweeps {secs} s")
    lines += [
        "",
        "Command: `make bench BENCH=lr_auto` (`python bench/bench_lr_auto.py --out "
        "bench/out/lr_auto.md`).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
