"""How the ``tuner`` program's processes use Python's cyclic garbage collector (:mod:`gc`).

A full collection scans every object alive, and importing torch, Optuna and SQLAlchemy leaves
several hundred thousand of them: each full collection of a ``tuner tune`` process took 12 to
136 ms, four or five per run of the default study (0.26 s of a 3.3 s process, measured with
``gc.callbacks``), while those imports make almost no cyclic garbage. So the program (the
command and its worker processes) imports with the collector off (:func:`hold`), then freezes
what is alive (:func:`gc.freeze`: those objects live as long as the process and are never
scanned again) and turns the collector back on (:func:`settle`): the run's own collections
scan only what the run makes. A library user's process (``tuner.tune`` in a notebook) is left
alone: both functions do nothing there.
"""

from __future__ import annotations

import gc

__all__ = ["hold", "settle"]

_program = False  # this process is the tuner program (or one of its workers)


def hold() -> None:
    """Mark this process as the tuner program and turn the collector off until :func:`settle`.

    Call it first thing in the program, before the heavy imports (a worker: as it starts,
    off already, as the worker server it is forked from runs without it); every path of the
    program must reach :func:`settle` before work that makes garbage."""
    global _program
    _program = True
    gc.disable()


def settle() -> None:
    """In the program: freeze every object alive now and turn the collector (back) on.
    Calling it again later freezes what came since (the storage opened, the data loaded).
    Elsewhere: nothing."""
    if not _program:
        return
    gc.freeze()
    gc.enable()
