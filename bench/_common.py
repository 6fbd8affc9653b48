"""Shared helpers of the performance benchmarks (bench_engine, bench_overhead, bench_quality,
bench_storage): study configurations, sampled trial parameters, one fresh process per measured
variant, Markdown tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna

from tuner.config import StudyConfig, load_study_config
from tuner.space import suggest_params

ROOT = Path(__file__).resolve().parent.parent
STUDIES = {
    "digits": ROOT / "studies" / "digits_mlp.toml",
    "make_classification": ROOT / "studies" / "make_classification_mlp.toml",
}
DESCRIBE = {
    "digits": "digits (1,257 training rows, 64-128-10 MLP, batch 64, 20 epochs)",
    "make_classification": (
        "make_classification (50,000 rows: 35,000 training, 20-64-64-2 MLP, batch 256, 5 epochs)"
    ),
}
# torch threads of every benchmark process: TUNER_BENCH_THREADS, default 1, as `tuner tune` trains
# by default (tuner.engine.training_threads); every variant, the reference included, gets the
# same. 0 leaves torch's own choice (one per core), which on this shared 2-core machine made
# small steps 10-80x slower whenever other work ran (spinning intra-op threads).
BENCH_THREADS = int(os.environ.get("TUNER_BENCH_THREADS", "1"))


def set_threads() -> int:
    """Apply TUNER_BENCH_THREADS (0: leave torch's default); returns the threads in use."""
    import torch

    if BENCH_THREADS > 0:
        torch.set_num_threads(BENCH_THREADS)
    return torch.get_num_threads()


# Equal-work benchmarks keep every trial to its full length, as the usual loop (no divergence
# guard) would: learning rates low enough that no configuration blows up, and an explosion
# factor so large that only a NaN or infinite loss would stop a trial (none does: each section
# checks that every variant trained the same epochs).
EQUAL_WORK_LR = (1e-4, 1e-2)
EQUAL_WORK_DIVERGENCE_FACTOR = 1e9


def bench_cfg(name: str, /, **sections: dict[str, Any]) -> StudyConfig:
    """A shipped study with some fields replaced: ``bench_cfg("digits", pruner={"name": ...})``."""
    cfg = load_study_config(STUDIES[name])
    for section, values in sections.items():
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **values)})
    return cfg


def equal_work_cfg(study: str) -> StudyConfig:
    """The study as the equal-work benchmarks run it: random sampler, no pruner, safe LRs, no
    stop but for a non-finite loss."""
    return bench_cfg(
        study,
        sampler={"name": "random"},
        pruner={"name": "none"},
        space={"lr": EQUAL_WORK_LR},
        divergence={"factor": EQUAL_WORK_DIVERGENCE_FACTOR},
    )


def sample_params(cfg: StudyConfig, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` trial parameter sets drawn at random from the study's space (to enqueue)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        suggest_params(trial, cfg.space)
        out.append(dict(trial.params))
    return out


def run_variant(
    variant: str, study: str, params: list[dict[str, Any]], storage: str, repeats: int = 1
) -> dict:
    """Run one measured variant in a fresh Python process (see ``_variants.py``): the fastest
    of ``repeats`` runs in ``seconds``, all of them in ``all_seconds``."""
    with tempfile.TemporaryDirectory() as tmp:
        pfile, rfile = Path(tmp, "params.json"), Path(tmp, "result.json")
        pfile.write_text(json.dumps(params))
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "_variants.py"), variant, study, str(pfile),
             storage, str(repeats), str(rfile), tmp],
            check=True, cwd=ROOT,
        )
        return json.loads(rfile.read_text())


def load_text() -> str:
    """The machine's load averages, to judge how disturbed a measurement may be."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) / {five:.2f} (5 min) on {os.cpu_count()} cores"


def threads_text() -> str:
    return f"{set_threads()} torch thread(s) per process (TUNER_BENCH_THREADS)"


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text.strip() + "\n")
    print(text)
