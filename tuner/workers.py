"""Many workers on one study: exact trial counts, stale-trial cleanup, clean interrupts.

A *worker* is one process running :func:`run_trials` on a study in a shared storage (the trial
lifecycle of :mod:`tuner.lifecycle`, ``--batch-trials K`` trials in lockstep). ``tuner tune
STUDY.toml --workers N`` starts N of them on this machine (:func:`run_workers`, spawned
processes, each with ``cores // N`` torch threads); ``tuner tune`` on several machines against
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
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing import resource_tracker
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import StorageError, WorkerError
from tuner.storage import JOURNAL_PREFIX, SQLITE_PREFIX, set_trial_attrs

if TYPE_CHECKING:
    from tuner.config import StudyConfig

__all__ = [
    "DEFAULT_HEARTBEAT_S",
    "GRACE_FACTOR",
    "MAX_RETRY",
    "REASON_ATTR",
    "WORKER_ATTR",
    "Gate",
    "Heartbeats",
    "TrialCancelled",
    "claim_trial",
    "cleanup_study",
    "fail_running_trials",
    "heartbeat_kwargs",
    "reap_stale_trials",
    "run_trials",
    "run_workers",
    "target_covered",
    "torch_threads_per_worker",
]

DEFAULT_HEARTBEAT_S = 10
"""Seconds between heartbeats of a running trial on RDB storages (0 turns heartbeats off)."""
GRACE_FACTOR = 3
"""A trial whose last heartbeat is older than ``GRACE_FACTOR x heartbeat`` seconds is stale."""
MAX_RETRY = 3
"""A stale trial is re-queued with the same parameters at most this many times."""
POLL_S = 0.5
"""Seconds between storage polls while waiting for other workers (and for the progress bar)."""
STOP_WAIT_S = 60.0
"""Seconds the parent waits for interrupted workers to close their trials before killing them."""

REASON_ATTR = "failed_reason"
"""User attribute saying why a trial ended FAIL (interrupted, cancelled, worker died)."""
WORKER_ATTR = "worker"
"""User attribute naming the worker that ran the trial: ``host:pid``."""
OWNER_ATTR = "tuner:owner"
REQUEUED = f"; its parameters are re-queued (at most {MAX_RETRY} times)"
"""System attribute identifying the owner process for :func:`reap_stale_trials`."""


class TrialCancelled(Exception):
    """Raised by :class:`Gate` for a trial started after the study reached its target."""


# Optuna logs every FAIL trial with its traceback; interrupts and cancellations are expected,
# are recorded in the trial's ``failed_reason``, and need no traceback on the console.
class _QuietExpectedFailures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "KeyboardInterrupt(" not in message and "TrialCancelled(" not in message


logging.getLogger("optuna.study._optimize").addFilter(_QuietExpectedFailures())
_log = logging.getLogger("tuner")


# --- who owns a trial -------------------------------------------------------------------------

def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _machine_key() -> str:
    """Same value for processes that can see each other's PIDs: kernel boot + PID namespace."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    return f"{boot}/{pid_ns}" if boot and pid_ns else f"host={socket.gethostname()}"


def _owner() -> str:
    return f"{_machine_key()}:{os.getpid()}"


