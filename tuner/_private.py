"""Calls into private APIs of torch, Optuna and optuna-dashboard, gathered in one place.

Each use relies on something its library does not promise to keep. They are checked against the
versions in :data:`CHECKED_AGAINST` by ``tests/test_private.py``, which fails when a release
changes what they rely on.

Functions here (each falls back to doing nothing, or to None, where its library changed):

- :func:`skip_dynamo_import_in_optimizers`: torch's ``_compile._disable_dynamo`` wrapper of
  ``torch.optim.Optimizer`` methods and its ``__dynamo_disable`` attribute;
- :func:`dashboard_module`: ``optuna_dashboard._note`` and ``optuna_dashboard._custom_plot_data``
  loaded without running ``optuna_dashboard/__init__.py``, which imports the dashboard's web
  server and, through ``optuna.importance``, scikit-learn and SciPy (about a second per run);
- :func:`skip_alembic_when_current`: replaces ``optuna.storages._rdb.storage._VersionManager``
  (in the ``tuner`` command's processes only) with a subclass that answers "is the schema at
  the head revision" with one query and stamps a new database itself, without alembic;
- :func:`fused_update_ops`: the operators ``torch.ops.aten._fused_sgd_``, ``_fused_adam_``,
  ``_fused_adamw_`` (what ``torch.optim.<cls>(fused=True)`` runs), used by the stacked
  optimizer (``tuner/batched/_optimizer.py``).

Uses that are not a clean function boundary stay where they are, listed here (each has a test in
``tests/test_private.py`` that the private name still exists with the shape used):

- ``tuner/storage.py`` ``set_trial_attrs``: ``optuna.storages._rdb.models`` (``TrialModel``,
  ``TrialUserAttributeModel``, ``TrialSystemAttributeModel``) and
  ``optuna.storages._rdb.storage._create_scoped_session``; ``trial._trial_id``,
  ``trial._cached_frozen_trial``;
- ``tuner/storage_guard.py`` ``GuardedRDBStorage``: overrides ``RDBStorage`` internals
  (``_create_new_trial``, ``_set_trial_param``, ``_get_trials``, ``_get_best_trial_id``,
  ``_get_stale_trial_ids``, ``_get_prepared_new_trial``) and logs of
  ``optuna.storages._rdb.storage``; its one-transaction writes (``write_trial``,
  ``trial_state_counts``, ``set_study_system_attrs``) build rows of
  ``optuna.storages._rdb.models`` and call ``_set_trial_attr_without_commit``,
  ``_set_trial_value_without_commit``, ``check_trial_is_updatable``;
- ``tuner/shared_reads.py`` ``SharedReadStorage``: subclasses ``_CachedStorage`` and overrides
  ``_read_trials_from_remote_storage`` and ``_add_trials_to_cache``;
- ``tuner/reaping.py`` (stale-trial reaping): ``study._storage``, ``study._study_id``,
  ``RDBStorage._get_stale_trial_ids``; ``tuner/lifecycle.py``: ``study._storage``;
- ``tuner/dashboard_notes.py``: ``optuna_dashboard._note`` (``get_note_from_system_attrs``,
  ``note_ver_key``, ``split_body``), ``study._storage``, ``study._study_id``;
- ``tuner/study.py`` ``TrialIndexedQMCSampler``: overrides ``QMCSampler._find_sample_id``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

__all__ = [
    "CHECKED_AGAINST",
    "dashboard_module",
    "exit_process",
    "FAST_OPTIMIZER_ENV",
    "fused_update_ops",
    "alembic_head",
    "skip_alembic_when_current",
    "skip_dynamo_import_in_optimizers",
]

CHECKED_AGAINST = {"torch": "2.13", "optuna": "5.0", "optuna-dashboard": "0.21"}
"""Library versions (major.minor) whose private APIs these functions were checked against."""


FAST_OPTIMIZER_ENV = "TUNER_SKIP_DYNAMO_IMPORT"
"""Set to 1 by the ``tuner`` command (inherited by its worker processes): tuner's training
modules then call :func:`skip_dynamo_import_in_optimizers` when they are imported."""


def apply_for_command() -> None:
    """What the ``tuner`` command's processes change in torch and Optuna (see
    :data:`FAST_OPTIMIZER_ENV`); nothing in a library user's process."""
    if os.environ.get(FAST_OPTIMIZER_ENV) == "1":
        skip_dynamo_import_in_optimizers()
        skip_alembic_when_current()


