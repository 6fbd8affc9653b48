"""The trial lifecycle, written once for every runner: K trials in lockstep, K = 1 included.

``tuner tune`` (one process, ``--batch-trials K``), each ``--workers`` process and every
independent command on a shared storage run :func:`run_lifecycle`. Per trial:

1. claim and target check: the trial is asked only while the study needs one (finished plus
   running trials, of every process, below ``target``; stale trials reaped first), never
   after the deadline; it is claimed by this process (``tuner.workers.claim_trial``) and
   refused (FAIL, ``failed_reason = "cancelled: ..."``) if trials created before it already
   cover the target (``tuner.workers.target_covered``: exact counts with several processes);
2. suggest and seed: its parameters from the sampler, torch seed ``[study] seed + number``;
3. heartbeats: from a thread, every heartbeat interval, whatever the epoch length
   (``tuner.workers.Heartbeats``);
4. training, one epoch of every trial of the batch at a time: each reports its validation
   metric and asks the pruner; a signal stops training at once but never cuts a storage
   write (``tuner.workers.Interrupts``);
5. record and tell: the user attributes of ``tuner.study.record_result``, then COMPLETE with
   its metric, PRUNED (pruned or diverged) or FAIL (a NaN metric);
6. on an interrupt or an error, every trial still in training is told FAIL with
   ``failed_reason`` (``interrupted: SIGINT``/``SIGTERM``, or the error) before it goes on.

A trial finished meanwhile by another process (a reaper that found it stale after this
process was stopped longer than the grace period) is dropped with one warning line; the run
goes on with the next trial (the reaper has re-queued its parameters).

The work a trial does is a :class:`Work`: :class:`ObjectiveWork` trains the study's model
with the trainer :func:`tuner.batched.make_trainer` chooses (the engine choice lives there
alone); :class:`CallableWork` runs any Optuna objective function, one at a time.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from tuner.batched import (
    BatchedTrainer,
    FunctionalTrainer,
    Member,
    OneAtATimeTrainer,
    make_trainer,
)
from tuner.engine import EpochReport
from tuner.interrupts import Interrupts
from tuner.reaping import REASON_ATTR, Heartbeats, claim_trial, owner_attrs
from tuner.shared_reads import create_trials_with, shared_reads
from tuner.space import suggest_params
from tuner.study import Objective, record_result
from tuner.trial_count import POLL_S, target_covered, wait_s
from tuner.trial_count import counts as _counts

__all__ = ["CallableWork", "ObjectiveWork", "Outcome", "Work", "run_lifecycle"]

_log = logging.getLogger("tuner")

# ask-and-tell on a storage with heartbeats: this loop records the heartbeats (Heartbeats)
warnings.filterwarnings(
    "ignore", message="Heartbeat of storage is supposed to be used with Study.optimize"
)

OnEpoch = Callable[[EpochReport], bool]


@dataclass
class Outcome:
    """How a trial's run ended: the state to tell, its value, and what to record first."""

    state: TrialState
    value: float | None = None
    record: Callable[[], None] | None = None  # writes the trial's user attributes
    dropped: str | None = None  # the trial was finished by another process: why


class Work(Protocol):
    """What the trials of a lifecycle do (see the module docstring)."""

    capacity: int  # trials trained in lockstep (K)

    def start(self, trial: optuna.Trial, on_epoch: OnEpoch) -> None:
        """Suggest the trial's parameters and seed; it trains from the next :meth:`step`."""

    def step(self) -> list[tuple[optuna.Trial, Outcome]]:
        """Train every started trial one epoch (or a whole run); the trials that ended."""


class ObjectiveWork:
    """The study's trials (:class:`tuner.study.Objective`), ``batch_trials`` in lockstep.

    Where :func:`tuner.batched.make_trainer` chooses the autograd engine, trials run one at a
    time, whatever ``batch_trials`` says (the stacked and functional engines run them in
    lockstep).
    """

    def __init__(self, objective: Objective, batch_trials: int = 1) -> None:
        if batch_trials < 1:
            raise ValueError(f"batch_trials must be >= 1, got {batch_trials}")
        self.objective = objective
        self.trainer: BatchedTrainer | FunctionalTrainer | OneAtATimeTrainer = make_trainer(
            objective.cfg, objective.data, objective.device, stacked=objective.fast,
            batch_trials=batch_trials,
        )
        self.capacity = batch_trials if isinstance(self.trainer, BatchedTrainer) else 1

    def start(self, trial: optuna.Trial, on_epoch: OnEpoch) -> None:
        cfg = self.objective.cfg
        params = suggest_params(trial, cfg.space, self.objective.lr_bounds)
        self.trainer.add(params, cfg.study.seed + trial.number, on_epoch, tag=trial)

    def step(self) -> list[tuple[optuna.Trial, Outcome]]:
        return [(m.tag, self._outcome(m)) for m in self.trainer.run_epoch()]

    def _outcome(self, member: Member) -> Outcome:
        trial, result = member.tag, member.result

        def record() -> None:
            record_result(trial, result, member.seed)
            if self.objective.on_result is not None:
                self.objective.on_result(trial, result)

        if result.status == "complete" and math.isfinite(result.val_metric or math.nan):
            return Outcome(TrialState.COMPLETE, float(result.val_metric), record)  # type: ignore[arg-type]
        if result.status == "complete":  # a NaN metric: Optuna's optimize marks it FAIL too
            return Outcome(TrialState.FAIL, None, record)
        return Outcome(TrialState.PRUNED, None, record)  # pruned or diverged


