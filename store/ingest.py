"""What the store does with each message: verify, keep, answer. No MQTT here.

:meth:`Ingest.handle` takes a topic and payload and returns the replies to publish, so the
rules are tested without a broker. Workers keep no state of their own: everything lives
in the database and the blob directory, so any worker can take any message (several
workers share one fleet through an MQTT shared subscription).

Each device is its own failure domain: every field the store uses of an entry is checked as
it is parsed (:mod:`store.judge`), and the whole segments taken together are each recorded
in a savepoint, so that nothing one device sends refuses, delays or is reported against
another device's segments. A manifest naming a file its device sealed already is refused,
and raised as a chain problem: the first stays as it was stored.

Example::

    ingest = Ingest(db, FileBlobs(path), directory, receipt_key, name="store-1")
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
from evidence.blob_messages import Missing
from evidence.chain_keys import key_out_of_place
from evidence.messages import Ack, Rejected, Status
from evidence.names import iso
from evidence.seal import Entry, SealError, check_signature
from evidence.store_acks import sign_ack
from provisioning.registry import RegisteredKey
from store.blobs import BlobStore
from store.chains import Chains, savepoint
from store.db import Database
from store.fleet_log import DeviceNews, receipt_lines
from store.judge import RESEALED, entry_refusal
from store.limits import Limits, Refused
from store.rejections import Refusals
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
    data: bytes
    file: str


class DeviceDirectory(Protocol):
    """What the store needs from the agency's device registry."""

    def device_keys(self, device: str) -> list[RegisteredKey]: ...

    def revoked_at(self, device: str) -> float | None: ...


