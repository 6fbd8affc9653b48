"""MLflow logging (tuner/tracking.py) against a real MLflow store (SQLite, in tmp_path), through
the CLI: one trial at a time, batched trials, and --workers 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from _trust import toml_text
from conftest import IN_CI, tiny_study_dict
from optuna.trial import TrialState

from tuner.cli import main
from tuner.config import load_study_config
from tuner.errors import ConfigError
from tuner.storage import make_storage
from tuner.study import trial_series
from tuner.tracking import BEST_ARTIFACT, TrackingTarget, resolve_tracking
from tuner.workers import REASON_ATTR

try:
    from mlflow.tracking import MlflowClient
except ImportError:  # pragma: no cover - the test extra installs it
    if IN_CI:
        raise
    pytest.skip("mlflow is not installed: pip install -e .[mlflow]", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent

# 2 epochs; a learning-rate range wide enough that some trials diverge and others complete, and
# a median pruner that may stop trials behind the others after the first epoch
STUDY = {
    "study": {"name": "iris_mlflow", "n_trials": 8, "seed": 0},
    "training": {"epochs": 2, "batch_size": 16},
    "space": {"lr": [1e-2, 1e3], "optimizers": ["sgd"]},
    "pruner": {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
}


def _study_file(folder: Path, **overrides: Any) -> Path:
    data = tiny_study_dict(**STUDY)
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    path = folder / "iris_mlflow.toml"
    path.write_text(toml_text(data), encoding="utf-8")
    return path


def _tune(study_file: Path, *args: str, pre: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    code = f"{pre}import sys; from tuner.cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, "tune", str(study_file), "--no-progress", "--no-confirm",
         *args],
        cwd=study_file.parent, capture_output=True, text=True, env=env, timeout=300,
    )


def _tune_here(study_file: Path, *args: str, capsys: pytest.CaptureFixture[str],
               monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """`tuner tune` called in this process (worker processes still spawn): exit code, output."""
    monkeypatch.chdir(study_file.parent)
    code = main(["tune", str(study_file), "--no-progress", "--no-confirm", *args])
    out, err = capsys.readouterr()
    return code, out + err


def _told(study: optuna.Study) -> dict[int, optuna.trial.FrozenTrial]:
    """The trials a process told after training them: COMPLETE, PRUNED, or FAIL with a NaN
    metric (a FAIL with failed_reason was cancelled or interrupted, never trained to an end)."""
    return {
        t.number: t for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and REASON_ATTR not in t.user_attrs)
    }


def _check_store(
    folder: Path, study_name: str, *, one_command: bool = True,
    outcomes: tuple[str, ...] = ("diverged", "complete"),
) -> None:
    """The MLflow store in ``folder`` holds one run per trial of the study, with everything.

    After several commands, a run once tagged best keeps its artifact (tag ``best = false``)."""
    study = optuna.load_study(study_name=study_name,
                              storage=make_storage(f"sqlite:///{folder / 'tuner.db'}"))
    told = _told(study)
    assert len(told) >= STUDY["study"]["n_trials"]
    client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(study_name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    numbers = [int(r.data.tags["number"]) for r in runs]
    assert sorted(numbers) == sorted(told), "one run per finished trial, none twice"

    states = set()
    for run in runs:
        trial = told[int(run.data.tags["number"])]
        tags, metrics = run.data.tags, run.data.metrics
        states.add(tags.get("outcome"))
        assert run.info.run_name == str(trial.number)
        assert tags["state"] == trial.state.name
        assert tags["study"] == study_name
        assert run.data.params == {k: str(v) for k, v in trial.params.items()}
        assert tags.get("pruned_reason") == trial.user_attrs.get("pruned_reason")
        assert tags.get("outcome") == trial.user_attrs.get("outcome")
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert {m.step: m.value for m in history} == dict(trial.intermediate_values)
        lrs = client.get_metric_history(run.info.run_id, "lr")
        recorded = trial_series(trial, "lr_per_epoch")
        assert [m.value for m in sorted(lrs, key=lambda m: m.step)] == pytest.approx(recorded)
        assert [m.step for m in sorted(lrs, key=lambda m: m.step)] == list(
            range(1, len(recorded) + 1))
        if trial.state == TrialState.COMPLETE:
            assert metrics["value"] == pytest.approx(trial.value)
            assert len(history) == 2 and len(lrs) == 2  # both epochs, step = epoch
        else:
            assert "value" not in metrics
    # the study is set up so that these kinds occur: otherwise the test checks too little
    assert set(outcomes) <= states
    words = {"diverged": "diverged: ", "pruned": "pruner: "}
    assert all(t.user_attrs["pruned_reason"].startswith(words[t.user_attrs["outcome"]])
               for t in told.values() if t.state == TrialState.PRUNED)

    best = [r for r in runs if r.data.tags.get("best") == "true"]
    assert [int(r.data.tags["number"]) for r in best] == [study.best_trial.number]
    artifacts = [a.path for a in client.list_artifacts(best[0].info.run_id)]
    assert artifacts == [BEST_ARTIFACT]
    path = client.download_artifacts(best[0].info.run_id, BEST_ARTIFACT, str(folder))
    exported = json.loads(Path(path).read_text())
    assert exported["trial"] == study.best_trial.number
    assert exported["params"] == study.best_trial.params
    others = [r for r in runs if r.data.tags.get("best") != "true"]
    if one_command:
        assert all(not client.list_artifacts(r.info.run_id) for r in others)


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "outcomes"), [
    # one at a time, the seeded sampler's order gives a pruned trial among the 8 as well
    pytest.param(["--batch-trials", "1"], ("diverged", "complete", "pruned"), id="one-at-a-time"),
    pytest.param([], ("diverged", "complete"), id="batched"),
    pytest.param(["--workers", "2"], ("diverged", "complete"), id="workers"),
])
def test_every_finished_trial_is_logged_to_mlflow(
    tmp_path: Path, mode: list[str], outcomes: tuple[str, ...], capsys, monkeypatch
) -> None:
    study_file = _study_file(tmp_path)
    code, output = _tune_here(study_file, "--mlflow", *mode, capsys=capsys,
                              monkeypatch=monkeypatch)
    assert code == 0, output
    assert "MLflow: runs logged to sqlite:///" in output
    _check_store(tmp_path, "iris_mlflow", outcomes=outcomes)


@pytest.mark.slow
def test_a_resumed_study_logs_only_its_new_trials_and_moves_the_best_tag(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    study_file = _study_file(tmp_path, tracking={"mlflow": True})  # the study-file key
    for n in ("4", "8"):
        code, output = _tune_here(study_file, "--n-trials", n, capsys=capsys,
                                  monkeypatch=monkeypatch)
        assert code == 0, output
    # one run per trial over both commands, one best
    _check_store(tmp_path, "iris_mlflow", one_command=False)


def test_without_the_extra_one_line_names_it_and_nothing_is_written(tmp_path: Path) -> None:
    study_file = _study_file(tmp_path)
    done = _tune(study_file, "--mlflow", pre="import sys; sys.modules['mlflow'] = None; ")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "pip install -e .[mlflow]" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [study_file.name]


def test_an_unusable_store_is_one_line_before_any_trial(tmp_path: Path) -> None:
    study_file = _study_file(tmp_path)
    done = _tune(study_file, "--mlflow-uri", "nosuchscheme://x")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "nosuchscheme://x" in done.stderr
    assert not (tmp_path / "tuner.db").exists()


def test_where_the_runs_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "studies").mkdir()
    study_file = _study_file(tmp_path / "studies")
    cfg = load_study_config(study_file)
    assert resolve_tracking(cfg) is None  # off unless asked for
    here = tmp_path / "studies" / "mlruns"
    default = TrackingTarget(f"sqlite:///{here / 'mlflow.db'}", (here / "artifacts").as_uri())
    assert resolve_tracking(cfg, "") == default  # --mlflow
    monkeypatch.chdir(tmp_path)
    cwd = tmp_path / "runs"
    assert resolve_tracking(cfg, "runs") == TrackingTarget(
        f"sqlite:///{cwd / 'mlflow.db'}", (cwd / "artifacts").as_uri())
    assert resolve_tracking(cfg, "http://127.0.0.1:5000") == TrackingTarget(
        "http://127.0.0.1:5000")
    keyed = load_study_config(_study_file(tmp_path / "studies", tracking={"mlflow": "store"}))
    assert resolve_tracking(keyed).uri == f"sqlite:///{tmp_path / 'studies/store/mlflow.db'}"
    on = load_study_config(_study_file(tmp_path / "studies", tracking={"mlflow": True}))
    assert resolve_tracking(on) == default


@pytest.mark.parametrize("bad", [3, ""])
def test_a_bad_tracking_key_is_refused(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ConfigError, match=r"\[tracking\] mlflow = .* is invalid: must be true"):
        load_study_config(_study_file(tmp_path, tracking={"mlflow": bad}))
