"""tuner.progress: what the tune progress bar shows of its study (StudyTally)."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from tuner.progress import StudyTally


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _tell(study: optuna.Study, value: float | None, state: TrialState = TrialState.COMPLETE):
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    if state == TrialState.COMPLETE:
        return study.tell(trial, value)
    return study.tell(trial, state=state)


def _reads(study: optuna.Study, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the study's trial reads (every read of the tally goes through get_trials)."""
    calls: list[int] = []
    original = study.get_trials

    def get_trials(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(study, "get_trials", get_trials)
    return calls


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_own_trials_are_counted_without_reading_the_study(direction, monkeypatch):
    study = optuna.create_study(direction=direction)
    clock = Clock()
    tally = StudyTally(study, resync_s=10.0, clock=clock)
    tally.update(_tell(study, 0.5))  # the first update reads the study
    reads = _reads(study, monkeypatch)
    for value in (0.7, 0.2, math.inf, 0.6):
        tally.update(_tell(study, value))
    tally.update(_tell(study, None, TrialState.PRUNED))
    tally.update(_tell(study, None, TrialState.FAIL))
    assert reads == []
    assert tally.finished == 6  # 5 complete + 1 pruned; the failed one is not finished
    # the best finite value in the study's direction; +inf is never "best"
    assert tally.best == (0.7 if direction == "maximize" else 0.2)


def test_other_processes_trials_appear_at_the_next_read():
    storage = optuna.storages.InMemoryStorage()
    mine = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    other = optuna.load_study(storage=storage, study_name="s")  # another process's handle
    clock = Clock()
    tally = StudyTally(mine, resync_s=1.0, clock=clock)
    tally.update(_tell(mine, 0.5))
    _tell(other, 0.9)
    _tell(other, 0.1)
    clock.now = 0.5
    tally.update(_tell(mine, 0.6))
    assert (tally.finished, tally.best) == (2, 0.6)  # before the next read: own trials only
    clock.now = 1.0
    tally.update(_tell(mine, 0.3))
    assert (tally.finished, tally.best) == (5, 0.9)  # read again: the whole study


def test_an_update_without_a_trial_reads_the_study():
    study = optuna.create_study(direction="minimize")
    tally = StudyTally(study, resync_s=100.0, clock=Clock())
    tally.update(_tell(study, 3.0))
    _tell(study, 1.0)  # told elsewhere (e.g. by a worker process)
    tally.update()  # a poll while workers run
    assert (tally.finished, tally.best) == (2, 1.0)


def test_no_complete_trial_leaves_best_none():
    study = optuna.create_study()
    tally = StudyTally(study, clock=Clock())
    tally.update(_tell(study, None, TrialState.PRUNED))
    assert tally.finished == 1
    assert tally.best is None


def test_a_trial_the_last_read_already_counted_is_not_counted_again():
    """The command trains as worker 0 while a thread polls the bar: a poll may read the study
    after one of this process's trials ended and before the trial is counted; then it is
    counted once, not twice (the bar showed 20/20 with a trial still training)."""
    clock = Clock()
    study = optuna.create_study(direction="maximize")
    tally = StudyTally(study, resync_s=10.0, clock=clock)
    tally.update()  # the first read: nothing yet
    told = _tell(study, 0.5)
    tally.update()  # the poll: reads the study, the told trial included
    assert tally.finished == 1
    tally.update(told)  # then this thread counts it
    assert tally.finished == 1 and tally.best == 0.5
    later = _tell(study, 0.7)  # ended after that read: counted at once, no read
    tally.update(later)
    assert tally.finished == 2 and tally.best == 0.7
