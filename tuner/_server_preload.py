"""Imported first by tuner's worker server (the ``multiprocessing`` forkserver that
:func:`tuner.workers.start_worker_server` starts), before its other preloads (torch, Optuna, ...).

- The garbage collector is off while the server imports; :mod:`tuner._server_loaded`, its
  last preload, freezes what it imported and turns the collector back on.
- The server ends at its exit handlers (``os._exit``) when the command that started it ends,
  instead of tearing every module down: with torch imported that took about 0.5 s, during which
  the server still held the command's standard output and error open, so whatever read the
  command through a pipe waited for it. Its forked workers are not affected (another pid).
"""

from __future__ import annotations

import atexit
import gc
import os

gc.disable()
_SERVER_PID = os.getpid()


def _end_now() -> None:
    if os.getpid() == _SERVER_PID:  # the server itself, not a worker forked from it
        os._exit(0)


atexit.register(_end_now)
