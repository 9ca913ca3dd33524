"""What an export reads, and what it fails with: the agency's evidence key, the session
asked for, and each segment's MP4, read and decrypted once: what it holds is kept for
verification, its MP4 handed to the muxer. Whatever makes the export impossible is an
:class:`ExportError`; evidence that failed verification, not accepted, an
:class:`ExportRefused` naming each problem."""

from __future__ import annotations

from pathlib import Path

import nacl.public

from common.archive import device_directory
from common.archive.archive import Archive, ArchiveError
from common.archive.verify import held_media
from evidence.media_check import MediaFacts
from evidence.verify_report import Problem

# How to give the key, said when footage is encrypted and none was given.
NO_KEY = (
    "give the agency's evidence key with --evidence-key FILE (AGENCY/private/evidence.key), "
    "or export where it is kept from the store (unbroken store export)"
)
NOT_HELD = "the file is not in the evidence directory"


class ExportError(Exception):
    """The export cannot be made (no such session, outputs in the way, media unusable)."""


class ExportRefused(ExportError):
    """The evidence failed verification and the user did not accept that."""

    def __init__(self, message: str, problems: list[Problem]) -> None:
        super().__init__(message)
        self.problems = problems


def read_evidence_key(path: Path) -> nacl.public.PrivateKey:
    """The agency's evidence key (``AGENCY/private/evidence.key``), or ExportError."""
    try:
        return device_directory.read_evidence_key(path)
    except (ArchiveError, OSError) as e:
        raise ExportError(str(e)) from None


def pick_session(sessions: list[str], wanted: str | None, where: str) -> str:
    listing = ", ".join(sessions) or "none"
    if wanted is None:
        if len(sessions) != 1:
            raise ExportError(
                f"{where} holds {len(sessions)} sessions ({listing}): name one with --session"
            )
        return sessions[0]
    if wanted not in sessions:
        raise ExportError(f"{where} holds no session {wanted!r}; its sessions: {listing}")
    return wanted


class SegmentReader:
    """Each segment's file read and decrypted once: what it holds (for verification, in
    :attr:`facts`) and its MP4 for the muxer. A file that is not held, does not decrypt
    or does not demux is not muxed, and said why."""

    def __init__(
        self,
        archive: Archive,
        key: nacl.public.PrivateKey | None,
        sealed: dict[str, tuple[str, int]],
    ) -> None:
        self.archive, self.key, self.sealed = archive, key, sealed
        self.facts: dict[str, MediaFacts | None] = {}
        self.need_key: list[tuple[str, str]] = []  # (file, key id): encrypted, no key given

    def usable(self, file: str) -> bool:
        sha = self.sealed.get(file, ("", 0))[0]
        return self.archive.unsafe(file) is None and self.archive.holds(file, sha)

    def open(self, file: str) -> tuple[bytes | None, str | None]:
        """The MP4 to demux, or None and why not."""
        if file not in self.sealed:
            return None, NOT_HELD
        facts, plain = held_media(self.archive, file, self.sealed[file], self.key)
        self.facts[file] = facts
        if facts is None:
            return None, NOT_HELD
        if plain is not None and not facts.decode_error:
            return plain, None
        if facts.encrypted and self.key is None:
            self.need_key.append((file, facts.encrypted))
            return None, "encrypted to the agency's evidence key, which was not given"
        if facts.encrypted and facts.decode_error:
            return None, f"does not decrypt: {facts.decode_error}"
        return None, f"does not read: {facts.decode_error or 'other bytes than sealed'}"


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
