"""Stale trials: who owns a trial, its heartbeats, and the reaping of trials whose worker is gone.

See :mod:`tuner.workers` ("Stale trials") for the rules.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.storage import JOURNAL_PREFIX, set_trial_attrs

__all__ = [
    "DEFAULT_HEARTBEAT_S",
    "GRACE_FACTOR",
    "MAX_RETRY",
    "OWNER_ATTR",
    "REASON_ATTR",
    "WORKER_ATTR",
    "Heartbeats",
    "RetryStaleTrial",
    "claim_trial",
    "owner_attrs",
    "fail_running_trials",
    "heartbeat_kwargs",
    "reap_stale_trials",
]

_log = logging.getLogger("tuner")

DEFAULT_HEARTBEAT_S = 10
"""Seconds between heartbeats of a running trial on RDB storages (0 turns heartbeats off)."""
GRACE_FACTOR = 3
"""A trial whose last heartbeat is older than ``GRACE_FACTOR x heartbeat`` seconds is stale."""
MAX_RETRY = 3
"""A stale trial is re-queued with the same parameters at most this many times."""
REASON_ATTR = "failed_reason"
"""User attribute saying why a trial ended FAIL (interrupted, cancelled, worker died)."""
WORKER_ATTR = "worker"
"""User attribute naming the worker that ran the trial: ``host:pid``."""
OWNER_ATTR = "tuner:owner"
REQUEUED = f"; its parameters are re-queued (at most {MAX_RETRY} times)"
"""System attribute identifying the owner process for :func:`reap_stale_trials`."""


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


def _owner_running_here(owner: object) -> bool:
    """True if the owner process runs on this machine and is neither stopped nor gone: its
    trial is alive, whatever its heartbeat says (another command may be using a shorter
    ``--heartbeat`` than the one it was started with)."""
    if not isinstance(owner, str) or ":" not in owner:
        return False
    machine, _, pid = owner.rpartition(":")
    if machine != _machine_key() or not pid.isdigit() or _process_gone(int(pid)):
        return False
    stat = _read(f"/proc/{pid}/stat")
    return bool(stat) and stat.rsplit(")", 1)[-1].split()[0] not in ("T", "t", "Z", "X")


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
        for trial_id in storage._get_stale_trial_ids(study._study_id):
            trial = storage.get_trial(trial_id)
            if _owner_running_here(trial.system_attrs.get(OWNER_ATTR)):
                continue  # alive here (a shorter --heartbeat than its own): not stale
            # FAIL with the reason, re-queued, as optuna.storages.fail_stale_trials does
            if _fail(study, trial, f"{silent}{REQUEUED}", retry=True):
                reaped.append(trial.number)
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


def owner_attrs() -> tuple[dict[str, Any], dict[str, Any]]:
    """The (user, system) attributes that mark a trial as this process's: ``worker``
    (``host:pid``, for people) and the owner :func:`reap_stale_trials` checks."""
    return {WORKER_ATTR: f"{socket.gethostname()}:{os.getpid()}"}, {OWNER_ATTR: _owner()}


def claim_trial(trial: optuna.Trial) -> None:
    """Mark ``trial`` as this process's, so that :func:`reap_stale_trials` can tell when its
    owner is gone; at once, so that no failure after it can leave the trial RUNNING without
    an owner. A trial created with :func:`owner_attrs` (``tuner.shared_reads``'
    ``create_trials_with``, in the transaction that created it) is left as it is."""
    from tuner.shared_reads import flush

    user, system = owner_attrs()
    stored = trial.storage.get_trial_system_attrs(trial._trial_id)  # a cached copy here
    if stored.get(OWNER_ATTR) == system[OWNER_ATTR]:
        return
    set_trial_attrs(trial, user, system_attrs=system)
    flush(trial.study, trial)


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
