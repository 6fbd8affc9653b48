"""``tuner tune --batch-trials K``: run trials K at a time, in lockstep, with ask-and-tell.

The loop, at every epoch boundary of the batch:

1. top the batch up: ask Optuna for as many new trials as there are free slots, but never more
   than the study still needs (``target`` finished trials minus finished and running ones, read
   only when a slot is free), and none once the timeout has passed;
2. run one epoch of every member (:class:`~tuner.batched.BatchedTrainer`); each member reports
   its validation metric to its own trial and asks its own trial whether to prune;
3. finish the members whose run ended: record the same user attributes as the one-at-a-time
   objective (:func:`tuner.study.record_result`) and tell Optuna the same state (a complete run
   its metric; a pruned or diverged run PRUNED).

A freed slot is refilled at the next epoch boundary, so pruning and divergence keep the batch
full while trials remain. Should anything raise (or the user interrupt), the trials still
running are told FAIL before the error goes on, as ``study.optimize`` does.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.batched import BatchedTrainer, Member
from tuner.engine import EpochReport
from tuner.space import suggest_params
from tuner.study import FINISHED, Objective, record_result
from tuner.workers import (
    REASON_ATTR,
    Heartbeats,
    Interrupts,
    claim_trial,
    target_covered,
)

__all__ = ["run_batched"]

# ask-and-tell on a storage with heartbeats: this runner records the heartbeats itself
warnings.filterwarnings(
    "ignore", message="Heartbeat of storage is supposed to be used with Study.optimize"
)


def run_batched(
    study: optuna.Study,
    objective: Objective,
    *,
    target: int,
    batch_trials: int,
    timeout: float | None = None,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    interrupts: Interrupts | None = None,
) -> None:
    """Run trials ``batch_trials`` at a time until the study has ``target`` finished trials.

    Args:
        study: the opened study (its sampler and pruner are used).
        objective: the study's objective: its config, split, device, LR bounds and
            ``on_result`` hook are used exactly as the one-at-a-time path uses them.
        target: finished (COMPLETE + PRUNED) trials to reach; no more are asked.
        batch_trials: members trained in lockstep (>= 1).
        timeout: seconds after which no new trial is asked; running ones finish.
        on_trial: called with each trial once it is finished (for progress bars).
        interrupts: SIGINT/SIGTERM handling (``tuner.workers.Interrupts``): a signal stops the
            batch between or during epochs; its trials end FAIL with ``failed_reason``.

    Crash safety is the same as for one trial at a time: every asked trial is claimed by this
    process (``tuner.workers.claim_trial``), records a heartbeat on storages with heartbeats
    (at an epoch boundary, once per heartbeat interval: ``tuner.workers.Heartbeats``), and is
    FAIL-ed and re-queued by the next run if this process is killed.
    Other processes' RUNNING trials count against ``target``, so several commands on one study
    stop at ``target`` too.

    Raises:
        ValueError: the study's model cannot be batched (see ``batch_unsupported_reason``).
    """
    if batch_trials < 1:
        raise ValueError(f"batch_trials must be >= 1, got {batch_trials}")
    cfg = objective.cfg
    trainer = BatchedTrainer(cfg, objective.data, objective.device)
    started = time.perf_counter()
    in_flight: dict[int, optuna.Trial] = {}  # asked, not yet told
    interruptible = interrupts.interruptible if interrupts else contextlib.nullcontext
    heartbeats = Heartbeats(study)
    try:
        while True:
            if interrupts:
                interrupts.check()
            free = batch_trials - len(trainer.members)
            if timeout is not None and time.perf_counter() - started >= timeout:
                free = 0
            for _ in range(min(free, _needed(study, target) if free > 0 else 0)):
                trial = study.ask()
                in_flight[trial.number] = trial
                claim_trial(trial)
                covered = target_covered(trial, target)  # another process asked first
                if covered is not None:
                    trial.set_user_attr(REASON_ATTR, covered)
                    study.tell(trial, state=TrialState.FAIL)
                    del in_flight[trial.number]
                    break
                params = suggest_params(trial, cfg.space, objective.lr_bounds)
                seed = cfg.study.seed + trial.number
                trainer.add(params, seed, on_epoch=_reporter(trial), tag=trial)
            if not trainer.members:
                return
            with interruptible():
                ended = trainer.run_epoch()
            for member in ended:
                frozen = _finish(study, objective, member)
                del in_flight[frozen.number]
                if on_trial is not None:
                    on_trial(frozen)
            heartbeats.record(in_flight.values())
    except BaseException as exc:
        reason = (
            f"interrupted: {exc.args[0] if exc.args else 'SIGINT'}"
            if isinstance(exc, KeyboardInterrupt)
            else f"error in the batch: {type(exc).__name__}: {exc}"
        )
        for trial in in_flight.values():
            with contextlib.suppress(Exception):
                trial.set_user_attr(REASON_ATTR, reason)
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        raise


def _needed(study: optuna.Study, target: int) -> int:
    """Trials still to ask: ``target`` minus finished and running ones (ours and others')."""
    return target - len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))


def _reporter(trial: optuna.Trial) -> Callable[[EpochReport], bool]:
    def on_epoch(report: EpochReport) -> bool:
        trial.report(report.val_metric, report.epoch)
        return trial.should_prune()

    return on_epoch


def _finish(study: optuna.Study, objective: Objective, member: Member) -> FrozenTrial:
    """Record and tell one ended member, as ``Objective.__call__`` + ``study.optimize`` do."""
    trial, result = member.tag, member.result
    record_result(trial, result, member.seed)
    if objective.on_result is not None:
        objective.on_result(trial, result)
    if result.status == "complete" and math.isfinite(result.val_metric or math.nan):
        return study.tell(trial, float(result.val_metric))  # type: ignore[arg-type]
    if result.status == "complete":  # a NaN metric: Optuna's optimize marks it FAIL too
        return study.tell(trial, state=TrialState.FAIL)
    return study.tell(trial, state=TrialState.PRUNED)
