"""Files both sides write and read: atomic writes, and TOML validated into strict models.

Example::

    write_atomic(root / "identity.json", data, mode=0o600)   # all or nothing, durable
    config = load_toml(path, DeviceConfig)                    # or ConfigError naming each field
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A configuration file is missing, not TOML, or has a wrong or unknown field."""


M = TypeVar("M", bound=BaseModel)


def load_toml(
    path: Path,
    model: type[M],
    what: str = "configuration",
    prepare: Callable[[dict[str, Any]], None] | None = None,
    where: Callable[[tuple[int | str, ...]], str] | None = None,
    error: type[ConfigError] = ConfigError,
) -> M:
    """A TOML file validated into ``model``; ``error`` names the file and each field.
    ``prepare`` may adjust the data first (e.g. resolve relative paths); ``where`` names a
    field's location (default: dotted)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid TOML: {e}") from None
    if prepare is not None:
        prepare(data)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        name = where or (lambda loc: ".".join(str(p) for p in loc) or "(top)")
        lines = [
            f"  {name(err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in e.errors()
        ]
        raise error(f"{path}: invalid {what}\n" + "\n".join(lines)) from None


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write via a temporary file, fsync, rename, fsync the directory: never half a file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unwritable_dir(path: Path) -> str | None:
    """Why ``path`` cannot be written into (made first if missing), or None if it can."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".unbroken-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return e.strerror or str(e)
    return None


def create_new(path: Path, mode: int = 0o644) -> BinaryIO:
    """A new file at ``path``, open for reading and writing: never an existing one, and
    never through a symbolic link there (one left in an output directory, dangling or not,
    would have the write land on its target). FileExistsError if anything is there."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    return os.fdopen(fd, "w+b")


def read_small(path: Path, cap: int, what: str) -> bytes:
    """The bytes of a small regular file (a key), read no further than ``cap``: a device
    or a huge file given where a key belongs is refused, never read whole. ConfigError
    naming ``what`` and why; FileNotFoundError as such."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file: not {what}")
        data = f.read(cap + 1)
    if len(data) > cap:
        raise ConfigError(f"{path}: larger than {cap} bytes: not {what}")
    return data
