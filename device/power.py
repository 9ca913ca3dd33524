"""The power port: battery level and whether the device runs on external power.

Example::

    battery = SimBattery(clock, percent=80, drain_per_hour=10)
    clock.advance(3600); battery.percent()   # -> 70.0
"""

from __future__ import annotations

from typing import Protocol

from device.clock import Clock


class Battery(Protocol):
    def percent(self) -> float: ...

    def external_power(self) -> bool: ...


class SimBattery:
    """Drains linearly with (simulated) time; tests and testers set the level, the drain
    rate, or plug it in."""

    def __init__(self, clock: Clock, percent: float = 100.0, drain_per_hour: float = 8.0) -> None:
        self._clock = clock
        self._level = percent
        self._at = clock.monotonic()
        self.drain_per_hour = drain_per_hour
        self._external = False

    def percent(self) -> float:
        now = self._clock.monotonic()
        if not self._external:
            self._level = max(0.0, self._level - self.drain_per_hour * (now - self._at) / 3600)
        self._at = now
        return self._level

    def external_power(self) -> bool:
        return self._external

    def set(
        self,
        percent: float | None = None,
        external: bool | None = None,
        drain_per_hour: float | None = None,
    ) -> None:
        self.percent()  # drain up to now at the old rate
        if percent is not None:
            self._level = percent
        if external is not None:
            self._external = external
        if drain_per_hour is not None:
            self.drain_per_hour = drain_per_hour
