"""``python tests/_gated_tune.py tune ...``: ``tuner tune`` whose trials wait before they report
their second epoch until the file named by $TUNER_TEST_GATE exists.

A trial seen training then cannot end before the test's signal (SIGKILL, SIGSTOP), whatever
the machine's load, and the trials stay as short as any once the test opens the gate (or
when it never closes one). Worker processes (forked from the worker server: they run this
file again as ``__mp_main__``) wait at the same gate.
"""

import os
import sys
import time

import optuna

_report = optuna.trial.Trial.report


def _gated_report(self, value, step):  # noqa: ANN001, ANN202 - optuna.Trial.report's own
    gate = os.environ.get("TUNER_TEST_GATE")
    end = time.monotonic() + 300  # a test that failed early leaves no process waiting for long
    while gate and step >= 2 and not os.path.exists(gate) and time.monotonic() < end:
        time.sleep(0.02)  # the gate is a file another process creates: polled
    return _report(self, value, step)


optuna.trial.Trial.report = _gated_report

if __name__ == "__main__":
    from tuner.cli import main

    sys.exit(main())