def alembic_head(versions: Path) -> str | None:
    """The head revision of Optuna's alembic scripts in ``versions`` (the one revision no
    other names as ``down_revision``), read from the files' text; None if that is not one."""
    import re

    revisions, downs = set(), set()
    for path in versions.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        rev = re.search(r'^revision = "([^"]+)"', text, re.M)
        down = re.search(r'^down_revision = (?:"([^"]+)"|None)', text, re.M)
        if rev is None or down is None:
            return None
        revisions.add(rev.group(1))
        if down.group(1):
            downs.add(down.group(1))
    heads = revisions - downs
    return heads.pop() if len(heads) == 1 else None


def skip_alembic_when_current() -> bool:
    """Open Optuna RDB storages without importing alembic when their schema is already at
    Optuna's head revision (every run after a study's first), and stamp a new database
    with the head as alembic would; anything else (an older schema, a database made before
    alembic) goes through Optuna's own ``_VersionManager`` unchanged, messages included.

    alembic's import and its parse of the revision scripts cost about 0.15 s of CPU in every
    process that opens a storage (each ``--workers`` process too), for a check that a
    one-row query answers. Returns False (nothing changed) where Optuna's internals differ.
    """
    from optuna.storages._rdb import storage as rdb

    base = getattr(rdb, "_VersionManager", None)
    if base is None or getattr(base, "tuner_fast", False):
        return False
    if not all(callable(getattr(base, n, None)) for n in
               ("_init_alembic", "check_table_schema_compatibility", "_is_alembic_supported")):
        return False
    head = alembic_head(Path(rdb.__file__).parent / "alembic" / "versions")
    if head is None:
        return False

    class FastVersionManager(base):  # type: ignore[misc, valid-type]
        tuner_fast = True

        def _stored_revision(self) -> str | None:
            import sqlalchemy

            try:
                with self.engine.connect() as connection:
                    rows = connection.execute(
                        sqlalchemy.text("SELECT version_num FROM alembic_version")).fetchall()
            except sqlalchemy.exc.SQLAlchemyError:  # no such table: a new database
                return None
            return rows[0][0] if len(rows) == 1 else None

        def _init_alembic(self) -> None:
            if self._stored_revision() == head:
                return
            if self._stored_revision() is None and self._is_alembic_supported():
                import sqlalchemy

                table = sqlalchemy.Table(  # alembic's own version table
                    "alembic_version", sqlalchemy.MetaData(),
                    sqlalchemy.Column("version_num", sqlalchemy.String(32), nullable=False),
                    sqlalchemy.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))
                try:
                    with self.engine.begin() as connection:
                        table.create(connection, checkfirst=True)
                        if connection.execute(sqlalchemy.select(table)).first() is None:
                            connection.execute(table.insert().values(version_num=head))
                except sqlalchemy.exc.IntegrityError:
                    pass  # another process stamped it at the same moment
                if self._stored_revision() == head:
                    return
            super()._init_alembic()

        def check_table_schema_compatibility(self) -> None:
            if self._stored_revision() != head:
                super().check_table_schema_compatibility()

    rdb._VersionManager = FastVersionManager
    return True


