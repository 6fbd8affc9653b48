"""tuner.collector: the tuner program imports with the garbage collector off, then freezes what
it imported and turns the collector back on; a library user's process is left alone.

Each case runs in its own interpreter: gc state is process-wide."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from test_cli import TINY


def _run(code: str, *args: str, cwd: Path | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_hold_turns_the_collector_off_and_settle_back_on_with_the_imports_frozen():
    seen = _run("""
        import gc, json
        from tuner import collector
        collector.hold()
        held = gc.isenabled()
        import torch  # what the hold is for
        collector.settle()
        frozen = gc.get_freeze_count()
        more = [[i] for i in range(1000)]
        collector.settle()  # again: what came since is frozen too
        print(json.dumps({"held": held, "enabled": gc.isenabled(), "frozen": frozen,
                          "frozen_again": gc.get_freeze_count()}))
    """)
    assert seen["held"] is False
    assert seen["enabled"] is True
    assert seen["frozen"] > 10_000  # torch's objects
    assert seen["frozen_again"] > seen["frozen"]


def test_a_library_users_process_is_left_alone():
    seen = _run("""
        import gc, json
        from tuner import collector
        gc.disable()  # the user's own choice stays
        collector.settle()
        off = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
        gc.enable()
        collector.settle()
        print(json.dumps({"off": off, "enabled": gc.isenabled(),
                          "frozen": gc.get_freeze_count()}))
    """)
    assert seen == {"off": {"enabled": False, "frozen": 0}, "enabled": True, "frozen": 0}


def test_the_tune_command_trains_with_the_collector_on(tmp_path):
    """The program path of ``tuner tune`` (cli.main with no argv): the collector is off while
    it starts, and on (with the start-up frozen) before the first trial."""
    study = tmp_path / "tiny.toml"
    study.write_text(TINY.replace("n_trials = 3", "n_trials = 2"))
    seen = _run("""
        import gc, json, os, sys
        import tuner.runner as runner
        from tuner import cli

        record = {}
        original = runner.run_trials

        def run_trials(*args, **kwargs):
            record["enabled"] = gc.isenabled()
            record["frozen"] = gc.get_freeze_count()
            return original(*args, **kwargs)

        runner.run_trials = run_trials
        sys.argv = ["tuner", "tune", sys.argv[1], "--no-confirm", "--no-progress"]
        code = cli._run(None)
        record["code"] = code
        print(json.dumps(record))
    """, str(study), cwd=tmp_path)
    assert seen["code"] == 0
    assert seen["enabled"] is True
    assert seen["frozen"] > 10_000


def test_other_commands_run_with_the_collector_on(tmp_path):
    seen = _run("""
        import gc, json, sys
        from tuner import cli

        record = {}
        cli.COMMANDS["export"] = (lambda args: record.update(
            enabled=gc.isenabled(), frozen=gc.get_freeze_count()) or 0, "")
        sys.argv = ["tuner", "export", "any.toml"]
        record["code"] = cli._run(None)
        print(json.dumps(record))
    """, cwd=tmp_path)
    assert seen["code"] == 0
    assert seen["enabled"] is True
    assert seen["frozen"] > 0
