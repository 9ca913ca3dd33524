"""Officers' PINs, kept off the command line: a command line is visible to every user in
``ps`` and stays in shell history. A PIN is typed at a prompt (when the command runs at a
terminal) or read from a file only its owner can read, one ``BADGE:PIN`` per line.

Example::

    pins = read_pins(["340102", "340117"], Path("pins.txt"))   # {"340102": "4711", ...}
    pins = read_pins(["340102"], None)                          # asks at the terminal

The decisions (a file's mode, its lines, an old ``BADGE:PIN`` argument) are functions of
their inputs; only :func:`read_pins` reads a file or the terminal.
"""

from __future__ import annotations

import getpass
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# Said wherever a PIN used to be given on the command line.
HOW = (
    "type each PIN when asked (at a terminal), or put BADGE:PIN lines in a file only you "
    "can read (chmod 600) and give --pins FILE"
)


class PinError(ValueError):
    """A PIN cannot be had as asked: says which officer or file, and why. Never the PIN."""


def refuse_pin_in_argv(option: str, value: str) -> str:
    """The badge of ``value``; PinError if it carries a PIN (the old ``BADGE:PIN`` form).
    The error names the badge only: the PIN is already in the shell's history, not here."""
    badge, sep, _ = value.partition(":")
    if sep:
        raise PinError(
            f"{option} {badge}:...: a PIN on the command line is visible to other users "
            f"(ps) and kept in shell history; give {option} {badge} and {HOW}"
        )
    if not badge.strip():
        raise PinError(f"{option}: an empty badge number")
    return badge.strip()


def mode_problem(path: Path, mode: int) -> str | None:
    """Why a PIN file of this mode must not be used (None: only its owner can read it)."""
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"{path} has mode {stat.S_IMODE(mode):04o}: others can read it; a PIN file must "
            f"be readable by its owner only (chmod 600 {path})"
        )
    return None


def parse_pins(text: str, path: Path) -> dict[str, str]:
    """``BADGE:PIN`` lines (blank lines and ``#`` comments skipped), by badge."""
    pins: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        badge, sep, pin = line.partition(":")
        badge, pin = badge.strip(), pin.strip()
        if not sep or not badge or not pin:
            raise PinError(f"{path}, line {n}: expected BADGE:PIN")
        if badge in pins:
            raise PinError(f"{path}, line {n}: officer {badge} is there twice")
        pins[badge] = pin
    return pins


def read_pin_file(path: Path) -> dict[str, str]:
    """The PINs in ``path``, refused if anyone but its owner may read it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise PinError(f"{path}: {e.strerror}") from None
    with os.fdopen(fd, encoding="utf-8") as f:
        if why := mode_problem(path, os.fstat(f.fileno()).st_mode):
            raise PinError(why)
        try:
            return parse_pins(f.read(), path)
        except UnicodeDecodeError:
            raise PinError(f"{path}: not a text file of BADGE:PIN lines") from None


Prompt = Callable[[str], str]


def read_pins(
    badges: Sequence[str],
    pin_file: Path | None,
    confirm: bool = False,
    prompt: Prompt | None = None,
    interactive: bool | None = None,
) -> dict[str, str]:
    """A PIN for each of ``badges``: from ``pin_file``, else asked at the terminal
    (``confirm``: twice, for a PIN being set). ``badges`` empty with a file: all of it."""
    if pin_file is not None:
        pins = read_pin_file(pin_file)
        missing = [b for b in badges if b not in pins]
        if missing:
            raise PinError(f"{pin_file} has no PIN for officer {', '.join(missing)}")
        return {b: pins[b] for b in badges} if badges else pins
    if interactive is None:
        interactive = sys.stdin.isatty()
    if not interactive:
        raise PinError(
            f"no PIN for officer {', '.join(badges) or '(none named)'}: stdin is not a "
            "terminal to ask at; put BADGE:PIN lines in a file only you can read "
            "(chmod 600) and give --pins FILE"
        )
    ask = prompt or getpass.getpass
    pins = {}
    for b in badges:
        pin = ask(f"PIN for officer {b}: ")
        if confirm and ask(f"PIN for officer {b} again: ") != pin:
            raise PinError(f"officer {b}: the two PINs typed differ")
        if not pin:
            raise PinError(f"officer {b}: no PIN typed")
        pins[b] = pin
    return pins
