"""Batteries the Linux kernel reports: the :class:`~device.power.Battery` port on
``/sys/class/power_supply``, and the backend for devices without one.

The kernel's power-supply class is a directory per supply, of one-line text files: ``type``
(``Battery``, ``Mains``, ``USB``...), a battery's ``capacity`` (percent) and ``status``
(``Charging``, ``Discharging``, ``Full``, ``Not charging``), a charger's ``online`` (0 or 1).
:class:`SysfsBattery` reads them on each call, so it costs a few tiny reads, no thread.

Example::

    battery = SysfsBattery()              # the one battery, or name it: SysfsBattery("BAT0")
    battery.percent()                     # 87.0
    battery.external_power()              # True while a charger is online
    NoBattery().external_power()          # True: an interview room runs on mains
"""

from __future__ import annotations

import logging
from pathlib import Path

_log = logging.getLogger(__name__)

ROOT = Path("/sys/class/power_supply")
_CHARGERS = ("Mains", "USB", "Wireless")  # a supply of these types powers the device


def on_external_power(battery_status: str, chargers_online: list[bool]) -> bool:
    """Whether the device runs on external power, from what the kernel says.

    A charger that says it is online decides; a battery that is charging or full must
    have one, even when the charger is not itself in sysfs (many fuel-gauge boards).

    Example::

        on_external_power("Discharging", [False])   # False
        on_external_power("Charging", [])           # True
    """
    return any(chargers_online) or battery_status in ("Charging", "Full", "Not charging")


class SysfsBattery:
    """A battery under ``root`` (the kernel's ``/sys/class/power_supply``; tests pass a
    directory of their own). ``name`` picks the supply (``BAT0``, ``axp20x-battery``);
    without it, the only supply of type ``Battery``. A missing or unreadable battery is a
    ValueError here, naming what is wrong; later read errors keep the last good value,
    because a gauge that hiccups once must not stop a recording.
    """

    def __init__(self, name: str | None = None, root: str | Path = ROOT) -> None:
        self.root = Path(root)
        self.path = self._find(name)
        self._chargers = [p for p in self._supplies() if _read(p / "type") in _CHARGERS]
        try:
            self._percent = _capacity(self.path)
            self._status = _read(self.path / "status")
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read battery {self.path}: {exc}") from None

    def percent(self) -> float:
        try:
            self._percent = _capacity(self.path)
        except (OSError, ValueError) as exc:
            _log.warning(
                "battery %s unreadable, keeping %.0f %%: %s", self.path, self._percent, exc
            )
        return self._percent

    def external_power(self) -> bool:
        try:
            self._status = _read(self.path / "status")
        except OSError as exc:
            _log.warning("battery %s status unreadable: %s", self.path, exc)
        online = []
        for charger in self._chargers:
            try:
                online.append(_read(charger / "online") == "1")
            except OSError:
                online.append(False)  # a charger we cannot read powers nothing we know of
        return on_external_power(self._status, online)

    def _supplies(self) -> list[Path]:
        try:
            return sorted(p for p in self.root.iterdir() if (p / "type").is_file())
        except OSError as exc:
            raise ValueError(f"no power supplies at {self.root}: {exc.strerror}") from None

    def _find(self, name: str | None) -> Path:
        supplies = self._supplies()
        if name is not None:
            path = self.root / name
            if path not in supplies:
                known = ", ".join(p.name for p in supplies) or "none"
                raise ValueError(f"no power supply {name!r} at {self.root} (there are: {known})")
            if _read(path / "type") != "Battery":
                raise ValueError(f"power supply {path} is a {_read(path / 'type')}, not a Battery")
            return path
        batteries = [p for p in supplies if _read(p / "type") == "Battery"]
        if len(batteries) != 1:
            found = ", ".join(p.name for p in batteries) or "none"
            raise ValueError(
                f"{len(batteries)} batteries at {self.root} ({found}): name the one to use"
            )
        return batteries[0]


class NoBattery:
    """For mains-powered devices (an interview room): always on external power, full."""

    def percent(self) -> float:
        return 100.0

    def external_power(self) -> bool:
        return True


def _read(path: Path) -> str:
    return path.read_text(encoding="ascii", errors="replace").strip()


def _capacity(supply: Path) -> float:
    text = _read(supply / "capacity")
    value = float(text)  # ValueError names the text
    if not 0 <= value <= 100:
        raise ValueError(f"capacity {text} is not a percentage")
    return value
