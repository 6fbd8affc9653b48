"""Signals: SIGINT and SIGTERM stop a worker at once, except during a storage write (see
:mod:`tuner.workers`, "Interrupts")."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["Interrupts"]

def _package_dir(module: str) -> str | None:

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "")


# code that talks to a storage: a KeyboardInterrupt raised in it could leave a write half done
_STORAGE_CODE = tuple(
    d for d in (_package_dir("optuna.storages"), _package_dir("sqlalchemy"),
                _package_dir("psycopg"), _package_dir("psycopg2"))
    if d is not None
) + tuple(str(Path(__file__).with_name(n)) for n in ("storage.py", "storage_guard.py",
                                                    "shared_reads.py"))


def _in_storage_call(frame: Any) -> bool:
    """True if ``frame`` or one of its callers runs storage code (Optuna's, SQLAlchemy's,
    a database driver's, tuner's storage modules)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith(_STORAGE_CODE):
            return True
        frame = frame.f_back
    return False


class Interrupts:
    """SIGINT/SIGTERM while trials run: stop at once while training or waiting, else soon after.

    The first signal raises ``KeyboardInterrupt(signal name)`` immediately inside
    :meth:`interruptible` sections (training, sleeping), unless a storage call is under way
    there (a trial's report from a training callback): then, as everywhere else (asking for a
    trial, writing its result), it is held until the next :meth:`check` or the end of a
    :meth:`deferred` section, so no storage write is ever cut halfway. Later signals are
    ignored while the trials are being closed. Outside the main thread: no-op.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: str | None = None
        self._safe = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.getsignal(s) for s in self.SIGNALS}
            for s in self.SIGNALS:
                signal.signal(s, self._handle)
            # a worker process starts with them blocked (run_workers): deliver any now
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self.SIGNALS)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        self.pending = signal.Signals(signum).name
        if self._safe and not _in_storage_call(frame):
            raise KeyboardInterrupt(self.pending)

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` if a signal is being held."""
        if self.pending is not None:
            raise KeyboardInterrupt(self.pending)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A section a signal may interrupt at once."""
        self.check()
        self._safe = True
        try:
            yield
        finally:
            self._safe = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A section (storage calls) inside an :meth:`interruptible` one that a signal must not
        cut: a signal is held until it ends, then raised if the outer section is one."""
        outer = self._safe
        self._safe = False
        try:
            yield
        finally:
            self._safe = outer
        if outer:
            self.check()