def _process_gone(pid: int) -> bool:
    """True if no live process has this PID here (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    stat = _read(f"/proc/{pid}/stat")
    return bool(stat) and stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _owner_gone(owner: object) -> bool:
    if not isinstance(owner, str) or ":" not in owner:
        return False
    machine, _, pid = owner.rpartition(":")
    return machine == _machine_key() and pid.isdigit() and _process_gone(int(pid))


# --- stale trials -----------------------------------------------------------------------------

def _retry_callback() -> Callable[[optuna.Study, FrozenTrial], None]:
    # Optuna >= 4.9 names it RetryHeartbeatStaleTrialCallback; older ones RetryFailedTrialCallback
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    return optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRY)


class RetryStaleTrial:
    """Re-queue a stale trial (WAITING, same parameters) without its dead owner's bookkeeping.

    Wraps Optuna's retry callback; the copy drops ``worker``, ``failed_reason`` and the owner
    so that the retry is not mistaken for the dead trial while it waits or runs.
    """

    def __init__(self) -> None:
        self._retry = _retry_callback()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        clean = FrozenTrial(
            number=trial.number,
            state=trial.state,
            value=None,
            values=None,
            datetime_start=trial.datetime_start,
            datetime_complete=trial.datetime_complete,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={
                k: v for k, v in trial.user_attrs.items() if k not in (WORKER_ATTR, REASON_ATTR)
            },
            system_attrs={k: v for k, v in trial.system_attrs.items() if k != OWNER_ATTR},
            intermediate_values={},
            trial_id=trial._trial_id,
        )
        self._retry(study, clean)


def heartbeat_kwargs(url: str, heartbeat_s: int = DEFAULT_HEARTBEAT_S) -> dict[str, Any]:
    """``RDBStorage`` arguments for heartbeats and stale-trial retry; ``{}`` for journal files.

    Args:
        url: a resolved storage URL.
        heartbeat_s: seconds between heartbeats (integer >= 1); 0 turns heartbeats off.
    """
    if heartbeat_s <= 0 or url.startswith(JOURNAL_PREFIX):
        return {}
    key = (
        "heartbeat_stale_trial_callback"
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
        else "failed_trial_callback"
    )
    return {
        "heartbeat_interval": int(heartbeat_s),
        "grace_period": GRACE_FACTOR * int(heartbeat_s),
        key: RetryStaleTrial(),
    }


def _storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    # Optuna's own helpers (fail_stale_trials, the retry callback) work on study._storage too;
    # it is the only way to set attributes of a trial this process did not ask for.
    return study._storage


def _fail(study: optuna.Study, trial: FrozenTrial, reason: str, retry: bool) -> bool:
    """Mark a RUNNING trial FAIL with ``failed_reason``; False if another process was first."""
    storage = _storage(study)
    try:
        storage.set_trial_user_attr(trial._trial_id, REASON_ATTR, reason)
        if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    if retry:
        RetryStaleTrial()(study, storage.get_trial(trial._trial_id))
    return True


def reap_stale_trials(
    study: optuna.Study, running: Iterable[FrozenTrial] | None = None
) -> list[int]:
    """Mark stale RUNNING trials FAIL and re-queue them; returns their numbers.

    Stale: the heartbeat is older than the grace period (RDB storages opened with
    :func:`heartbeat_kwargs`), or the owner process ran here and is gone (any storage).

    Args:
        running: the study's RUNNING trials, if the caller has just read them (default: read).
    """
    storage = _storage(study)
    reaped = []
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if interval:  # RDB storages opened with heartbeat_kwargs
        # say why before Optuna fails them (a FAIL trial's attributes are read-only)
        silent = f"no heartbeat for {GRACE_FACTOR * interval} s: its worker was killed or lost"
        stale = storage._get_stale_trial_ids(study._study_id)
        for trial_id in stale:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                storage.set_trial_user_attr(trial_id, REASON_ATTR, f"{silent}{REQUEUED}")
        with _no_experimental_warning():
            optuna.storages.fail_stale_trials(study)  # FAIL + Optuna's retry callback
        reaped = [storage.get_trial(i).number for i in stale]
    if running is None:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in running:
        if t.number in reaped:  # failed above for its heartbeat
            continue
        owner = t.system_attrs.get(OWNER_ATTR)
        if _owner_gone(owner):
            who = t.user_attrs.get(WORKER_ATTR, "?")
            if _fail(study, t, f"worker {who} died while training it{REQUEUED}", retry=True):
                reaped.append(t.number)
    return sorted(reaped)


def fail_running_trials(
    study: optuna.Study, reason: str, *, mine_only: bool = False, retry: bool = False
) -> list[int]:
    """Mark RUNNING trials FAIL with ``failed_reason = reason``; returns their numbers.

    Args:
        mine_only: only trials owned by this process.
        retry: re-queue each (WAITING, same parameters).
    """
    me = _owner()
    done = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if mine_only and t.system_attrs.get(OWNER_ATTR) != me:
            continue
        if _fail(study, t, reason, retry):
            done.append(t.number)
    return done


@contextlib.contextmanager
def _no_experimental_warning() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


# --- one worker -------------------------------------------------------------------------------

def _counts(study: optuna.Study, *, reap: bool = False) -> tuple[int, int]:
    """(finished, running) trials; with ``reap``, stale trials are reaped first (one read of
    the study where none is stale, as it usually is)."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    trials = study.get_trials(deepcopy=False, states=states)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if reap and reap_stale_trials(study, running):
        return _counts(study)  # some RUNNING ones are FAIL now: count again
    return len(trials) - len(running), len(running)


def _package_dir(module: str) -> str | None:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "")


# code that talks to a storage: a KeyboardInterrupt raised in it could leave a write half done
_STORAGE_CODE = tuple(
    d for d in (_package_dir("optuna.storages"), _package_dir("sqlalchemy"),
                _package_dir("psycopg"), _package_dir("psycopg2"))
    if d is not None
) + (str(Path(__file__).with_name("storage.py")),)


