"""What the store does with each message: verify, keep, answer. No MQTT here.

:meth:`Ingest.handle` takes a topic and payload and returns the replies to publish, so the
rules are tested without a broker. Workers keep no state of their own: everything lives
in the database and the blob directory, so any worker can take any message (several
workers share one fleet through an MQTT shared subscription).

Example::

    ingest = Ingest(db, BlobStore(path), directory, receipt_key, name="store-1")
    for topic, payload in ingest.handle("unbroken/d/bwc-1/entry", entry_bytes, now):
        client.publish(topic, payload, qos=1)
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import nacl.signing

from evidence import protocol as p
from evidence.names import iso
from evidence.seal import Entry, SealError, check_signature
from provisioning.registry import RegisteredKey
from store.blobs import BlobStore
from store.db import Database
from store.fleet_log import DeviceNews, receipt_lines
from store.limits import Limits, Refused
from store.uploads import Uploads, sealed_segment

log = logging.getLogger(__name__)

Reply = tuple[str, bytes]
Message = tuple[str, bytes, Mapping[str, str] | None]  # topic, payload, user properties


@dataclass(frozen=True)
class _Written:
    """A whole segment written, to be made durable and receipted with its batch."""

    device: str
    topic: str
    entry: Entry
    judged: tuple[float, str | None]
    sha256: str
    size: int


class DeviceDirectory(Protocol):
    """What the store needs from the agency's device registry."""

    def device_keys(self, device: str) -> list[RegisteredKey]: ...

    def revoked_at(self, device: str) -> float | None: ...


_FORK = "this device's key is in two places: a second entry at seq %d (%s), kept"
EXPIRE_EVERY = 60.0  # seconds between looks for expired uploads, per worker


