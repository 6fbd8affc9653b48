"""Storage URLs: resolution, opening, redaction.

Accepted forms (``--storage``, ``$OPTUNA_STORAGE``, ``[study] storage``):

- ``sqlite:///path/to/file.db`` or a bare file path ending in anything but ``.journal``:
  Optuna's RDB storage on an embedded SQLite file (WAL journal, 60 s busy timeout, so that
  several local worker processes wait for each other instead of failing "database is locked",
  and readers such as the dashboard never block them; ``synchronous=NORMAL``, WAL's usual
  setting: a commit survives a killed process, only an OS crash or power cut may lose the last
  ones, and each of a trial's ~30 small writes skips an fsync);
- a bare path ending in ``.journal`` (or ``journal:///path``): Optuna's journal file storage;
- ``postgresql://user:password@host:port/db`` (or ``mysql://...``): Optuna's RDB storage on a
  server, for work spread over processes and machines;
- ``sqlite:///:memory:`` or ``sqlite://``: Optuna's in-memory storage, for one process only (gone
  when it ends; refused with ``--workers``, see :func:`check_shareable`).

A bare path that looks like a mistyped URL (``sqlite:/x.db``, ``sqlite//x.db``) is refused with
the URL it probably meant, instead of creating a folder ``sqlite:``.

Failures during a run (disk full, a read-only file, a database server gone for longer than the
retry budget) raise :class:`~tuner.errors.StorageUnavailable` with one line; lost server
connections are retried first (see :mod:`tuner.storage_guard`). A SQLite file that cannot be
written (a read-only mount, no write permission on it or its folder) is opened read-only, so
that commands which only read (export, report, dashboard) work on it.

Relative paths are resolved against the current directory when the URL is resolved, so the
same URL works from any working directory once resolved. Default: ``tuner.db`` in the folder of
the study file.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import random
import re
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import optuna

from tuner.errors import StorageError, StorageUnavailable
from tuner.storage_guard import (
    GuardedRDBStorage,
    ReadOnlyConnect,
    database_error,
    first_line,
    is_transient,
    retry_budget,
    retry_budget_s,
    retry_delays,
    storage_failure,
)

if TYPE_CHECKING:
    from tuner.config import StudyConfig

_log = logging.getLogger("tuner.storage")

__all__ = [
    "DEFAULT_STORAGE_FILE",
    "STORAGE_ENV",
    "redact_url",
    "resolve_storage_url",
    "storage_file",
    "make_storage",
    "check_storage_exists",
    "check_shareable",
    "is_in_memory",
    "retry_budget",
    "set_study_system_attrs",
    "set_trial_attrs",
    "StorageUnavailable",
]

DEFAULT_STORAGE_FILE = "tuner.db"
STORAGE_ENV = "OPTUNA_STORAGE"
JOURNAL_PREFIX = "journal:///"
SQLITE_PREFIX = "sqlite:///"
SQLITE_TIMEOUT_S = 60
CONNECT_TIMEOUT_S = 10
"""Seconds to wait for a database server to accept a connection (PostgreSQL)."""


_QUERY_SECRET = re.compile(r"([?&](?:password|passwd|pwd)=)[^&#]*", re.IGNORECASE)


def _secrets(url: str) -> list[str]:
    """The passwords a URL carries (user info and query), to scrub from driver messages."""
    found = [m.group(1) for m in re.finditer(r"://[^\s/?#:]*:([^\s/?#]*)@", url)]
    found += [m.group(0).split("=", 1)[1] for m in _QUERY_SECRET.finditer(url)]
    # a driver may split an unencoded '@' in a password differently: scrub the pieces too
    pieces = [p for f in found if "@" in f for p in f.split("@") if len(p) >= 3]
    return [f for f in found + pieces if f]


def scrubber(url: str) -> Callable[[str], str]:
    """A function that removes the passwords of ``url`` from a text (a driver's message)."""
    secrets = _secrets(url)

    def scrub(text: str) -> str:
        text = redact_url(text)
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    return scrub


def redact_url(url: str) -> str:
    """The text with every password of a URL in it replaced by ``***``.

    Covers ``scheme://user:password@host`` (also without a user name, and with an unencoded
    ``@`` inside the password) and ``?password=...`` query parameters.
    """

    def userinfo(match: re.Match[str]) -> str:
        info = match.group(1)
        if ":" not in info:
            return match.group(0)
        return f"://{info.split(':', 1)[0]}:***@"

    # user info runs up to the last '@' before the host's path, query or whitespace
    text = re.sub(r"://([^\s/?#]*)@(?=[^\s@/?#]*(?:[/?#\s]|$))", userinfo, url)
    return _QUERY_SECRET.sub(r"\1***", text)


def resolve_storage_url(cfg: StudyConfig | None, override: str | None = None) -> str:
    """The storage URL for a study, in order of precedence.

    1. ``override`` (``--storage``); 2. ``$OPTUNA_STORAGE``; 3. ``[study] storage``;
    4. ``sqlite:///<folder of the study file>/tuner.db``.

    Bare paths become absolute ``sqlite:///`` URLs (``journal:///`` for ``*.journal``); a
    relative ``sqlite:///`` path in a study file is taken relative to that file's folder.
    """
    from_file = False
    url = override or os.environ.get(STORAGE_ENV)
    if not url and cfg is not None and cfg.study.storage:
        url, from_file = cfg.study.storage, True
    if not url:
        folder = cfg.study_dir if cfg else Path("studies").resolve()
        return f"{SQLITE_PREFIX}{folder / DEFAULT_STORAGE_FILE}"
    base = cfg.study_dir if (from_file and cfg is not None) else Path.cwd()
    if "://" not in url:
        _refuse_mistyped_url(url, base)
        path = (base / Path(url).expanduser()).resolve()
        prefix = JOURNAL_PREFIX if path.suffix == ".journal" else SQLITE_PREFIX
        return f"{prefix}{path}"
    if url.startswith(("postgres://", "postgres+")):
        raise StorageError(
            f"storage {redact_url(url)}: unknown scheme 'postgres' (SQLAlchemy's name is "
            f"'postgresql'): did you mean {redact_url('postgresql' + url[len('postgres'):])}?"
        )
    for prefix in (SQLITE_PREFIX, JOURNAL_PREFIX):
        if url.startswith(prefix):
            rest = url.removeprefix(prefix)
            if rest and rest != ":memory:" and not rest.startswith("/"):
                return f"{prefix}{(base / rest).resolve()}"
    return url


_SCHEMES = ("sqlite", "journal", "postgresql", "postgres", "mysql")
_MISTYPED = re.compile(
    rf"^(?P<scheme>{'|'.join(_SCHEMES)})(?:\+\w+)?(?::/*|//+)(?P<rest>.*)$", re.IGNORECASE
)


def _refuse_mistyped_url(text: str, base: Path) -> None:
    """StorageError for a bare path like ``sqlite:/x.db`` or ``sqlite//x.db`` (a URL with a
    typo, which as a path would create a folder ``sqlite:``), unless that file exists."""
    match = _MISTYPED.match(text)
    if match is None or (base / text).exists():
        return
    scheme, rest = match["scheme"].lower(), match["rest"].lstrip("/")
    if scheme in ("sqlite", "journal"):
        meant = (f"{scheme}:///{rest} ({rest} in the current folder) or {scheme}:////{rest} "
                 f"(the absolute path /{rest})")
    else:
        meant = f"postgresql://{rest}" if scheme == "postgres" else f"{scheme}://{rest}"
    folder = text.split("/", 1)[0]
    raise StorageError(
        f"storage {redact_url(text)!r} looks like a mistyped URL (as a path it would create a "
        f"folder {folder!r}): did you mean {redact_url(meant)}?"
    )


def is_in_memory(url: str) -> bool:
    """True for SQLite in memory (``sqlite://``, ``sqlite:///:memory:``)."""
    return url in ("sqlite://", f"{SQLITE_PREFIX}:memory:") or url.startswith(
        (f"{SQLITE_PREFIX}:memory:?", "sqlite://?"))


def check_shareable(url: str) -> None:
    """Raise StorageError if worker processes cannot share the storage (SQLite in memory:
    each process would get a database of its own)."""
    if is_in_memory(url):
        raise StorageError(
            f"--workers needs a storage that processes share: {url} is in memory, private to "
            f"each process; pass --storage with a file (e.g. tuner.db) or a database server."
        )


def storage_file(url: str) -> Path | None:
    """The local file behind an SQLite or journal URL, else None."""
    for prefix in (SQLITE_PREFIX, JOURNAL_PREFIX):
        if url.startswith(prefix):
            rest = url.removeprefix(prefix).split("?", 1)[0]  # sqlite:///x.db?timeout=5
            if prefix == SQLITE_PREFIX:  # SQLAlchemy decodes %XX in the path: the same file
                rest = unquote(rest)
            return None if rest in ("", ":memory:") else Path(rest)
    return None


def check_storage_exists(url: str) -> None:
    """Raise StorageError if a file storage is missing or empty (never creates one)."""
    file = storage_file(url)
    if file is None:
        return
    if file.is_dir():
        raise StorageError(f"storage {file} is a folder, not a storage file.")
    if not file.is_file():
        raise StorageError(
            f"storage file {file} does not exist; run `tuner tune STUDY.toml` first, or pass "
            f"--storage with an existing storage."
        )
    if file.stat().st_size == 0:
        raise StorageError(f"storage file {file} is empty: it holds no study.")


def _open_rdb(
    url: str, engine_kwargs: dict[str, Any], rdb_kwargs: dict[str, Any]
) -> GuardedRDBStorage:
    """The guarded RDBStorage. A server that refuses or drops the connection is retried with
    back-off for the retry budget (worker processes may start during an outage); another
    failure is retried once: processes that open a fresh database at the same moment (a Slurm
    array starting) race to create Optuna's tables, and the loser of that race fails."""
    waits = retry_delays()
    said = raced = False
    started = time.monotonic()
    while True:
        try:
            storage = GuardedRDBStorage(url, engine_kwargs=engine_kwargs, **rdb_kwargs)
            _OPENED.add(storage.engine)
            if said:
                _log.warning("storage %s: connected after %.1f s", rdb_kwargs["shown"],
                             time.monotonic() - started)
            return storage
        except (ImportError, StorageError):
            raise
        except Exception as exc:
            if not is_transient(exc):
                if raced:
                    raise
                raced = True
                time.sleep(0.5 + random.random())
                continue
            wait = next(waits, None)
            if wait is None:
                raise
            if not said:
                _log.warning("storage %s: cannot connect (%s); retrying for up to %.0f s",
                             rdb_kwargs["shown"],
                             rdb_kwargs["scrub"](first_line(database_error(exc) or exc)),
                             retry_budget_s())
                said = True
            time.sleep(wait)


_OPENED: weakref.WeakSet[Any] = weakref.WeakSet()  # the engines of storages opened here


@atexit.register
def _close_storages() -> None:
    """Close every database connection this process opened, at exit (also the tuner
    command's fast exit, ``tuner._private.exit_process``): the last connection to a SQLite
    file checkpoints its write-ahead log into the file and removes ``-wal`` and ``-shm``."""
    for engine in list(_OPENED):
        with contextlib.suppress(Exception):
            engine.dispose()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_TIMEOUT_S * 1000}")
    cursor.close()


