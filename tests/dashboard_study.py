"""A small finished tuner study for the dashboard tests, and a dashboard server in a thread.

The study (iris, 4 epochs, median pruner) holds a complete trial, a trial pruned by the pruner,
a diverged trial (lr = 1000, enqueued), and two trials that a tuner run never makes but a study
must survive: one with NaN and infinite intermediate values, one pruned before any report.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from tuner.config import StudyConfig, load_study_config
from tuner.dashboard import open_server
from tuner.runner import run_tune
from tuner.storage import make_storage
from tuner.study import artifact_folder, open_study, trial_kind

STUDY_TOML = """\
[study]
name = "dash_iris"
n_trials = 4
seed = 0

[dataset]
name = "iris"

[split]
train = 0.6
validation = 0.2
test = 0.2
seed = 0

[model]
hidden = [16]

[training]
epochs = 4
batch_size = 16

[objective]
metric = "accuracy"

[space]
lr = [1e-4, 1e3]
optimizers = ["sgd", "adam"]
schedules = ["constant", "cosine"]

[sampler]
name = "tpe"
n_startup_trials = 2

[pruner]
name = "median"
n_startup_trials = 1
n_warmup_steps = 0
"""


@dataclass(frozen=True)
class FinishedStudy:
    """The study file, its storage URL, the study, and trial numbers by kind."""

    cfg: StudyConfig
    url: str
    study: optuna.Study
    pruned: int
    diverged: int
    nan_trial: int
    no_report_trial: int


def build_finished_study(folder: Path) -> FinishedStudy:
    """Run the study above with ``tuner``'s own runner, then add the two odd trials."""
    path = folder / "dash_iris.toml"
    path.write_text(STUDY_TOML)
    cfg = load_study_config(path)
    url = f"sqlite:///{folder / 'tuner.db'}"
    study = open_study(cfg, url)
    # a good first trial, a diverging one, and one too slow to keep up with the first
    study.enqueue_trial({"lr": 0.05, "optimizer": "adam", "schedule": "constant"})
    study.enqueue_trial({"lr": 1000.0, "optimizer": "sgd", "schedule": "constant",
                         "optimizer.momentum": 0.9, "optimizer.nesterov": False})
    study.enqueue_trial({"lr": 1e-4, "optimizer": "sgd", "schedule": "constant",
                         "optimizer.momentum": 0.8, "optimizer.nesterov": False})
    run_tune(cfg, url, n_trials=4, progress=False, batch_trials=1)

    lr = {"lr": FloatDistribution(1e-4, 1e3, log=True)}
    odd = study.ask(lr)
    odd.report(float("nan"), 1)
    odd.report(float("inf"), 2)
    study.tell(odd, state=TrialState.PRUNED)
    bare = study.ask(lr)
    study.tell(bare, state=TrialState.PRUNED)
    # a second run with nothing left to do refreshes the notes (now for the odd trials too)
    run_tune(cfg, url, n_trials=4, progress=False, batch_trials=1)

    kinds = {t.number: trial_kind(t) for t in study.get_trials()}
    assert kinds[0] == "complete" and kinds[1] == "diverged" and kinds[2] == "pruned", kinds
    assert any(math.isnan(v) for v in study.trials[odd.number].intermediate_values.values())
    return FinishedStudy(cfg, url, study, 2, 1, odd.number, bare.number)


@contextmanager
def dashboard_server(url: str) -> Iterator[str]:
    """optuna-dashboard over ``url`` (and its artifact folder, as ``tuner dashboard`` serves
    it) on a free loopback port; yields ``http://127.0.0.1:PORT``."""
    storage = make_storage(url)
    server = open_server(storage, "127.0.0.1", 0, artifact_folder(storage))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
