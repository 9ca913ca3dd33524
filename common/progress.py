"""Progress of what a user waits for (verify, export, lay-out), one way for all of them:
the work calls a :data:`Progress` callback per step of each phase; the command shows it on
stderr, as a bar on a terminal, as a few plain lines when asked for elsewhere (a log), and
not at all when stderr is not a terminal and nobody asked, or with ``--quiet``.

Example::

    with progress_shown(wanted=None) as progress:     # None: only on a terminal
        export_session(DeviceDirectory(root), None, out, progress=progress)
    # the work, step by step:
    progress("verifying", 3, 61)                      # 3 of 61 segments done
    progress("writing the custody summary", 0, None)  # a phase of unknown length begins
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

Progress = Callable[[str, int, int | None], None]  # (phase, steps done, steps in all or None)
VERIFYING = "verifying"  # reading and checking every segment (verify, export)


def worth_a_line(done: int, total: int | None, said: int) -> bool:
    """Off a terminal, a line at a phase's start, its end and each tenth of the way (of
    a phase of unknown length, its start only): ``said`` is the steps the last line
    reported (-1: none yet)."""
    if said < 0:
        return True
    if total is None or done == said:
        return False
    return done >= total or done * 10 // max(total, 1) > said * 10 // max(total, 1)


class _Lines:
    """Plain lines, for a stderr that is not a terminal (a log file, a pipe)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.phase, self.said = stream, "", -1

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if phase != self.phase:
            self.phase, self.said = phase, -1
        if worth_a_line(done, total, self.said):
            of = f"/{total}" if total is not None else ""
            print(f"{phase}: {done}{of}", file=self.stream, flush=True)
            self.said = done

    def close(self) -> None:
        pass


class _Bars:
    """One bar per phase on a terminal, replaced when the next phase begins."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.phase = stream, ""
        self.bar: Any = None

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        from tqdm import tqdm

        if phase != self.phase or self.bar is None or self.bar.total != total:
            self.close()
            self.phase = phase
            self.bar = tqdm(total=total, unit="step", desc=phase, file=self.stream, leave=False)
        self.bar.update(done - self.bar.n)
        if total is not None and done >= total:
            self.close()  # gone before the command prints its result on the same terminal

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def progress_shown(
    wanted: bool | None = None, stream: TextIO | None = None
) -> Iterator[Progress | None]:
    """A :data:`Progress` that shows on ``stream`` (stderr): ``wanted`` None, only if it
    is a terminal; True, always (plain lines off a terminal); False, never (None)."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    if wanted is False or (wanted is None and not tty):
        yield None
        return
    shown = _Bars(stream) if tty else _Lines(stream)
    try:
        yield shown
    finally:
        shown.close()