def _in_storage_call(frame: Any) -> bool:
    """True if ``frame`` or one of its callers runs storage code (Optuna's, SQLAlchemy's,
    a database driver's, ``tuner.storage``)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith(_STORAGE_CODE):
            return True
        frame = frame.f_back
    return False


class Interrupts:
    """SIGINT/SIGTERM while trials run: stop at once while training or waiting, else soon after.

    The first signal raises ``KeyboardInterrupt(signal name)`` immediately inside
    :meth:`interruptible` sections (training, sleeping), unless a storage call is under way
    there (a trial's report from a training callback): then, as everywhere else (asking for a
    trial, writing its result), it is held until the next :meth:`check` or the end of a
    :meth:`deferred` section, so no storage write is ever cut halfway. Later signals are
    ignored while the trials are being closed. Outside the main thread: no-op.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: str | None = None
        self._safe = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.getsignal(s) for s in self.SIGNALS}
            for s in self.SIGNALS:
                signal.signal(s, self._handle)
            # a worker process starts with them blocked (run_workers): deliver any now
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self.SIGNALS)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        self.pending = signal.Signals(signum).name
        if self._safe and not _in_storage_call(frame):
            raise KeyboardInterrupt(self.pending)

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a signal is being held."""
        if self.pending is not None:
            raise KeyboardInterrupt(self.pending)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A section a signal may interrupt at once."""
        self.check()
        self._safe = True
        try:
            yield
        finally:
            self._safe = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A section (storage calls) inside an :meth:`interruptible` one that a signal must not
        cut: a signal is held until it ends, then raised if the outer section is one."""
        outer = self._safe
        self._safe = False
        try:
            yield
        finally:
            self._safe = outer
        if outer:
            self.check()


def claim_trial(trial: optuna.Trial) -> None:
    """Mark ``trial`` as this process's, so that :func:`reap_stale_trials` can tell when its
    owner is gone (the ``worker`` user attribute says ``host:pid`` for people)."""
    set_trial_attrs(
        trial,
        {WORKER_ATTR: f"{socket.gethostname()}:{os.getpid()}"},
        system_attrs={OWNER_ATTR: _owner()},
    )


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


class Heartbeats:
    """A heartbeat thread for the trials this process runs, as ``study.optimize`` has one.

    On storages opened with :func:`heartbeat_kwargs` (RDB), :meth:`add` records a trial's
    first heartbeat at once and the thread then records one for every trial added and not
    yet removed every heartbeat interval, whatever the main thread does (a long epoch, a
    slow storage write), so no live trial goes stale. Elsewhere (journal files, heartbeats
    off) a no-op. Use as a context manager: the thread stops on exit.
    """

    def __init__(self, study: optuna.Study) -> None:
        self._storage = _storage(study)
        self.interval = getattr(self._storage, "get_heartbeat_interval", lambda: None)()
        self._live: set[int] = set()  # trial ids
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    def __enter__(self) -> Heartbeats:
        if self.interval:
            self._thread = threading.Thread(target=self._beat, name="tuner-heartbeat",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def add(self, trial: optuna.Trial) -> None:
        """Record ``trial``'s heartbeat now and keep it beating until :meth:`remove`."""
        if not self.interval:
            return
        self._storage.record_heartbeat(trial._trial_id)
        with self._lock:
            self._live.add(trial._trial_id)

    def remove(self, trial: optuna.Trial) -> None:
        """Stop ``trial``'s heartbeat (it is finished, or about to be)."""
        with self._lock:
            self._live.discard(trial._trial_id)

    def _beat(self) -> None:
        assert self.interval
        while not self._stop.wait(self.interval):
            with self._lock:
                live = sorted(self._live)
            for trial_id in live:
                try:
                    self._storage.record_heartbeat(trial_id)
                except Exception as exc:  # noqa: BLE001 - a missed beat is retried next time
                    if not self._warned:
                        self._warned = True
                        _log.warning("heartbeat of a running trial not recorded: %s", exc)


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
        interrupts=interrupts,
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


