"""Storage failures as one-line tuner errors; server disconnects retried with back-off.

:class:`GuardedRDBStorage` is Optuna's ``RDBStorage`` (what :func:`tuner.storage.make_storage`
opens for SQLite files and database servers) with every storage operation wrapped:

- a lost or refused connection to a database server (PostgreSQL restarted, a backend
  terminated, a network blip) is retried with exponential back-off (0.25 s doubling up to 8 s,
  with jitter) for up to :func:`retry_budget_s` seconds in all, then raised as
  :class:`~tuner.errors.StorageUnavailable` with one line naming the storage (password
  redacted);
- SQLite failures (disk full, read-only file, a lock held past the busy timeout, I/O error) are
  raised at once as :class:`~tuner.errors.StorageUnavailable` naming the file.

Retrying is safe: each Optuna operation runs in one transaction, so a failed one was rolled
back, and the writes are upserts that may run twice. Where a commit may have gone through
before the connection dropped, a retry does not repeat it: a new trial is looked up by the id
the first attempt got (server ids come from sequences and are never reused) instead of being
created twice; a retried ``set_trial_state_values`` or ``create_new_study`` that finds its own
earlier result counts as done.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import json
import logging
import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from tuner.errors import ConfigError, StorageUnavailable

__all__ = [
    "RETRY_BUDGET_S",
    "RETRY_ENV",
    "GuardedRDBStorage",
    "ReadOnlyConnect",
    "database_error",
    "failure_behind",
    "first_line",
    "is_transient",
    "retry_budget",
    "retry_delays",
    "retry_budget_s",
    "storage_failure",
]

RETRY_BUDGET_S = 60.0
"""Seconds in all that one storage operation retries a lost server connection."""
RETRY_ENV = "TUNER_STORAGE_RETRY_S"
"""Environment variable that overrides :data:`RETRY_BUDGET_S` (seconds, >= 0)."""
FIRST_DELAY_S = 0.25
MAX_DELAY_S = 8.0

_log = logging.getLogger("tuner.storage")
_local = threading.local()  # depth: nesting of wrapped calls; budget: retry_budget() override

# driver messages of server errors that no retry fixes
_PERMANENT = ("authentication failed", "does not exist", "pg_hba.conf", "permission denied",
              "no password supplied", "access denied", "unknown database",
              "could not translate host name", "name or service not known")
# SQLite messages -> what the user reads
_SQLITE = (
    ("database or disk is full", "disk full"),
    ("readonly database", "read-only"),
    ("database is locked", "locked"),
    ("disk i/o error", "I/O error"),
    ("unable to open database file", "cannot open"),
)

# the storage operations wrapped (public API and the private ones optuna's cache calls)
OPERATIONS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_all_studies",
    "create_new_trial", "_create_new_trial", "set_trial_param", "_set_trial_param",
    "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
    "set_trial_user_attr", "set_trial_system_attr", "get_trial_id_from_study_id_trial_number",
    "get_trial", "get_all_trials", "_get_trials", "get_best_trial", "_get_best_trial_id",
    "get_n_trials", "get_trial_number_from_id", "get_trial_params", "get_trial_user_attrs",
    "get_trial_system_attrs", "record_heartbeat", "_get_stale_trial_ids",
)


class _QuietDisconnects(logging.Filter):
    """Drops optuna's multi-line "Caught an error from sqlalchemy" warning (the failed SQL
    statement and its parameters) for a lost connection: the retry says it in one line."""

    WORDS = ("terminating connection", "server closed the connection", "connection is closed",
             "connection refused", "could not connect", "connection to server",
             "consuming input failed", "ssl connection has been closed")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Caught an error from sqlalchemy")
                    and any(w in message.lower() for w in self.WORDS))


logging.getLogger("optuna.storages._rdb.storage").addFilter(_QuietDisconnects())


def retry_budget_s() -> float:
    """Seconds one operation retries: ``$TUNER_STORAGE_RETRY_S``, else :data:`RETRY_BUDGET_S`
    (a :func:`retry_budget` block overrides both in its thread).

    Raises:
        ConfigError: ``$TUNER_STORAGE_RETRY_S`` is not a number >= 0.
    """
    override = getattr(_local, "budget", None)
    if override is not None:
        return override
    text = os.environ.get(RETRY_ENV, "").strip()
    if not text:
        return RETRY_BUDGET_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"${RETRY_ENV}={text!r}: expected seconds, a number >= 0.")
    return value


@contextlib.contextmanager
def retry_budget(seconds: float) -> Iterator[None]:
    """Storage operations in this thread retry for at most ``seconds`` (0: not at all).

    For closing trials after a :class:`~tuner.errors.StorageUnavailable`: one quick attempt
    instead of another full retry budget.
    """
    previous = getattr(_local, "budget", None)
    _local.budget = max(0.0, float(seconds))
    try:
        yield
    finally:
        _local.budget = previous


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions behind it (``__cause__``, else ``__context__``)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not e for e in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def database_error(exc: BaseException) -> BaseException | None:
    """The database error behind ``exc`` (optuna wraps SQLAlchemy's in StorageInternalError;
    a query after a lost connection raises PendingRollbackError in the handling of it)."""
    import sqlalchemy.exc

    # optuna's own errors (DuplicatedStudyError from an IntegrityError, ...) are not failures
    if not isinstance(exc, (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error,
                            optuna.exceptions.StorageInternalError)):
        return None
    kinds = (sqlalchemy.exc.DBAPIError, sqlalchemy.exc.DisconnectionError, sqlite3.Error)
    found = next((e for e in _chain(exc) if isinstance(e, kinds)), None)
    bugs = (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError,
            sqlalchemy.exc.DataError, sqlite3.IntegrityError, sqlite3.ProgrammingError)
    return None if isinstance(found, bugs) else found


def first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0].strip() if text else type(orig).__name__


def retry_delays(budget_s: float | None = None) -> Iterator[float]:
    """Sleeps of an exponential back-off (0.25 s doubling up to 8 s, each jittered by
    +-50 %, the last one cut short) that together fill ``budget_s`` (default
    :func:`retry_budget_s`) from now; none for a budget of 0."""
    budget = retry_budget_s() if budget_s is None else budget_s
    started = time.monotonic()
    delay = FIRST_DELAY_S
    while True:
        left = budget - (time.monotonic() - started)
        if left <= 0.01:
            return
        yield min(left, delay * (0.5 + random.random()))
        delay = min(2 * delay, MAX_DELAY_S)


def _is_sqlite(err: BaseException) -> bool:
    orig = getattr(err, "orig", err)
    return isinstance(orig, sqlite3.Error)


def is_transient(exc: BaseException) -> bool:
    """True for a lost or refused connection to a database server, or a SQLite file busy with
    another process's write (worth a retry)."""
    import sqlalchemy.exc

    err = database_error(exc)
    if err is None:
        return False
    if _is_sqlite(err):  # busy: a write that met another one (a WAL snapshot that moved on
        # returns SQLITE_BUSY without waiting); the transaction was rolled back: run it again
        return "database is locked" in first_line(err).lower()
    if any(isinstance(e, sqlalchemy.exc.PendingRollbackError) for e in _chain(exc)):
        return True  # the transaction's connection was lost
    if isinstance(err, sqlalchemy.exc.DisconnectionError):
        return True
    if isinstance(err, sqlalchemy.exc.DBAPIError) and err.connection_invalidated:
        return True
    if isinstance(err, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
        message = first_line(err).lower()
        return not any(p in message for p in _PERMANENT)
    return False


def storage_failure(
    exc: BaseException, shown: str | None = None, file: Path | None = None,
    scrub: Callable[[str], str] = lambda text: text, read_only: str | None = None,
) -> StorageUnavailable | None:
    """The one-line :class:`StorageUnavailable` for a database error, else None.

    Args:
        exc: any exception; database errors are found through optuna's wrapping.
        shown: the storage URL with its password redacted (None: not known here).
        file: the SQLite file, to name in the message.
        scrub: removes secrets from driver messages.
        read_only: why the file was opened read-only, if it was.
    """
    err = database_error(exc)
    if err is None:
        return None
    where = f"storage {shown}" if shown else "the storage"
    message = scrub(first_line(err))
    if _is_sqlite(err):
        path = str(file) if file is not None else (shown or "the SQLite file")
        kind = next((k for m, k in _SQLITE if m in message.lower()), None)
        if kind == "disk full":
            return StorageUnavailable(
                f"disk full: SQLite cannot write {path} ({message}); free space on that disk "
                f"(or pass --storage on another disk) and run the same command again: what was "
                f"committed is kept."
            )
        if kind == "read-only":
            return StorageUnavailable(
                f"storage file {path} is read-only ({read_only or message}): this command "
                f"writes to the "
                f"study; copy its folder somewhere writable (cp -a) and pass --storage there."
            )
        if kind == "locked":
            return StorageUnavailable(
                f"storage file {path} stayed locked by another process ({message}); run the "
                f"same command again when the other process is done."
            )
        return StorageUnavailable(f"storage file {path}: {message}")
    return StorageUnavailable(f"{where} failed: {message}")


def failure_behind(exc: BaseException) -> StorageUnavailable | None:
    """The storage failure behind any exception, for a last-resort one-line message: a
    :class:`StorageUnavailable` in its chain (optuna may fail while handling one: its
    ``study.optimize`` ends in ``AssertionError: Should not reach`` when a ``tell`` fails), or
    a database error that escaped tuner's storage (see :func:`storage_failure`); else None."""
    for e in _chain(exc):
        if isinstance(e, StorageUnavailable):
            return e
    return storage_failure(exc)


class ReadOnlyConnect:
    """A picklable SQLAlchemy ``creator``: sqlite3 connections to a file opened read-only.

    Args:
        path: the SQLite file.
        immutable: SQLite's ``immutable=1`` (no locks, no ``-shm`` file: for a file nobody
            writes, on a read-only mount); else ``mode=ro`` (needs the ``-shm`` file).
    """

    def __init__(self, path: Path, immutable: bool) -> None:
        self.path, self.immutable = path, immutable

    def __call__(self) -> sqlite3.Connection:
        from urllib.parse import quote

        flag = "immutable=1" if self.immutable else "mode=ro"
        uri = f"file:{quote(str(self.path))}?{flag}"
        return sqlite3.connect(uri, uri=True, check_same_thread=False)


class GuardedRDBStorage(RDBStorage):
    """Optuna's RDBStorage whose operations retry lost server connections and raise
    :class:`StorageUnavailable` for storage failures (see the module docstring).

    Args:
        url, engine_kwargs, rdb_kwargs: as for ``optuna.storages.RDBStorage``.
        shown: the URL with its password redacted, for messages.
        file: the SQLite file (None for a server).
        scrub: removes the URL's secrets from driver messages.
        read_only: why the SQLite file is opened read-only (None: it is not).
    """

    def __init__(
        self, url: str, *, engine_kwargs: dict[str, Any], shown: str, file: Path | None,
        scrub: Callable[[str], str], read_only: str | None = None, **rdb_kwargs: Any,
    ) -> None:
        self._shown, self._file, self._scrub, self.read_only = shown, file, scrub, read_only
        super().__init__(url, engine_kwargs=engine_kwargs, **rdb_kwargs)
        # server ids come from sequences, never reused: a trial id from a failed attempt names
        # that attempt's trial (SQLite may reuse a rolled-back row id, and never needs this)
        self._dedupe = self.engine.dialect.name != "sqlite"

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_scrub", None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        from tuner.storage import scrubber  # storage imports this module

        state["_scrub"] = scrubber(state["url"])
        super().__setstate__(state)

    def _failure(self, exc: BaseException) -> StorageUnavailable | None:
        return storage_failure(exc, self._shown, self._file, self._scrub, self.read_only)

    def _call(self, name: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if getattr(_local, "depth", 0):  # inside another operation: the outer one retries
            return method(self, *args, **kwargs)
        _local.depth = 1
        creating = name in ("create_new_trial", "_create_new_trial")
        if creating:
            _local.pending_trial = None
        try:
            return self._retry(name, method, args, kwargs)
        finally:
            _local.depth = 0
            if creating:
                _local.pending_trial = None

    def _retry(self, name: str, method: Callable[..., Any], args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
        started = time.monotonic()
        waits = retry_delays()
        tries, lost, said = 0, False, False
        background = threading.current_thread() is not threading.main_thread()
        while True:
            tries += 1
            try:
                result = method(self, *args, **kwargs)
            except Exception as exc:
                if lost:
                    done, result = self._already_done(name, args, kwargs, exc)
                    if done:
                        return result
                transient = is_transient(exc)
                failure = None if transient else self._failure(exc)
                if not transient and failure is None:
                    raise
                if name == "record_heartbeat" and background:
                    # optuna's heartbeat thread: a missed beat is harmless (the grace period
                    # is several), and the trial's own thread reports the failure
                    _log.debug("heartbeat not recorded: %s", first_line(exc))
                    return None
                if failure is not None:
                    raise failure from exc
                reason = self._scrub(first_line(database_error(exc) or exc))
                wait = next(waits, None)
                if wait is None:
                    if _is_sqlite(database_error(exc) or exc):  # "stayed locked": its own line
                        raise (self._failure(exc) or StorageUnavailable(reason)) from exc
                    raise StorageUnavailable(
                        f"storage {self._shown} unreachable for "
                        f"{time.monotonic() - started:.0f} s ({tries} tries): {reason}; run "
                        f"the same command again once it is back: finished trials are kept."
                    ) from exc
                if lost and not said:  # a blip (one retry fixes it) is not news
                    what = "busy" if _is_sqlite(database_error(exc) or exc) else "connection lost"
                    _log.warning("storage %s: %s (%s); retrying for up to %.0f s",
                                 self._shown, what, reason, retry_budget_s())
                    said = True
                lost = True
                time.sleep(wait)
                continue
            if said:
                _log.warning("storage %s: reconnected after %.1f s", self._shown,
                             time.monotonic() - started)
            return result

    def _already_done(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                      exc: BaseException) -> tuple[bool, Any]:
        """After a lost connection: whether ``exc`` says the lost attempt's commit went
        through, and then what the operation returns."""
        if name not in ("set_trial_state_values", "create_new_study", "delete_study"):
            return False, None
        bound = inspect.signature(getattr(RDBStorage, name)).bind(self, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        try:
            if (name == "set_trial_state_values"
                    and isinstance(exc, optuna.exceptions.UpdateFinishedTrialError)):
                trial = RDBStorage.get_trial(self, a["trial_id"])
                wanted = None if a["values"] is None else [float(v) for v in a["values"]]
                same = wanted is None or (trial.values is not None and all(
                    x == y or (math.isnan(x) and math.isnan(y))
                    for x, y in zip(trial.values, wanted, strict=True)))
                return trial.state == a["state"] and same, True
            if (name == "create_new_study" and a["study_name"] is not None
                    and isinstance(exc, optuna.exceptions.DuplicatedStudyError)):
                return True, RDBStorage.get_study_id_from_name(self, a["study_name"])
            if name == "delete_study" and isinstance(exc, KeyError):
                return True, None
        except Exception:  # the check itself failed: let the original error decide
            return False, None
        return False, None

    # -- several writes in one transaction (tuner.shared_reads writes behind) ----------------

    def write_trial(
        self,
        trial_id: int,
        ops: Sequence[tuple[str, Any, Any]],
        state: TrialState | None = None,
        values: Sequence[float] | None = None,
    ) -> datetime.datetime | None:
        """Apply a running trial's buffered writes, then (with ``state``) finish it: one
        transaction, the rows and checks of Optuna's ``set_trial_param``,
        ``set_trial_intermediate_value``, ``set_trial_user_attr``, ``set_trial_system_attr``
        and ``set_trial_state_values``.

        Args:
            trial_id: a RUNNING trial.
            ops: ``("param", name, (internal value, distribution))``, ``("value", step,
                float)``, ``("user", key, JSON value)`` or ``("system", key, JSON value)``, in
                the order they were made (a later write of the same key wins).
            state: a finished state to set last, or None (the trial stays RUNNING).
            values: the objective values with ``state`` (COMPLETE).

        Returns:
            The trial's ``datetime_complete`` when ``state`` was set, else None.

        Raises:
            optuna.exceptions.UpdateFinishedTrialError: the trial is finished (another
                process failed it): nothing was written.
            StorageUnavailable: as every operation here.

        Retrying is safe: parameters already stored are skipped, the other rows are upserts,
        and a retried finish that finds its own earlier commit counts as done.
        """
        if state is not None and not state.is_finished():
            raise ValueError(f"write_trial sets finished states only, got {state.name}")
        name = "write_trial" if state is None else "set_trial_state_values"
        def write(storage: RDBStorage, trial_id: int, state: TrialState | None,
                  values: Sequence[float] | None) -> datetime.datetime | None:
            return _write_trial(storage, trial_id, state, values, ops=ops)

        return self._call(name, write, trial_id, state, values)  # set_trial_state_values' args

    def trial_state_counts(
        self, study_id: int, running_below: int | None = None
    ) -> dict[TrialState, int]:
        """The study's trials by state, in one aggregate query (no trial is read).

        Args:
            running_below: count RUNNING and WAITING trials only if numbered below this.
        """
        return self._call("trial_state_counts", _trial_state_counts, study_id, running_below)

    def set_study_system_attrs(self, study_id: int, attrs: Mapping[str, Any]) -> None:
        """``set_study_system_attr`` for every key of ``attrs``, in one transaction."""
        if attrs:
            self._call("set_study_system_attrs", _set_study_system_attrs, study_id, dict(attrs))

    def _get_prepared_new_trial(self, study_id: int, template_trial: Any, session: Any) -> Any:
        pending = getattr(_local, "pending_trial", None)
        if pending is not None and self._dedupe:
            from optuna.storages._rdb import models

            row = session.get(models.TrialModel, pending)
            if row is not None and row.study_id == study_id:
                return row  # the lost attempt's commit went through: that trial, not another
        attrs_only = (template_trial is not None and template_trial.state == TrialState.RUNNING
                      and not (template_trial.params or template_trial.intermediate_values
                               or template_trial.values))
        if not attrs_only:
            trial = super()._get_prepared_new_trial(study_id, template_trial, session)
        else:  # a new trial with its owner's attributes (tuner.shared_reads): Optuna's rows,
            # the attributes in one multi-row INSERT per table instead of an upsert each
            import sqlalchemy
            from optuna.storages._rdb import models

            trial = models.TrialModel(study_id=study_id, number=None, state=TrialState.RUNNING,
                                      datetime_start=template_trial.datetime_start)
            session.add(trial)
            session.flush()
            for model, attrs in ((models.TrialUserAttributeModel, template_trial.user_attrs),
                                 (models.TrialSystemAttributeModel, template_trial.system_attrs)):
                if attrs:
                    session.execute(sqlalchemy.insert(model), [
                        {"trial_id": trial.trial_id, "key": k, "value_json": json.dumps(v)}
                        for k, v in attrs.items()])
            trial.number = trial.count_past_trials(session)  # as Optuna numbers a trial
        _local.pending_trial = trial.trial_id
        return trial


def _wrap(name: str) -> Callable[..., Any]:
    method = getattr(RDBStorage, name)

    def operation(self: GuardedRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, method, *args, **kwargs)

    operation.__name__ = name
    operation.__doc__ = method.__doc__
    return operation


for _name in OPERATIONS:
    setattr(GuardedRDBStorage, _name, _wrap(_name))


def _upsert(session: Any, model: Any, rows: list[dict[str, Any]], keys: tuple[str, ...]) -> bool:
    """Insert ``rows`` into ``model``, replacing ``value_json`` where ``keys`` exist already,
    as one statement per 500 rows on SQLite and PostgreSQL; False elsewhere (nothing done)."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 24, 0):
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        return False
    for start in range(0, len(rows), 500):
        statement = insert(model).values(rows[start:start + 500])
        session.execute(statement.on_conflict_do_update(
            index_elements=[getattr(model, k) for k in keys],
            set_={"value_json": statement.excluded.value_json},
        ))
    return True


def _write_trial(storage: RDBStorage, trial_id: int, state: TrialState | None,
                 values: Sequence[float] | None, *,
                 ops: Sequence[tuple[str, Any, Any]]) -> datetime.datetime | None:
    import sqlalchemy
    from optuna import distributions
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    params: dict[str, tuple[float, Any]] = {}
    steps: dict[int, float] = {}
    attrs: dict[str, dict[str, Any]] = {"user": {}, "system": {}}
    for kind, key, value in ops:  # the last write of a key wins, as one call per write would
        if kind == "param":
            params.setdefault(key, value)  # Optuna refuses to set a parameter twice
        elif kind == "value":
            steps[key] = value
        else:
            attrs[kind][key] = value
    with _create_scoped_session(storage.scoped_session) as session:
        row = models.TrialModel.find_or_raise_by_id(trial_id, session,
                                                    for_update=state is not None)
        storage.check_trial_is_updatable(trial_id, row.state)
        # new rows go in as one multi-row INSERT per table (Core, not one ORM object each);
        # only this process writes a running trial of its own, so what exists is read once
        if params:
            model = models.TrialParamModel
            have = {name for (name,) in session.query(model.param_name)
                    .filter(model.trial_id == trial_id)}
            rows = [{"trial_id": trial_id, "param_name": name, "param_value": internal,
                     "distribution_json": distributions.distribution_to_json(distribution)}
                    for name, (internal, distribution) in params.items() if name not in have]
            if rows:
                session.execute(sqlalchemy.insert(model), rows)
        if steps:
            model = models.TrialIntermediateValueModel
            old = {r.step: r for r in session.query(model).filter(model.trial_id == trial_id)
                   .filter(model.step.in_(list(steps)))}
            rows = []
            for step, value in steps.items():
                stored, kind = model.intermediate_value_to_stored_repr(value)
                if step in old:
                    old[step].intermediate_value = stored
                    old[step].intermediate_value_type = kind
                else:
                    rows.append({"trial_id": trial_id, "step": step,
                                 "intermediate_value": stored,
                                 "intermediate_value_type": kind})
            if rows:
                session.execute(sqlalchemy.insert(model), rows)
        for kind, model in (("user", models.TrialUserAttributeModel),
                            ("system", models.TrialSystemAttributeModel)):
            if not attrs[kind]:
                continue
            old_attrs = {r.key: r for r in session.query(model).filter(
                model.trial_id == trial_id, model.key.in_(list(attrs[kind])))}
            rows = []
            for key, value in attrs[kind].items():
                if key in old_attrs:
                    old_attrs[key].value_json = json.dumps(value)
                else:
                    rows.append({"trial_id": trial_id, "key": key,
                                 "value_json": json.dumps(value)})
            if rows:
                session.execute(sqlalchemy.insert(model), rows)
        if state is None:
            return None
        for objective, value in enumerate(values or ()):
            storage._set_trial_value_without_commit(session, row, objective, value)
        row.state = state
        row.datetime_complete = datetime.datetime.now()
        return row.datetime_complete


def _trial_state_counts(storage: RDBStorage, study_id: int,
                        running_below: int | None) -> dict[TrialState, int]:
    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    t = models.TrialModel
    with _create_scoped_session(storage.scoped_session) as session:
        query = session.query(t.state, sqlalchemy.func.count(t.trial_id)).filter(
            t.study_id == study_id)
        if running_below is not None:
            query = query.filter(sqlalchemy.or_(
                t.state.notin_([TrialState.RUNNING, TrialState.WAITING]),
                t.number < running_below))
        return {state: int(n) for state, n in query.group_by(t.state)}


def _set_study_system_attrs(storage: RDBStorage, study_id: int, attrs: dict[str, Any]) -> None:
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    model = models.StudySystemAttributeModel
    with _create_scoped_session(storage.scoped_session) as session:
        models.StudyModel.find_or_raise_by_id(study_id, session)
        rows = [{"study_id": study_id, "key": k, "value_json": json.dumps(v)}
                for k, v in attrs.items()]
        if not _upsert(session, model, rows, ("study_id", "key")):
            for key, value in attrs.items():
                attribute = model.find_by_study_and_key(
                    models.StudyModel.find_or_raise_by_id(study_id, session), key, session)
                if attribute is None:
                    session.add(model(study_id=study_id, key=key, value_json=json.dumps(value)))
                else:
                    attribute.value_json = json.dumps(value)
