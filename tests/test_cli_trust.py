"""End-to-end CLI: tune (with confirmation), export, report, retrain; failures write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from tests._trust import FAKE_PASSWORD, all_pruned_study, make_cfg, write_study_file
from tuner.cli import main
from tuner.confirm import load_confirmation


@pytest.mark.slow
def test_tune_confirm_export_report_retrain(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    study_file = write_study_file(tmp_path)
    args = ["--no-progress", "--confirm-top", "2", "--confirm-seeds", "2"]
    assert main(["tune", str(study_file), "--n-trials", "4", *args]) == 0
    out = capsys.readouterr().out
    assert "Confirmed top 2" in out and "Confirmation" in out
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    conf = load_confirmation(study)
    assert conf["n_seeds"] == 2 and len(conf["candidates"]) == 2

    assert main(["export", str(study_file), "--format", "yaml"]) == 0
    exported = yaml.safe_load((tmp_path / "tiny.best.yaml").read_text())
    assert exported["selected_by"] == "confirmation"
    assert exported["trial"] == conf["winner_trial"]
    assert main(["export", str(study_file)]) == 0
    assert json.loads((tmp_path / "tiny.best.json").read_text()) == exported

    assert main(["report", str(study_file), "--no-png"]) == 0
    assert (tmp_path / "reports" / "tiny" / "report.html").is_file()

    capsys.readouterr()
    assert main(["retrain", str(tmp_path / "tiny.best.yaml"), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    out_line = " ".join(out.split())
    assert "from 6 to 8 optimizer steps per epoch" in out_line
    if exported["scheduler"]["interval"] == "step":
        assert "the schedule is re-sized from 6 to 8" in out_line
    else:  # plateau has no length to re-size
        assert "steps once per epoch, so nothing is re-sized" in out_line
    assert "test accuracy" in out and "seed 3" in out


def test_tune_no_confirm_skips_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    study_file = write_study_file(tmp_path, training={"epochs": 1})
    assert main(["tune", str(study_file), "--n-trials", "1", "--no-progress", "--no-confirm"]) == 0
    assert "Confirmed top" not in capsys.readouterr().out
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    assert load_confirmation(study) is None  # no half-written confirmation


@pytest.mark.parametrize("command", ["export", "confirm", "report"])
def test_all_pruned_study_fails_clearly_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, command: str
) -> None:
    study_file = write_study_file(tmp_path)
    storage = f"sqlite:///{tmp_path / 'tuner.db'}"
    all_pruned_study(make_cfg(tmp_path), storage=storage)

    def outputs() -> list[str]:  # the storage's own WAL files do not count
        return sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("tuner.db"))

    before = outputs()
    assert before == ["tiny.toml"]
    assert main([command, str(study_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tuner: error: study 'tiny' has no complete trial")
    assert "Traceback" not in err
    assert outputs() == before
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert load_confirmation(study) is None  # no half-written confirmation


@pytest.mark.parametrize("command", ["export", "confirm", "report"])
def test_storage_password_is_redacted_in_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNER_STORAGE_RETRY_S", "0.5")  # a refused connection is retried first
    study_file = write_study_file(tmp_path)
    url = f"postgresql://tuner_user:{FAKE_PASSWORD}@127.0.0.1:9/studies"  # nothing listens
    assert main([command, str(study_file), "--storage", url]) == 2
    captured = capsys.readouterr()
    assert "tuner_user:***@127.0.0.1:9" in captured.err
    assert FAKE_PASSWORD not in captured.err + captured.out


def test_retrain_missing_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["retrain", str(tmp_path / "nope.best.json")]) == 2
    assert "no such export file" in capsys.readouterr().err


def test_the_no_complete_trial_advice_fits_what_the_trials_became(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    from tests._trust import add_told_trial, fixed_params
    from tuner.confirm import no_complete_message

    cfg = make_cfg(tmp_path)
    pruned = all_pruned_study(cfg)
    assert "(3 pruned)" in no_complete_message(pruned, "export")
    assert "run more trials" in no_complete_message(pruned, "export")
    diverged = optuna.create_study(study_name="tiny", direction=cfg.direction)
    for lr in (1.0, 2.0):
        add_told_trial(diverged, cfg, fixed_params("constant", lr=lr), 1e9, TrialState.PRUNED,
                       divergence={"reason": "explosion", "step": 3})
    message = no_complete_message(diverged, "export")
    assert "(2 diverged)" in message and "lower the upper bound of [space] lr" in message
    empty = optuna.create_study(study_name="tiny", direction=cfg.direction)
    assert "run `tuner tune` first" in no_complete_message(empty, "export")


@pytest.mark.slow
def test_tune_where_every_trial_diverges_exits_1_with_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    study_file = write_study_file(
        tmp_path, space={"lr": [1e3, 1e4], "optimizers": ["sgd"], "schedules": ["constant"]}
    )
    assert main(["tune", str(study_file), "--n-trials", "3", "--no-progress"]) == 1
    out = " ".join(capsys.readouterr().out.split())  # as one line, however it was wrapped
    assert "no complete trial (3 diverged)" in out
    assert "lower the upper bound of [space] lr" in out