class Ingest:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        directory: DeviceDirectory,
        receipt_key: nacl.signing.SigningKey,
        name: str,
        limits: Limits | None = None,
        certificate: bytes | None = None,
    ) -> None:
        """``receipt_key`` signs receipts: the store's own key with the agency's
        ``certificate`` for it (or, without one, the agency key itself)."""
        self.db, self.blobs, self.directory = db, blobs, directory
        self.limits = limits or Limits()
        self.uploads = Uploads(db, blobs, self.limits, receipt_key, name, certificate)
        self._expired_at = -math.inf
        self.news = DeviceNews()  # per device, what the log already said

    def handle(
        self, topic: str, payload: bytes, now: float, properties: Mapping[str, str] | None = None
    ) -> list[Reply]:
        """The replies to one message (``properties``: its MQTT v5 user properties).
        Nothing from the network raises: every refusal is a ``rejected`` reply with a
        reason code (:data:`evidence.protocol.REFUSALS`), recorded for the report."""
        return self.handle_many([(topic, payload, properties)], now)

    def handle_many(self, messages: Sequence[Message], now: float) -> list[Reply]:
        """The replies to messages taken together, in order; the whole segments among
        them are made durable together (one pass of fsyncs, one transaction with their
        entries and receipts), then receipted."""
        replies: list[Reply] = []
        pending: list[_Written] = []
        made = self.uploads.made
        made.clear()
        for topic, payload, properties in messages:
            device, kept = "?", len(made)
            try:
                device, rest = p.parse_up(topic)
                if rest != ["status"] and (line := self.news.message(device, "/".join(rest)[:40])):
                    log.info("%s", line)  # (its status says it is online: told apart)
                self._expire(now)
                replies += self._dispatch(device, rest, payload, now, properties, pending)
            except Exception as e:
                del made[kept:]  # its transaction, if any, was rolled back
                replies += self._refused(device, topic, e, now)
        if pending:
            replies += self._receipt_written(pending, now)
        for device, _ in made:
            self.news.accepted(device)
        for line in receipt_lines(made):
            log.info("%s", line)
        return replies

    def _refused(self, device: str, topic: str, e: Exception, now: float) -> list[Reply]:
        if isinstance(e, Refused):
            return self._rejected(device, topic, e.code, str(e), now)
        if isinstance(e, p.ProtocolError):
            return self._rejected(device, topic, "malformed", str(e), now)
        if isinstance(e, OSError):  # the store's own disk: tell the device to back off
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            code = "store_full" if full else "store_error"
            return self._rejected(device, topic, code, f"store cannot write: {e.strerror}", now)
        # a fault of ours (the database gone): never a silent drop
        return self._rejected(device, topic, "store_error", f"{type(e).__name__}: {e}", now)

    def _receipt_written(self, pending: list[_Written], now: float) -> list[Reply]:
        kept = len(self.uploads.made)
        try:
            self.blobs.make_durable([w.sha256 for w in pending])
            replies: list[Reply] = []
            with self.db.transaction():
                for w in pending:
                    self._record(w.device, w.entry, now, w.judged)
                    e = w.entry
                    replies += self.uploads.receipted(
                        w.device, e.seq, w.sha256, w.size, e.hash, e.session, now
                    )
            return replies
        except Exception as e:  # none receipted: each device is told, and sends again
            del self.uploads.made[kept:]
            return [r for w in pending for r in self._refused(w.device, w.topic, e, now)]

    def _dispatch(
        self,
        device: str,
        rest: list[str],
        payload: bytes,
        now: float,
        properties: Mapping[str, str] | None,
        pending: list[_Written],
    ) -> list[Reply]:
        if rest == ["entry"]:
            return self._entry(device, payload, now)
        if rest == ["segment"]:
            entry, media = p.split_whole_segment(payload, (properties or {}).get(p.ENTRY_BYTES))
            return self._segment(device, media, entry, now, pending)
        if rest == ["blob", "init"]:
            return self.uploads.init(device, payload, now)
        if rest == ["blob", "finish"]:
            return self.uploads.finish(device, payload, now)
        if len(rest) == 3 and rest[0] == "blob":
            return self.uploads.chunk(device, rest[1], rest[2], payload)
        if rest == ["status"]:
            return self._status(device, payload, now)
        raise Refused("malformed", f"unknown message type {'/'.join(rest)[:100]!r}")

    def _rejected(self, device: str, topic: str, code: str, reason: str, now: float) -> list[Reply]:
        reason = reason[:500]
        # once per device and reason code, then quietly while the device keeps at it
        level = self.news.refused(device, code)
        log.log(level, "refused %s (%s): %s", topic[:200], code, reason)
        try:
            with self.db.transaction():
                self.db.execute(
                    "insert into rejections values (?, ?, ?, ?)",
                    (device, topic[:300], f"{code}: {reason}", now),
                )
        except Exception as e:  # the database itself failing: the log line must do
            log.error("could not record the refusal of %s: %s", topic[:200], e)
        if device == "?":
            return []
        doc = {"topic": topic[:300], "reason": reason, "code": code}
        return [(p.reply(device, "rejected"), p.dumps(doc))]

    def _expire(self, now: float) -> None:
        if now - self._expired_at >= EXPIRE_EVERY:
            self._expired_at = now
            self.uploads.expire(now)

    # -- chain entries -----------------------------------------------------------

    def _entry(self, device: str, payload: bytes, now: float) -> list[Reply]:
        e = _parse_entry(payload)
        judged = self._judge(device, e, now)
        if isinstance(judged, p.Ack):
            return [(p.reply(device, "ack"), judged.to_bytes())]
        with self.db.transaction():
            ack = self._record(device, e, now, judged)
        self.news.accepted(device)
        return [(p.reply(device, "ack"), ack.to_bytes())]

    def _segment(
        self, device: str, data: bytes, entry: bytes, now: float, pending: list[_Written]
    ) -> list[Reply]:
        """A whole segment with its manifest entry: judged like any entry, the bytes
        checked against what it seals and written; made durable and receipted with the
        others taken together (``pending``), in one transaction with its entry. The receipt
        acknowledges the entry too."""
        e = _parse_entry(entry)
        sealed = sealed_segment(e)
        if sealed is None:
            raise Refused("malformed", f"entry {e.seq} is not a segment manifest")
        if receipt := self.uploads.receipt_of(device, sealed.sha256):
            return receipt  # stored already: our receipt was lost, send it again
        if refusal := self.limits.blob_refusal(len(data), e.seq, self._last_seq(device)):
            raise refusal
        judged = self._judge(device, e, now)
        if isinstance(judged, p.Ack):
            return [(p.reply(device, "ack"), judged.to_bytes())]
        if len(data) != sealed.size or hashlib.sha256(data).hexdigest() != sealed.sha256:
            missing = p.Missing(sealed.sha256, [], "altered in transit: resend", 0.0)
            return [(p.reply(device, "missing"), missing.to_bytes())]
        self.blobs.write(sealed.sha256, data)  # hashed once, from memory, as it is written
        pending.append(
            _Written(device, p.up(device, "segment"), e, judged, sealed.sha256, len(data))
        )
        return []

    def _last_seq(self, device: str) -> int:
        rows = self.db.query("select max(seq) as m from entries where device = ?", (device,))
        return int(rows[0]["m"] or 0)

    def _judge(self, device: str, e: Entry, now: float) -> p.Ack | tuple[float, str | None]:
        """A refusal (recorded), or the entry's wall time and time flags to record it."""
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
        # Judged by what the store saw: the receive time, not the time the device claims.
        revoked = self.directory.revoked_at(device)
        if revoked is not None and now >= revoked:
            return self._refuse_entry(
                device, e, now, f"received after the device was revoked ({iso(revoked)})", "revoked"
            )
        wall = float(e.payload["at"]["wall"])
        bound = self.limits.seq_refusal(e.seq, self._last_seq(device)) or self.limits.wall_refusal(
            wall, now
        )
        if bound is not None:
            return self._refuse_entry(device, e, now, str(bound), bound.code)
        return wall, self._time_flags(device, e, wall, now)

    def _record(self, device: str, e: Entry, now: float, judged: tuple[float, str | None]) -> p.Ack:
        """Keep a judged entry (inside the caller's transaction)."""
        wall, flag = judged
        main = self._hashes("entries", device, e.seq)
        if e.hash in main or e.hash in self._hashes("forks", device, e.seq):
            return p.Ack(e.seq, True, "duplicate")
        # A second entry at a sequence number, or one continuing such an entry: a
        # fork. Both branches are signed by a registered key, so both are kept (and
        # their media receipted), and the fork is raised as an alert.
        if main or e.payload["prev"] in self._hashes("forks", device, e.seq - 1):
            self._insert("forks", device, e, wall, now, flag)
            if main:
                self._problem(device, e.seq, "fork", _FORK % (e.seq, e.hash[:16]), now)
            log.warning(
                "fork: %s entry %d (%s) kept on a second branch", device, e.seq, e.hash[:16]
            )
            return p.Ack(e.seq, True, "fork: kept on a second branch")
        self._insert("entries", device, e, wall, now, flag)
        # Continuity both ways: entries may arrive out of order across workers.
        before = self.db.query(
            "select hash from entries where device = ? and seq = ?", (device, e.seq - 1)
        )
        if before and before[0]["hash"] != e.payload["prev"]:
            self._problem(
                device, e.seq, "chain_break", "does not name the hash of the entry before it", now
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

    def _hashes(self, table: str, device: str, seq: int) -> set[str]:
        rows = self.db.query(
            f"select hash from {table} where device = ? and seq = ?", (device, seq)
        )
        return {r["hash"] for r in rows}

    def _insert(
        self, table: str, device: str, e: Entry, wall: float, now: float, flag: str | None
    ) -> None:
        row = (device, e.seq, e.hash, e.payload["prev"], e.kind, e.session, wall)
        self.db.execute(
            f"insert into {table} values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*row, e.to_json().decode(), now, flag),
        )

    def _time_flags(self, device: str, e: Entry, wall: float, now: float) -> str | None:
        """``future_dated`` (the device's time ahead of the receive time by more than the
        skew bound) and ``clock_backwards`` (a boot dated before the entry preceding it)."""
        flags = []
        if wall > now + self.limits.skew_seconds:
            flags.append("future_dated")
        if e.kind == "boot":
            before = self.db.query(
                "select wall from entries where device = ? and seq = ?", (device, e.seq - 1)
            )
            if before and wall < float(before[0]["wall"]) - self.limits.skew_seconds:
                flags.append("clock_backwards")
        return ",".join(flags) or None

    def _refuse_entry(
        self, device: str, e: Entry, now: float, reason: str, code: str = "refused_entry"
    ) -> p.Ack:
        level = self.news.refused(device, code)
        log.log(level, "refused entry %s/%d (%s): %s", device, e.seq, code, reason)
        with self.db.transaction():
            self.db.execute(
                "insert into rejections values (?, ?, ?, ?)",
                (device, f"entry {e.seq}", f"{code}: {reason}", now),
            )
        return p.Ack(e.seq, False, reason, code)

    def _problem(self, device: str, seq: int, code: str, detail: str, now: float) -> None:
        self.db.execute(
            "insert into chain_problems values (?, ?, ?, ?, ?) on conflict do nothing",
            (device, seq, code, detail, now),
        )

    def _status(self, device: str, payload: bytes, now: float) -> list[Reply]:
        doc = p.parse_json(payload, "status")
        if doc.get("device") != device:
            raise Refused("malformed", "status names another device")
        with self.db.transaction(durable=False):
            self.db.execute(
                "insert into statuses values (?, ?, ?) on conflict (device) do update"
                " set status = excluded.status, at = excluded.at",
                (device, json.dumps(doc), now),
            )
        if isinstance(doc.get("online"), bool) and (
            line := self.news.status(device, doc["online"])
        ):
            log.info("%s", line)
        return []


def _parse_entry(payload: bytes) -> Entry:
    if len(payload) > p.MAX_JSON:
        raise Refused("too_large", f"entry of {len(payload)} bytes is larger than {p.MAX_JSON}")
    try:
        return Entry.from_json(payload)
    except SealError as err:
        raise Refused("malformed", f"not a chain entry: {err}") from None
