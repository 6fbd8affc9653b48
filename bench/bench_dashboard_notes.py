"""How long the end-of-run dashboard refresh takes as a study grows.

``refresh_study_notes`` (tuner/dashboard_notes.py) runs at the end of every ``tuner tune``: it
rewrites the study note and three figures and writes a note on each pruned trial that has none.
It is timed on SQLite studies of N trials (two in three pruned, as the objective leaves them),
first when every pruned trial needs its note, then again when none does, against the same
trial notes written through optuna-dashboard's per-trial ``get_note``/``save_note``, which read
every system attribute of the study on each call.

    python bench/bench_dashboard_notes.py --out bench/out/dashboard_notes.md
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import optuna
import optuna_dashboard
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import tiny_study_dict  # noqa: E402

from tuner.config import parse_study_config  # noqa: E402
from tuner.dashboard_notes import refresh_study_notes, trial_note  # noqa: E402
from tuner.storage import make_storage  # noqa: E402

SIZES = (200, 500)
SPACE = {
    "lr": FloatDistribution(1e-4, 1.0, log=True),
    "optimizer": CategoricalDistribution(["sgd", "adam"]),
    "schedule": CategoricalDistribution(["constant", "cosine"]),
}


def build(path: Path, n: int) -> None:
    """A study of ``n`` trials with the user attributes tuner's objective records."""
    study = optuna.create_study(
        storage=make_storage(f"sqlite:///{path}"), study_name="bench", direction="maximize"
    )
    trials = []
    for i in range(n):
        pruned = i % 3 != 0
        attrs = {"outcome": "pruned" if pruned else "complete", "epochs_run": 2, "steps": 12,
                 "seconds": 0.1, "lr_per_epoch": [0.01, 0.01], "train_loss_per_epoch": [1.0, 0.9],
                 "val_metric": 0.8, "val_loss": 0.7}
        if pruned:
            attrs["pruned_reason"] = "pruner: validation metric 0.8 at epoch 2 lagged behind"
        trials.append(create_trial(
            state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
            value=None if pruned else 0.8 + i * 1e-5,
            params={"lr": 10 ** (-4 + 4 * i / n), "optimizer": "sgd", "schedule": "constant"},
            distributions=SPACE, user_attrs=attrs, intermediate_values={1: 0.7, 2: 0.8},
        ))
    study.add_trials(trials)


def per_trial_public_api(study: optuna.Study, cfg) -> None:  # noqa: ANN001
    for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)):
        handle = optuna.trial.Trial(study, t._trial_id)
        if not optuna_dashboard.get_note(handle):
            optuna_dashboard.save_note(handle, trial_note(t, cfg))


def timed(fn) -> float:  # noqa: ANN001
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cfg = parse_study_config(tiny_study_dict(), "bench.toml")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            db, copy = Path(tmp) / f"s{n}.db", Path(tmp) / f"c{n}.db"
            build(db, n)
            shutil.copy(db, copy)
            study = optuna.load_study(study_name="bench", storage=make_storage(f"sqlite:///{db}"))
            first = timed(lambda s=study: refresh_study_notes(s, cfg))
            again = timed(lambda s=study: refresh_study_notes(s, cfg))
            other = optuna.load_study(study_name="bench", storage=make_storage(f"sqlite:///{copy}"))
            public = timed(lambda s=other: per_trial_public_api(s, cfg))
            rows.append((n, n - len(range(0, n, 3)), first, again, public))
            print(f"n={n}: first {first:.2f} s, again {again:.2f} s, per-trial API {public:.2f} s")
    lines = [
        "## Dashboard notes: the end-of-run refresh",
        "",
        "`refresh_study_notes` rewrites the study note and three figures and notes every pruned "
        "trial that has none, at the end of each `tuner tune`. Timed on SQLite studies of N "
        "trials, two in three pruned: *first* writes every trial note, *again* finds none "
        "missing; *per-trial API* writes the same trial notes with optuna-dashboard's "
        "`get_note`/`save_note` per trial, which reread all of the study's system attributes on "
        "each call (tuner reads them once).",
        "",
        "| trials | pruned | first refresh (s) | refresh again (s) | per-trial API, notes (s) |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *[f"| {n} | {p} | {a:.2f} | {b:.2f} | {c:.2f} |" for n, p, a, b, c in rows],
        "",
        "Command: `python bench/bench_dashboard_notes.py --out bench/out/dashboard_notes.md` "
        "(or `make bench BENCH=dashboard_notes`).",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
