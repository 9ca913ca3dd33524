"""A permission error said so that whoever met it can act: which user ran the command,
which file it could not read or write, which directory stopped it and whose that is, and
what to run instead. On a board the agent's data belongs to the service user
(``unbroken``), and an admin logged in as ``pi`` meets these first.

Example::

    denied("request.json.tmp", data=Path("/var/lib/unbroken"), command=argv)
    # cannot write request.json.tmp in /home/pi: permission denied for user unbroken
    # (/home/pi is pi:pi, mode 0700); write it where user unbroken can (e.g. under
    # /var/lib/unbroken), or to standard output with --out -
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
from collections.abc import Sequence
from pathlib import Path

from evidence.names import ProvisionError


def user_name(uid: int | None = None) -> str:
    uid = os.geteuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return f"gid {gid}"


def _whose(path: Path) -> tuple[str, str, str]:
    """Owner, group and mode of ``path`` ('?' where it cannot be looked at)."""
    try:
        st = path.stat()
    except OSError:
        return "?", "?", "?"
    return user_name(st.st_uid), _group_name(st.st_gid), f"{st.st_mode & 0o7777:04o}"


def _blocking(path: Path) -> Path | None:
    """The first directory on the way to ``path`` this process may not enter."""
    for d in reversed(path.parents):
        if not os.access(d, os.X_OK):
            return d
    return None


def _inside(path: Path, data: Path | None) -> bool:
    return data is not None and (path == data or data in path.parents)


def denied(
    filename: str | os.PathLike[str],
    data: Path | None = None,
    command: Sequence[str] = (),
    writing: bool | None = None,
) -> str:
    """One line for a refused open of ``filename`` by this process; ``data`` is the device
    data directory of the command, ``command`` its arguments (after ``unbroken``) for a
    command line to run instead; ``writing`` if the caller knows which it was."""
    me = user_name()
    path = Path(os.path.abspath(filename))
    data = Path(os.path.abspath(data)) if data is not None else None
    stop = _blocking(path)
    if writing is None and path.name.endswith(".tmp"):
        writing = True  # an atomic write's temporary file
    if stop is None:
        if path.exists():
            writing = os.access(path, os.R_OK) if writing is None else writing
            stop = path
        else:
            writing, stop = True, path.parent
    if writing:
        what = f"cannot write {path.name} in {path.parent}"
    else:
        what = f"cannot {'read' if writing is False else 'open'} {path}"
    owner, group, mode = _whose(stop)
    head = f"{what}: permission denied for user {me} ({stop} is {owner}:{group}, mode {mode})"
    return f"{head}; {_advice(path, data, command, me, bool(writing), stop)}"


def _group_may_read(path: Path, me: str) -> str | None:
    """The group that would let ``me`` read ``path`` if ``me`` joined it (None: none would,
    or ``me`` is in it already)."""
    try:
        st = path.stat()
        group = grp.getgrgid(st.st_gid)
    except (OSError, KeyError):
        return None
    needs = 0o050 if path.is_dir() else 0o040
    if st.st_mode & needs != needs or me in group.gr_mem or st.st_gid == os.getegid():
        return None
    return group.gr_name


def _advice(
    path: Path, data: Path | None, command: Sequence[str], me: str, writing: bool, stop: Path
) -> str:
    run = shlex.join(["unbroken", *command]) if command else "the same command"
    if _inside(path, data):
        assert data is not None
        agent, _, _ = _whose(data)
        if agent not in (me, "?"):
            tip = f"run it as the agent's user: sudo -u {agent} -- {run}"
            group = None if writing else _group_may_read(stop, me)
            if group is not None:
                tip += (
                    f"; or, to read it as {me}, join group {group}: "
                    f"sudo usermod -a -G {group} {me} (then log in again)"
                )
            return tip
        return (
            f"some of {data} is not {me}'s (an earlier command run as root?): give it back "
            f"with sudo chown -R {me}: {data}"
        )
    where = f" (e.g. under {data})" if data is not None else ""
    if writing:
        return f"write it where user {me} can{where}, or to standard output with --out -"
    given = str(path)
    stdin = [("-" if Path(os.path.abspath(a)) == path else a) for a in command]
    if stdin != list(command):
        given = f"{shlex.join(['unbroken', *stdin])} < {path}"
        return f"put it where user {me} can read it{where}, or give it on standard input: {given}"
    return f"put it where user {me} can read it{where}"


def check_writable(out: Path, data: Path | None = None) -> None:
    """Refuse, naming the user and the directory, a file this process could not write."""
    try:
        there = out.parent.is_dir()
    except PermissionError:
        there = True  # it exists, and the denial says where the way is shut
    if not there:
        raise ProvisionError(f"{out.parent}: no such directory for the request")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise ProvisionError(denied(out, data, writing=True))
