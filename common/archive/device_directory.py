"""A device's data directory, or a copy of its card, read as an :class:`Archive`.

The chain's files are the evidence: sessions and their spans are found by reading them
(once, then kept), never from the device's own index. Only regular files of at most
MAX_JSON bytes are read as entries, and a manifest's file name is followed only if it
stays inside the directory and passes through no symbolic link. The layout's names are
:mod:`evidence.layout`'s.

Example::

    archive = DeviceDirectory(Path("/mnt/card"))
    archive.sessions()                       # ["3f2a...", ...]
    archive.entries(40, 52)                  # [("chain/0000000040.json", Entry), ...]
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import BinaryIO, TypeVar

import nacl.exceptions
import nacl.public
import nacl.signing

from common.archive.archive import Archive, ArchiveError, Named
from common.files import ConfigError, read_small
from evidence.layout import (
    AGENCY_PUB,
    CHAIN,
    JOURNAL,
    LEGACY_RECEIPTS,
    PUBKEY,
    SEGMENTS,
    entry_name,
    key_name,
)
from evidence.protocol import MAX_JSON
from evidence.seal import Entry, SealError


class DeviceDirectory(Archive):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ArchiveError(f"{root}: no such directory")
        self._chain: list[Named] | None = None

    def describe(self) -> str:
        return str(self.root)

    def _all(self) -> list[Named]:
        if self._chain is None:
            self._chain = load_chain(self.root)
        return self._chain

    def entries(self, first: int | None = None, last: int | None = None) -> list[Named]:
        if first is None and last is None:
            return list(self._all())
        if self._chain is None and first is not None and last is not None:
            return self._read_range(first, last)
        lo, hi = first or 1, last if last is not None else float("inf")
        return [(n, e) for n, e in self._all() if lo <= _seq(n, e) <= hi]

    def _read_range(self, first: int, last: int) -> list[Named]:
        if not (self.root / CHAIN).is_dir():
            raise ArchiveError(f"{self.root}: no {CHAIN}/ directory, not an evidence directory")
        out: list[Named] = []
        for seq in range(max(1, first), last + 1):
            name = entry_name(seq)
            if not os.path.lexists(self.root / name):
                continue
            try:
                out.append((name, Entry.from_json(read_capped(self.root / name, MAX_JSON))))
            except SealError as e:
                out.append((name, e))
        return out

    def entries_of_kind(self, kinds: Collection[str], before: int) -> list[Named]:
        return [
            (n, e)
            for n, e in self._all()
            if isinstance(e, Entry) and e.kind in kinds and e.seq < before
        ]

    def sessions(self) -> list[str]:
        return [
            str(e.session)
            for _, e in sorted(self._valid(), key=lambda ne: ne[1].seq)
            if e.kind == "session_open" and e.session
        ]

    def session_span(self, session: str) -> tuple[int, int] | None:
        seqs = [e.seq for _, e in self._valid() if e.session == session]
        return (min(seqs), max(seqs)) if seqs else None

    def _valid(self) -> list[tuple[str, Entry]]:
        return [(n, e) for n, e in self._all() if isinstance(e, Entry)]

    def open_media(self, file: str, sha256: str) -> BinaryIO:
        fd = os.open(self.root / file, os.O_RDONLY | os.O_NOFOLLOW)
        f = os.fdopen(fd, "rb")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            f.close()
            raise FileNotFoundError(f"{file}: not a regular file")
        return f

    def holds(self, file: str, sha256: str) -> bool:
        return (self.root / file).is_file()

    def unsafe(self, file: str) -> str | None:
        return unsafe_path(self.root, file)

    def public_key(self, key_id: str) -> nacl.signing.VerifyKey | None:
        path = self.root / key_name(key_id)
        return read_public_key(path) if path.is_file() else None

    def newest_key(self) -> nacl.signing.VerifyKey:
        return read_public_key(self.root / PUBKEY)

    def stored_receipt(self, sha256: str) -> bytes | None:
        """From the device's journal, or from DATA/receipts/ where earlier versions kept
        them."""
        journal = self.root / JOURNAL
        if journal.is_file() and not journal.is_symlink():
            try:
                conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
                try:
                    row = conn.execute(
                        "select receipt from receipts where sha256 = ?", (sha256,)
                    ).fetchone()
                finally:
                    conn.close()
                if row and isinstance(row[0], str):
                    return row[0].encode()
            except sqlite3.Error:
                pass
        legacy = self.root / LEGACY_RECEIPTS / f"{sha256}.json"
        try:
            return legacy.read_bytes() if legacy.is_file() and not legacy.is_symlink() else None
        except OSError:
            return None

    def agency_key(self) -> nacl.signing.VerifyKey | None:
        path = self.root / AGENCY_PUB
        return read_public_key(path) if path.is_file() else None

    def unexpected_files(self, named: Iterable[str], session: str | None = None) -> list[str]:
        top = self.root / SEGMENTS / session if session else self.root / SEGMENTS
        if not top.is_dir() or top.is_symlink():
            return []
        present = {str(p.relative_to(self.root)) for p in top.rglob("*") if p.is_file()}
        return sorted(present - set(named))


def _seq(name: str, e: Entry | SealError) -> int:
    if isinstance(e, Entry):
        return e.seq
    stem = name.rsplit("/", 1)[-1].removesuffix(".json")
    return int(stem) if stem.isdigit() else 0


def load_chain(root: Path) -> list[Named]:
    """Every file in ``chain/``, parsed. Only regular files of at most MAX_JSON bytes are
    read: a symbolic link (to ``/dev/zero``, say) or a huge file is a malformed entry."""
    chain = root / CHAIN
    if not chain.is_dir():
        raise ArchiveError(f"{root}: no {CHAIN}/ directory, not an evidence directory")
    out: list[Named] = []
    for p in sorted(chain.iterdir()):
        name = f"{CHAIN}/{p.name}"
        try:
            out.append((name, Entry.from_json(read_capped(p, MAX_JSON))))
        except SealError as e:
            out.append((name, e))
    return out


def read_capped(path: Path, cap: int) -> bytes:
    """The bytes of a regular file no larger than ``cap``, not followed through a link;
    SealError naming why not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if path.is_symlink():
            raise SealError("a symbolic link, not a regular file") from None
        raise SealError(f"unreadable: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SealError("not a regular file")
        if st.st_size > cap:
            raise SealError(f"{st.st_size} bytes, more than an entry may have ({cap})")
        try:
            return f.read(cap + 1)[:cap]
        except OSError as e:
            raise SealError(f"unreadable: {e.strerror}") from None


def unsafe_path(root: Path, rel: str) -> str | None:
    """Why a manifest's file name must not be followed (None: a plain path inside)."""
    p = root / rel
    if not p.resolve().is_relative_to(root.resolve()):
        return "points outside the evidence directory"
    for part in (p, *p.parents):
        if part == root:
            break
        if part.is_symlink():
            return "is reached through a symbolic link"
    return None


KEY_FILE_BYTES = 4096  # a key file is 64 hex digits and a newline; nothing is read past this


def read_public_key(path: Path) -> nacl.signing.VerifyKey:
    """A device's (or the agency's) Ed25519 public key (hex)."""
    return _read_key(path, "public key", "an Ed25519 public key", nacl.signing.VerifyKey)


def read_evidence_key(path: Path) -> nacl.public.PrivateKey:
    """The agency's evidence key (X25519, hex): what decrypts footage."""
    return _read_key(path, "evidence key", "an X25519 private key", nacl.public.PrivateKey)


K = TypeVar("K")


def _read_key(path: Path, name: str, what: str, make: Callable[[bytes], K]) -> K:
    """A key file: 64 hex digits, read no further than :data:`KEY_FILE_BYTES`."""
    what = f"{what} (64 hex digits)"
    try:
        return make(bytes.fromhex(read_small(path, KEY_FILE_BYTES, what).decode("ascii").strip()))
    except FileNotFoundError:
        raise ArchiveError(f"{path}: {name} file not found") from None
    except ConfigError as e:
        raise ArchiveError(str(e)) from None
    except (OSError, ValueError, UnicodeDecodeError, nacl.exceptions.CryptoError):
        raise ArchiveError(f"{path}: not {what}") from None
