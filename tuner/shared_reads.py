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
pruner tolerate (a worker already samples while others train). A state change (``tell``)
ends the reuse: the next read is fresh. Outside :func:`shared_reads` every read is fresh, as
in Optuna: exact counts (the study's target, ``tuner.workers.target_covered``) are read there.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Container, Iterator, Sequence
from typing import Any

import optuna
from optuna import distributions
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import FrozenTrial, TrialState

__all__ = ["MAX_AGE_S", "SharedReadStorage", "shared_reads", "wrap"]

MAX_AGE_S = 0.5
"""Seconds a read is reused inside :func:`shared_reads` (``tuner.workers.POLL_S``)."""


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
        with self._lock:
            where = self._trial_id_to_study_id_and_number.get(trial_id)
            if where is None:
                return
            study_id, number = where
            trials = self._studies[study_id].trials
            old = trials.get(number)
            if old is None or old.state.is_finished():
                return
            new = copy.copy(old)  # callers may hold the old object: never change it
            for name in ("_params", "_distributions", "_user_attrs", "_system_attrs"):
                setattr(new, name, dict(getattr(old, name)))
            new.intermediate_values = dict(old.intermediate_values)
            if field == "intermediate_values":
                new.intermediate_values[key] = value
            elif field == "param":
                internal, distribution = value
                new._params[key] = distribution.to_external_repr(internal)
                new._distributions[key] = distribution
            else:
                getattr(new, field)[key] = value
            trials[number] = new

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: distributions.BaseDistribution,
    ) -> None:
        super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
        self._update_cached(trial_id, "param", param_name, (param_value_internal, distribution))

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)
        self._update_cached(trial_id, "intermediate_values", step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        super().set_trial_user_attr(trial_id, key, value)
        self._update_cached(trial_id, "_user_attrs", key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        super().set_trial_system_attr(trial_id, key, value)
        self._update_cached(trial_id, "_system_attrs", key, value)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        self._read_at.clear()  # whatever happens, the next read is fresh
        try:
            return super().set_trial_state_values(trial_id, state, values)
        finally:
            self._read_at.clear()


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