class CallableWork:
    """Any Optuna objective function, one trial at a time (it suggests and reports itself)."""

    capacity = 1

    def __init__(self, objective: Callable[[optuna.Trial], float]) -> None:
        self.objective = objective
        self._trials: list[optuna.Trial] = []

    def start(self, trial: optuna.Trial, on_epoch: OnEpoch) -> None:
        self._trials.append(trial)

    def step(self) -> list[tuple[optuna.Trial, Outcome]]:
        trials, self._trials = self._trials, []
        out = []
        for trial in trials:
            try:
                value = float(self.objective(trial))
            except optuna.TrialPruned:
                out.append((trial, Outcome(TrialState.PRUNED)))
                continue
            except UpdateFinishedTrialError as exc:
                out.append((trial, Outcome(TrialState.FAIL, dropped=str(exc))))
                continue
            state = TrialState.COMPLETE if math.isfinite(value) else TrialState.FAIL
            out.append((trial, Outcome(state, value if math.isfinite(value) else None)))
        return out


@dataclass
class _Slot:
    trial: optuna.Trial
    dropped: str | None = None


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def run_lifecycle(
    study: optuna.Study,
    work: Work,
    target: int,
    *,
    deadline: float | None = None,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    interrupts: Interrupts | None = None,
    orphaned: Callable[[], bool] | None = None,
) -> int:
    """Run trials ``work.capacity`` at a time until the study has ``target`` finished trials.

    Safe with any number of other processes on the same study; waits while others' running
    trials cover the target, since one may still fail (polling soon at first, then every
    :data:`POLL_S` seconds: :func:`tuner.trial_count.wait_s`).

    Args:
        study: the study, opened with ``tuner.workers.heartbeat_kwargs`` on RDB storages.
        work: what a trial does (:class:`ObjectiveWork`, :class:`CallableWork`).
        target: finished (COMPLETE + PRUNED) trials to reach.
        deadline: ``time.monotonic()`` after which no trial is asked; running ones finish.
        on_trial: called with each trial this process told (finished or failed).
        interrupts: the signal handling in force (default: installed for the run).
        orphaned: asked before stale trials are reaped and a trial is asked; True stops the
            run as SIGTERM does (a worker process whose command is gone: the trial that
            command was training must stay for the next run to reap and re-queue, not be
            re-queued here and then closed as interrupted).

    Returns:
        The number of trials this process finished (COMPLETE + PRUNED).

    Raises:
        KeyboardInterrupt: SIGINT or SIGTERM (its name as the argument); the trials in
            training were told FAIL first, with ``failed_reason = "interrupted: <name>"``.
        Exception: whatever the work raised; the trials in training were told FAIL first.
    """
    ran = 0
    waits = 0  # polls so far of the current wait for other workers' trials
    next_reap = -math.inf
    live: dict[int, _Slot] = {}  # asked, not yet told, by trial number
    with contextlib.ExitStack() as stack:
        if interrupts is None:
            interrupts = stack.enter_context(Interrupts())
        beats = stack.enter_context(Heartbeats(study))
        create_trials_with(study, owner_attrs)  # each trial is stored with its owner
        stack.callback(create_trials_with, study, None)
        try:
            while True:
                interrupts.check()
                wait = False
                while len(live) < work.capacity and not _past(deadline):
                    interrupts.check()  # no trial is asked once a signal came
                    if orphaned is not None and orphaned():
                        raise KeyboardInterrupt("SIGTERM")  # as the parent watch would, later
                    # stale trials of dead processes are reaped (which costs a few storage
                    # queries) at most once per poll interval
                    reap = time.monotonic() >= next_reap
                    if reap:
                        next_reap = time.monotonic() + POLL_S
                    finished, running = _counts(study, reap=reap)
                    if finished >= target:
                        break
                    if finished + running >= target:  # one of them may still fail
                        wait = not live
                        break
                    with shared_reads(study):  # the sampler's reads: one, not a dozen
                        trial = study.ask()
                    live[trial.number] = slot = _Slot(trial)
                    beats.add(trial)
                    claim_trial(trial)
                    covered = target_covered(trial, target)  # another process asked first
                    if covered is not None:
                        wait = len(live) == 1  # the others' trials may still fail
                        trial.set_user_attr(REASON_ATTR, covered)
                        beats.remove(trial)
                        study.tell(trial, state=TrialState.FAIL)
                        del live[trial.number]
                        break
                    with shared_reads(study):  # its parameters: stored within FLUSH_S
                        work.start(trial, _reporter(slot, interrupts))
                if not live:
                    if wait and not _past(deadline):
                        with interrupts.interruptible():
                            time.sleep(wait_s(waits))  # soon at first: the wait often ends
                        waits += 1
                        continue
                    return ran
                waits = 0
                # the K trials' should_prune at an epoch boundary share one read
                with interrupts.interruptible(), shared_reads(study):
                    ended = work.step()
                for trial, outcome in ended:
                    slot = live[trial.number]
                    beats.remove(trial)
                    frozen = _tell(study, slot, outcome)
                    del live[trial.number]
                    if frozen is None:
                        continue
                    ran += frozen.state in (TrialState.COMPLETE, TrialState.PRUNED)
                    if on_trial is not None:
                        on_trial(frozen)
        except BaseException as exc:
            _close_live(study, live, beats, exc)
            raise


