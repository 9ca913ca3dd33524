"""What the store does with each message: verify, keep, answer. No MQTT here.

:meth:`Ingest.handle` takes a topic and payload and returns the replies to publish, so the
rules are tested without a broker. Workers keep no state of their own: everything lives
in the database and the blob directory, so any worker can take any message (several
workers share one fleet through an MQTT shared subscription).

Example::

    ingest = Ingest(db, BlobStore(path), directory, agency_key, name="store-1")
    for topic, payload in ingest.handle("unbroken/d/bwc-1/entry", entry_bytes, now):
        client.publish(topic, payload, qos=1)
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Protocol

import nacl.signing

from evidence import protocol as p
from evidence.manifest import SegmentManifest, segment
from evidence.receipt import make_receipt
from evidence.seal import Entry, SealError, check_signature
from provisioning.registry import RegisteredKey
from store.blobs import BlobStore
from store.db import Database

log = logging.getLogger(__name__)

Reply = tuple[str, bytes]


class DeviceDirectory(Protocol):
    """What the store needs from the agency's device registry."""

    def device_keys(self, device: str) -> list[RegisteredKey]: ...

    def revoked_at(self, device: str) -> float | None: ...


class Refused(Exception):
    """A message refused with a reason; the sender is told where the protocol allows."""


