"""What a tester's button on the panel stands for: the control channel's command it
sends (the same switches the scenarios flip), and :class:`ActionError`, the refusal of an
action the device cannot take, with the HTTP status the page answers with."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

from simulator.control_commands import ControlCommand, ControlError, parse_command


class ActionError(Exception):
    """An action the device cannot take as asked: a bad argument (400), or not possible
    here and now (409, e.g. the case system without sync)."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


# A tester's button -> the control channel's command (docs/testers-guide.md): the same
# switches the scenarios flip, carried out the same way. Each takes the request's args.
TESTER_COMMANDS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "explain": lambda a: {"cmd": "explain"},
    "camera-fault": lambda a: {"cmd": "camera", "ok": False},
    "camera-ok": lambda a: {"cmd": "camera", "ok": True},
    "microphone-fault": lambda a: {"cmd": "microphone", "ok": False},
    "microphone-ok": lambda a: {"cmd": "microphone", "ok": True},
    "gps-lost": lambda a: {"cmd": "gps", "ok": False},
    "gps-ok": lambda a: {"cmd": "gps", "ok": True},
    "storage-fill": lambda a: {"cmd": "storage", "free_bytes": a.get("free_bytes", 0)},
    "storage-free": lambda a: {"cmd": "storage", "free_bytes": None},
    "network-down": lambda a: {"cmd": "network", "up": False},
    "network-up": lambda a: {"cmd": "network", "up": True},
    "clock-jump": lambda a: {"cmd": "clock_jump", "seconds": a.get("seconds", 3600)},
    "battery": lambda a: {
        "cmd": "battery",
        **{k: a[k] for k in ("percent", "external", "drain_per_hour") if k in a},
    },
}


def button_command(action: str, args: Mapping[str, Any]) -> ControlCommand:
    """The control command a tester's button stands for, with its figures from ``args``
    (the query's text, or the JSON body's values); ``KeyError`` for no such button,
    :class:`ActionError` for a figure the command refuses.

    >>> button_command("clock-jump", {"seconds": "-3600"})
    ClockJump(cmd='clock_jump', seconds=-3600.0)
    """
    try:
        return parse_command(TESTER_COMMANDS[action](args))
    except ControlError as e:
        raise ActionError(str(e)) from None
