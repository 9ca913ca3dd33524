"""The on-disk evidence directory: where each file lives, and reading it back for checks.

Layout (see docs/evidence-format.md)::

    DIR/device.pub                      the device's Ed25519 public key (hex)
    DIR/chain/0000000001.json           one signed entry per file, by sequence number
    DIR/segments/<session>/000000.mp4   sealed media, named by session and index
    DIR/journal.db                      the device's index (SQLite), and the store's
                                        receipts: needed only to verify media freed
    DIR/private/                        the device key (0600); never part of evidence
    DIR/spool/                          the pre-event buffer and the segment being written
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import nacl.exceptions
import nacl.public
import nacl.signing

from agent.media import probe
from common.progress import VERIFYING, Progress
from evidence.manifest import MAIN_TRACK
from evidence.media_check import MediaFacts
from evidence.protocol import MAX_JSON
from evidence.receipt import ReceiptError, check_receipt
from evidence.seal import Entry, SealError
from evidence.verify import verify_chain
from evidence.verify_report import Report

PUBKEY = "device.pub"
CHAIN = "chain"
SEGMENTS = "segments"
SPOOL = "spool"
PRIVATE = "private"
KEYS = "keys"  # every public key the device has had, by key id


class EvidenceDirError(RuntimeError):
    """The directory cannot be read as evidence at all (absent, no chain, bad key file)."""


def entry_name(seq: int) -> str:
    return f"{CHAIN}/{seq:010d}.json"


def segment_name(session: str, index: int, track: str = MAIN_TRACK) -> str:
    """A body recorder's one track sits in the session's folder; a room's tracks each in
    a folder of their own."""
    if track == MAIN_TRACK:
        return f"{SEGMENTS}/{session}/{index:06d}.mp4"
    return f"{SEGMENTS}/{session}/{track}/{index:06d}.mp4"


def read_public_key(path: Path) -> nacl.signing.VerifyKey:
    try:
        text = path.read_text(encoding="ascii").strip()
        return nacl.signing.VerifyKey(bytes.fromhex(text))
    except FileNotFoundError:
        raise EvidenceDirError(f"{path}: public key file not found") from None
    except (ValueError, UnicodeDecodeError, nacl.exceptions.CryptoError):
        raise EvidenceDirError(f"{path}: not an Ed25519 public key (64 hex digits)") from None


def load_chain(root: Path) -> list[tuple[str, Entry | SealError]]:
    """Every file in ``chain/``, parsed. Only regular files of at most MAX_JSON bytes are
    read: a symbolic link (to ``/dev/zero``, say) or a huge file is a malformed entry."""
    chain = root / CHAIN
    if not chain.is_dir():
        raise EvidenceDirError(f"{root}: no {CHAIN}/ directory, not an evidence directory")
    out: list[tuple[str, Entry | SealError]] = []
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


def _archived(
    root: Path, absent: set[str], entries: list[tuple[str, Entry | SealError]]
) -> frozenset[str]:
    """SHA-256s of absent segments for which a receipt verifies with the agency key the
    device was provisioned with (``DATA/provision/agency.pub``)."""
    agency_pub = root / "provision" / "agency.pub"
    if not absent or not agency_pub.is_file():
        return frozenset()
    agency = read_public_key(agency_pub)
    out = set()
    for _, e in entries:
        if isinstance(e, Entry) and e.kind == "segment" and e.body.get("file") in absent:
            sha = str(e.body["sha256"])
            receipt = stored_receipt(root, sha)
            if receipt is None:
                continue
            try:
                r = check_receipt(receipt, agency, device=e.payload["device"], sha256=sha)
            except ReceiptError:
                continue
            if r.get("entry_hash") == e.hash:
                out.add(sha)
    return frozenset(out)


def stored_receipt(root: Path, sha256: str) -> bytes | None:
    """The receipt the device keeps for ``sha256`` (unverified: check it with the agency
    key), from its journal, or from DATA/receipts/ where earlier versions kept them."""
    journal = root / "journal.db"
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
    legacy = root / "receipts" / f"{sha256}.json"
    try:
        return legacy.read_bytes() if legacy.is_file() and not legacy.is_symlink() else None
    except OSError:
        return None


def _first_key(root: Path, entries: list[tuple[str, Entry | SealError]]) -> Path:
    """Unpinned, the chain is checked from the key that signed its first entry: after a
    rotation DATA/device.pub is the newest key, and DATA/keys/ keeps every earlier one."""
    first = min((e for _, e in entries if isinstance(e, Entry)), key=lambda e: e.seq, default=None)
    if first is not None:
        old = root / KEYS / f"{first.payload['key']}.pub"
        if old.is_file():
            return old
    return root / PUBKEY


def verify_dir(
    root: Path,
    pubkey: Path | None,
    strict: bool = False,
    evidence_key: nacl.public.PrivateKey | None = None,
    progress: Progress | None = None,
) -> Report:
    """Read and check an evidence directory; decoding every segment it seals (encrypted
    ones only with the agency's ``evidence_key``; without it, by their framing).
    ``progress`` hears of each segment read (phase ``verifying``)."""
    root = Path(root)
    if not root.is_dir():
        raise EvidenceDirError(f"{root}: no such directory")
    entries = load_chain(root)
    key = read_public_key(pubkey if pubkey else _first_key(root, entries))
    referenced = {
        str(e.body.get("file")) for _, e in entries if isinstance(e, Entry) and e.kind == "segment"
    }
    media: dict[str, MediaFacts | None] = {}
    unsafe: dict[str, str] = {}
    files = sorted(referenced)
    for n, rel in enumerate(files, 1):
        p = root / rel
        # A manifest must not point outside the directory (a foreign manifest might).
        if why := unsafe_path(root, rel):
            unsafe[rel] = why
            media[rel] = None
        else:
            media[rel] = probe(p, evidence_key) if p.is_file() else None
        if progress is not None:
            progress(VERIFYING, n, len(files))
    present = (
        {str(p.relative_to(root)) for p in (root / SEGMENTS).rglob("*") if p.is_file()}
        if (root / SEGMENTS).is_dir()
        else set()
    )
    return verify_chain(
        entries,
        key,
        media,
        pinned=pubkey is not None,
        strict=strict,
        unexpected_files=sorted(present - referenced),
        unsafe_paths=unsafe,
        archived=_archived(root, {f for f, m in media.items() if m is None}, entries),
    )


def read_evidence_key(path: Path) -> nacl.public.PrivateKey:
    """The agency's evidence key (X25519, hex): what decrypts footage."""
    try:
        return nacl.public.PrivateKey(bytes.fromhex(path.read_text(encoding="ascii").strip()))
    except FileNotFoundError:
        raise EvidenceDirError(f"{path}: evidence key file not found") from None
    except (ValueError, UnicodeDecodeError, nacl.exceptions.CryptoError):
        raise EvidenceDirError(f"{path}: not an X25519 private key (64 hex digits)") from None
