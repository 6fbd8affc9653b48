"""Benchmark: whole processes, timed from outside (start to exit, imports and storage included).

Every figure of this section is WHOLE-PROCESS wall time of a command started as a user starts
it (``python -m tuner tune ...``, ``python bench/optuna_example.py``), read by this script on a
monotonic clock around ``subprocess.run``; except the rows marked "in process", which are what
the command itself reports (the study's wall time printed by ``tuner tune``, and the sum of the
trials' ``seconds`` user attribute: training). Commands compared with each other run in turn,
A B A B ..., and each ratio is the median of the pair-by-pair ratios, so that a machine whose
speed drifts (other jobs) moves both sides alike.

1. The equal-work study (digits, 75/25 split, MLP 64-128-10, batch 64, 30 trials x 10 epochs,
   Adam/SGD, lr log-uniform [1e-5, 1], constant schedule, no pruning, divergence guard out of
   reach, ``--no-confirm``, default SQLite storage) against the canonical Optuna + PyTorch
   example run as a script (``bench/optuna_example.py``, in-memory storage). Target >= 3x.
2. The shipped default study (``studies/digits_mlp.toml``, ``--no-confirm``): whole-process
   wall, study wall, training seconds. Targets: training >= 60 % of the study's wall; the
   process's time beyond a bare ``python -c "import torch, sklearn, optuna"`` (timed in the
   same run) at most 2x the training seconds.
3. ``--workers 2 --batch-trials 4`` against ``--workers 1 --batch-trials 4``, same study, same
   trial count, on two studies: the default one (about 2 s of trials after about 2 s of
   start-up that no worker count shortens), and the larger study (a copy of the default with
   no pruner and 120 epochs: about 20 s of trials in one process) where training dominates.
   Target >= 1.7x (on 2 cores). The figure also shows the ceiling of each study: the workers-1
   process with its trial phase (the study's wall that ``tuner tune`` prints) halved.
4. The default study on each storage: the SQLite file (default), a journal file
   (``journal:///``) and Optuna's in-memory storage (``sqlite:///:memory:``, nothing kept).

The split cache (``tuner.split_cache``) lives in a temporary folder made for the run; its first
run (the warm-up) fills it, as a user's first run does.

Usage: ``python bench/bench_process.py --out bench/out/process.md`` (``TUNER_BENCH_REPEATS``,
default 3).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, load_text, md_table, write_section  # noqa: E402

REPEATS = int(os.environ.get("TUNER_BENCH_REPEATS", "3"))
PY = sys.executable
DEFAULT_STUDY = ROOT / "studies" / "digits_mlp.toml"

EQUAL_WORK_TOML = """\
[study]
name = "equal_work"
n_trials = 30
seed = 0

[dataset]
name = "digits"

[split]  # 75/25 as the example; tuner needs a test part: 1 % of the rows
train = 0.75
validation = 0.24
test = 0.01
seed = 0

[model]
hidden = [128]

[training]
epochs = 10
batch_size = 64

[objective]
metric = "accuracy"

[space]
lr = [1e-5, 1.0]
optimizers = ["adam", "sgd"]
schedules = ["constant"]

[sampler]
name = "tpe"

[pruner]
name = "none"

[divergence]
factor = 1e9
"""


def large_study_toml() -> str:
    """The default study with no pruner and 120 epochs (every trial trains them all, unless it
    diverges): training dominates the process (its trial phase halved gives about 1.8x)."""
    text = DEFAULT_STUDY.read_text()
    for old, new in (('name = "digits_mlp"', 'name = "digits_mlp_large"'),
                     ("epochs = 20", "epochs = 120"),
                     ('name = "successive_halving"', 'name = "none"')):
        if old not in text:
            raise SystemExit(f"{DEFAULT_STUDY}: no {old!r} to replace for the larger study")
        text = text.replace(old, new, 1)
    return text


class Run:
    """One timed command: wall seconds, its output."""

    def __init__(self, cmd: list[str], env: dict[str, str], before: Callable[[], None]) -> None:
        self.cmd, self.env, self.before = cmd, env, before

    def __call__(self) -> tuple[float, str]:
        self.before()
        start = time.monotonic()
        done = subprocess.run(self.cmd, env=self.env, cwd=ROOT, capture_output=True, text=True)
        wall = time.monotonic() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(self.cmd)} failed:\n{done.stdout}\n{done.stderr}")
        return wall, done.stdout + done.stderr


def paired(a: Run, b: Run, n: int,
           after_a: Callable[[str], None] | None = None,
           after_b: Callable[[str], None] | None = None,
           ) -> tuple[list[float], list[float], float]:
    """A and B in turn (one warm-up each), ``n`` times: A's walls, B's walls, median A/B.
    ``after_a`` (``after_b``) is called with A's (B's) output after each counted run."""
    a(), b()
    walls_a, walls_b = [], []
    for _ in range(n):
        for run, walls, after in ((a, walls_a, after_a), (b, walls_b, after_b)):
            wall, out = run()
            walls.append(wall)
            if after is not None:
                after(out)
    ratio = statistics.median(x / y for x, y in zip(walls_a, walls_b, strict=True))
    return walls_a, walls_b, ratio


def printed_study_wall(out: str) -> float:
    """The study's wall time that ``tuner tune`` prints ("... trials finished in X s")."""
    match = re.search(r"finished in ([0-9.]+) s", out.replace("\n", " "))
    return float(match.group(1)) if match else float("nan")


