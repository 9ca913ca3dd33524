"""The machine's clock, synchronised as the kernel says: :class:`KernelClock` asks
``adjtimex`` (read-only, no privileges needed) whether NTP, chrony or a GNSS time source
disciplines the wall clock, whatever daemon does it.

The kernel reports the clock unsynchronised by the ``STA_UNSYNC`` status bit (set at boot
and when the time daemon stops steering it, after the maximum error passes 16 s) and by the
``TIME_ERROR`` clock state.

Example::

    clock = KernelClock()
    clock.synced()          # False until chronyd/timesyncd/ntpd has disciplined the clock
    kernel_synced(0, 0x2001)    # True: TIME_OK, STA_PLL | STA_NANO
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any

from device.clock import SystemClock

TIME_ERROR = 5  # adjtimex's clock state: the clock is not synchronised
STA_UNSYNC = 0x0040  # the status bit the time daemon clears once it steers the clock

_long, _int = ctypes.c_long, ctypes.c_int


class _Timex(ctypes.Structure):
    """Linux ``struct timex`` (<sys/timex.h>), in its order; ctypes adds the padding."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", _long),
        ("freq", _long),
        ("maxerror", _long),
        ("esterror", _long),
        ("status", _int),
        ("constant", _long),
        ("precision", _long),
        ("tolerance", _long),
        ("time_sec", _long),
        ("time_usec", _long),
        ("tick", _long),
        ("ppsfreq", _long),
        ("jitter", _long),
        ("shift", _int),
        ("stabil", _long),
        ("jitcnt", _long),
        ("calcnt", _long),
        ("errcnt", _long),
        ("stbcnt", _long),
        ("tai", _int),
        ("_reserved", _int * 11),
    ]


def kernel_synced(state: int, status: int) -> bool:
    """Whether adjtimex's clock ``state`` and ``status`` bits say the clock is synchronised.

    Example::

        kernel_synced(5, 0x0001)    # False: TIME_ERROR
        kernel_synced(0, 0x0041)    # False: STA_UNSYNC is set
    """
    return state != TIME_ERROR and not status & STA_UNSYNC


class KernelClock(SystemClock):
    """The system's wall and monotonic clocks, ``synced()`` from the kernel's NTP state.

    ``utc_offset`` as for :class:`~device.clock.SystemClock`. Off Linux (no ``adjtimex`` in
    the C library) construction is a RuntimeError saying so.
    """

    def __init__(self, utc_offset: int | None = None) -> None:
        super().__init__(utc_offset)
        self._adjtimex = _load_adjtimex()
        self.read()  # fail now, not in the middle of a recording

    def read(self) -> tuple[int, int]:
        """adjtimex's clock state and status bits, as they are now."""
        timex = _Timex()  # modes 0: read only
        state = int(self._adjtimex(ctypes.byref(timex)))
        if state == -1:
            errno = ctypes.get_errno()
            raise OSError(errno, f"adjtimex failed: {os.strerror(errno)}")
        return state, int(timex.status)

    def synced(self) -> bool:
        try:
            return kernel_synced(*self.read())
        except OSError:
            return False  # a clock we cannot vouch for is not synchronised


def _load_adjtimex() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    function = getattr(libc, "adjtimex", None) or getattr(libc, "ntp_adjtime", None)
    if function is None:
        raise RuntimeError("this C library has no adjtimex: the kernel clock needs Linux")
    function.argtypes = [ctypes.POINTER(_Timex)]
    function.restype = ctypes.c_int
    return function