def _with_driver(url: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, 2.0 to psycopg2; ``tuner[postgres]``
    installs both (so that ``optuna-dashboard`` and the ``optuna`` CLI in the same environment
    find the driver their SQLAlchemy expects). An explicit ``postgresql+driver://`` is left
    alone.
    """
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return url.replace("postgresql://", f"postgresql+{driver}://", 1)
    return url


def _read_only_reason(file: Path) -> str | None:
    """Why an existing SQLite file cannot be written here (None: it can).

    SQLite in WAL mode (tuner's) writes ``-wal`` and ``-shm`` files next to the database,
    even to read, unless the file is opened read-only.
    """
    if not file.is_file():
        return None
    folder = file.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"{folder} is on a read-only file system"
    except OSError:
        pass
    effective = os.access in os.supports_effective_ids  # the ids that open() is checked for
    if not os.access(file, os.W_OK, effective_ids=effective):
        return f"no permission to write {file}"
    if not os.access(folder, os.W_OK | os.X_OK, effective_ids=effective):
        return f"no permission to write in {folder}"
    return None


def _read_only_connect(file: Path, reason: str, shown: str) -> ReadOnlyConnect:
    """How to open a SQLite file read-only: ``immutable`` unless a write-ahead log holds
    commits not yet in the file (then ``mode=ro``, which needs the log's ``-shm`` index)."""
    wal = Path(f"{file}-wal")
    if not wal.is_file() or wal.stat().st_size == 0:
        return ReadOnlyConnect(file, immutable=True)
    if Path(f"{file}-shm").is_file():
        return ReadOnlyConnect(file, immutable=False)
    raise StorageError(
        f"storage {shown} cannot be read: {reason}, and its last commits are still in "
        f"{wal.name} without the {file.name}-shm index SQLite needs to read them there; copy "
        f"the folder somewhere writable (cp -a) and pass --storage there."
    )


def _check_folder(file: Path | None, shown: str) -> None:
    """StorageError if a storage file's folder is missing: a mistyped path must not leave
    folders behind (tuner creates no folder it was not asked for)."""
    if file is not None and not file.parent.is_dir():
        raise StorageError(
            f"storage {shown}: folder {file.parent} does not exist; create it first or pass "
            f"--storage with a file in an existing folder."
        )


def make_storage(url: str, **rdb_kwargs: Any) -> optuna.storages.BaseStorage:
    """Open the Optuna storage for a resolved URL (see :func:`resolve_storage_url`).

    Args:
        url: ``sqlite:///``, ``journal:///``, ``postgresql://`` or another SQLAlchemy URL;
            ``sqlite:///:memory:`` / ``sqlite://``: Optuna's in-memory storage.
        rdb_kwargs: extra ``optuna.storages.RDBStorage`` arguments (heartbeat_interval,
            grace_period, failed_trial_callback); ignored for journal files and in memory.

    Returns:
        For SQLite and servers a :class:`tuner.storage_guard.GuardedRDBStorage`: its
        operations retry a lost server connection for up to
        :data:`tuner.storage_guard.RETRY_BUDGET_S` seconds and raise
        :class:`~tuner.errors.StorageUnavailable` (one line) for a failure (disk full,
        read-only, unreachable). A SQLite file that cannot be written here is opened read-only
        (its ``read_only`` attribute says why): reads work, writes raise StorageUnavailable.

    Raises:
        StorageError: the folder of a storage file does not exist (no folder is created);
            the URL cannot be opened (unknown scheme, unreachable server, missing
            driver); the message shows the URL with its password redacted.
        ConfigError: ``$TUNER_STORAGE_RETRY_S`` is not a number of seconds.
    """
    shown = redact_url(url)
    retry_budget_s()  # a bad $TUNER_STORAGE_RETRY_S fails now, not in the middle of a run
    if is_in_memory(url):
        return optuna.storages.InMemoryStorage()
    _check_folder(storage_file(url), shown)
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url.removeprefix(JOURNAL_PREFIX))
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any] = {}
    file = storage_file(url)
    read_only = None
    if url.startswith(SQLITE_PREFIX):
        read_only = None if file is None else _read_only_reason(file)
        if read_only is not None and file is not None:
            engine_kwargs["creator"] = _read_only_connect(file, read_only, shown)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    elif url.startswith(("postgresql", "mysql")):
        engine_kwargs["pool_pre_ping"] = True
        if url.startswith("postgresql"):  # a server that drops packets: fail, do not hang
            engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}

    scrub = scrubber(url)
    try:
        storage = _open_rdb(_with_driver(url), engine_kwargs, dict(
            rdb_kwargs, shown=shown, file=file, scrub=scrub, read_only=read_only))
    except ImportError as exc:
        raise StorageError(
            f"storage {shown}: its database driver is not installed ({exc}); for "
            f"PostgreSQL: pip install 'tuner[postgres]' (psycopg)."
        ) from None
    except StorageError:
        raise
    except Exception as exc:  # sqlalchemy raises many kinds; its message is what matters
        failure = storage_failure(exc, shown, file, scrub, read_only)
        if failure is not None and str(failure).startswith("disk full"):
            raise failure from None
        db_error = database_error(exc) or exc
        message = (str(getattr(db_error, "orig", None) or db_error).strip()
                   or type(db_error).__name__)
        waited = f" (retried for {retry_budget_s():.0f} s)" if is_transient(exc) else ""
        raise StorageError(
            f"storage {shown} cannot be opened{waited}: {scrub(message.splitlines()[0])}"
        ) from None
    if url.startswith(SQLITE_PREFIX) and read_only is None:
        import sqlalchemy

        sqlalchemy.event.listen(storage.engine, "connect", _sqlite_on_connect)
        storage.engine.dispose()  # reconnect so every pooled connection gets the pragmas
    return storage


