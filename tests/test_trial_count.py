"""tuner.trial_count: how often a worker that waits for other workers' trials polls."""

from __future__ import annotations

from tuner.trial_count import FIRST_WAIT_S, POLL_S, wait_s


def test_a_wait_polls_soon_at_first_then_every_poll_interval():
    waits = [wait_s(n) for n in range(12)]
    assert waits[0] == FIRST_WAIT_S < POLL_S
    assert all(b == min(POLL_S, 2 * a) for a, b in zip(waits, waits[1:], strict=False))
    assert waits[-1] == POLL_S  # a long wait: one query per POLL_S
    assert sum(waits[:4]) < POLL_S  # four polls before the first one of a fixed POLL_S
