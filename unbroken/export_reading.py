"""What an export reads, and what it fails with: the agency's evidence key, the chain's
entries, the session asked for, and each segment's MP4, decrypted when it is encrypted.
Whatever makes the export impossible is an :class:`ExportError`; evidence that failed
verification, not accepted, an :class:`ExportRefused` naming each problem."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nacl.public

from agent import evidence_dir
from agent.evidence_dir import EvidenceDirError, load_chain, unsafe_path
from evidence.custody_tracks import SealedSegment
from evidence.encryption import EncryptionError, decrypt, is_encrypted, key_id
from evidence.seal import Entry
from evidence.verify import wrong_evidence_key
from evidence.verify_report import Problem

# How to give the key, said when footage is encrypted and none was given.
NO_KEY = (
    "give the agency's evidence key with --evidence-key FILE (AGENCY/private/evidence.key), "
    "or export where it is kept from the store (unbroken store export)"
)


class ExportError(Exception):
    """The export cannot be made (no such session, outputs in the way, media unusable)."""


class ExportRefused(ExportError):
    """The evidence failed verification and the user did not accept that."""

    def __init__(self, message: str, problems: list[Problem]) -> None:
        super().__init__(message)
        self.problems = problems


def evidence_key_problem(root: Path, key: nacl.public.PrivateKey) -> str | None:
    """Why ``key`` cannot decrypt ``root``'s segments (None: they are sealed to it)."""
    return wrong_evidence_key(load_chain(root), key_id(key.public_key))


def read_evidence_key(path: Path) -> nacl.public.PrivateKey:
    """The agency's evidence key (``AGENCY/private/evidence.key``), or ExportError."""
    try:
        return evidence_dir.read_evidence_key(path)
    except (EvidenceDirError, OSError) as e:
        raise ExportError(str(e)) from None


def chain_entries(root: Path) -> list[Entry]:
    """The chain's valid entries in order, one per sequence number (verification has
    named any duplicate)."""
    by_seq: dict[int, Entry] = {}
    for _, e in load_chain(root):
        if isinstance(e, Entry):
            by_seq.setdefault(e.seq, e)
    return [by_seq[s] for s in sorted(by_seq)]


def pick_session(sessions: list[str], wanted: str | None, root: Path) -> str:
    listing = ", ".join(sessions) or "none"
    if wanted is None:
        if len(sessions) != 1:
            raise ExportError(
                f"{root} holds {len(sessions)} sessions ({listing}): name one with --session"
            )
        return sessions[0]
    if wanted not in sessions:
        raise ExportError(f"{root} holds no session {wanted!r}; its sessions: {listing}")
    return wanted


def usable(root: Path, file: str) -> bool:
    return unsafe_path(root, file) is None and (root / file).is_file()


def check_key(
    root: Path,
    segments: Mapping[str, list[SealedSegment]],
    key: nacl.public.PrivateKey | None,
    no_key: str,
) -> None:
    """Encrypted footage needs the agency's evidence key: say so before writing anything."""
    if key is not None:
        return
    for segs in segments.values():
        for s in segs:
            path = root / s.manifest.file
            if usable(root, s.manifest.file):
                with open(path, "rb") as f:
                    head = f.read(16)
                if is_encrypted(head):
                    raise ExportError(
                        f"{s.manifest.file} is encrypted to the agency's evidence key (key id "
                        f"{head[8:16].hex()}): {no_key}"
                    )


class SegmentReader:
    """A segment's MP4, decrypted if it is encrypted. A file that cannot be read stops
    the export, unless the user accepted problems: then it is left out, and said."""

    def __init__(self, root: Path, key: nacl.public.PrivateKey | None, accept: bool) -> None:
        self.root, self.key, self.accept = root, key, accept

    def open(self, file: str) -> tuple[Any, str | None]:
        """The MP4 to demux (a path or the decrypted bytes), or None and why not."""
        path = self.root / file
        if not usable(self.root, file):
            return None, "the file is not in the evidence directory"
        with open(path, "rb") as f:
            encrypted = is_encrypted(f.read(16))
        if not encrypted:
            return str(path), None
        try:
            assert self.key is not None  # check_key saw to it
            return io.BytesIO(decrypt(path.read_bytes(), self.key).plain), None
        except EncryptionError as e:
            if not self.accept:
                raise ExportError(f"{file}: {e}") from None
            return None, f"does not decrypt: {e}"


def refusal(problems: list[Problem], absent: list[str], session: str) -> str:
    lines = [f"session {session}: the evidence failed verification, nothing was exported:"]
    lines += [f"  {p.code}: {p.where}: {p.message}" for p in problems]
    if absent:
        lines.append(
            f"  {len(absent)} segment(s) are no longer here (freed after the agency's receipt): "
            "export the session from the store (unbroken store export)"
        )
    lines.append("--accept-problems exports it anyway; the custody summary then says why not")
    return "\n".join(lines)
