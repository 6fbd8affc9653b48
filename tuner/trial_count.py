"""The exact trial count: a study ends with exactly ``target`` finished trials, however many
workers share it (see :mod:`tuner.workers`, "Exact trial count")."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from tuner.reaping import reap_stale_trials

__all__ = ["POLL_S", "TrialCancelled", "counts", "target_covered", "wait_s"]

POLL_S = 0.5
"""Seconds between storage polls while waiting for other workers (and for the progress bar)."""

FIRST_WAIT_S = 0.02
"""The first of a waiting worker's polls comes this soon; each next one twice as late, up to
:data:`POLL_S` (see :func:`wait_s`)."""


def wait_s(polls: int) -> float:
    """Seconds to sleep before poll number ``polls`` (0, 1, ...) of a worker waiting for other
    workers' running trials (which cover the target, but one may still fail): 0.02, 0.04, ...,
    then :data:`POLL_S`. A worker whose wait ends with the last trial of the study (the usual
    case) then exits within a few hundredths of a second of it, not up to half a second
    later, and a long wait still costs one query per ``POLL_S``."""
    return min(POLL_S, FIRST_WAIT_S * 2.0 ** polls)


class TrialCancelled(Exception):
    """Raised by :class:`Gate` for a trial started after the study reached its target."""


def _state_counts(study: optuna.Study, running_below: int | None = None
                  ) -> dict[TrialState, int] | None:
    """The study's trials by state from one aggregate query on an RDB storage (tuner's
    ``GuardedRDBStorage.trial_state_counts``; no trial is read), else None."""
    backend = getattr(study._storage, "_backend", study._storage)
    count = getattr(backend, "trial_state_counts", None)
    return None if count is None else count(study._study_id, running_below)


def counts(study: optuna.Study, *, reap: bool = False) -> tuple[int, int]:
    """(finished, running) trials; with ``reap``, stale trials are reaped first (one read of
    the study where none is stale, as it usually is)."""
    by_state = None if reap else _state_counts(study)
    if by_state is not None:
        return (by_state.get(TrialState.COMPLETE, 0) + by_state.get(TrialState.PRUNED, 0),
                by_state.get(TrialState.RUNNING, 0))
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
    by_state = _state_counts(trial.study, running_below=trial.number)
    if by_state is not None:
        finished = by_state.get(TrialState.COMPLETE, 0) + by_state.get(TrialState.PRUNED, 0)
        ahead = by_state.get(TrialState.RUNNING, 0) + by_state.get(TrialState.WAITING, 0)
    else:
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