def set_trial_attrs(
    trial: optuna.Trial,
    user_attrs: Mapping[str, Any],
    *,
    system_attrs: Mapping[str, Any] | None = None,
) -> None:
    """Set several attributes of a running trial, in one transaction on a SQLite file.

    The same as ``trial.set_user_attr(key, value)`` for each user attribute and
    ``storage.set_trial_system_attr`` for each system attribute, in that order: Optuna writes
    each in a transaction of its own (a trial's result is a dozen attributes), which on tuner's
    default storage costs more than the training of a small trial. On Optuna's RDB storage over
    SQLite this writes one multi-row upsert per table instead, in one transaction, the
    statement Optuna's ``RDBStorage.set_trial_user_attr`` runs for one attribute (same tables,
    same JSON encoding, same check that the trial is not finished). Other storages (journal
    files, in memory, PostgreSQL, MySQL) get Optuna's per-attribute calls.

    Args:
        trial: a trial of this process, not finished (from ``study.ask`` or the objective).
        user_attrs: JSON-serializable values by key (``trial.user_attrs``).
        system_attrs: JSON-serializable values by key (``trial.system_attrs``).

    Raises:
        optuna.exceptions.UpdateFinishedTrialError: the trial is finished (another process
            failed it); nothing is written then.
        StorageUnavailable: the storage failed (disk full, read-only, unreachable).
    """
    system_attrs = system_attrs or {}
    behind = getattr(trial.storage, "set_trial_attrs", None)  # tuner.shared_reads: buffered
    if behind is not None and behind(trial._trial_id, dict(user_attrs), dict(system_attrs)):
        trial._cached_frozen_trial.user_attrs.update(user_attrs)
        return
    backend = _sqlite_backend(getattr(trial, "storage", None))
    if backend is None:
        for key, value in user_attrs.items():
            trial.set_user_attr(key, value)
        for key, value in system_attrs.items():
            trial.storage.set_trial_system_attr(trial._trial_id, key, value)
        return
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from sqlalchemy.dialects.sqlite import insert

    def write(storage: optuna.storages.RDBStorage) -> None:
        with _create_scoped_session(storage.scoped_session, True) as session:  # as Optuna's
            row = models.TrialModel.find_or_raise_by_id(trial._trial_id, session)
            storage.check_trial_is_updatable(trial._trial_id, row.state)
            for model, attrs in ((models.TrialUserAttributeModel, user_attrs),
                                 (models.TrialSystemAttributeModel, system_attrs)):
                if not attrs:
                    continue
                statement = insert(model).values([
                    {"trial_id": trial._trial_id, "key": key, "value_json": json.dumps(value)}
                    for key, value in attrs.items()
                ])
                session.execute(statement.on_conflict_do_update(
                    index_elements=[model.trial_id, model.key],
                    set_={"value_json": statement.excluded.value_json},
                ))

    if isinstance(backend, GuardedRDBStorage):  # disk full & co: StorageUnavailable
        backend._call("set_trial_attrs", write)
    else:
        write(backend)
    written = getattr(trial.storage, "written", None)  # tuner.shared_reads' cached copy
    if written is not None:
        written(trial._trial_id, dict(user_attrs), dict(system_attrs))
    # what trial.set_user_attr also does: the trial object answers trial.user_attrs itself
    trial._cached_frozen_trial.user_attrs.update(user_attrs)


def set_study_system_attrs(study: optuna.Study, attrs: Mapping[str, Any]) -> None:
    """``study._storage.set_study_system_attr(study._study_id, key, value)`` for each key, in
    one transaction on tuner's RDB storage (``SharedReadStorage.set_study_system_attrs``);
    one call per key on other storages.

    Raises:
        StorageUnavailable: the storage failed (disk full, read-only, unreachable).
    """
    storage = study._storage
    many = getattr(storage, "set_study_system_attrs", None)  # tuner.shared_reads' storage
    if many is not None:
        many(study._study_id, dict(attrs))
        return
    for key, value in attrs.items():
        storage.set_study_system_attr(study._study_id, key, value)


def _sqlite_backend(
    storage: optuna.storages.BaseStorage | None,
) -> optuna.storages.RDBStorage | None:
    """The RDB storage behind ``storage`` if it is one on SQLite that takes upserts, else None."""
    import sqlite3

    backend = getattr(storage, "_backend", storage)  # optuna wraps RDBStorage in a cache
    if not isinstance(backend, optuna.storages.RDBStorage):
        return None
    if backend.engine.name != "sqlite" or sqlite3.sqlite_version_info < (3, 24, 0):
        return None
    return backend
