"""Delays between a backend's attempts to reach its hardware again (a gpsd socket, a serial
receiver unplugged, a network camera), the same for every port that reconnects by itself."""

from __future__ import annotations


class Backoff:
    """Delays between reconnection attempts: ``initial`` seconds, doubling up to ``maximum``,
    back to ``initial`` after a session that worked.

    Example::

        backoff = Backoff(0.5, 2.0)
        [backoff.next() for _ in range(4)]   # [0.5, 1.0, 2.0, 2.0]
        backoff.reset()
        backoff.next()                       # 0.5
    """

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum = initial, maximum
        self._delay = initial

    def next(self) -> float:
        delay = self._delay
        self._delay = min(delay * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._delay = self.initial
