"""tuner.runner: the tune progress bar's last word is the whole study."""

from __future__ import annotations

import io

import optuna
from rich.console import Console

import tuner.runner as runner
from tuner.progress import StudyTally
from tuner.storage import make_storage


def test_the_bar_ends_on_the_whole_studys_count(tiny_cfg, sqlite_url, monkeypatch):
    """Another command's last trials finish after this one's bar last read the study: the bar
    still ends on the study's count (not only this process's trials)."""
    cfg = tiny_cfg(study={"n_trials": 6})
    bars = []
    original_bar, original_run = runner.progress_bar, runner.run_trials

    def progress_bar(console, **kwargs):
        bars.append(original_bar(console, **kwargs))
        return bars[-1]

    def run_trials(study, objective, target, **kwargs):
        mine = original_run(study, objective, target - 2, **kwargs)
        other = optuna.load_study(study_name=cfg.name, storage=make_storage(sqlite_url))
        for _ in range(2):  # another command's trials, told after our last read
            trial = other.ask()
            trial.suggest_float("lr", 1e-3, 0.3, log=True)
            other.tell(trial, 0.5)
        return mine

    class NoRereads(StudyTally):  # no read within the run: each one is this process's own
        def __init__(self, study):
            super().__init__(study, resync_s=1e9)

    monkeypatch.setattr(runner, "progress_bar", progress_bar)
    monkeypatch.setattr(runner, "run_trials", run_trials)
    monkeypatch.setattr(runner, "StudyTally", NoRereads)
    console = Console(file=io.StringIO(), force_terminal=False)
    outcome = runner.run_tune(cfg, sqlite_url, console=console, batch_trials=1)
    assert outcome.finished_after == 6
    assert bars[0].tasks[0].completed == 6


def test_the_bar_is_polled_from_a_thread_while_the_block_runs():
    """With --workers N the command trains trials itself: a thread polls the bar meanwhile
    (other workers' trials show), skipping a failed poll, and stops with the block."""
    import threading

    calls: list[str] = []
    polled_twice = threading.Event()

    def poll() -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            raise RuntimeError("storage busy")  # skipped: the next poll still comes
        polled_twice.set()

    with runner._polled(poll, 0.01):
        assert polled_twice.wait(30)  # the block (a long trial) has not ended
    after = len(calls)
    assert set(calls) == {"tuner-progress"}
    assert not any(t.name == "tuner-progress" for t in threading.enumerate())
    assert len(calls) == after  # no poll once the block ended
    with runner._polled(poll, None):  # no bar: no thread
        assert not any(t.name == "tuner-progress" for t in threading.enumerate())
    assert len(calls) == after