EXPIRE_EVERY = 60.0  # seconds between looks for expired uploads, per worker
SWEEP_EVERY = 6 * 3600.0  # seconds between sweeps of unreceipted blobs (the first at start)
_RESEALED = "file %.200r is sealed already, by entry %d (%s): the first is kept as it was stored"


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
        self.chain = Chains(db, self.limits.skew_seconds)
        self._expired_at = self._swept_at = -math.inf
        self.news = DeviceNews()  # per device, what the log already said
        self.refusals = Refusals()  # of the batch in hand, written when it is done

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
        entries and receipts, each segment in its own savepoint), then receipted."""
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
        self._record_refusals()
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
        """Store the batch's blobs, then record each segment in its own savepoint: one that
        fails is refused alone, its device told, the others receipted. A blob this batch
        newly placed and nothing receipted is removed again."""
        made, kept = self.uploads.made, len(self.uploads.made)
        try:
            placed = self.blobs.put_many([(w.sha256, w.data) for w in pending])
        except Exception as e:  # the store's own disk: each device is told, and sends again
            return [r for w in pending for r in self._refused(w.device, w.topic, e, now)]
        replies: list[Reply] = []
        failed: list[tuple[_Written, Exception]] = []
        try:
            with self.db.transaction():
                for w in pending:
                    at = len(made)
                    try:
                        with savepoint(self.db):
                            replies += self._keep_segment(w, now)
                    except Exception as err:  # this segment alone: its device is told
                        del made[at:]
                        failed.append((w, err))
        except Exception as err:  # the commit failed: none receipted
            del made[kept:]
            replies, failed = [], [(w, err) for w in pending]
        lost = {w.sha256 for w, _ in failed}
        self.uploads.withdraw_unclaimed([b for b in placed if b.sha256 in lost])
        for w, why in failed:
            replies += self._refused(w.device, w.topic, why, now)
        return replies

    def _keep_segment(self, w: _Written, now: float) -> list[Reply]:
        e = w.entry
        self.chain.record(w.device, e, now, w.judged)
        size = len(w.data)
        return self.uploads.receipted(w.device, e.seq, w.sha256, size, e.hash, e.session, now)

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
        self.refusals.add(device, topic[:300], f"{code}: {reason}", now)
        if device == "?":
            return []
        return [(p.reply(device, "rejected"), Rejected.of(topic, code, reason).to_bytes())]

    def _expire(self, now: float) -> None:
        if now - self._expired_at >= EXPIRE_EVERY:
            self._expired_at = now
            self.uploads.expire(now)
        if now - self._swept_at >= SWEEP_EVERY:
            self._swept_at = now
            try:
                self.uploads.sweep(now)
            except Exception as e:  # the store's own housekeeping: no device's message fails
                log.error("could not sweep the blob store: %s", e)

    # -- chain entries -----------------------------------------------------------

    def _entry(self, device: str, payload: bytes, now: float) -> list[Reply]:
        e = _parse_entry(payload)
        judged = self._judge(device, e, now)
        if isinstance(judged, Ack):
            return [self._ack(device, e, judged)]
        with self.db.transaction():
            ack = self.chain.record(device, e, now, judged)
        self.news.accepted(device)
        return [self._ack(device, e, ack)]

    def _ack(self, device: str, e: Entry, ack: Ack) -> Reply:
        """The ack of entry ``e``, signed with the store's receipt key: it makes the device
        send the entry no more, or mark it refused (:mod:`evidence.store_acks`)."""
        u = self.uploads
        data = sign_ack(
            u.receipt_key, ack, device=device, entry_hash=e.hash, store=u.name,
            certificate=u.certificate,
        )  # fmt: skip
        return (p.reply(device, "ack"), data)

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
        receipt = self.uploads.receipt_of(device, sealed.sha256)
        if receipt and self.chain.kept(device, e):
            return receipt  # stored already: our receipt was lost, send it again
        if refusal := self.limits.blob_refusal(len(data), e.seq, self.chain.last_seq(device)):
            raise refusal
        judged = self._judge(device, e, now)
        if isinstance(judged, Ack):
            return [self._ack(device, e, judged)]
        twin = next((w for w in pending if (w.device, w.file) == (device, sealed.file)), None)
        if twin is not None and twin.entry.seq != e.seq:  # sealed twice in one batch (not a fork)
            reason = _RESEALED % (sealed.file, twin.entry.seq, twin.entry.hash[:16])
            return [self._ack(device, e, self._resealed(device, e, reason, now))]
        if len(data) != sealed.size or hashlib.sha256(data).hexdigest() != sealed.sha256:
            missing = Missing(sha256=sealed.sha256, offsets=[], reason="altered in transit: resend")
            return [(p.reply(device, "missing"), missing.to_bytes())]
        # hashed once, from memory; stored with its batch (BlobStore.put_many)
        topic = p.up(device, "segment")
        pending.append(_Written(device, topic, e, judged, sealed.sha256, data, sealed.file))
        return []

    def _judge(self, device: str, e: Entry, now: float) -> Ack | tuple[float, str | None]:
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
        if out := key_out_of_place(key.key_id, key.from_seq, key.until_seq, e.seq):
            return self._refuse_entry(device, e, now, out[1], out[0])
        # Judged by what the store saw: the receive time, not the time the device claims.
        revoked = self.directory.revoked_at(device)
        if revoked is not None and now >= revoked:
            return self._refuse_entry(
                device, e, now, f"received after the device was revoked ({iso(revoked)})", "revoked"
            )
        wall = float(e.payload["at"]["wall"])
        last = self.chain.last_seq(device)
        bound = self.limits.seq_refusal(e.seq, last) or self.limits.wall_refusal(wall, now)
        if bound is not None:
            return self._refuse_entry(device, e, now, str(bound), bound.code)
        if (sealed := sealed_segment(e)) is not None and (
            first := self.chain.sealer_of(device, e, sealed)
        ):
            return self._resealed(device, e, _RESEALED % (sealed.file, *first), now)
        return wall, self.chain.time_flags(device, e, wall, now)

    def _resealed(self, device: str, e: Entry, reason: str, now: float) -> Ack:
        """Refuse a manifest naming a file another entry sealed, and raise it as a chain
        problem of the device: the first file's blob stays as it was receipted."""
        with self.db.transaction():
            self.chain.problem(device, e.seq, RESEALED, reason, now)
        return self._refuse_entry(device, e, now, reason)

    def _refuse_entry(
        self, device: str, e: Entry, now: float, reason: str, code: str = "refused_entry"
    ) -> Ack:
        level = self.news.refused(device, code)
        log.log(level, "refused entry %s/%d (%s): %s", device, e.seq, code, reason)
        self.refusals.add(device, f"entry {e.seq}", f"{code}: {reason}", now)
        return Ack.refused(e.seq, code, reason)

    def busy(self, overflow: Mapping[str, int], share: int, now: float) -> None:
        """Record the messages a worker did not queue because their device had its share
        waiting (:mod:`store.fair_share`): one record per device and batch, with the count."""
        for device, n in overflow.items():
            level = self.news.refused(device, "quota")
            log.log(level, "device %s floods the store: %d message(s) not queued", device, n)
            why = f"quota: {n} message(s) not queued, {share} of this device's already waiting"
            self.refusals.add(device, "messages", why, now)
        self._record_refusals()

    def _record_refusals(self) -> None:
        try:
            self.refusals.flush(self.db)
        except Exception as e:  # the database itself failing: the log lines must do
            log.error("could not record refusals: %s: %s", type(e).__name__, e)

    def _status(self, device: str, payload: bytes, now: float) -> list[Reply]:
        doc = p.parse_json(payload, "status")
        status = Status.of(doc)  # kept as it came (the recorder's fields too), once it fits
        if status.device != device:
            raise Refused("malformed", "status names another device")
        with self.db.transaction(durable=False):
            self.db.execute(
                "insert into statuses values (?, ?, ?) on conflict (device) do update"
                " set status = excluded.status, at = excluded.at",
                (device, json.dumps(doc), now),
            )
        if line := self.news.status(device, status.online):
            log.info("%s", line)
        return []


def _parse_entry(payload: bytes) -> Entry:
    if len(payload) > p.MAX_JSON:
        raise Refused("too_large", f"entry of {len(payload)} bytes is larger than {p.MAX_JSON}")
    try:
        e = Entry.from_json(payload)
    except SealError as err:
        raise Refused("malformed", f"not a chain entry: {err}") from None
    if (refusal := entry_refusal(e)) is not None:
        raise refusal
    return e
