"""Writing commands never delete or overwrite what tuner did not write (issue 11, items 1, 8, 9).

A folder holding a SQLite study, its study file and a foreign notes file survives, byte for
byte, every writing command pointed at it or at one of its files; tuner's own previous outputs
are replaced; a run killed in the middle of a swap or a write is repaired by the next run, and
only tuner's own temporary names are ever removed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests._trust import write_study_file
from tuner.cli import main
from tuner.errors import TunerError
from tuner.outputs import (
    MARKER,
    FileKind,
    FolderKind,
    OutputError,
    recover_folder,
    write_file,
    write_folder,
)

KIND = FolderKind("report", lambda name: name in ("report.html", "a.png"))
TEXT_KIND = FileKind("export", lambda p: p.read_text().startswith("tuner export"))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``studies/``: a study file, its tuner.db with two complete trials, and notes.txt."""
    folder = tmp_path_factory.mktemp("outputs") / "studies"
    folder.mkdir()
    study = write_study_file(folder)
    (folder / "notes.txt").write_text("my notes, not tuner's\n")
    # in a subprocess: no connection of this process keeps SQLite's -wal/-shm files around
    subprocess.run([sys.executable, "-m", "tuner", "tune", str(study), "--n-trials", "2",
                    "--no-confirm", "--no-progress"], check=True, capture_output=True, timeout=300)
    return folder


WRITERS = [
    pytest.param(["report", "--no-png", "--out", "{d}"], "holds 'notes.txt'", id="report-dir"),
    pytest.param(["report", "--out", "{d}/notes.txt"], "is not a folder", id="report-file"),
    pytest.param(["export", "--out", "{d}"], "is a folder", id="export-dir"),
    pytest.param(["export", "--out", "{d}/notes.txt"], "is not a tuner export", id="export-notes"),
    pytest.param(["export", "--out", "{d}/tuner.db"], "is not a tuner export", id="export-db"),
    pytest.param(["export", "--format", "yaml", "--out", "{d}/tiny.toml"],
                 "is not a tuner export", id="export-toml"),
    pytest.param(["lr-find", "--out", "{d}"], "is a folder", id="lr-find-dir"),
    pytest.param(["lr-find", "--out", "{d}/notes.txt"], "is not a tuner lr-find page",
                 id="lr-find-notes"),
]