def study_figures(out: str, url: str, name: str) -> tuple[float, float]:
    """(study wall printed by tuner tune, sum of the trials' training seconds)."""
    import optuna

    study_wall = printed_study_wall(out)
    study = optuna.load_study(study_name=name, storage=url)
    training = sum(float(t.user_attrs.get("seconds", 0.0)) for t in study.trials)
    return study_wall, training


def med(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    n = REPEATS
    tmp = Path(tempfile.mkdtemp(prefix="tuner-bench-process-"))
    env = dict(os.environ, TUNER_CACHE_DIR=str(tmp / "cache"), OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    (tmp / "equal_work.toml").write_text(EQUAL_WORK_TOML)
    large = tmp / "digits_mlp_large.toml"
    large.write_text(large_study_toml())

    def fresh(*files: Path) -> Callable[[], None]:
        def remove() -> None:
            for f in files:
                for p in f.parent.glob(f.name + "*"):  # the storage, its -wal, .artifacts/
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        return remove

    def tune(study: Path, url: str, *extra: str) -> list[str]:
        return [PY, "-m", "tuner", "tune", str(study), "--no-confirm", "--storage", url,
                *extra]

    rows: list[list[object]] = []
    # 1. equal work against the canonical example
    db = tmp / "equal.db"
    eq = Run(tune(tmp / "equal_work.toml", f"sqlite:///{db}"), env, fresh(db))
    ex = Run([PY, str(ROOT / "bench" / "optuna_example.py")], env, lambda: None)
    w_eq, w_ex, r_eq = paired(eq, ex, n)
    speedup_eq = 1 / r_eq
    rows.append(["equal-work study, tuner (SQLite)", "whole process", med(w_eq), ""])
    rows.append(["canonical Optuna+PyTorch example (in memory)", "whole process", med(w_ex),
                 ""])

    # 2. the default study, and the bare imports
    db = tmp / "default.db"
    url = f"sqlite:///{db}"
    default = Run(tune(DEFAULT_STUDY, url), env, fresh(db))
    bare = Run([PY, "-c", "import torch, sklearn, optuna"], env, lambda: None)
    studies, trainings = [], []

    def figures(out: str) -> None:
        sw, tr = study_figures(out, url, "digits_mlp")
        studies.append(sw)
        trainings.append(tr)

    w_def, w_bare, _ = paired(default, bare, n, after_a=figures)
    beyond = statistics.median(w_def) - statistics.median(w_bare)
    share = statistics.median(t / s for t, s in zip(trainings, studies, strict=True))
    rows.append(["default study, --no-confirm (SQLite)", "whole process", med(w_def), ""])
    rows.append(["default study: the study's wall", "in process", med(studies), ""])
    rows.append(["default study: training (sum of trial seconds)", "in process",
                 med(trainings), ""])
    rows.append(['bare `python -c "import torch, sklearn, optuna"`', "whole process",
                 med(w_bare), ""])

    # 3. workers, on the default study and on the larger one
    workers: dict[str, tuple[float, float, float]] = {}  # study -> speed-up, ceiling, rate
    for label, study in (("default study", DEFAULT_STUDY), ("larger study", large)):
        db2, db1 = tmp / "w2.db", tmp / "w1.db"
        two = Run(tune(study, f"sqlite:///{db2}", "--workers", "2", "--batch-trials", "4"),
                  env, fresh(db2))
        one = Run(tune(study, f"sqlite:///{db1}", "--workers", "1", "--batch-trials", "4"),
                  env, fresh(db1))
        name = "digits_mlp" if study == DEFAULT_STUDY else "digits_mlp_large"
        # per run: (trial phase = the study's wall printed, training = sum of trial seconds)
        figs: dict[int, list[tuple[float, float]]] = {1: [], 2: []}

        def note(out: str, k: int, db: Path, name: str = name,
                 figs: dict[int, list[tuple[float, float]]] = figs) -> None:
            figs[k].append(study_figures(out, f"sqlite:///{db}", name))

        w_two, w_one, r_workers = paired(
            two, one, n, after_a=lambda out, db=db2: note(out, 2, db),
            after_b=lambda out, db=db1: note(out, 1, db))
        phases = [p for p, _ in figs[1]]
        ceiling = statistics.median(w / (w - p / 2) for w, p in zip(w_one, phases, strict=True))
        # training seconds per second of trial phase: how fast work gets done, whatever work
        rate = {k: statistics.median(t / p for p, t in figs[k]) for k in (1, 2)}
        workers[label] = (1 / r_workers, ceiling, rate[2] / rate[1])
        for k, walls in ((2, w_two), (1, w_one)):
            note_k = (f"speed-up over --workers 1: {1 / r_workers:.2f}x; " if k == 2 else "")
            rows.append([
                f"{label}, --workers {k} --batch-trials 4", "whole process", med(walls),
                f"{note_k}trial phase {statistics.median(p for p, _ in figs[k]):.2f} s, "
                f"training {statistics.median(t for _, t in figs[k]):.2f} s (in process)"])

    # 4. storages
    journal = tmp / "default.journal"
    j = Run(tune(DEFAULT_STUDY, f"journal:///{journal}"), env, fresh(journal))
    mem = Run(tune(DEFAULT_STUDY, "sqlite:///:memory:"), env, lambda: None)
    w_j, w_sq, r_j = paired(j, default, n)
    mem_walls: list[float] = []
    w_m, w_sq2, r_m = paired(mem, default, n,
                             after_a=lambda out: mem_walls.append(printed_study_wall(out)))
    rows.append(["default study, journal file", "whole process", med(w_j),
                 f"{r_j:.2f}x SQLite's"])
    rows.append(["default study, in memory (nothing kept)", "whole process", med(w_m),
                 f"{r_m:.2f}x SQLite's"])
    rows.append(["default study, in memory: the study's wall", "in process", med(mem_walls),
                 "no storage at all: what the sampler, pruner and trainer cost"])
    share_mem = statistics.median(trainings) / statistics.median(mem_walls)

    workers_rows = "\n".join(
        f"| --workers 2 vs --workers 1, --batch-trials 4, {label} (whole process, "
        f"{os.cpu_count()} cores; ceiling: the trial phase halved, {ceiling:.2f}x) | "
        f"{speedup:.2f}x (training per second of trial phase: {rate:.2f}x) | >= 1.7x |"
        for label, (speedup, ceiling, rate) in workers.items()
    )
    text = f"""## Whole processes (start to exit)

What was timed: each command from its start to its exit, as a user runs it: interpreter
start-up, imports, the storage and the study included (**whole process**); the rows marked
**in process** are what `tuner tune` itself reports (the study's wall time it prints; the sum
of the trials' `seconds` attribute: training). Median of {n} runs after one warm-up run each
(the warm-up fills the split cache, as a user's first run does); commands compared ran in
turn (A B A B ...) and each ratio is the median of the pair-by-pair ratios, so that other
jobs on the machine slow both sides alike. {load_text()}

{md_table(["command", "figure", "seconds (median)", "note"], rows)}

| target | measured | target |
|---|---|---|
| equal-work study vs the canonical example (whole process) | {speedup_eq:.2f}x faster | >= 3x |
| default study: training / study wall (in process) | {share:.0%} (in memory, no storage: \
{share_mem:.0%}) | >= 60 % |
| default study: whole process beyond bare imports / training seconds | \
{beyond:.2f} s / {statistics.median(trainings):.2f} s = \
{beyond / statistics.median(trainings):.2f}x | <= 2x |
{workers_rows}
| journal file / SQLite, default study (whole process) | {r_j:.2f}x the time | - |
| in memory / SQLite, default study (whole process) | {r_m:.2f}x the time | - |

Training share: even with no storage at all (in memory), the default study spends
{1 - share_mem:.0%} of its wall outside training: Optuna's TPE sampler (its cost per trial: section
4), the pruner, the trials' set-up and the dashboard refresh at the end,
beside 40 trials that train about {1000 * statistics.median(trainings) / 40:.0f} ms each (most
are pruned after an epoch or two). tuner keeps Optuna's sampler as it is.

Workers: with `--workers 2` the command trains as worker 0 from the moment it has loaded the
study, and one worker process joins once the worker server has imported torch. The default
study cannot reach 1.7x whole-process on 2 cores: its process spends about as long starting
(interpreter, imports, storage, split: the same with any worker count) as running its trials,
so even trials twice as fast leave it at the ceiling shown. Nor are the two runs the same
work: two workers' samplers each see the other's trials late (constant liar), so they train
other trials than one process does (on the larger study, fewer that diverge at once and so
more epochs); the "training per second of trial phase" figure (the sum of the trials' seconds
over the trial phase, in process) is the rate at which each run gets training done, whatever
its trials. The larger study, where training dominates, shows what the workers give once the
start-up is small beside the trials. The study wall of each run (in process, without
start-up) is compared in "Parallel workers".
"""
    write_section(args.out, text)
    shutil.rmtree(tmp, ignore_errors=True)  # this run's storages and split cache


if __name__ == "__main__":
    main()
