"""What every part of the command line shares: the user-error type and the decorator that
turns file-system errors into one readable line."""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from common.pins import PinError, read_pins, refuse_pin_in_argv
from evidence.names import ProvisionError


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


Handler = Callable[[argparse.Namespace], int]


def user_errors(fn: Handler) -> Handler:
    """File-system errors are user errors too: name the file, no traceback."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise ProvisionError(f"{where}{e.strerror or e}") from None

    return run


class Deprecated(argparse.Action):
    """An old spelling that still works for one release, with a note saying the new one.

    Example::

        q.add_argument("--agency", dest="agency")
        q.add_argument("--dir", dest="agency", action=Deprecated, new="--agency")
    """

    def __init__(self, option_strings: list[str], dest: str, new: str, **kw: object) -> None:
        self.new = new
        kw.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kw)  # type: ignore[arg-type]

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        old = option_string or f"the {self.dest} argument"
        print(
            f"{parser.prog}: note: {old} is deprecated and will be removed in the next "
            f"release; use {self.new}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def add_pin_options(p: argparse.ArgumentParser, option: str, what: str) -> None:
    """``option BADGE`` (repeatable) and ``--pins FILE``: officers' PINs never on the
    command line (common.pins)."""
    p.add_argument(option, action="append", default=[], metavar="BADGE", help=what)
    p.add_argument(
        "--pins",
        type=Path,
        metavar="FILE",
        help="the officers' PINs, BADGE:PIN lines, in a file of mode 0600 "
        "(default: each PIN is asked for at the terminal)",
    )


def officers_pins(
    option: str, values: Sequence[str], pin_file: Path | None, confirm: bool = False
) -> dict[str, str]:
    """The PIN of each officer named with ``option`` (an old ``BADGE:PIN`` refused)."""
    try:
        return read_pins(badges_of(option, values), pin_file, confirm=confirm)
    except PinError as e:
        raise CliError(str(e)) from None


def badges_of(option: str, values: Sequence[str]) -> list[str]:
    """The badges named with ``option``, each once; CliError for an old ``BADGE:PIN``
    (checked first, before any other error can hide it)."""
    try:
        return list(dict.fromkeys(refuse_pin_in_argv(option, v) for v in values))
    except PinError as e:
        raise CliError(str(e)) from None


def add_progress_options(p: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--progress``: whether a long operation shows how far it is
    (common.progress; by default only when stderr is a terminal)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quiet", action="store_true", help="show no progress on stderr")
    g.add_argument(
        "--progress",
        action="store_true",
        help="show progress on stderr even when it is not a terminal (a line per tenth)",
    )


def progress_wanted(args: argparse.Namespace) -> bool | None:
    """From :func:`add_progress_options`: True, False, or None (only on a terminal)."""
    return False if args.quiet else (True if args.progress else None)


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")  # :mod:`x`, :func:`~a.b`


def plain_text(doc: str) -> str:
    """A docstring's reST as plain text, for --help: ``x`` and :role:`x` as x, a
    closing ``::`` as ``:``."""
    text = _ROLE.sub(r"\1", doc).replace("``", "")
    return re.sub(r"::(\s*)$", r":\1", text, flags=re.MULTILINE)
