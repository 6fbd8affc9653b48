"""The exact trial count: a study ends with exactly ``target`` finished trials, however many
workers share it (see :mod:`tuner.workers`, "Exact trial count")."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from tuner.reaping import reap_stale_trials

__all__ = ["POLL_S", "TrialCancelled", "counts", "target_covered"]

POLL_S = 0.5
"""Seconds between storage polls while waiting for other workers (and for the progress bar)."""


class TrialCancelled(Exception):
    """Raised by :class:`Gate` for a trial started after the study reached its target."""


def counts(study: optuna.Study, *, reap: bool = False) -> tuple[int, int]:
    """(finished, running) trials; with ``reap``, stale trials are reaped first (one read of
    the study where none is stale, as it usually is)."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    trials = study.get_trials(deepcopy=False, states=states)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if reap and reap_stale_trials(study, running):
        return counts(study)  # some RUNNING ones are FAIL now: count again
    return len(trials) - len(running), len(running)


def target_covered(trial: optuna.Trial, target: int) -> str | None:
    """Why ``trial`` must not run (the study's target is covered without it), or None.

    Covered: finished trials plus RUNNING or WAITING trials numbered below this one (they were
    created first, by any process) reach ``target``. Trial numbers follow creation order, so of
    several processes asking at once exactly the trials that fit are allowed to run.
    """
    trials = trial.study.get_trials(deepcopy=False)
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    ahead = sum(
        t.state in (TrialState.RUNNING, TrialState.WAITING) and t.number < trial.number
        for t in trials
    )
    if finished + ahead < target:
        return None
    return (
        f"cancelled: {finished} trials had finished and {ahead} earlier ones were running "
        f"when it started; the target is {target}"
    )
