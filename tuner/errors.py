"""Errors tuner raises for problems a user can fix.

Every :class:`TunerError` is caught at the command-line boundary (``tuner.cli``) and printed as
one message with exit status 2, without a traceback. Anything else is a bug in tuner.
"""

from __future__ import annotations

__all__ = ["TunerError", "ConfigError", "StorageError", "NoCompletedTrialError", "DeviceError"]


class TunerError(Exception):
    """Base class of the errors a user can fix; its message says how."""


class ConfigError(TunerError, ValueError):
    """A study file (or a command-line value) is invalid.

    The message names the file, the key, the bad value and what is allowed.
    """


class StorageError(TunerError):
    """A storage URL or file cannot be used (missing, empty, unreachable)."""


class NoCompletedTrialError(TunerError):
    """A study has no COMPLETE trial, so there is no best configuration to export or report."""


class DeviceError(TunerError):
    """The requested torch device is not available on this machine."""


class WorkerError(TunerError):
    """A worker process of ``tuner tune --workers N`` failed before the study reached its target."""


__all__ += ["WorkerError"]


class StorageUnavailable(StorageError):
    """The storage failed during a run: disk full, read-only, or a server unreachable after
    :data:`tuner.storage_guard.RETRY_BUDGET_S` seconds of retries.

    Raised by every operation of a storage from :func:`tuner.storage.make_storage`; the message
    is one line (password redacted) naming the storage and what to do. What was committed
    before it is kept. ``tuner`` exits with status 1 on it (an environment failure, not a
    mistake in the command).
    """


__all__ += ["StorageUnavailable"]
