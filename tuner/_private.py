"""Calls into private APIs of torch, gathered in one place.

Each function here relies on something its library does not promise to keep. They are checked
against the versions in :data:`CHECKED_AGAINST` by ``tests/test_private.py``, which fails when a
release changes what they rely on; every function falls back to doing nothing in that case.
"""

from __future__ import annotations

import os

__all__ = ["CHECKED_AGAINST", "FAST_OPTIMIZER_ENV", "skip_dynamo_import_in_optimizers"]

CHECKED_AGAINST = {"torch": "2.13"}
"""Library versions (major.minor) whose private APIs these functions were checked against."""


FAST_OPTIMIZER_ENV = "TUNER_SKIP_DYNAMO_IMPORT"
"""Set to 1 by the ``tuner`` command (inherited by its worker processes): tuner's training
modules then call :func:`skip_dynamo_import_in_optimizers` when they are imported."""


def apply_for_command() -> None:
    """What the ``tuner`` command's processes change in torch (see :data:`FAST_OPTIMIZER_ENV`);
    nothing in a library user's process."""
    if os.environ.get(FAST_OPTIMIZER_ENV) == "1":
        skip_dynamo_import_in_optimizers()


def skip_dynamo_import_in_optimizers() -> int:
    """Let ``torch.optim`` optimizers be built without importing ``torch._dynamo`` (~3 s).

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
