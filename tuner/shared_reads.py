"""One storage read shared by the sampler's and the pruner's calls of a burst.

Optuna's RDB storage is wrapped in ``optuna.storages._CachedStorage``, which keeps finished
trials but reads every unfinished and every new trial again on each ``study.get_trials`` (one
query per table of the trial, five in all). The sampler calls it about a dozen times while it
samples one trial (TPE once per parameter group and once per independent parameter), and the
pruner once per ``trial.should_prune``: K trials trained in lockstep ask it K times at each
epoch boundary. On a small study these reads cost more than the training.

:class:`SharedReadStorage` is that cache with one change: inside :func:`shared_reads`, a read
of the study's trials less than ``max_age`` seconds old (:data:`MAX_AGE_S`) is reused instead
of read again. What this process writes meanwhile (parameters, intermediate values,
attributes) is written through to the cached trials, so this process always sees its own
writes; trials of other processes are stale by at most ``max_age``, which the sampler and the
pruner tolerate (a worker already samples while others train). A state change ends the
reuse (the next read is fresh), except this process finishing a trial of its own: that trial's
cached copy is then exactly what was stored. Outside :func:`shared_reads` every read is fresh, as
in Optuna: exact counts (the study's target, ``tuner.workers.target_covered``) are read there.

**Writes behind.** Optuna writes each suggested parameter, each reported epoch and each
attribute of a trial in a transaction of its own: two dozen per short trial, which on a SQLite
file cost more than training it. On tuner's ``GuardedRDBStorage`` the writes to a trial this
process runs (it created the trial, or took it from the queue) are kept here and written
together, in one transaction (``GuardedRDBStorage.write_trial``):

- with the trial's end (``tell``): the buffered rows and the state change commit together, so
  a finished trial is never stored without its parameters, values or attributes;
- on any write at least :data:`FLUSH_S` seconds after the trial's previous transaction, and
  from a thread for writes that waited that long (a trial busy between two reports): a
  longer trial's parameters and progress reach the dashboard and other workers' pruners
  about once a second;
- when :func:`flush` is called.

The owner attributes that stale-trial reaping relies on are written with the trial itself
(:func:`create_trials_with`).

This process reads its own trials with every buffered write applied. What a kill (SIGKILL,
power loss) loses is at most the last second of a running trial's reports; that trial is
reaped and re-queued as before. Writes to trials of other processes (reaping) are not delayed.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import math
import threading
import time
import weakref
from collections.abc import Callable, Container, Iterator, Sequence
from typing import Any

import optuna
from optuna import distributions
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "FLUSH_S", "MAX_AGE_S", "SharedReadStorage", "create_trials_with", "flush", "shared_reads",
    "study_attrs_together", "wrap",
]

MAX_AGE_S = 0.5
"""Seconds a read is reused inside :func:`shared_reads` (``tuner.workers.POLL_S``)."""
FLUSH_S = 1.0
"""Seconds after which a write to a running trial goes to the storage with those before it."""


class SharedReadStorage(_CachedStorage):
    """Optuna's cache over an ``RDBStorage`` whose reads can be shared (module docstring).

    Args:
        backend: the ``optuna.storages.RDBStorage`` (tuner's ``GuardedRDBStorage``).
    """

    def __init__(self, backend: optuna.storages.RDBStorage) -> None:
        super().__init__(backend)
        self._sharing = 0  # depth of shared_reads blocks
        self._max_age = MAX_AGE_S
        self._read_at: dict[int, float] = {}  # study id -> time.monotonic() of its last read
        self.remote_reads = 0  # reads of the study's trials (for tests and benchmarks)
        # writes behind (module docstring): on tuner's guarded storage only
        self._behind = callable(getattr(backend, "write_trial", None))
        self._own: dict[int, float] = {}  # trial id -> time.monotonic() of its last write
        self._pending: dict[int, list[tuple[str, Any, Any]]] = {}
        self.transactions = 0  # write transactions of trials of this process (benchmarks)
        # the buffer is shared with a thread that writes what waited FLUSH_S (_flush_loop);
        # lock order: _write_lock, then Optuna's _lock
        self._write_lock = threading.RLock()
        self._flusher: threading.Thread | None = None
        self._study_attrs: dict[int, dict[str, Any]] | None = None  # study_attrs_together
        # (user, system) attributes every trial created here starts with (create_trials_with)
        self.new_trial_attrs: Callable[[], tuple[dict[str, Any], dict[str, Any]]] | None = None

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        now = time.monotonic()
        fresh = now - self._read_at.get(study_id, -math.inf) < self._max_age
        if not (self._sharing and fresh and study_id in self._studies):
            self._read_trials_from_remote_storage(study_id)
            self._read_at[study_id] = now
            self.remote_reads += 1
        with self._lock:
            trials: Any = self._studies[study_id].trials.values()
            if states is not None:
                trials = [t for t in trials if t.state in states]
            trials = sorted(trials, key=lambda t: t.number)  # samplers expect number order
            return copy.deepcopy(trials) if deepcopy else trials

    def get_trial(self, trial_id: int) -> FrozenTrial:
        if trial_id in self._own:  # every write to it went through here: the cache is whole
            with self._lock:
                where = self._trial_id_to_study_id_and_number.get(trial_id)
                if where is not None:
                    return self._studies[where[0]].trials[where[1]]
        # inside shared_reads, an unfinished trial too comes from a fresh enough read (the
        # pruner reads the reporting trial's system attributes at every should_prune)
        if self._sharing:
            with self._lock:
                where = self._trial_id_to_study_id_and_number.get(trial_id)
                if where is not None and (
                    time.monotonic() - self._read_at.get(where[0], -math.inf) < self._max_age
                ):
                    return self._studies[where[0]].trials[where[1]]
        return super().get_trial(trial_id)

    def written(self, trial_id: int, user_attrs: dict[str, Any],
                system_attrs: dict[str, Any]) -> None:
        """Attributes written to the backend directly (``tuner.storage.set_trial_attrs``):
        the cached copy of the trial gets them too."""
        for key, value in user_attrs.items():
            self._update_cached(trial_id, "_user_attrs", key, value)
        for key, value in system_attrs.items():
            self._update_cached(trial_id, "_system_attrs", key, value)

    # -- writes: through to the cached copy, or (state) the next read is fresh -------------

    def _update_cached(self, trial_id: int, field: str, key: Any, value: Any) -> None:
        kind = {"param": "param", "intermediate_values": "value", "_user_attrs": "user",
                "_system_attrs": "system"}[field]
        with self._lock:
            where = self._trial_id_to_study_id_and_number.get(trial_id)
            if where is None:
                return
            trials = self._studies[where[0]].trials
            old = trials.get(where[1])
            if old is None or old.state.is_finished():
                return
            trials[where[1]] = _applied(old, [(kind, key, value)])

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        if self._study_attrs is not None:  # inside study_attrs_together: at its end
            self._study_attrs.setdefault(study_id, {})[key] = value
            return
        super().set_study_system_attr(study_id, key, value)

    def set_study_system_attrs(self, study_id: int, attrs: dict[str, Any]) -> None:
        """``set_study_system_attr`` for each key, in one transaction."""
        if self._study_attrs is not None:
            self._study_attrs.setdefault(study_id, {}).update(attrs)
        elif self._behind:
            self._backend.set_study_system_attrs(study_id, attrs)  # type: ignore[attr-defined]
        else:
            for key, value in attrs.items():
                super().set_study_system_attr(study_id, key, value)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        attrs = super().get_study_system_attrs(study_id)
        if self._study_attrs and study_id in self._study_attrs:
            attrs = {**attrs, **self._study_attrs[study_id]}
        return attrs

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None and self.new_trial_attrs is not None:
            user, system = self.new_trial_attrs()
            template_trial = FrozenTrial(
                number=-1, state=TrialState.RUNNING, value=None,
                datetime_start=datetime.datetime.now(), datetime_complete=None, params={},
                distributions={}, user_attrs=user, system_attrs=system, intermediate_values={},
                trial_id=-1)
        trial_id = super().create_new_trial(study_id, template_trial)
        if self._behind and (template_trial is None or template_trial.state == TrialState.RUNNING):
            self._own[trial_id] = time.monotonic()
        return trial_id

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        with self._write_lock:  # no buffered write is committed between the read and its use
            super()._read_trials_from_remote_storage(study_id)

    def _add_trials_to_cache(self, study_id: int, trials: list[FrozenTrial]) -> None:
        # a fresh read of a trial of ours lacks what is still buffered: apply it again
        with self._write_lock:
            if self._pending:
                trials = [_applied(t, self._pending[t._trial_id])
                          if t._trial_id in self._pending and not t.state.is_finished() else t
                          for t in trials]
            super()._add_trials_to_cache(study_id, trials)

    def _buffer(self, trial_id: int, kind: str, key: Any, value: Any) -> bool:
        """Keep a write to a trial of ours (False: not ours, write it now)."""
        with self._write_lock:
            if trial_id not in self._own:
                return False
            self._pending.setdefault(trial_id, []).append((kind, key, value))
            field = {"param": "param", "value": "intermediate_values", "user": "_user_attrs",
                     "system": "_system_attrs"}[kind]
            self._update_cached(trial_id, field, key, value)
            if time.monotonic() - self._own[trial_id] >= FLUSH_S:
                self._write(trial_id, None, None)
            elif self._flusher is None or not self._flusher.is_alive():
                self._flusher = threading.Thread(target=_flush_loop, args=(weakref.ref(self),),
                                                 name="tuner-flush", daemon=True)
                self._flusher.start()
        return True

    def flush(self, trial_id: int | None = None) -> None:
        """Write the buffered writes of one trial of ours (None: of all), one transaction
        each. Raises UpdateFinishedTrialError if another process has finished the trial."""
        with self._write_lock:
            for tid in [trial_id] if trial_id is not None else list(self._pending):
                if tid in self._own:
                    self._write(tid, None, None)

    def flush_due(self) -> None:
        """Write the buffers that waited :data:`FLUSH_S` seconds (the flush thread's call);
        a failure is left for the trial's own thread to meet at its next write."""
        with self._write_lock:
            now = time.monotonic()
            for tid in [t for t in self._pending if now - self._own.get(t, now) >= FLUSH_S]:
                with contextlib.suppress(Exception):
                    self._write(tid, None, None)

    def _write(self, trial_id: int, state: TrialState | None,
               values: Sequence[float] | None) -> Any:
        with self._write_lock:
            ops = self._pending.get(trial_id, [])
            if not ops and state is None:
                return None
            try:
                done = self._backend.write_trial(  # type: ignore[attr-defined]
                    trial_id, ops, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                # finished by another process: its writes are moot
                self._own.pop(trial_id, None)
                self._pending.pop(trial_id, None)
                raise
            # on any other failure the buffer stays, for the next attempt (a retry, or FAIL)
            self._pending.pop(trial_id, None)
            self.transactions += 1
            if trial_id in self._own:
                self._own[trial_id] = time.monotonic()
            return done

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: distributions.BaseDistribution,
    ) -> None:
        if trial_id in self._own:
            with self._lock:
                study_id, _ = self._trial_id_to_study_id_and_number[trial_id]
                known = self._studies[study_id].param_distribution.get(param_name)
            if known is not None:  # else Optuna's call looks it up in the study, once
                distributions.check_distribution_compatibility(known, distribution)
                self._buffer(trial_id, "param", param_name, (param_value_internal, distribution))
                return
            self.flush(trial_id)  # in order: what is buffered goes first
        super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
        self._update_cached(trial_id, "param", param_name, (param_value_internal, distribution))

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        if not self._buffer(trial_id, "value", step, intermediate_value):
            super().set_trial_intermediate_value(trial_id, step, intermediate_value)
            self._update_cached(trial_id, "intermediate_values", step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._buffer(trial_id, "user", key, value):
            super().set_trial_user_attr(trial_id, key, value)
            self._update_cached(trial_id, "_user_attrs", key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._buffer(trial_id, "system", key, value):
            super().set_trial_system_attr(trial_id, key, value)
            self._update_cached(trial_id, "_system_attrs", key, value)

    def set_trial_attrs(self, trial_id: int, user_attrs: dict[str, Any],
                        system_attrs: dict[str, Any]) -> bool:
        """Buffer several attributes of a trial of ours (``tuner.storage.set_trial_attrs``);
        False (nothing done) if the trial is not ours."""
        with self._write_lock:
            if trial_id not in self._own:
                return False
            for key, value in user_attrs.items():
                self._buffer(trial_id, "user", key, value)
            for key, value in system_attrs.items():
                self._buffer(trial_id, "system", key, value)
        return True

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        with self._write_lock:
            if trial_id in self._own and state.is_finished():
                try:
                    done = self._write(trial_id, state, values)
                except BaseException:
                    self._read_at.clear()
                    raise
                self._own.pop(trial_id, None)
                # the cached copy is now what was stored: a shared read stays valid
                self._finished_here(trial_id, state, values, done)
                return True
        self._read_at.clear()  # whatever happens, the next read is fresh
        try:
            if trial_id in self._own:
                self.flush(trial_id)
            changed = super().set_trial_state_values(trial_id, state, values)
            if changed and state == TrialState.RUNNING and self._behind:
                # a queued trial this process takes: ours from now on, read once
                fresh = self._backend.get_trial(trial_id)
                with self._lock:
                    where = self._trial_id_to_study_id_and_number.get(trial_id)
                    if where is not None:
                        self._studies[where[0]].trials[where[1]] = fresh
                self._own[trial_id] = time.monotonic()
            elif state.is_finished():
                with self._write_lock:
                    self._own.pop(trial_id, None)
                    self._pending.pop(trial_id, None)
            return changed
        finally:
            self._read_at.clear()

    def _finished_here(self, trial_id: int, state: TrialState,
                       values: Sequence[float] | None, completed: Any) -> None:
        """The cached copy of a trial this process just finished: as stored (the next read
        of the study replaces it with the stored one)."""
        with self._lock:
            where = self._trial_id_to_study_id_and_number.get(trial_id)
            if where is None:
                return
            trials = self._studies[where[0]].trials
            new = _applied(trials[where[1]], [])
            new.state = state
            new.values = None if values is None else [float(v) for v in values]
            new.datetime_complete = completed
            trials[where[1]] = new


def _flush_loop(ref: weakref.ReferenceType[SharedReadStorage]) -> None:
    """Every :data:`FLUSH_S` seconds, write what trials of ours buffered that long (a trial
    paused between epochs still shows its last report); ends with the last running trial."""
    while True:
        time.sleep(FLUSH_S)
        storage = ref()
        if storage is None or not storage._own:
            return
        storage.flush_due()
        del storage


def _applied(trial: FrozenTrial, ops: Sequence[tuple[str, Any, Any]]) -> FrozenTrial:
    """A copy of ``trial`` with buffered writes applied (``trial`` itself is not changed:
    callers may hold it)."""
    new = copy.copy(trial)
    for name in ("_params", "_distributions", "_user_attrs", "_system_attrs"):
        setattr(new, name, dict(getattr(trial, name)))
    new.intermediate_values = dict(trial.intermediate_values)
    for kind, key, value in ops:
        if kind == "value":
            new.intermediate_values[key] = value
        elif kind == "param":
            internal, distribution = value
            new._params[key] = distribution.to_external_repr(internal)
            new._distributions[key] = distribution
        elif kind == "user":
            new._user_attrs[key] = value
        else:
            new._system_attrs[key] = value
    return new


def wrap(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """``storage`` in a :class:`SharedReadStorage` if it is an ``RDBStorage``; else itself
    (journal files and in-memory storages keep their own caches)."""
    if isinstance(storage, optuna.storages.RDBStorage):
        return SharedReadStorage(storage)
    return storage


@contextlib.contextmanager
def shared_reads(study: optuna.Study, max_age: float = MAX_AGE_S) -> Iterator[None]:
    """Within the block, reads of ``study``'s trials younger than ``max_age`` seconds are
    reused (see the module docstring); a no-op on other storages. Blocks may nest."""
    storage = study._storage
    if not isinstance(storage, SharedReadStorage):
        yield
        return
    storage._sharing += 1
    storage._max_age = max_age
    try:
        yield
    finally:
        storage._sharing -= 1


def flush(study: optuna.Study, trial: optuna.Trial | None = None) -> None:
    """Write what this process buffered for ``trial`` (None: for all its running trials) of
    ``study`` now, in one transaction per trial; a no-op on other storages.

    Raises:
        optuna.exceptions.UpdateFinishedTrialError: another process has finished the trial.
    """
    storage = study._storage
    if isinstance(storage, SharedReadStorage):
        storage.flush(None if trial is None else trial._trial_id)


def create_trials_with(
    study: optuna.Study,
    attrs: Callable[[], tuple[dict[str, Any], dict[str, Any]]] | None,
) -> None:
    """Every trial this process creates on ``study`` from now on (``study.ask``) starts with
    the (user, system) attributes ``attrs()`` returns, written in the transaction that
    creates it (tuner's owner mark: no trial is ever stored RUNNING without it); None stops
    it. A no-op on other storages."""
    storage = study._storage
    if isinstance(storage, SharedReadStorage):
        storage.new_trial_attrs = attrs


@contextlib.contextmanager
def study_attrs_together(study: optuna.Study) -> Iterator[None]:
    """Within the block, the study's system attributes written (optuna-dashboard's notes and
    figures: one attribute per chunk) are kept, read back with them applied, and written in
    one transaction when the block ends; nothing of them is written if it raises. A no-op on
    other storages (and when nested)."""
    storage = study._storage
    if not isinstance(storage, SharedReadStorage) or storage._study_attrs is not None:
        yield
        return
    storage._study_attrs = {}
    try:
        yield
        kept = storage._study_attrs
    finally:
        storage._study_attrs = None
    for study_id, attrs in kept.items():
        storage.set_study_system_attrs(study_id, attrs)
