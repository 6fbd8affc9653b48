"""``tuner tune``: run a study to its requested number of finished trials, with a progress bar."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import optuna
import torch
from optuna.trial import TrialState
from rich.console import Console

from tuner import collector
from tuner.batched import DEFAULT_BATCH_TRIALS, choose_engine
from tuner.config import StudyConfig
from tuner.engine import training_threads
from tuner.lr_find import resolve_lr_bounds
from tuner.models import check_spawnable
from tuner.progress import StudyTally, progress_bar
from tuner.study import (
    count_finished,
    make_objective,
    open_study,
    trial_kind,
)
from tuner.tracking import TrackingTarget
from tuner.workers import (
    DEFAULT_HEARTBEAT_S,
    POLL_S,
    REASON_ATTR,
    heartbeat_kwargs,
    reap_stale_trials,
    run_trials,
    run_workers,
)

__all__ = ["TuneOutcome", "run_tune"]


@dataclass(frozen=True)
class TuneOutcome:
    """What a ``tune`` run did: the study, trials finished before and now, wall seconds."""

    study: optuna.Study
    finished_before: int
    finished_after: int
    seconds: float
    interrupted: bool = False  # Ctrl-C/SIGTERM: running trials were closed FAIL
    closed: int = 0  # trials in training that the interrupt closed as FAIL
    notes: tuple[str, ...] = ()  # e.g. a worker that died while the others carried on


def run_tune(
    cfg: StudyConfig,
    storage_url: str,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    console: Console | None = None,
    progress: bool = True,
    workers: int = 1,
    heartbeat_s: int = DEFAULT_HEARTBEAT_S,
    worker_index: int = 0,
    batch_trials: int | None = None,
    threads: int | None = None,
    tracking: TrackingTarget | None = None,
) -> TuneOutcome:
    """Create or resume the study and run trials until ``n_trials`` have finished.

    Args:
        cfg: the validated study.
        storage_url: an Optuna storage URL (see ``study.resolve_storage_url``).
        n_trials: finished trials to reach (default ``[study] n_trials``); a resumed study is
            topped up, never run past it.
        timeout: seconds from the call after which no trial is asked (default ``[study]
            timeout``); trials in training finish.
        console: where the progress bar goes.
        progress: False for no progress bar.
        workers: worker processes on this machine (1: trials run in this process); see
            ``tuner.workers`` for how they share the study and stop at exactly ``n_trials``.
            Each worker trains ``batch_trials`` trials in lockstep.
        heartbeat_s: seconds between heartbeats of running trials on RDB storages (0: off).
        worker_index: this command's index among independent commands on the same study
            (a Slurm array task, ...); it only offsets the sampler seed.
        batch_trials: trials trained in lockstep as one batched model, in this process or in
            each worker (default ``DEFAULT_BATCH_TRIALS`` where the model can be batched;
            1 = one at a time). See ``tuner.lifecycle``.
        threads: torch threads for training: in this process (default
            :func:`tuner.engine.training_threads`: ``$OMP_NUM_THREADS``, else 1), or in each
            worker process (default ``cores // workers``).
        tracking: log every trial told (in this process or each worker) to this MLflow store,
            and the best configuration at the end (``tuner.tracking``).

    Raises:
        StorageError, DeviceError, ConfigError, TrackingError: before any trial starts.
    """
    timeout = timeout if timeout is not None else cfg.study.timeout
    # the timeout counts from the command's start: no trial is asked after it
    deadline = None if timeout is None else time.monotonic() + timeout
    if workers == 1:
        torch.set_num_threads(training_threads(threads))
    else:
        check_spawnable(cfg)  # a Python object as model: workers cannot see it
    target = n_trials if n_trials is not None else cfg.study.n_trials
    # [space] lr = "auto": the LR range test sets the bounds (or a resumed study reuses them);
    # it writes nothing if it fails. None for fixed bounds. (tuner/lr_find/)
    lr_bounds = resolve_lr_bounds(cfg, storage_url, console=console)
    objective = make_objective(cfg, lr_bounds)  # data and device first: nothing written if bad
    tracker = None
    if tracking is not None:  # mlflow imported only here; the experiment exists before workers
        from tuner.tracking import MlflowTracker

        tracker = MlflowTracker(tracking, cfg.name, cfg.objective.metric)
    study = open_study(
        cfg, storage_url, sampler_seed=cfg.study.seed + worker_index * workers,
        storage_kwargs=heartbeat_kwargs(storage_url, heartbeat_s),
    )
    reap_stale_trials(study)  # trials of killed workers: FAIL and re-queued before counting
    collector.settle()  # the program: the storage, data and model code are frozen too
    before = count_finished(study)
    closed_before = _closed_by_interrupts(study)
    started = time.perf_counter()
    console = console or Console(stderr=True)
    interrupted, notes = False, []
    batch_trials = _resolve_batch_trials(cfg, batch_trials, workers, console, objective.device)

    # optuna-dashboard: the study's note and figures, and why each stopped trial stopped,
    # while the study runs (at most 5 % of its time, see LiveRefresh) and at the end
    from tuner.dashboard_notes import LiveRefresh, refresh_study_notes

    live = LiveRefresh(study, cfg, objective.data)
    if before < target:
        live.start()  # the study note from the start; figures once there is something

    with progress_bar(console, disable=not progress) as bar:
        task = bar.add_task(cfg.name, total=target, completed=min(before, target), status="")
        tally = StudyTally(study)
        shown = threading.Lock()  # the bar: from this thread, and the poller below

        def show(trial: optuna.trial.FrozenTrial | None = None) -> None:
            with shown:
                tally.update(trial)  # own trials counted; the study read once a second
                best = ("no complete trial yet" if tally.best is None
                        else f"best {tally.best:.4g}")
                if trial is None:  # polled while worker processes run
                    running = len(study.get_trials(deepcopy=False,
                                                   states=(TrialState.RUNNING,)))
                    what = f"{running} running"
                else:
                    what = f"#{trial.number} {trial_kind(trial)}"
                bar.update(task, completed=min(tally.finished, target),
                           status=f"{what} | {best}")

        def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial | None = None) -> None:
            if tracker is not None and trial is not None:
                tracker.on_trial(study, trial)
            live()
            if progress:  # else no bar to update: spare the storage reads
                show(trial)

        if before < target:
            stack = contextlib.ExitStack()
            try:
                if workers > 1:
                    # the others' trials on the bar while this process trains a long one
                    stack.enter_context(_polled(show, POLL_S if progress else None))
                    notes = run_workers(
                        cfg, storage_url, study, target, workers=workers,
                        timeout=None if deadline is None else deadline - time.monotonic(),
                        heartbeat_s=heartbeat_s, worker_index=worker_index,
                        lr_bounds=objective.lr_bounds, on_poll=on_trial, threads=threads,
                        batch_trials=batch_trials, tracking=tracking,
                        objective=objective, on_trial=on_trial,  # this process: worker 0
                    )
                else:
                    run_trials(study, objective, target, deadline=deadline, on_trial=on_trial,
                               batch_trials=batch_trials)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                stack.close()
            if progress:  # the last word: the whole study (other commands' last trials too)
                tally.update()
                bar.update(task, completed=min(tally.finished, target))

    refresh_study_notes(study, cfg, objective.data)
    if tracker is not None and not interrupted:
        tracker.log_best(study, cfg, storage_url)
    closed = _closed_by_interrupts(study) - closed_before if interrupted else 0
    return TuneOutcome(study, before, count_finished(study), time.perf_counter() - started,
                       interrupted, closed, tuple(notes))


@contextlib.contextmanager
def _polled(poll: Callable[[], None], every_s: float | None) -> Iterator[None]:
    """Call ``poll`` from a thread every ``every_s`` seconds (None: never) inside the block;
    a failing call is skipped (the progress bar is not worth stopping a study for)."""
    if every_s is None:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(Exception):
                poll()

    thread = threading.Thread(target=loop, name="tuner-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _closed_by_interrupts(study: optuna.Study) -> int:
    """FAIL trials whose ``failed_reason`` says an interrupt closed them."""
    return sum(
        str(t.user_attrs.get(REASON_ATTR, "")).startswith("interrupted:")
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    )


def _resolve_batch_trials(
    cfg: StudyConfig, requested: int | None, workers: int, console: Console,
    device: torch.device | None = None,
) -> int:
    """Batched trials by default (in each worker process too) where a lockstep engine trains
    the model (:func:`tuner.batched.choose_engine`), one at a time elsewhere; says so in the
    run's first lines unless the engine is the stacked one (the default, for the MLP)."""
    k = requested if requested is not None else DEFAULT_BATCH_TRIALS
    engine = choose_engine(cfg, batch_trials=k, device=device)
    if engine.name == "autograd":
        if requested is not None and requested > 1:
            console.print(f"[yellow]--batch-trials {requested} ignored: {engine.why}; "
                          f"trials run one at a time.[/yellow]")
        elif requested is None:  # the default would batch: say why it does not
            console.print(f"[dim]Trials run one at a time: {engine.why}.[/dim]")
        return 1
    if engine.name == "functional":  # the stacked engine, the default, goes without saying
        count = f"{k} at a time" if k > 1 else "one at a time"
        console.print(f"[dim]Trials run {count} in lockstep with torch.func "
                      f"({engine.why}).[/dim]")
    return k
