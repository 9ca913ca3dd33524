"""Verifying an :class:`Archive`: read what is asked (the whole chain, or one session's
part of it), find what each segment's media holds, and let :func:`evidence.verify.
verify_chain` decide.

One session costs what it holds: its entries, the entry before its first and the one
after its last (the links that prove its place), the key rotations before it (which key
signs them), and its own segments' media; never another session's.

Example::

    report = verify_archive(DeviceDirectory(root), pubkey=None)            # everything
    report = verify_archive(archive, pinned, evidence_key=key, session=sid)  # one session
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import nacl.public
import nacl.signing

from common.archive.archive import Archive, ArchiveError, Named
from common.archive.media import read_stream
from common.progress import VERIFYING, Progress
from evidence.chain_keys import key_in_force
from evidence.media_check import MediaFacts
from evidence.receipt import ReceiptError, check_receipt
from evidence.seal import Entry
from evidence.verify import verify_chain
from evidence.verify_report import Problem, Report


@dataclass
class ChainView:
    """The part of a chain a verification reads, and how to check it."""

    entries: list[Named]
    key: nacl.signing.VerifyKey  # in force at first_seq
    pinned: bool
    first_seq: int = 1
    session: str | None = None
    # each segment file to check (of ``session`` only, when given): the SHA-256 and size
    # sealed by the first entry naming it
    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)  # found before the view

    def valid(self) -> list[Entry]:
        """Its valid entries in order, one per sequence number (verification names any
        duplicate)."""
        by_seq: dict[int, Entry] = {}
        for _, e in self.entries:
            if isinstance(e, Entry):
                by_seq.setdefault(e.seq, e)
        return [by_seq[s] for s in sorted(by_seq)]


def chain_view(
    archive: Archive, pubkey: nacl.signing.VerifyKey | None, session: str | None = None
) -> ChainView:
    """What to read to verify ``archive`` (``session``'s part of it, when given), checked
    against ``pubkey`` or the key the archive pins (neither: the key the chain's first
    entry read names)."""
    pin = pubkey or archive.pinned_key()
    problems: list[Problem] = []
    if session is None:
        entries, first = archive.entries(), 1
    else:
        span = archive.session_span(session)
        if span is None:
            raise ArchiveError(f"{archive.describe()} holds no session {session!r}")
        first = max(1, span[0] - 1)
        entries = archive.entries(first, span[1] + 1)
    if pin is None:
        key = _first_key(archive, entries)
    elif first > 1:
        rotations = [
            (n, e)
            for n, e in archive.entries_of_kind({"key_rotation"}, first)
            if isinstance(e, Entry)
        ]
        key = key_in_force(
            rotations,
            pin,
            lambda code, where, message, s=None: problems.append(Problem(code, where, message, s)),
        )
    else:
        key = pin
    files: dict[str, tuple[str, int]] = {}
    for _, e in sorted(
        ((n, e) for n, e in entries if isinstance(e, Entry)), key=lambda ne: ne[1].seq
    ):
        if e.kind == "segment" and (session is None or e.session == session):
            name, sha, size = e.body.get("file"), e.body.get("sha256"), e.body.get("size")
            if isinstance(name, str) and isinstance(sha, str):
                files.setdefault(name, (sha, size if isinstance(size, int) else 0))
    return ChainView(entries, key, pin is not None, first, session, files, problems)


def _first_key(archive: Archive, entries: list[Named]) -> nacl.signing.VerifyKey:
    """Unpinned, the chain is checked from the key its first entry read names: after a
    rotation the device's newest key is another, and the archive keeps every earlier one."""
    valid = [e for _, e in entries if isinstance(e, Entry)]
    first = min(valid, key=lambda e: e.seq, default=None)
    if first is not None and (key := archive.public_key(str(first.payload["key"]))):
        return key
    return archive.newest_key()


def judge(
    archive: Archive,
    view: ChainView,
    media: Mapping[str, MediaFacts | None],
    strict: bool = False,
) -> Report:
    """The report on ``view``, given what was found in each of its files."""
    unsafe = {f: why for f in view.files if (why := archive.unsafe(f))}
    named = {
        str(e.body.get("file"))
        for _, e in view.entries
        if isinstance(e, Entry) and e.kind == "segment"
    }
    report = verify_chain(
        view.entries,
        view.key,
        {f: media.get(f) for f in view.files},
        pinned=view.pinned,
        strict=strict,
        unexpected_files=archive.unexpected_files(named, view.session),
        unsafe_paths=unsafe,
        archived=_archived(archive, view, {f for f in view.files if media.get(f) is None}),
        first_seq=view.first_seq,
        session=view.session,
    )
    report.problems[:0] = view.problems
    return report


def _archived(archive: Archive, view: ChainView, absent: set[str]) -> frozenset[str]:
    """SHA-256s of absent segments for which a receipt verifies with the agency's key."""
    agency = archive.agency_key() if absent else None
    if agency is None:
        return frozenset()
    out = set()
    for _, e in view.entries:
        if isinstance(e, Entry) and e.kind == "segment" and e.body.get("file") in absent:
            sha = str(e.body["sha256"])
            receipt = archive.stored_receipt(sha)
            if receipt is None:
                continue
            try:
                r = check_receipt(receipt, agency, device=e.payload["device"], sha256=sha)
            except ReceiptError:
                continue
            if r.get("entry_hash") == e.hash:
                out.add(sha)
    return frozenset(out)


def held_media(
    archive: Archive,
    file: str,
    sealed: tuple[str, int],
    evidence_key: nacl.public.PrivateKey | None,
    decode: bool = False,
) -> tuple[MediaFacts | None, bytes | None]:
    """What is held as ``file`` (None: nothing, or a name not to follow), read once, and
    its MP4 when it can be had."""
    sha, size = sealed
    if archive.unsafe(file) or not archive.holds(file, sha):
        return None, None
    try:
        with archive.open_media(file, sha) as f:
            return read_stream(f, size, evidence_key, decode)
    except FileNotFoundError:
        return None, None


def verify_archive(
    archive: Archive,
    pubkey: nacl.signing.VerifyKey | None = None,
    strict: bool = False,
    evidence_key: nacl.public.PrivateKey | None = None,
    progress: Progress | None = None,
    session: str | None = None,
    decode: bool = False,
) -> Report:
    """Read and check ``archive`` (``session`` only, when given), hashing every segment
    it seals and counting its packets (``decode``: decoding every picture and sound;
    encrypted ones only with the agency's ``evidence_key``, else by their framing).
    ``progress`` hears of each segment read (phase ``verifying``)."""
    view = chain_view(archive, pubkey, session)
    media: dict[str, MediaFacts | None] = {}
    files = sorted(view.files)
    for n, file in enumerate(files, 1):
        media[file] = held_media(archive, file, view.files[file], evidence_key, decode)[0]
        if progress is not None:
            progress(VERIFYING, n, len(files))
    return judge(archive, view, media, strict)
