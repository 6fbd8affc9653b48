"""End-to-end CLI: tune (with confirmation), export, report, retrain; failures write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from tests._trust import FAKE_PASSWORD, all_pruned_study, make_cfg, write_study_file
from tuner.cli import main
from tuner.confirm import CONFIRM_ATTR


@pytest.mark.slow
def test_tune_confirm_export_report_retrain(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    study_file = write_study_file(tmp_path)
    args = ["--no-progress", "--confirm-top", "2", "--confirm-seeds", "2"]
    assert main(["tune", str(study_file), "--n-trials", "4", *args]) == 0
    out = capsys.readouterr().out
    assert "Confirmed top 2" in out and "Confirmation" in out
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    conf = study.user_attrs[CONFIRM_ATTR]
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
    assert "re-sized from 6 to 8 optimizer steps per epoch" in " ".join(out.split())
    assert "test accuracy" in out and "seed 3" in out


def test_tune_no_confirm_skips_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    study_file = write_study_file(tmp_path, training={"epochs": 1})
    assert main(["tune", str(study_file), "--n-trials", "1", "--no-progress", "--no-confirm"]) == 0
    assert "Confirmed top" not in capsys.readouterr().out
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tuner.db'}")
    assert CONFIRM_ATTR not in study.user_attrs


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
    assert CONFIRM_ATTR not in study.user_attrs


@pytest.mark.parametrize("command", ["export", "confirm", "report"])
def test_storage_password_is_redacted_in_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, command: str
) -> None:
    study_file = write_study_file(tmp_path)
    url = f"postgresql://tuner_user:{FAKE_PASSWORD}@127.0.0.1:9/studies"  # nothing listens
    assert main([command, str(study_file), "--storage", url]) == 2
    captured = capsys.readouterr()
    assert "tuner_user:***@127.0.0.1:9" in captured.err
    assert FAKE_PASSWORD not in captured.err + captured.out


def test_retrain_missing_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["retrain", str(tmp_path / "nope.best.json")]) == 2
    assert "no such export file" in capsys.readouterr().err
