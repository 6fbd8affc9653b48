"""The one progress bar style of tuner's long commands (tune, confirm): rich's Progress; and
what the ``tune`` bar shows of its study (:class:`StudyTally`)."""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["RESYNC_S", "StudyTally", "progress_bar"]

RESYNC_S = 1.0
"""Seconds between two reads of the whole study by :class:`StudyTally`."""


def progress_bar(console: Console, *, disable: bool = False) -> Progress:
    """A bar with description, count, elapsed time and a free ``status`` field per task.

    Use as a context manager; tasks need ``status=""`` in ``add_task``.
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=disable,
        transient=False,
    )


class StudyTally:
    """The finished-trial count and the best value of a study, for the progress bar, without a
    storage read per trial.

    The trials this process tells are counted as they end (:meth:`update` with the trial); the
    whole study, other processes' trials included, is read again (two queries:
    :func:`tuner.study.count_finished` and :func:`tuner.study.best_value`) at the first update,
    at an update without a trial (a poll while worker processes run) and at most every
    ``resync_s`` seconds otherwise. So the bar may miss another process's trials for up to
    ``resync_s``; this process's own are shown at once. A trial that ended before the last read
    began (``datetime_complete``) is not counted again: another thread may poll the study.

    Args:
        study: the study the bar follows.
        resync_s: seconds >= 0 between two reads of the whole study (0: every update reads).
        clock: a monotonic clock in seconds (tests pass their own).
    """

    def __init__(self, study: optuna.Study, resync_s: float = RESYNC_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.study, self.resync_s, self._clock = study, resync_s, clock
        self._maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        self._next_read = -math.inf
        self._read_at: datetime.datetime | None = None  # the last read's start (local time)
        self.finished = 0
        """COMPLETE + PRUNED trials (diverged trials are PRUNED)."""
        self.best: float | None = None
        """The best finite value of a COMPLETE trial, or None (none yet)."""

    def update(self, trial: FrozenTrial | None = None) -> None:
        """Count ``trial`` (just told by this process), or read the study when due or when
        ``trial`` is None."""
        from tuner.study import FINISHED, best_value, count_finished

        now = self._clock()
        if trial is None or now >= self._next_read:
            read_at = datetime.datetime.now()
            self.finished = count_finished(self.study)  # includes ``trial``: it was told
            self.best = best_value(self.study)
            self._next_read, self._read_at = now + self.resync_s, read_at
            return
        done = trial.datetime_complete
        if self._read_at is not None and done is not None and done <= self._read_at:
            return  # ended before the last read (another thread's poll) began: counted there
        if trial.state in FINISHED:
            self.finished += 1
        value = trial.value
        if trial.state == TrialState.COMPLETE and value is not None and math.isfinite(value):
            if self.best is None or (value > self.best if self._maximize else value < self.best):
                self.best = float(value)
