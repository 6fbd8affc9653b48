"""Imported last by tuner's worker server (after :mod:`tuner._server_preload` and the other
preloads): what the server imported is frozen (:func:`gc.freeze`: never scanned again, in the
server or in the processes forked from it) and its garbage collector is turned back on, so that
any process forked from it (tuner's workers, and any other process a library user's
``multiprocessing`` forkserver context starts in the same session) starts with the collector on.
"""

from __future__ import annotations

import gc

gc.freeze()
gc.enable()