def _worker_main(spec: _WorkerSpec) -> None:
    """Entry point of a spawned worker process.

    It starts with SIGINT/SIGTERM blocked (:func:`run_workers`), so that one received while it
    still loads (a Ctrl-C reaches the whole process group) waits for the handlers below: then
    it stops the worker at its first check, before any trial, with no traceback."""
    import sys

    from tuner.errors import TunerError

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(spec.threads)
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
            timeout = None if spec.deadline is None else max(0.0, spec.deadline - time.time())
            on_trial = None
            if spec.tracking is not None:  # each worker logs the trials it tells
                from tuner.tracking import MlflowTracker

                on_trial = MlflowTracker(spec.tracking, spec.cfg.name,
                                         spec.cfg.objective.metric).on_trial
            run_trials(study, objective, spec.target, timeout=timeout, on_trial=on_trial,
                       batch_trials=spec.batch_trials, interrupts=interrupts)
    except KeyboardInterrupt:
        sys.exit(130)
    except TunerError as exc:
        from tuner.errors import StorageUnavailable

        print(f"tuner worker {os.getpid()}: error: {exc}", file=sys.stderr)
        sys.exit(1 if isinstance(exc, StorageUnavailable) else 2)
    except Exception as exc:  # optuna failing while it handles a storage failure
        from tuner.storage_guard import failure_behind

        failure = failure_behind(exc)
        if failure is None:
            raise
        print(f"tuner worker {os.getpid()}: error: {failure}", file=sys.stderr)
        sys.exit(1)


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
) -> list[str]:
    """Run ``workers`` spawned processes on the study until it has ``target`` finished trials.

    Each process limits torch to ``threads`` threads (default :func:`torch_threads_per_worker`:
    the cores shared out) and seeds its sampler
    with ``seed + worker_index * workers + k`` (k = 0..workers-1), so workers do not propose the
    same parameters; trial ``n`` still seeds torch with ``seed + n``. This process only polls
    the storage (``on_poll``, every :data:`POLL_S` seconds) for the progress bar.

    Args:
        study: the study, already created by this process (so workers only load it).
        worker_index: this command's index among independent ``tuner tune`` commands on the
            same study (Slurm array task, Kubernetes completion index), for distinct seeds.
        lr_bounds: learning-rate bounds resolved by the parent (``make_objective``), so that
            every worker searches the same range.
        tracking: a ``tuner.tracking.TrackingTarget``: each worker logs its trials to MLflow.

    Returns:
        Notes for the user about workers that died while the study still reached its target.

    Raises:
        StorageError: an in-memory storage (workers cannot share it).
        WorkerError: a worker failed and the study is short of ``target``.
        KeyboardInterrupt: after forwarding the interrupt and waiting for the workers to close
            their trials (a second Ctrl-C kills them; their trials are reaped on the next run).
    """
    if storage_url in (f"{SQLITE_PREFIX}:memory:", SQLITE_PREFIX):
        raise StorageError("--workers needs a storage on disk or a server, not sqlite in memory")
    ctx = multiprocessing.get_context("spawn")
    threads = threads or torch_threads_per_worker(workers)
    deadline = None if timeout is None else time.time() + timeout
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(_WorkerSpec(cfg, storage_url, target, deadline, threads, heartbeat_s,
                              cfg.study.seed + worker_index * workers + k, lr_bounds,
                              batch_trials, tracking),),
            name=f"tuner-worker-{k}",
        )
        for k in range(workers)
    ]
    with Interrupts() as interrupts:  # SIGTERM stops the workers cleanly too
        try:
            # workers start with SIGINT/SIGTERM blocked (the mask is inherited), so that one
            # arriving while they load (Ctrl-C reaches the whole process group) waits for their
            # handlers; here it waits until they are started. The resource tracker unblocks
            # both when it starts (the stdlib's own use of this mask): start it first.
            resource_tracker.ensure_running()
            signal.pthread_sigmask(signal.SIG_BLOCK, Interrupts.SIGNALS)
            try:
                for p in procs:
                    p.start()
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, Interrupts.SIGNALS)
            while any(p.is_alive() for p in procs):
                if on_poll is not None:
                    on_poll(study)  # storage reads: a signal waits for them
                with interrupts.interruptible():
                    multiprocessing.connection.wait([p.sentinel for p in procs], timeout=POLL_S)
        except KeyboardInterrupt as exc:
            _stop(procs, exc.args[0] if exc.args else "SIGINT")
            raise
        finally:
            if on_poll is not None:
                on_poll(study)
    bad = [f"worker {k} (pid {p.pid}) {_describe_exit(p.exitcode)}"
           for k, p in enumerate(procs) if p.exitcode != 0]
    finished, _ = _counts(study)
    if bad and finished < target:
        printed = any(p.exitcode is not None and p.exitcode > 0 for p in procs)
        raise WorkerError(
            f"{'; '.join(bad)}{' (its error is printed above)' if printed else ''}; the study "
            f"has {finished} of {target} finished trials. Run the same command again to top "
            f"it up."
        )
    return [f"{b}; its trial was marked failed and re-run by the others" for b in bad]


def _stop(procs: list[multiprocessing.process.BaseProcess], how: str = "SIGINT") -> None:
    """Forward the signal received (``how``: its name), wait for the workers to close their
    trials; a second Ctrl-C kills them."""
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
