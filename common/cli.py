"""What every part of the command line shares: the user-error type and the decorator that
turns file-system errors into one readable line."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

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
