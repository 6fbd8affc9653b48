"""End-to-end runs of the real entry point with tiny budgets, and its error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TINY = """
[study]
name = "cli_tiny"
n_trials = 3

[dataset]
name = "iris"

[model]
hidden = [16]

[training]
epochs = 3
batch_size = 16

[space]
lr = [1e-3, 0.1]
"""


def tuner(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args], cwd=cwd, capture_output=True, text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_tune_then_export_end_to_end(tmp_path: Path) -> None:
    study = tmp_path / "studies" / "tiny.toml"
    study.parent.mkdir()
    study.write_text(TINY)
    run = tuner("tune", str(study), "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Top 5 trials" in run.stdout and "Best trial #" in run.stdout
    assert "Trials and compute by state" in run.stdout
    assert (tmp_path / "studies" / "tuner.db").is_file()  # default storage: next to the file
    again = tuner("tune", str(study), "--n-trials", "4", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "1 trials finished" in again.stdout and "(4 in the study)" in again.stdout
    exported = tuner("export", str(study), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    data = json.loads((tmp_path / "studies" / "cli_tiny.best.json").read_text())
    assert data["study"] == "cli_tiny" and data["metric"] == "accuracy"
    assert data["optimizer"]["class"] in ("SGD", "Adam", "AdamW", "RMSprop")


BAD_FILES = {
    "typo": (TINY.replace("[training]\nepochs", "[training]\nepoch"),
             "unknown [training] key 'epoch'. Did you mean 'epochs'?"),
    "log_bound": (TINY.replace("lr = [1e-3, 0.1]", "lr = [0, 0.1]"),
                  "[space] lr = [0, 0.1] is invalid"),
    "zero_epochs": (TINY.replace("epochs = 3", "epochs = 0"), "[training] epochs = 0"),
    "not_toml": ("[study\n", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_study_file_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, case: str):
    text, expected = BAD_FILES[case]
    study = tmp_path / "bad.toml"
    study.write_text(text)
    run = tuner("tune", str(study), cwd=tmp_path)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tuner: error: {study}: "), run.stderr
    assert expected in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]  # no storage created


def test_export_and_dashboard_without_a_storage_are_clear_errors(tmp_path: Path) -> None:
    study = tmp_path / "tiny.toml"
    study.write_text(TINY)
    for args in (["export", str(study)], ["dashboard", str(study)]):
        run = tuner(*args, cwd=tmp_path)
        assert run.returncode == 2, run.stderr
        assert "does not exist" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "tuner.db").exists()


def test_help_lists_every_command(tmp_path: Path) -> None:
    run = tuner("--help", cwd=tmp_path)
    assert run.returncode == 0
    for command in ("tune", "export", "dashboard"):
        assert command in run.stdout
    sub = tuner("tune", "--help", cwd=tmp_path)
    assert "--n-trials" in sub.stdout and "--storage" in sub.stdout


def test_bad_flag_values_are_refused(tmp_path: Path) -> None:
    run = tuner("tune", "x.toml", "--n-trials", "0", cwd=tmp_path)
    assert run.returncode == 2 and "must be >= 1" in run.stderr


def test_a_seed_numpy_cannot_take_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """From the fresh-user test: --seed 4294967296 ended in numpy's traceback after the study
    was created."""
    study = tmp_path / "s.toml"
    study.write_text('[study]\nname = "s"\n[dataset]\nname = "iris"\n[space]\nlr = [0.001, 0.1]\n')
    proc = tuner("tune", str(study), "--seed", str(2**32), "--no-confirm", cwd=tmp_path)
    assert proc.returncode == 2 and "--seed" in proc.stderr and "2147483647" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "tuner.db").exists()


def test_a_ctrl_c_while_the_program_starts_exits_130_in_one_line(monkeypatch, capsys):
    """Ctrl-C before the command's own handling (while it parses and imports): one line, status
    130, no traceback; called as a function, main() lets it through."""
    import gc
    import signal

    import tuner._private
    import tuner.cli as cli

    def interrupted() -> None:
        raise KeyboardInterrupt

    exits: list[int] = []

    def exit_process(code: int) -> None:
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(cli, "build_parser", interrupted)
    monkeypatch.setattr(tuner._private, "exit_process", exit_process)
    monkeypatch.setattr(sys, "argv", ["tuner", "tune", "x.toml"])
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    collecting = gc.isenabled()
    try:
        with pytest.raises(SystemExit):
            cli.main()
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
        if collecting:  # the program holds the collector while it imports
            gc.enable()
    assert exits == [130]
    assert capsys.readouterr().err == "tuner: interrupted\n"
    with pytest.raises(KeyboardInterrupt):
        cli.main(["tune", "x.toml"])
