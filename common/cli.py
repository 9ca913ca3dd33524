"""What every part of the command line shares: the user-error type and the decorator that
turns file-system errors into one readable line."""

from __future__ import annotations

import argparse
import functools
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