class Ingest:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        directory: DeviceDirectory,
        agency_key: nacl.signing.SigningKey,
        name: str,
    ) -> None:
        self.db, self.blobs, self.directory = db, blobs, directory
        self.agency_key, self.name = agency_key, name

    def handle(self, topic: str, payload: bytes, now: float) -> list[Reply]:
        device = "?"
        try:
            device, rest = p.parse_up(topic)
            if rest == ["entry"]:
                return self._entry(device, payload, now)
            if rest == ["blob", "init"]:
                return self._init(device, payload)
            if rest == ["blob", "finish"]:
                return self._finish(device, payload, now)
            if len(rest) == 3 and rest[0] == "blob":
                return self._chunk(device, rest[1], rest[2], payload)
            if rest == ["status"]:
                return self._status(device, payload, now)
            raise Refused(f"unknown message type {'/'.join(rest)!r}")
        except (Refused, p.ProtocolError) as e:
            reason = str(e)
            log.warning("refused %s: %s", topic, reason)
            with self.db.transaction():
                self.db.execute(
                    "insert into rejections values (?, ?, ?, ?)",
                    (device, topic[:300], reason[:500], now),
                )
            if device == "?":
                return []
            return [(p.reply(device, "rejected"), p.dumps({"topic": topic, "reason": reason}))]

    # -- chain entries -----------------------------------------------------------

    def _entry(self, device: str, payload: bytes, now: float) -> list[Reply]:
        if len(payload) > p.MAX_JSON:
            raise Refused(f"entry of {len(payload)} bytes is larger than {p.MAX_JSON}")
        try:
            e = Entry.from_json(payload)
        except SealError as err:
            raise Refused(f"not a chain entry: {err}") from None
        ack = self._accept(device, e, now)
        return [(p.reply(device, "ack"), ack.to_bytes())]

    def _accept(self, device: str, e: Entry, now: float) -> p.Ack:
        if e.payload["device"] != device:
            return self._refuse_entry(
                device, e, now, f"entry names device {e.payload['device']!r}, topic says {device!r}"
            )
        keys = {k.key_id: k for k in self.directory.device_keys(device)}
        if not keys:
            return self._refuse_entry(device, e, now, f"unknown device {device!r}")
        key = keys.get(str(e.payload["key"]))
        if key is None:
            return self._refuse_entry(
                device, e, now, f"key {e.payload['key']} is not registered for {device}"
            )
        try:
            check_signature(e, key.verify_key)
        except SealError as err:
            return self._refuse_entry(device, e, now, str(err))
        flag = None
        revoked = self.directory.revoked_at(device)
        wall = float(e.payload["at"]["wall"])
        if revoked is not None:
            if wall > revoked:
                return self._refuse_entry(device, e, now, "signed after the device was revoked")
            flag = "recorded_before_revocation"
        with self.db.transaction():
            existing = self.db.query(
                "select hash from entries where device = ? and seq = ?", (device, e.seq)
            )
            if existing:
                if existing[0]["hash"] == e.hash:
                    return p.Ack(e.seq, True, "duplicate")
                self._problem(
                    device, e.seq, "fork", f"a second entry {e.hash[:16]} claims seq {e.seq}", now
                )
                return p.Ack(e.seq, False, f"fork: seq {e.seq} already holds another entry")
            self.db.execute(
                "insert into entries values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    device,
                    e.seq,
                    e.hash,
                    e.payload["prev"],
                    e.kind,
                    e.session,
                    wall,
                    e.to_json().decode(),
                    now,
                    flag,
                ),
            )
            # Continuity both ways: entries may arrive out of order across workers.
            before = self.db.query(
                "select hash from entries where device = ? and seq = ?", (device, e.seq - 1)
            )
            if before and before[0]["hash"] != e.payload["prev"]:
                self._problem(
                    device,
                    e.seq,
                    "chain_break",
                    "does not name the hash of the entry before it",
                    now,
                )
            after = self.db.query(
                "select seq, prev from entries where device = ? and seq = ?", (device, e.seq + 1)
            )
            if after and after[0]["prev"] != e.hash:
                self._problem(
                    device,
                    e.seq + 1,
                    "chain_break",
                    "does not name the hash of the entry before it",
                    now,
                )
        return p.Ack(e.seq, True)

    def _refuse_entry(self, device: str, e: Entry, now: float, reason: str) -> p.Ack:
        log.warning("refused entry %s/%d: %s", device, e.seq, reason)
        with self.db.transaction():
            self.db.execute(
                "insert into rejections values (?, ?, ?, ?)",
                (device, f"entry {e.seq}", reason, now),
            )
        return p.Ack(e.seq, False, reason)

    def _problem(self, device: str, seq: int, code: str, detail: str, now: float) -> None:
        self.db.execute(
            "insert into chain_problems values (?, ?, ?, ?, ?) on conflict do nothing",
            (device, seq, code, detail, now),
        )

    # -- blobs -------------------------------------------------------------------

    def _blob(self, device: str, sha256: str) -> p.BlobInit:
        rows = self.db.query(
            "select * from blobs where device = ? and sha256 = ?", (device, sha256)
        )
        if not rows:
            raise Refused(f"chunk or finish for unknown blob {sha256[:16]}: send init first")
        b = rows[0]
        return p.BlobInit(
            sha256,
            int(b["size"]),
            int(b["chunk_size"]),
            int(b["seq"]),
            tuple(json.loads(b["chunks"])),
        )

    def _received(self, device: str, sha256: str) -> set[int]:
        rows = self.db.query(
            "select off from chunks where device = ? and sha256 = ?", (device, sha256)
        )
        return {int(r["off"]) for r in rows}

    def _receipt(self, device: str, sha256: str) -> list[Reply]:
        rows = self.db.query(
            "select receipt from receipts where device = ? and sha256 = ?", (device, sha256)
        )
        return [(p.reply(device, "receipt"), rows[0]["receipt"].encode())] if rows else []

    def _init(self, device: str, payload: bytes) -> list[Reply]:
        init = p.BlobInit.parse(payload)
        if receipt := self._receipt(device, init.sha256):
            return receipt  # already stored: the device lost our receipt, send it again
        chunks = json.dumps(list(init.chunks))
        with self.db.transaction(durable=False):
            self.db.execute(
                "insert into blobs values (?, ?, ?, ?, ?, ?, null) on conflict do nothing",
                (device, init.sha256, init.seq, init.size, init.chunk_size, chunks),
            )
        known = self._blob(device, init.sha256)
        if (known.size, known.chunk_size, known.chunks) != (
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
        lacking = p.missing(init, self._received(device, init.sha256))
        return [(p.reply(device, "missing"), p.Missing(init.sha256, lacking).to_bytes())]

    def _chunk(self, device: str, sha256: str, offset_text: str, data: bytes) -> list[Reply]:
        p.check_sha256(sha256, "chunk topic")
        if not offset_text.isdigit():
            raise Refused(f"chunk offset {offset_text!r} is not a number")
        init = self._blob(device, sha256)
        offset = int(offset_text)
        expected = p.chunk_length(init, offset)
        if len(data) != expected:
            raise Refused(f"chunk at {offset} has {len(data)} bytes, expected {expected}")
        if hashlib.sha256(data).hexdigest() != init.chunk_hash(offset):
            raise Refused(
                f"chunk at {offset} of {sha256[:16]} does not match its hash "
                "(altered in transit): send it again"
            )
        self.blobs.write_chunk(device, sha256, offset, data)
        with self.db.transaction(durable=False):
            self.db.execute(
                "insert into chunks values (?, ?, ?) on conflict do nothing",
                (device, sha256, offset),
            )
        return []

    def _finish(self, device: str, payload: bytes, now: float) -> list[Reply]:
        sha256 = p.check_sha256(p.parse_json(payload, "finish").get("sha256"), "finish")
        if receipt := self._receipt(device, sha256):
            return receipt
        init = self._blob(device, sha256)
        lacking = p.missing(init, self._received(device, sha256))
        if lacking:
            return [
                (p.reply(device, "missing"), p.Missing(sha256, lacking, "incomplete").to_bytes())
            ]
        manifest = self.db.query(
            "select hash, session, entry from entries where device = ? and seq = ?",
            (device, init.seq),
        )
        if not manifest:
            reason = f"manifest entry {init.seq} not received"
            return [(p.reply(device, "missing"), p.Missing(sha256, [], reason).to_bytes())]
        sealed = sealed_segment(manifest[0]["entry"])
        if sealed is None or sealed.sha256 != sha256 or sealed.size != init.size:
            raise Refused(f"entry {init.seq} does not seal blob {sha256[:16]} of {init.size} B")
        if not self.blobs.complete(device, sha256, init.size):
            with self.db.transaction():
                self.db.execute(
                    "delete from chunks where device = ? and sha256 = ?", (device, sha256)
                )
            self.blobs.discard(device, sha256)
            reason = "assembled blob does not match: resend"
            return [
                (
                    p.reply(device, "missing"),
                    p.Missing(sha256, p.chunk_offsets(init), reason).to_bytes(),
                )
            ]
        data = make_receipt(
            self.agency_key,
            device=device,
            sha256=sha256,
            size=init.size,
            entry_seq=init.seq,
            entry_hash=manifest[0]["hash"],
            session=manifest[0]["session"],
            stored_at=now,
            store=self.name,
        )
        with self.db.transaction():
            self.db.execute(
                "insert into receipts values (?, ?, ?, ?, ?) on conflict do nothing",
                (device, sha256, init.seq, now, data.decode()),
            )
            self.db.execute(
                "update blobs set complete = ? where device = ? and sha256 = ?",
                (now, device, sha256),
            )
            self.db.execute("delete from chunks where device = ? and sha256 = ?", (device, sha256))
        return self._receipt(device, sha256)  # the one stored, if two workers raced

    def _status(self, device: str, payload: bytes, now: float) -> list[Reply]:
        doc = p.parse_json(payload, "status")
        if doc.get("device") != device:
            raise Refused("status names another device")
        with self.db.transaction(durable=False):
            self.db.execute(
                "insert into statuses values (?, ?, ?) on conflict (device) do update"
                " set status = excluded.status, at = excluded.at",
                (device, json.dumps(doc), now),
            )
        return []


def sealed_segment(stored: str) -> SegmentManifest | None:
    """The manifest of a stored segment entry; None if it is not a valid one."""
    try:
        return segment(Entry.from_json(stored.encode()))
    except SealError:  # a ManifestError too
        return None