def _close_live(study: optuna.Study, live: dict[int, _Slot], beats: Heartbeats,
                exc: BaseException) -> None:
    """Tell every trial still in training FAIL, with ``failed_reason`` saying why.

    After a storage failure (disk full, server gone past the retry budget) each trial gets one
    quick attempt and no more: the storage may refuse it too, and the failure itself is what
    the user must see (one line, from the command)."""
    from tuner.storage_guard import failure_behind, retry_budget

    storage_failed = not isinstance(exc, KeyboardInterrupt) and failure_behind(exc) is not None
    if isinstance(exc, KeyboardInterrupt):
        reason = f"interrupted: {exc.args[0] if exc.args else 'SIGINT'}"
    elif storage_failed:
        reason = f"storage failure: {failure_behind(exc)}"
    else:
        reason = f"error: {type(exc).__name__}: {exc}"
    for slot in live.values():
        beats.remove(slot.trial)
        if not storage_failed:
            with contextlib.suppress(UpdateFinishedTrialError):  # finished by another process
                slot.trial.set_user_attr(REASON_ATTR, reason)
                study.tell(slot.trial, state=TrialState.FAIL, skip_if_finished=True)
            continue
        with retry_budget(0):  # the reason may not fit on a full disk; the state change may
            with contextlib.suppress(Exception):
                slot.trial.set_user_attr(REASON_ATTR, reason)
            with contextlib.suppress(Exception):
                study.tell(slot.trial, state=TrialState.FAIL, skip_if_finished=True)


def _reporter(slot: _Slot, interrupts: Interrupts) -> OnEpoch:
    """The trial's epoch callback: report the metric, ask the pruner (no signal cuts these
    storage calls); a trial finished by another process stops and is dropped."""
    trial = slot.trial

    def on_epoch(report: EpochReport) -> bool:
        with interrupts.deferred():
            try:
                trial.report(report.val_metric, report.epoch)
                return trial.should_prune()
            except UpdateFinishedTrialError as exc:
                slot.dropped = str(exc)
                return True

    return on_epoch


def _tell(study: optuna.Study, slot: _Slot, outcome: Outcome) -> FrozenTrial | None:
    """Record and tell an ended trial; None (one warning line) if another process had
    finished it."""
    trial = slot.trial
    why = slot.dropped or outcome.dropped
    if why is None:
        try:
            if outcome.record is not None:
                outcome.record()
            if outcome.state == TrialState.COMPLETE:
                return study.tell(trial, outcome.value)
            return study.tell(trial, state=outcome.state)
        except UpdateFinishedTrialError as exc:
            why = str(exc)
        except ValueError as exc:  # study.tell: "Cannot tell a FAIL trial."
            if not study._storage.get_trial(trial._trial_id).state.is_finished():
                raise
            why = str(exc)
    _log.warning(
        "trial %d was closed by another process while this one trained it (%s); its result "
        "is dropped", trial.number, why.rstrip("."),
    )
    return None
