"""The kernel clock: its decision on made-up adjtimex answers, and a real read on this
machine (whatever its synchronisation state, reading it must work)."""

from __future__ import annotations

import time

import pytest

from device.kernel_clock import STA_UNSYNC, TIME_ERROR, KernelClock, kernel_synced

STA_PLL, STA_NANO = 0x0001, 0x2000
TIME_OK, TIME_INS, TIME_OOP = 0, 1, 3


@pytest.mark.parametrize(
    ("state", "status", "synced"),
    [
        (TIME_OK, STA_PLL | STA_NANO, True),  # chrony steering the clock
        (TIME_INS, STA_PLL, True),  # a leap second is coming: still synchronised
        (TIME_OOP, STA_PLL, True),
        (TIME_OK, STA_UNSYNC | STA_PLL, False),  # the daemon stopped steering
        (TIME_ERROR, STA_UNSYNC, False),  # boot: nobody set the clock
        (TIME_ERROR, STA_PLL, False),
    ],
)
def test_state_and_status_bits_decide_synced(state: int, status: int, synced: bool) -> None:
    assert kernel_synced(state, status) is synced


def test_reads_this_machines_kernel_state() -> None:
    clock = KernelClock(utc_offset=3600)
    state, status = clock.read()
    assert 0 <= state <= TIME_ERROR
    assert clock.synced() is kernel_synced(state, status)
    assert clock.utc_offset() == 3600
    before, wall, after = time.time(), clock.wall(), time.time()
    assert before <= wall <= after  # the system's wall clock, not another
