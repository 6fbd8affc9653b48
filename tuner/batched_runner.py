"""``tuner tune --batch-trials K``: run trials K at a time, in lockstep (ask-and-tell).

The loop is the one trial lifecycle of every runner, :func:`tuner.lifecycle.run_lifecycle`
(claim and target check, suggest and seed, heartbeats, report and prune, record, tell, FAIL
with a reason on an interrupt or an error); this module keeps its historical entry point.
At every epoch boundary of the batch: free slots are topped up with new trials (never more
than the study still needs, none after the deadline), every member runs one epoch
(:class:`~tuner.batched.BatchedTrainer`) and reports to its own trial, and the members whose
run ended are recorded and told. A freed slot is refilled at the next epoch boundary, so
pruning and divergence keep the batch full while trials remain.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial

from tuner.batched import choose_engine
from tuner.lifecycle import ObjectiveWork, run_lifecycle
from tuner.study import Objective
from tuner.workers import Interrupts

__all__ = ["run_batched"]


def run_batched(
    study: optuna.Study,
    objective: Objective,
    *,
    target: int,
    batch_trials: int,
    timeout: float | None = None,
    on_trial: Callable[[FrozenTrial], None] | None = None,
    interrupts: Interrupts | None = None,
) -> int:
    """Run trials ``batch_trials`` at a time until the study has ``target`` finished trials.

    Args:
        study: the opened study (its sampler and pruner are used).
        objective: the study's objective: its config, split, device, LR bounds and
            ``on_result`` hook are used exactly as the one-at-a-time path uses them.
        target: finished (COMPLETE + PRUNED) trials to reach; no more are asked.
        batch_trials: members trained in lockstep (>= 1).
        timeout: seconds from now after which no new trial is asked; running ones finish.
        on_trial: called with each trial once it is told (for progress bars).
        interrupts: SIGINT/SIGTERM handling (default: installed for the run).

    Returns:
        The number of trials this process finished.

    Raises:
        ValueError: ``batch_trials`` > 1 and no lockstep engine trains the study's model
            (see ``tuner.batched.autograd_reason``).
    """
    engine = choose_engine(objective.cfg, stacked=objective.fast, batch_trials=batch_trials,
                           device=objective.device)
    if batch_trials > 1 and engine.name == "autograd":
        raise ValueError(f"cannot batch trials: {engine.why}")
    deadline = None if timeout is None else time.monotonic() + timeout
    return run_lifecycle(
        study, ObjectiveWork(objective, batch_trials), target, deadline=deadline,
        on_trial=on_trial, interrupts=interrupts,
    )
