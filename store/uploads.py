"""Media uploads at the store: announce (init), chunks, finish, receipt; quotas and expiry.

An upload's state is in the database (``blobs``, ``chunks``, ``uploads``) and the partial
file, so any worker takes any message. A device has a quota of uploads in progress
(:class:`store.limits.Limits`); one left unfinished for ``expire_hours`` is dropped, its
partial file too, and the device, asking again, starts it over. A blob is placed before its
receipt is committed: one placed by a put that failed is removed again, and one a crash
left without a receipt is removed by the sweep (:meth:`Uploads.sweep`) after a grace period.

Example::

    uploads = Uploads(db, FileBlobs(path), Limits(), receipt_key, "store-1", certificate)
    uploads.init("bwc-1", init_bytes, now)      # -> [(reply topic, Missing...)]
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence

import nacl.signing

from evidence import protocol as p
from evidence.blob_messages import BlobFinish, BlobInit, Missing
from evidence.manifest import SegmentManifest, segment
from evidence.receipt import make_receipt
from evidence.seal import Entry, SealError
from store.blobs import BlobStore, Placed
from store.db import Database
from store.limits import Limits, Refused
from store.rejections import record_refusal

log = logging.getLogger(__name__)

MANIFEST_RETRY = 1.0  # seconds: a finish before its manifest arrived is asked again then
# A stored blob no receipt names is removed once this old (seconds): longer than any
# worker takes from placing a blob to committing its receipt.
SWEEP_GRACE = 3600.0

Reply = tuple[str, bytes]


class Uploads:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        limits: Limits,
        receipt_key: nacl.signing.SigningKey,
        name: str,
        certificate: bytes | None = None,
    ) -> None:
        self.db, self.blobs, self.limits = db, blobs, limits
        self.receipt_key, self.name, self.certificate = receipt_key, name, certificate
        # (device, session) of each receipt made, for the batch's summary line (Ingest)
        self.made: list[tuple[str, str | None]] = []

    def _blob(self, device: str, sha256: str) -> BlobInit:
        rows = self.db.query(
            "select * from blobs where device = ? and sha256 = ?", (device, sha256)
        )
        if not rows:
            raise Refused(
                "unknown_blob", f"chunk or finish for unknown blob {sha256[:16]}: send init first"
            )
        b = rows[0]
        return BlobInit(
            sha256=sha256,
            size=int(b["size"]),
            chunk_size=int(b["chunk_size"]),
            seq=int(b["seq"]),
            chunks=tuple(json.loads(b["chunks"])),
        )

    def _received(self, device: str, sha256: str) -> set[int]:
        rows = self.db.query(
            "select off from chunks where device = ? and sha256 = ?", (device, sha256)
        )
        return {int(r["off"]) for r in rows}

    def receipt_of(self, device: str, sha256: str) -> list[Reply]:
        """The stored receipt of a device's blob, as the reply that sends it (or none)."""
        rows = self.db.query(
            "select receipt from receipts where device = ? and sha256 = ?", (device, sha256)
        )
        return [(p.reply(device, "receipt"), rows[0]["receipt"].encode())] if rows else []

    def _forget_upload(self, device: str, sha256: str) -> None:
        """The upload's bookkeeping gone (its chunks, when it began); the blob's row stays."""
        self.db.execute("delete from chunks where device = ? and sha256 = ?", (device, sha256))
        self.db.execute("delete from uploads where device = ? and sha256 = ?", (device, sha256))

    def _last_seq(self, device: str) -> int:
        rows = self.db.query("select max(seq) as m from entries where device = ?", (device,))
        return int(rows[0]["m"] or 0)

    def _check_quota(self, device: str, size: int) -> None:
        (row,) = self.db.query(
            "select count(*) as n, coalesce(sum(size), 0) as b from blobs"
            " where device = ? and complete is null",
            (device,),
        )
        if refusal := self.limits.quota_refusal(int(row["n"]), int(row["b"]), size):
            raise refusal

    def init(self, device: str, payload: bytes, now: float) -> list[Reply]:
        init = BlobInit.parse(payload)
        if receipt := self.receipt_of(device, init.sha256):
            return receipt  # already stored: the device lost our receipt, send it again
        if refusal := self.limits.blob_refusal(init.size, init.seq, self._last_seq(device)):
            raise refusal
        chunks = json.dumps(list(init.chunks))
        known = self.db.query(
            "select 1 from blobs where device = ? and sha256 = ?", (device, init.sha256)
        )
        if not known:
            self._check_quota(device, init.size)
            with self.db.transaction(durable=False):
                self.db.execute(
                    "insert into blobs values (?, ?, ?, ?, ?, ?, null) on conflict do nothing",
                    (device, init.sha256, init.seq, init.size, init.chunk_size, chunks),
                )
                self.db.execute(
                    "insert into uploads values (?, ?, ?) on conflict do nothing",
                    (device, init.sha256, now),
                )
        known_init = self._blob(device, init.sha256)
        if (known_init.size, known_init.chunk_size, known_init.chunks) != (
            init.size,
            init.chunk_size,
            init.chunks,
        ):
            # A device restarted with another chunk size: start the blob over.
            with self.db.transaction():
                self.db.execute(
                    "delete from chunks where device = ? and sha256 = ?", (device, init.sha256)
                )
                self.db.execute(
                    "update blobs set size = ?, chunk_size = ?, chunks = ?, seq = ?"
                    " where device = ? and sha256 = ?",
                    (init.size, init.chunk_size, chunks, init.seq, device, init.sha256),
                )
            self.blobs.discard(device, init.sha256)
        lacking = init.lacking(self._received(device, init.sha256))
        missing = Missing(sha256=init.sha256, offsets=lacking)
        return [(p.reply(device, "missing"), missing.to_bytes())]

    def chunk(self, device: str, sha256: str, offset_text: str, data: bytes) -> list[Reply]:
        p.check_sha256(sha256, "chunk topic")
        if not offset_text.isdigit() or len(offset_text) > 16:
            raise Refused("malformed", f"chunk offset {offset_text[:20]!r} is not a number")
        init = self._blob(device, sha256)
        offset = int(offset_text)
        expected = init.chunk_length(offset)
        if len(data) != expected:
            raise Refused(
                "malformed", f"chunk at {offset} has {len(data)} bytes, expected {expected}"
            )
        if hashlib.sha256(data).hexdigest() != init.chunk_hash(offset):
            raise Refused(
                "malformed",
                f"chunk at {offset} of {sha256[:16]} does not match its hash "
                "(altered in transit): send it again",
            )
        self.blobs.write_chunk(device, sha256, offset, data)
        with self.db.transaction(durable=False):
            self.db.execute(
                "insert into chunks values (?, ?, ?) on conflict do nothing",
                (device, sha256, offset),
            )
        return []

    def finish(self, device: str, payload: bytes, now: float) -> list[Reply]:
        sha256 = BlobFinish.parse(payload).sha256
        if receipt := self.receipt_of(device, sha256):
            return receipt
        init = self._blob(device, sha256)
        lacking = init.lacking(self._received(device, sha256))
        if lacking:
            missing = Missing(sha256=sha256, offsets=lacking, reason="incomplete")
            return [(p.reply(device, "missing"), missing.to_bytes())]
        # On either branch of a fork: both are kept, so both are receipted.
        manifests = self.db.query(
            "select hash, session, entry from entries where device = ? and seq = ?"
            " union all select hash, session, entry from forks where device = ? and seq = ?",
            (device, init.seq, device, init.seq),
        )
        if not manifests:  # on its way, maybe through another worker: ask again soon
            reason = f"manifest entry {init.seq} not received"
            missing = Missing(sha256=sha256, offsets=[], reason=reason, retry=MANIFEST_RETRY)
            return [(p.reply(device, "missing"), missing.to_bytes())]
        manifest = [m for m in manifests if _seals(m["entry"], sha256, init.size)]
        if not manifest:
            raise Refused(
                "malformed", f"entry {init.seq} does not seal blob {sha256[:16]} of {init.size} B"
            )
        placed = self.blobs.put_partial(device, sha256, init.size)
        if placed is None:
            with self.db.transaction():
                self.db.execute(
                    "delete from chunks where device = ? and sha256 = ?", (device, sha256)
                )
            self.blobs.discard(device, sha256)
            reason = "assembled blob does not match: resend"
            missing = Missing(sha256=sha256, offsets=init.offsets(), reason=reason)
            return [(p.reply(device, "missing"), missing.to_bytes())]
        try:
            with self.db.transaction():
                self._forget_upload(device, sha256)
                m = manifest[0]
                return self.receipted(
                    device, init.seq, sha256, init.size, m["hash"], m["session"], now
                )
        except Exception:
            self.withdraw_unclaimed([placed])  # placed, not receipted: the device sends again
            raise

    def receipted(
        self,
        device: str,
        seq: int,
        sha256: str,
        size: int,
        entry_hash: str,
        session: str | None,
        now: float,
    ) -> list[Reply]:
        """Sign and keep the receipt of a blob stored in place (inside the caller's
        transaction), and the reply that sends it: the one stored, if two workers raced."""
        data = make_receipt(
            self.receipt_key,
            device=device,
            sha256=sha256,
            size=size,
            entry_seq=seq,
            entry_hash=entry_hash,
            session=session,
            stored_at=now,
            store=self.name,
            certificate=self.certificate,
        )
        self.db.execute(
            "insert into receipts values (?, ?, ?, ?, ?) on conflict do nothing",
            (device, sha256, seq, now, data.decode()),
        )
        self.db.execute(
            "insert into blobs values (?, ?, ?, ?, ?, ?, ?) on conflict (device, sha256)"
            " do update set complete = excluded.complete",
            (device, sha256, seq, size, size, "[]", now),
        )
        self.made.append((device, session))
        return self.receipt_of(device, sha256)

    def expire(self, now: float) -> list[tuple[str, str]]:
        """Drop uploads unfinished for ``expire_hours``: (device, sha256) of each."""
        cutoff = now - self.limits.expire_hours * 3600
        stale = self.db.query(
            "select u.device, u.sha256 from uploads u join blobs b"
            " on b.device = u.device and b.sha256 = u.sha256"
            " where b.complete is null and u.started < ?",
            (cutoff,),
        )
        for r in stale:
            device, sha256 = r["device"], r["sha256"]
            with self.db.transaction():
                self._forget_upload(device, sha256)
                self.db.execute(
                    "delete from blobs where device = ? and sha256 = ?", (device, sha256)
                )
                why = f"expired: unfinished after {self.limits.expire_hours:g} h"
                record_refusal(self.db, device, f"blob {sha256}", why, now)
            self.blobs.discard(device, sha256)
            log.warning("expired the unfinished upload %s of %s", sha256[:12], device)
        return [(r["device"], r["sha256"]) for r in stale]

    def withdraw_unclaimed(self, placed: Sequence[Placed]) -> int:
        """Remove the blobs a failed put placed (only those it newly placed, never bytes
        stored before it) that no receipt names; how many."""
        gone = [b.sha256 for b in placed if b.new and not self._claimed(b.sha256)]
        for sha256 in gone:
            self.blobs.withdraw(sha256)
        if gone:
            log.warning("removed %d blob(s) placed by a batch that was not receipted", len(gone))
        return len(gone)

    def sweep(self, now: float, grace: float = SWEEP_GRACE) -> int:
        """Remove stored blobs no receipt names, placed more than ``grace`` seconds ago (a
        crash between placing a blob and receipting it leaves one); how many."""
        claimed = {str(r["sha256"]) for r in self.db.query("select distinct sha256 from receipts")}
        removed, cutoff = 0, now - grace
        for sha256 in self.blobs.unclaimed_before(cutoff):
            # a receipt committed since the set was read names it too: asked again
            if sha256 not in claimed and not self._claimed(sha256):
                removed += self.blobs.withdraw(sha256, touched_before=cutoff)
        level = logging.WARNING if removed else logging.DEBUG  # each removal is news
        log.log(level, "swept the blob store: removed %d blob(s) no receipt names", removed)
        return removed

    def _claimed(self, sha256: str) -> bool:
        return bool(self.db.query("select 1 from receipts where sha256 = ? limit 1", (sha256,)))


def _seals(stored: str, sha256: str, size: int) -> bool:
    sealed = sealed_segment(stored)
    return sealed is not None and (sealed.sha256, sealed.size) == (sha256, size)


def sealed_segment(stored: str | Entry) -> SegmentManifest | None:
    """The manifest of a (stored) segment entry; None if it is not a valid one."""
    try:
        return segment(stored if isinstance(stored, Entry) else Entry.from_json(stored.encode()))
    except (SealError, ValueError, TypeError, KeyError):  # a ManifestError too
        return None
