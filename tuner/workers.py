"""Many workers on one study: exact trial counts, stale-trial cleanup, clean interrupts.

This module runs the worker processes (:func:`run_workers`) and the trials of one worker
(:func:`run_trials`); the rules below live in :mod:`tuner.trial_count` (exact trial count),
:mod:`tuner.reaping` (stale trials) and :mod:`tuner.interrupts` (signals), whose public names
are importable from here too.

A *worker* is one process running :func:`run_trials` on a study in a shared storage (the trial
lifecycle of :mod:`tuner.lifecycle`, ``--batch-trials K`` trials in lockstep). ``tuner tune
STUDY.toml --workers N`` runs N of them on this machine (:func:`run_workers`): the command
itself, which trains from the moment it has loaded the study, and N - 1 processes forked from a
fresh worker server (:func:`start_worker_server`); each with ``cores // N`` torch threads;
``tuner tune`` on several machines against
one PostgreSQL storage runs one per machine. They coordinate only through the storage.

Exact trial count
    A study must end with exactly ``target`` finished (COMPLETE + PRUNED) trials, however many
    workers share it. Before asking for a trial, a worker waits while ``finished + running >=
    target`` (a running trial may still fail and free its slot). Two workers can pass that check
    at the same moment, so the objective checks again once the trial exists (:class:`Gate`):
    trial number ``n`` trains only if ``finished + (RUNNING or WAITING trials numbered below n)
    < target``. The storage numbers trials in creation order, a trial's state only moves forward
    (WAITING -> RUNNING -> COMPLETE/PRUNED/FAIL), and a FAIL trial never finishes, so at the
    moment the highest-numbered finishing trial passed its check, every other trial that will
    ever finish was already counted: no run can pass ``target``. A trial refused by the check
    (only in that race, at most one per worker at the end of a run) ends FAIL with user
    attribute ``failed_reason = "cancelled: ..."`` before any training.

Stale trials (a worker killed with SIGKILL, a machine lost)
    On RDB storages (SQLite, PostgreSQL, MySQL) every running trial records an Optuna
    heartbeat every ``heartbeat`` seconds, from a thread (:class:`Heartbeats`), whatever the
    epoch length; a trial silent for ``3 x heartbeat`` seconds is marked
    FAIL by the next worker that asks for a trial (``optuna.storages.fail_stale_trials``) and
    re-queued with the same parameters (``RetryHeartbeatStaleTrialCallback``, at most
    :data:`MAX_RETRY` times). Every storage, journal files included (which have no heartbeat),
    also gets :func:`reap_stale_trials`: a RUNNING trial whose owner process ran on this machine
    (same kernel boot and PID namespace) and no longer exists is marked FAIL at once, with
    ``failed_reason``, and re-queued. ``tuner cleanup STUDY.toml --all-running`` marks every
    RUNNING trial FAIL, for when no worker runs anywhere. A worker that was only stopped
    (SIGSTOP) past the grace period finds its trials closed: it drops their results with one
    warning line and goes on.

Interrupts
    SIGINT (Ctrl-C) or SIGTERM (Slurm preemption, ``kubectl delete``) in a worker closes the
    trials it is training as FAIL with ``failed_reason = "interrupted: SIGINT"`` (or
    ``SIGTERM``; never PRUNED: a half-trained run must not count as finished nor teach the
    pruner) and stops the worker; the storage stays consistent. The signal stops training (or
    waiting) at once; during a storage write (a trial created, a report from training, its
    result) it is held until the write is done (:class:`Interrupts`). Further signals are
    ignored while the trials are being closed. The parent of ``--workers`` forwards the signal
    it received; workers start with both signals blocked until their handlers are installed,
    so a Ctrl-C while they load prints no traceback.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import resource_tracker
from typing import TYPE_CHECKING, Any, NoReturn

import optuna
from optuna.trial import FrozenTrial

from tuner._private import exit_process
from tuner.errors import StorageError, WorkerError
from tuner.interrupts import Interrupts
from tuner.reaping import (
    DEFAULT_HEARTBEAT_S,
    GRACE_FACTOR,
    MAX_RETRY,
    OWNER_ATTR,
    REASON_ATTR,
    WORKER_ATTR,
    Heartbeats,
    RetryStaleTrial,
    claim_trial,
    fail_running_trials,
    heartbeat_kwargs,
    reap_stale_trials,
)
from tuner.storage import SQLITE_PREFIX
from tuner.trial_count import POLL_S, TrialCancelled, target_covered
from tuner.trial_count import counts as _counts

if TYPE_CHECKING:
    from tuner.config import StudyConfig
    from tuner.study import Objective

__all__ = [
    "DEFAULT_HEARTBEAT_S",
    "GRACE_FACTOR",
    "MAX_RETRY",
    "OWNER_ATTR",
    "POLL_S",
    "REASON_ATTR",
    "WORKER_ATTR",
    "Gate",
    "Heartbeats",
    "Interrupts",
    "RetryStaleTrial",
    "TrialCancelled",
    "claim_trial",
    "cleanup_study",
    "fail_running_trials",
    "heartbeat_kwargs",
    "reap_stale_trials",
    "run_trials",
    "run_workers",
    "start_worker_server",
    "target_covered",
    "torch_threads_per_worker",
]

STOP_WAIT_S = 60.0
"""Seconds the parent waits for interrupted workers to close their trials before killing them."""


# Optuna logs every FAIL trial with its traceback; interrupts and cancellations are expected,
# are recorded in the trial's ``failed_reason``, and need no traceback on the console.
class _QuietExpectedFailures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "KeyboardInterrupt(" not in message and "TrialCancelled(" not in message


logging.getLogger("optuna.study._optimize").addFilter(_QuietExpectedFailures())
_log = logging.getLogger("tuner")


# --- one worker -------------------------------------------------------------------------------

@dataclass
class Gate:
    """The objective behind the exact-count check (see the module docstring).

    Records the worker on the trial, refuses (``TrialCancelled``, trial FAIL) a trial that would
    take the study past ``target``, and records ``failed_reason`` when training is interrupted.
    """

    objective: Callable[[optuna.Trial], float]
    target: int
    interrupts: Interrupts | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        claim_trial(trial)
        reason = target_covered(trial, self.target)
        if reason is not None:
            trial.set_user_attr(REASON_ATTR, reason)
            raise TrialCancelled(f"trial {trial.number}: target {self.target} already covered")
        try:
            if self.interrupts is None:
                return self.objective(trial)
            with self.interrupts.interruptible():
                return self.objective(trial)
        except KeyboardInterrupt as exc:
            how = exc.args[0] if exc.args else "SIGINT"
            trial.set_user_attr(REASON_ATTR, f"interrupted: {how}")
            raise


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    target: int,
    *,
    timeout: float | None = None,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    batch_trials: int = 1,
    deadline: float | None = None,
    interrupts: Interrupts | None = None,
    orphaned: Callable[[], bool] | None = None,
) -> int:
    """Run trials in this process until the study has ``target`` finished trials.

    The trial lifecycle of ``tuner.lifecycle.run_lifecycle``: safe with any number of other
    workers on the same study (see the module docstring); waits while other workers' running
    trials cover the target, since one may still fail.

    Args:
        study: the study, opened with :func:`heartbeat_kwargs` on RDB storages.
        objective: the study's ``tuner.study.Objective`` (its trials train ``batch_trials``
            in lockstep where the model can be batched), or any Optuna objective function
            (one trial at a time).
        target: finished (COMPLETE + PRUNED) trials to reach.
        timeout: seconds from now after which no trial is asked.
        on_trial: called after each trial this process told.
        batch_trials: trials trained in lockstep (K >= 1), for a ``tuner.study.Objective``.
        deadline: ``time.monotonic()`` after which no trial is asked (instead of ``timeout``).
        interrupts: the signal handling in force (default: installed for the run).
        orphaned: see ``tuner.lifecycle.run_lifecycle`` (worker processes: their command is
            gone).

    Returns:
        The number of trials this process finished.

    Raises:
        KeyboardInterrupt: SIGINT or SIGTERM; the trials in training were closed FAIL first.
    """
    from tuner.lifecycle import CallableWork, ObjectiveWork, run_lifecycle
    from tuner.study import Objective

    if deadline is None and timeout is not None:
        deadline = time.monotonic() + timeout
    work = (ObjectiveWork(objective, batch_trials) if isinstance(objective, Objective)
            else CallableWork(objective))
    return run_lifecycle(
        study, work, target, deadline=deadline,
        on_trial=None if on_trial is None else lambda t: on_trial(study, t),
        interrupts=interrupts, orphaned=orphaned,
    )


# --- N local worker processes -----------------------------------------------------------------

def torch_threads_per_worker(workers: int) -> int:
    """``max(1, usable cores // workers)``; usable cores honour CPU affinity (Slurm, taskset)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // workers)


@dataclass(frozen=True)
class _WorkerSpec:
    cfg: StudyConfig
    storage_url: str
    target: int
    deadline: float | None  # time.time() after which no trial starts
    threads: int
    heartbeat_s: int
    sampler_seed: int
    lr_bounds: tuple[float, float] | None
    batch_trials: int = 1
    tracking: Any = None  # tuner.tracking.TrackingTarget: log this worker's trials to MLflow
    environ: dict[str, str] | None = None  # the parent's os.environ when it started the worker
    parent: int | None = None  # the pid of the tuner command that started the worker


PARENT_POLL_S = 1.0
"""Seconds between a worker's checks that the command that started it still runs."""


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (exited, or a zombie its parent has not reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:  # no /proc (not Linux), or it ended just now
        return not os.path.exists("/proc/self")


def _watch_parent(pid: int) -> None:
    """A worker's thread: once the tuner command that started it is gone (SIGKILL, OOM; a
    worker is the worker server's child, so nothing else tells it), SIGTERM the worker itself,
    which closes its trials as an interrupt does and exits, instead of training on unseen.
    (Before each trial it asks, the worker also checks at once: ``orphaned`` of
    ``run_trials``.)"""
    while True:
        time.sleep(PARENT_POLL_S)
        if _gone(pid):
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _exit_worker(code: int) -> NoReturn:
    """End a worker with status ``code``: its trials are closed and its messages printed, so a
    late SIGINT or SIGTERM (the command forwards an interrupt the worker may have had from the
    terminal already) is ignored rather than raised in the middle of the exit handlers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    exit_process(code)


def _worker_main(spec: _WorkerSpec) -> None:
    """Entry point of a worker process (forked by the worker server, :func:`start_worker_server`).

    It starts with SIGINT/SIGTERM blocked (the server's mask), so that one received while it
    still loads (a Ctrl-C reaches the whole process group) waits for the handlers below: then
    it stops the worker at its first check, before any trial, with no traceback. It exits with
    :func:`_exit_worker` (later signals ignored)."""
    import sys

    from tuner import collector
    from tuner.errors import TunerError

    collector.hold()  # the worker is the program too: see tuner.collector
    if spec.environ is not None:  # the parent's, as a spawned process would have it
        os.environ.clear()
        os.environ.update(spec.environ)
    for var in _THREAD_VARS:
        os.environ[var] = str(spec.threads)
    if spec.parent is not None:
        threading.Thread(target=_watch_parent, args=(spec.parent,), name="tuner-parent",
                         daemon=True).start()
    try:
        with Interrupts() as interrupts:  # from here a signal is held, then stops the worker
            interrupts.check()
            import torch

            torch.set_num_threads(spec.threads)
            from tuner.study import make_objective, open_study

            objective = make_objective(spec.cfg, spec.lr_bounds)
            study = open_study(
                spec.cfg, spec.storage_url, sampler_seed=spec.sampler_seed,
                storage_kwargs=heartbeat_kwargs(spec.storage_url, spec.heartbeat_s),
            )
            collector.settle()
            timeout = None if spec.deadline is None else max(0.0, spec.deadline - time.time())
            on_trial = None
            if spec.tracking is not None:  # each worker logs the trials it tells
                from tuner.tracking import MlflowTracker

                on_trial = MlflowTracker(spec.tracking, spec.cfg.name,
                                         spec.cfg.objective.metric).on_trial
            parent = spec.parent
            run_trials(study, objective, spec.target, timeout=timeout, on_trial=on_trial,
                       batch_trials=spec.batch_trials, interrupts=interrupts,
                       orphaned=None if parent is None else lambda: _gone(parent))
    except KeyboardInterrupt:
        _exit_worker(130)
    except TunerError as exc:
        from tuner.errors import StorageUnavailable

        print(f"tuner worker {os.getpid()}: error: {exc}", file=sys.stderr)
        _exit_worker(1 if isinstance(exc, StorageUnavailable) else 2)
    except Exception as exc:  # optuna failing while it handles a storage failure
        from tuner.storage_guard import failure_behind

        failure = failure_behind(exc)
        if failure is None:
            raise
        print(f"tuner worker {os.getpid()}: error: {failure}", file=sys.stderr)
        _exit_worker(1)
    _exit_worker(0)


# What every worker imports, imported once by the worker server (start_worker_server): first
# tuner._server_preload (the server's garbage collector off while it imports, its fast end),
# then torch, Optuna, the storages' code (SQLAlchemy, Alembic) and tuner's own training and
# study modules (the server has the parent's sys.path), last tuner._server_loaded (the
# collector back on). A module that cannot be imported is skipped there.
_PRELOAD = (
    "tuner._server_preload",
    "torch", "numpy", "optuna", "optuna.storages.journal", "optuna.storages._rdb.storage",
    "optuna.storages._rdb.models", "sqlalchemy.orm", "sqlalchemy.dialects.sqlite",
    "alembic.command", "alembic.config", "alembic.migration", "alembic.script",
    "tuner.workers", "tuner.study", "tuner.lifecycle",
    "tuner._server_loaded",
)
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def start_worker_server(workers: int, threads: int | None = None) -> None:
    """Start, if none runs, the process :func:`run_workers` forks its worker processes from.

    It is multiprocessing's ``forkserver``: a fresh interpreter (not a copy of this process)
    that imports :data:`_PRELOAD` once (torch, Optuna, the storage code: 1.5 to 2 s of CPU)
    and then forks one worker per request, so that a worker is ready in a fraction of a
    second instead of importing everything itself. Started early (``tuner tune`` does it
    right after reading the study file), it imports while this process loads the study.

    Why forking it is safe: it runs one thread when it forks (importing torch starts none:
    torch's OpenMP/MKL pool starts at the first parallel operation, which it never runs;
    numpy's OpenBLAS pool is kept from starting with ``OPENBLAS_NUM_THREADS=1``); it never
    opens a storage, a database connection or a file a worker uses; and it has no state of
    this process (a worker gets the study, this process's environment and ``sys.path`` through
    its arguments, as a spawned process does). Each worker sets its torch threads itself.

    Signals: the server is started with SIGINT and SIGTERM blocked, a mask each worker inherits
    until its handlers are installed (:func:`_worker_main`); the server ignores SIGINT and ends
    when this process does.
    """
    import multiprocessing.forkserver as forkserver

    threads = threads or torch_threads_per_worker(workers)
    forkserver.set_forkserver_preload(list(_PRELOAD))
    resource_tracker.ensure_running()  # it unblocks both signals when it starts: first
    server_env = {**dict.fromkeys(_THREAD_VARS, str(threads)), "OPENBLAS_NUM_THREADS": "1"}
    saved = {var: os.environ.get(var) for var in server_env}
    os.environ.update(server_env)  # the server inherits this process's environment
    signal.pthread_sigmask(signal.SIG_BLOCK, Interrupts.SIGNALS)
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, Interrupts.SIGNALS)
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def run_workers(
    cfg: StudyConfig,
    storage_url: str,
    study: optuna.Study,
    target: int,
    *,
    workers: int,
    timeout: float | None = None,
    heartbeat_s: int = DEFAULT_HEARTBEAT_S,
    worker_index: int = 0,
    lr_bounds: tuple[float, float] | None = None,
    on_poll: Callable[[optuna.Study], None] | None = None,
    threads: int | None = None,
    batch_trials: int = 1,
    tracking: Any = None,
    objective: Objective | None = None,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> list[str]:
    """Run ``workers`` workers on the study until it has ``target`` finished trials.

    With ``objective`` (what ``tuner tune`` does) this process is worker 0: it starts
    ``workers - 1`` worker processes, then trains trials itself (``run_trials``, ``on_trial``
    after each) while they load and run, and then waits for them; without, it starts
    ``workers`` processes and only waits. Worker processes are forked from the worker server
    (:func:`start_worker_server`, started here if it is not running yet): fresh interpreters,
    not copies of this process.

    Each process limits torch to ``threads`` threads (default :func:`torch_threads_per_worker`:
    the cores shared out) and seeds its sampler
    with ``seed + worker_index * workers + k`` (k = 0..workers-1), so workers do not propose the
    same parameters; trial ``n`` still seeds torch with ``seed + n``. While this process waits
    for worker processes it polls the storage (``on_poll``, every :data:`POLL_S` seconds) for
    the progress bar.

    Args:
        study: the study, already created by this process (so workers only load it); as
            worker 0, opened with ``sampler_seed = seed + worker_index * workers`` and
            :func:`heartbeat_kwargs`.
        worker_index: this command's index among independent ``tuner tune`` commands on the
            same study (Slurm array task, Kubernetes completion index), for distinct seeds.
        lr_bounds: learning-rate bounds resolved by the parent (``make_objective``), so that
            every worker searches the same range.
        tracking: a ``tuner.tracking.TrackingTarget``: each worker process logs its trials
            to MLflow (this process's own: ``on_trial``).
        objective: the study's ``tuner.study.Objective``: this process trains as worker 0,
            with ``threads`` torch threads (its previous count is restored afterwards).
        on_trial: called after each trial this process told (worker 0 only).

    Returns:
        Notes for the user about workers that died while the study still reached its target.

    Raises:
        StorageError: an in-memory storage (workers cannot share it).
        WorkerError: a worker process failed and the study is short of ``target``.
        KeyboardInterrupt: after closing this process's trials, forwarding the interrupt and
            waiting for the worker processes to close theirs (a second Ctrl-C kills them;
            their trials are reaped on the next run).
        Whatever worker 0's own trials raise (``StorageUnavailable``, ...), after stopping
            the worker processes as SIGTERM does.
    """
    if storage_url in (f"{SQLITE_PREFIX}:memory:", SQLITE_PREFIX):
        raise StorageError("--workers needs a storage on disk or a server, not sqlite in memory")
    ctx = multiprocessing.get_context("forkserver")
    threads = threads or torch_threads_per_worker(workers)
    start_worker_server(workers, threads)  # already running if `tuner tune` started it
    deadline = None if timeout is None else time.time() + timeout
    environ = dict(os.environ)
    numbers = range(0 if objective is None else 1, workers)  # worker 0: this process, if
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(_WorkerSpec(cfg, storage_url, target, deadline, threads, heartbeat_s,
                              cfg.study.seed + worker_index * workers + k, lr_bounds,
                              batch_trials, tracking, environ, os.getpid()),),
            name=f"tuner-worker-{k}",
        )
        for k in numbers
    ]
    with Interrupts() as interrupts:  # SIGTERM stops the workers cleanly too
        try:
            # workers start with SIGINT/SIGTERM blocked (the worker server's mask), so that one
            # arriving while they load (Ctrl-C reaches the whole process group) waits for their
            # handlers; here a signal stops the loop below, then the workers (_stop)
            for p in procs:
                p.start()  # returns once the server has forked it: after its imports
            if objective is not None:  # worker 0: trains while the others load and run
                _train_here(study, objective, target, deadline, threads, batch_trials,
                            on_trial, interrupts)
            while any(p.is_alive() for p in procs):
                if on_poll is not None:
                    on_poll(study)  # storage reads: a signal waits for them
                with interrupts.interruptible():  # until one exits, at most POLL_S seconds
                    multiprocessing.connection.wait(
                        [p.sentinel for p in procs if p.exitcode is None], timeout=POLL_S)
        except KeyboardInterrupt as exc:
            _stop(procs, exc.args[0] if exc.args else "SIGINT")
            raise
        except BaseException:  # worker 0 failed (storage lost, a bug): the others stop too
            _stop(procs, "SIGTERM")
            raise
        finally:
            if on_poll is not None:
                on_poll(study)
    failed = [(k, p) for k, p in zip(numbers, procs, strict=True) if p.exitcode != 0]
    bad = [f"worker {k} (pid {p.pid}) {_describe_exit(p.exitcode)}" for k, p in failed]
    finished, _ = _counts(study, reap=bool(failed))  # a dead worker's trial: FAIL, re-queued
    if bad and finished < target:
        printed = any(p.exitcode is not None and p.exitcode > 0 for p in procs)
        raise WorkerError(
            f"{'; '.join(bad)}{' (its error is printed above)' if printed else ''}; the study "
            f"has {finished} of {target} finished trials. Run the same command again to top "
            f"it up."
        )
    return [f"{b}; {_what_it_left(study, p.pid)}" for b, (_, p) in zip(bad, failed, strict=True)]


def _what_it_left(study: optuna.Study, pid: int | None) -> str:
    """For a note on a worker process that failed: what became of its trials."""
    import socket

    mine = [t for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get(WORKER_ATTR) == f"{socket.gethostname()}:{pid}"]
    if not mine:
        return "it ran no trial"
    reaped = sum("died while training" in str(t.user_attrs.get(REASON_ATTR, "")) for t in mine)
    if reaped:
        return f"its {reaped} trial(s) in training were marked failed, their parameters re-queued"
    return f"it had run {len(mine)} trial(s), none left in training"


def _train_here(
    study: optuna.Study, objective: Objective, target: int, deadline: float | None,
    threads: int, batch_trials: int,
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None, interrupts: Interrupts,
) -> None:
    """Worker 0: this process's trials (``run_trials``) with its share of the cores;
    ``deadline`` in ``time.time()``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run_trials(study, objective, target, on_trial=on_trial, batch_trials=batch_trials,
                   interrupts=interrupts,
                   timeout=None if deadline is None else max(0.0, deadline - time.time()))
    finally:
        torch.set_num_threads(before)  # the command's confirmation uses every core again


def _stop(procs: list[multiprocessing.process.BaseProcess], how: str = "SIGINT") -> None:
    """Forward the signal received (``how``: its name), wait for the workers to close their
    trials; a second Ctrl-C kills them."""
    procs = [p for p in procs if p.pid is not None]  # started ones (a signal may come first)
    signum = signal.Signals[how] if how in signal.Signals.__members__ else signal.SIGINT
    for p in procs:
        if p.is_alive() and p.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signum)
    # the first signal set SIGINT/SIGTERM to be ignored; a second Ctrl-C now kills the workers
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if (
        threading.current_thread() is threading.main_thread()) else None
    try:
        end = time.monotonic() + STOP_WAIT_S
        for p in procs:
            p.join(max(0.0, end - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()


# --- tuner cleanup ----------------------------------------------------------------------------

def cleanup_study(
    cfg: StudyConfig, storage_url: str, *, all_running: bool = False,
    heartbeat_s: int = DEFAULT_HEARTBEAT_S,
) -> list[tuple[int, str]]:
    """Mark stale RUNNING trials FAIL and re-queue them (``tuner cleanup``).

    Without ``all_running``: trials whose heartbeat is older than ``3 x heartbeat_s`` seconds
    (RDB storages) or whose owner process on this machine is gone (any storage). With it: every
    RUNNING trial, for when no worker runs anywhere (journal files written by other machines).

    Returns:
        (trial number, reason) for each trial marked FAIL.

    Raises:
        StorageError: the storage or the study does not exist.
    """
    from tuner.storage import make_storage
    from tuner.study import load_existing_study

    load_existing_study(cfg, storage_url)  # clear message if the study is missing
    study = optuna.load_study(
        study_name=cfg.name,
        storage=make_storage(storage_url, **heartbeat_kwargs(storage_url, heartbeat_s)),
    )
    out = [(n, "stale: no heartbeat or its worker process is gone") for n in
           reap_stale_trials(study)]
    if all_running:
        reason = "marked failed by `tuner cleanup --all-running` (re-queued)"
        out += [(n, reason) for n in fail_running_trials(study, reason, retry=True)]
    return out
