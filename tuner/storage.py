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
  server, for work spread over processes and machines.

Relative paths are resolved against the current directory when the URL is resolved, so the
same URL works from any working directory once resolved. Default: ``tuner.db`` in the folder of
the study file.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from tuner.errors import StorageError

if TYPE_CHECKING:
    from tuner.config import StudyConfig

__all__ = [
    "DEFAULT_STORAGE_FILE",
    "STORAGE_ENV",
    "redact_url",
    "resolve_storage_url",
    "storage_file",
    "make_storage",
    "check_storage_exists",
    "set_trial_attrs",
]

DEFAULT_STORAGE_FILE = "tuner.db"
STORAGE_ENV = "OPTUNA_STORAGE"
JOURNAL_PREFIX = "journal:///"
SQLITE_PREFIX = "sqlite:///"
SQLITE_TIMEOUT_S = 60


_QUERY_SECRET = re.compile(r"([?&](?:password|passwd|pwd)=)[^&#]*", re.IGNORECASE)


def _secrets(url: str) -> list[str]:
    """The passwords a URL carries (user info and query), to scrub from driver messages."""
    found = [m.group(1) for m in re.finditer(r"://[^\s/?#:]*:([^\s/?#]*)@", url)]
    found += [m.group(0).split("=", 1)[1] for m in _QUERY_SECRET.finditer(url)]
    # a driver may split an unencoded '@' in a password differently: scrub the pieces too
    pieces = [p for f in found if "@" in f for p in f.split("@") if len(p) >= 3]
    return [f for f in found + pieces if f]


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
        path = (base / Path(url).expanduser()).resolve()
        prefix = JOURNAL_PREFIX if path.suffix == ".journal" else SQLITE_PREFIX
        return f"{prefix}{path}"
    for prefix in (SQLITE_PREFIX, JOURNAL_PREFIX):
        if url.startswith(prefix):
            rest = url.removeprefix(prefix)
            if rest and rest != ":memory:" and not rest.startswith("/"):
                return f"{prefix}{(base / rest).resolve()}"
    return url


def storage_file(url: str) -> Path | None:
    """The local file behind an SQLite or journal URL, else None."""
    for prefix in (SQLITE_PREFIX, JOURNAL_PREFIX):
        if url.startswith(prefix):
            rest = url.removeprefix(prefix).split("?", 1)[0]  # sqlite:///x.db?timeout=5
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
) -> optuna.storages.RDBStorage:
    """RDBStorage, retried once: processes that open a fresh database at the same moment (a
    Slurm array starting) race to create Optuna's tables, and the loser of that race fails."""
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **rdb_kwargs)
    except ImportError:
        raise
    except Exception:
        time.sleep(0.5 + random.random())
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **rdb_kwargs)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_TIMEOUT_S * 1000}")
    cursor.close()


def _with_driver(url: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, 2.0 to psycopg2; ``tuner[postgres]``
    installs psycopg2-binary. An explicit ``postgresql+driver://`` is left alone.
    """
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return url.replace("postgresql://", f"postgresql+{driver}://", 1)
    return url


def make_storage(url: str, **rdb_kwargs: Any) -> optuna.storages.BaseStorage:
    """Open the Optuna storage for a resolved URL (see :func:`resolve_storage_url`).

    Args:
        url: ``sqlite:///``, ``journal:///``, ``postgresql://`` or another SQLAlchemy URL.
        rdb_kwargs: extra ``optuna.storages.RDBStorage`` arguments (heartbeat_interval,
            grace_period, failed_trial_callback); ignored for journal files.

    Raises:
        StorageError: the URL cannot be opened (unknown scheme, unreachable server, missing
            driver); the message shows the URL with its password redacted.
    """
    shown = redact_url(url)
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url.removeprefix(JOURNAL_PREFIX))
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith(SQLITE_PREFIX):
        file = storage_file(url)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    elif url.startswith(("postgresql", "mysql")):
        engine_kwargs["pool_pre_ping"] = True
    try:
        storage = _open_rdb(_with_driver(url), engine_kwargs, rdb_kwargs)
    except ImportError as exc:
        raise StorageError(
            f"storage {shown}: its database driver is not installed ({exc}); for "
            f"PostgreSQL: pip install 'tuner[postgres]' (psycopg2-binary)."
        ) from None
    except Exception as exc:  # sqlalchemy raises many kinds; its message is what matters
        message = redact_url(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__
        for secret in _secrets(url):
            message = message.replace(secret, "***")
        raise StorageError(f"storage {shown} cannot be opened: {message}") from None
    if url.startswith(SQLITE_PREFIX):
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
    """
    system_attrs = system_attrs or {}
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

    with _create_scoped_session(backend.scoped_session, True) as session:  # as Optuna's
        row = models.TrialModel.find_or_raise_by_id(trial._trial_id, session)
        backend.check_trial_is_updatable(trial._trial_id, row.state)
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
    # what trial.set_user_attr also does: the trial object answers trial.user_attrs itself
    trial._cached_frozen_trial.user_attrs.update(user_attrs)


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
