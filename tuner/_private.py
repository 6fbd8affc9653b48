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
from typing import Any

__all__ = [
    "CHECKED_AGAINST",
    "dashboard_module",
    "FAST_OPTIMIZER_ENV",
    "fused_update_ops",
    "skip_dynamo_import_in_optimizers",
]

CHECKED_AGAINST = {"torch": "2.13", "optuna": "5.0", "optuna-dashboard": "0.21"}
"""Library versions (major.minor) whose private APIs these functions were checked against."""


FAST_OPTIMIZER_ENV = "TUNER_SKIP_DYNAMO_IMPORT"
"""Set to 1 by the ``tuner`` command (inherited by its worker processes): tuner's training
modules then call :func:`skip_dynamo_import_in_optimizers` when they are imported."""


def apply_for_command() -> None:
    """What the ``tuner`` command's processes change in torch (see :data:`FAST_OPTIMIZER_ENV`);
    nothing in a library user's process."""
    if os.environ.get(FAST_OPTIMIZER_ENV) == "1":
        skip_dynamo_import_in_optimizers()


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