def exit_process(code: int) -> NoReturn:
    """End this process with status ``code`` as a normal exit would (multiprocessing's
    finalizers, other threads joined, ``atexit`` handlers, streams flushed), without tearing
    down every module one by one: with torch loaded that takes about 0.5 s of CPU after the
    command's work is done (the ``tuner`` command and its worker processes). Private:
    ``multiprocessing.util._exit_function`` and ``atexit._run_exitfuncs``."""
    import atexit
    import contextlib
    import threading
    from multiprocessing import util

    util._exit_function()  # what multiprocessing runs when a process's target returns
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # tuner.storage closes its databases here (a SQLite checkpoint)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


LIGHT_DASHBOARD_MODULES = ("_note", "_custom_plot_data")
"""optuna-dashboard's modules that write study notes and plotly figures; each imports only
Optuna (checked by tests/test_private.py)."""


def dashboard_module(name: str) -> ModuleType:
    """``optuna_dashboard.<name>`` (one of :data:`LIGHT_DASHBOARD_MODULES`), imported without
    the package's ``__init__`` when the package is not imported yet.

    The module is registered under its own name in ``sys.modules``, so a later
    ``import optuna_dashboard`` (the ``dashboard`` command) reuses it rather than loading a
    second copy. Falls back to a plain import where the file is not where 0.21 keeps it.

    Raises:
        ValueError: ``name`` is not one of :data:`LIGHT_DASHBOARD_MODULES`.
    """
    if name not in LIGHT_DASHBOARD_MODULES:
        raise ValueError(f"{name!r} is not one of {LIGHT_DASHBOARD_MODULES}")
    full = f"optuna_dashboard.{name}"
    if full in sys.modules or "optuna_dashboard" in sys.modules:
        return importlib.import_module(full)
    package = importlib.util.find_spec("optuna_dashboard")  # finds, does not run, __init__
    folder = None if package is None or not package.origin else Path(package.origin).parent
    spec = None if folder is None else importlib.util.spec_from_file_location(
        full, folder / f"{name}.py")
    if spec is None or spec.loader is None or not (folder / f"{name}.py").is_file():
        return importlib.import_module(full)
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[full]
        raise
    return module


def skip_dynamo_import_in_optimizers() -> int:
    """Let ``torch.optim`` optimizers be built without importing ``torch._dynamo`` (seconds).

    ``torch.optim.Optimizer.add_param_group`` (and ``state_dict``, ``load_state_dict``,
    ``zero_grad``) are wrapped by ``torch._compile._disable_dynamo``, which imports
    ``torch._dynamo`` on the first call only to mark the method as not-to-be-compiled; the wrapper
    keeps that marked function in the private attribute ``__dynamo_disable`` of the original.
    Putting the original there makes the wrapper call it directly. That changes nothing for
    eager code: it matters only to ``torch.compile``, which tuner's training never uses. The
    command line calls this once per process (a library user's process is left alone).

    Returns:
        The number of methods changed (0 where this torch wraps them differently).
    """
    import torch

    changed = 0
    for name in ("add_param_group", "state_dict", "load_state_dict", "zero_grad"):
        method = getattr(torch.optim.Optimizer, name, None)
        original = getattr(method, "__wrapped__", None)
        code = getattr(method, "__code__", None)
        if original is None or code is None or not code.co_filename.endswith("_compile.py"):
            continue
        if getattr(original, "__dynamo_disable", None) is None:
            setattr(original, "__dynamo_disable", original)
            changed += 1
    return changed


def fused_update_ops() -> dict[str, Callable[..., Any] | None]:
    """torch's fused update operators by ``torch.optim`` class: ``SGD`` -> ``aten._fused_sgd_``,
    ``Adam`` -> ``aten._fused_adam_``, ``AdamW`` -> ``aten._fused_adamw_`` (the kernels
    ``torch.optim.<cls>(..., fused=True)`` runs); None where this torch build has no such
    operator. A new dict at each call."""
    import torch

    return {
        cls: getattr(torch.ops.aten, op, None)
        for cls, op in (("SGD", "_fused_sgd_"), ("Adam", "_fused_adam_"),
                        ("AdamW", "_fused_adamw_"))
    }