@pytest.mark.parametrize(("argv", "why"), WRITERS)
def test_writing_commands_leave_a_folder_of_study_files_intact(
    studies: Path, argv: list[str], why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(studies)
    assert {"tiny.toml", "tuner.db", "notes.txt"} <= set(before)
    args = [argv[0], str(studies / "tiny.toml")] + [a.format(d=studies) for a in argv[1:]]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tuner: error: ") and why in err
    target = args[args.index("--out") + 1]
    assert target in err and "tuner-tmp" not in err  # names the path given, not a temporary
    assert snapshot(studies) == before
    assert sorted(str(p.relative_to(studies)) for p in studies.rglob("*") if p.is_file()) == (
        sorted(before))  # no temporary left


def test_report_out_dot_refuses_the_working_directory(
    studies: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(studies)
    before = snapshot(studies)
    assert main(["report", "tiny.toml", "--out", ".", "--no-png"]) == 2
    assert "choose a new or empty folder" in capsys.readouterr().err
    assert snapshot(studies) == before


def test_the_current_folder_is_never_replaced_even_when_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    for out in (".", str(empty), ".."):
        with pytest.raises(OutputError, match="is the current folder or holds it"):
            write_folder(Path(out), lambda d: None, KIND)
    assert list(empty.iterdir()) == [] and [p.name for p in tmp_path.iterdir()] == ["empty"]


def test_own_previous_outputs_are_replaced(studies: Path, tmp_path: Path) -> None:
    study = str(studies / "tiny.toml")
    report, export = tmp_path / "r", tmp_path / "best.json"
    for _ in range(2):
        assert main(["report", study, "--no-png", "--out", str(report)]) == 0
        assert main(["export", study, "--out", str(export)]) == 0
    assert sorted(p.name for p in report.iterdir()) == [MARKER, "report.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "r"]  # no temporaries
    # an empty folder and an empty file are used (nothing to lose)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.json").touch()
    assert main(["report", study, "--no-png", "--out", str(tmp_path / "empty")]) == 0
    assert main(["export", study, "--out", str(tmp_path / "empty.json")]) == 0
    assert (tmp_path / "empty" / "report.html").is_file()
    assert (tmp_path / "empty.json").stat().st_size > 0


def test_a_previous_report_with_a_foreign_file_added_is_refused(studies: Path,
                                                                 tmp_path: Path) -> None:
    study = str(studies / "tiny.toml")
    report = tmp_path / "r"
    assert main(["report", study, "--no-png", "--out", str(report)]) == 0
    (report / "my-notes.md").write_text("findings\n")
    before = snapshot(report)
    assert main(["report", study, "--no-png", "--out", str(report)]) == 2
    assert snapshot(report) == before


def test_a_report_folder_from_before_the_marker_is_recognised(tmp_path: Path) -> None:
    from tuner.report import REPORT_KIND

    old = tmp_path / "r"
    old.mkdir()
    (old / "report.html").write_text("<!DOCTYPE html>\n<html><head><title>tuner report: x"
                                     "</title></head></html>\n")
    (old / "states.png").write_bytes(b"\x89PNG")
    write_folder(old, lambda d: (d / "report.html").write_text("new"), REPORT_KIND)
    assert sorted(p.name for p in old.iterdir()) == [MARKER, "report.html"]
    stranger = tmp_path / "s"
    stranger.mkdir()
    (stranger / "report.html").write_text("<html>my own page</html>")
    with pytest.raises(OutputError, match="no .tuner-output marker"):
        write_folder(stranger, lambda d: None, REPORT_KIND)
    assert (stranger / "report.html").read_text() == "<html>my own page</html>"


def test_a_report_folder_is_not_taken_for_another_kind(tmp_path: Path) -> None:
    target = tmp_path / "x"
    write_folder(target, lambda d: (d / "report.html").write_text("r"), KIND)
    other = FolderKind("bundle", lambda name: True)
    with pytest.raises(OutputError, match="is a tuner report folder, not a bundle folder"):
        write_folder(target, lambda d: None, other)


def test_a_failing_build_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "r"
    write_folder(target, lambda d: (d / "report.html").write_text("first"), KIND)

    def build(folder: Path) -> None:
        (folder / "report.html").write_text("second")
        raise TunerError("png export failed")

    with pytest.raises(TunerError):
        write_folder(target, build, KIND)
    assert (target / "report.html").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


def _killed_run(script: str, cwd: Path) -> None:
    """Run ``script`` in a fresh interpreter that SIGKILLs itself at the point it chooses."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


KILL_PRELUDE = """
    import os, signal
    from pathlib import Path
    import tuner.outputs as o
    kind = o.FolderKind("report", lambda name: name in ("report.html", "a.png"))
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_kill_between_the_two_renames_is_repaired(tmp_path: Path) -> None:
    """Without an atomic exchange: killed after parking the old folder, before the new one is
    in place; the next run puts the previous report back and removes the temporary."""
    target = tmp_path / "r"
    write_folder(target, lambda d: (d / "report.html").write_text("previous"), KIND)
    _killed_run(KILL_PRELUDE + """
    o._exchange = lambda a, b: False
    real = os.rename
    def rename(a, b):
        if Path(b).name == "r":
            die()
        real(a, b)
    o.os.rename = rename
    o.write_folder(Path("r"), lambda d: (d / "report.html").write_text("new"), kind)
    """, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "r" not in names and any(".r.tuner-old-" in n for n in names)  # the gap
    assert any(".r.tuner-tmp-" in n for n in names)
    recover_folder(target, KIND)
    assert [p.name for p in tmp_path.iterdir()] == ["r"]
    assert (target / "report.html").read_text() == "previous"


def test_a_kill_after_the_exchange_leaves_the_new_report_and_the_next_run_cleans_up(
    tmp_path: Path,
) -> None:
    from tuner.outputs import _exchange

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    if not _exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here: the two-rename path is used")
    (tmp_path / "a").rmdir()
    (tmp_path / "b").rmdir()
    target = tmp_path / "r"
    write_folder(target, lambda d: (d / "report.html").write_text("previous"), KIND)
    _killed_run(KILL_PRELUDE + """
    real = o._exchange
    def exchange(a, b):
        if not real(a, b):
            raise SystemExit("no renameat2 here")
        die()
    o._exchange = exchange
    o.write_folder(Path("r"), lambda d: (d / "report.html").write_text("new"), kind)
    """, tmp_path)
    assert (target / "report.html").read_text() == "new"  # never a moment without it
    leftovers = [p for p in tmp_path.iterdir() if p.name != "r"]
    assert len(leftovers) == 1 and (leftovers[0] / "report.html").read_text() == "previous"
    write_folder(target, lambda d: (d / "report.html").write_text("third"), KIND)
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


def test_a_killed_build_leaves_a_temporary_that_the_next_run_removes(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    _killed_run(KILL_PRELUDE + """
    def build(d):
        (d / "report.html").write_text("x" * 5_000_000)
        die()
    o.write_folder(Path("r"), build, kind)
    """, tmp_path)
    assert len([p for p in tmp_path.iterdir() if ".r.tuner-tmp-" in p.name]) == 1
    write_folder(tmp_path / "r", lambda d: (d / "report.html").write_text("ok"), KIND)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "r"]


def test_a_temporary_with_a_foreign_file_inside_is_not_removed(tmp_path: Path) -> None:
    _killed_run(KILL_PRELUDE + """
    def build(d):
        (d / "report.html").write_text("partial")
        die()
    o.write_folder(Path("r"), build, kind)
    """, tmp_path)
    (tmp_dir,) = [p for p in tmp_path.iterdir() if ".r.tuner-tmp-" in p.name]
    (tmp_dir / "someone-elses.txt").write_text("keep me")
    write_folder(tmp_path / "r", lambda d: (d / "report.html").write_text("ok"), KIND)
    assert (tmp_dir / "someone-elses.txt").read_text() == "keep me"


def test_a_killed_file_write_is_cleaned_up_and_live_or_foreign_names_are_not(
    tmp_path: Path,
) -> None:
    _killed_run(KILL_PRELUDE + """
    o.os.replace = die
    o.write_file(Path("best.json"), "tuner export " + "x" * 5_000_000,
                 o.FileKind("export", lambda p: True))
    """, tmp_path)
    (stale,) = [p for p in tmp_path.iterdir()]
    assert stale.name.startswith(".best.json.tuner-tmp-") and stale.stat().st_size > 5_000_000
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                          stdin=subprocess.PIPE) as alive:
        head, _pid, rand = stale.name.rsplit("-", 2)
        live = tmp_path / f"{head}-{alive.pid}-{rand}"
        live.write_text("a concurrent run's temporary")
        foreign = tmp_path / ".best.json.tuner-tmp-mine"
        foreign.write_text("not tuner's name pattern")
        write_file(tmp_path / "best.json", "tuner export 1", TEXT_KIND)
        alive.stdin.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["best.json", live.name, foreign.name]
    )


def test_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("tuner export 0")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with pytest.raises(OutputError, match="is a symbolic link"):
        write_file(link, "tuner export 1", TEXT_KIND)
    assert link.is_symlink() and real.read_text() == "tuner export 0"


def test_written_file_and_folder_have_ordinary_modes(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    write_file(tmp_path / "f", "tuner export", TEXT_KIND)
    write_folder(tmp_path / "d", lambda d: None, KIND)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~umask
