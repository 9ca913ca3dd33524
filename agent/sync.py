"""The device's uploader: chain entries and media to the agency store over MQTT v5.

Transfer state lives in the journal (``sync_acks``, ``receipts``), never in paho's
in-memory session: after a restart, a broker outage or a store restart the uploader asks
the store what it still lacks and sends only that. Oldest recordings go first, so every
one meets its 24-hour deadline (R7). Local media is deleted only after a receipt that
verifies with the agency key is stored, and only once the configured retention allows (R9).

Threads: paho's network thread only queues what arrives; one uploader thread owns the
journal connection and decides what to send.

Example::

    up = Uploader(root, device_id, link, clock)
    up.start()
    ...
    up.backlog()        # {'entries': 0, 'blobs': 0, 'bytes': 0, 'oldest_unsynced_end': None}
    up.stop()
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from common.mqtt import tls_client
from device.clock import Clock
from evidence import protocol as p
from evidence.receipt import ReceiptError, check_receipt
from evidence.seal import Entry

log = logging.getLogger(__name__)

RECEIPTS = "receipts"  # DATA/receipts/<sha256>.json: kept, verifiable, never deleted
SCAN_SECONDS = 0.1  # how often the journal is read for newly sealed entries


@dataclass(frozen=True)
class Link:
    """Where and how to reach the broker (from the provisioning bundle)."""

    host: str
    port: int
    ca: Path
    cert: Path
    key: Path
    agency_key: nacl.signing.VerifyKey


@dataclass(frozen=True)
class SyncSettings:
    chunk_size: int = 256 * 1024
    bandwidth: int | None = None  # bytes per second; None: as fast as the link goes
    window: int = 64  # QoS 1 publishes in flight
    parallel_blobs: int = 16  # blobs being transferred at once
    retry_seconds: float = 10.0  # re-ask the store when it has not answered
    keep_after_receipt_hours: float | None = None  # None: keep local copies
    status_seconds: float = 10.0
    warn_hours: tuple[float, float] = (12.0, 20.0)  # deadline warnings before 24 h


@dataclass
class _Transfer:
    sha256: str
    seq: int
    file: Path
    init: p.BlobInit
    to_send: list[int] = field(default_factory=list)
    answered: bool = False  # the store said what it lacks since we last asked
    finished: bool = False  # finish sent (or nothing to do but wait): awaiting the store
    asked_at: float = 0.0


class SyncLedger:
    """Transfer state in the device journal database (own connection, WAL)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = sqlite3.connect(root / "journal.db", check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        with self.db:
            self.db.execute("create table if not exists sync_acks (seq integer primary key)")
            self.db.execute(
                "create table if not exists sync_refused (seq integer primary key, reason text)"
            )
            self.db.execute(
                "create table if not exists receipts (sha256 text primary key, seq integer,"
                " received real, deleted real)"
            )
        (root / RECEIPTS).mkdir(exist_ok=True)

    def unacked(self, limit: int) -> list[Entry]:
        rows = self.db.execute(
            "select entry from entries where seq not in (select seq from sync_acks)"
            " and seq not in (select seq from sync_refused) order by seq limit ?",
            (limit,),
        ).fetchall()
        return [Entry.from_json(r["entry"].encode()) for r in rows]

    def pending_blobs(self) -> list[dict[str, Any]]:
        """Sealed segments without a receipt, oldest first."""
        rows = self.db.execute(
            "select seq, json_extract(entry, '$.payload.body.sha256') as sha256,"
            " json_extract(entry, '$.payload.body.size') as size,"
            " json_extract(entry, '$.payload.body.file') as file,"
            " json_extract(entry, '$.payload.body.end.wall') as end_wall"
            " from entries where kind = 'segment'"
            " and json_extract(entry, '$.payload.body.sha256') not in"
            " (select sha256 from receipts) order by seq"
        ).fetchall()
        return [dict(r) for r in rows]

    def head(self) -> int:
        return int(self.db.execute("select coalesce(max(seq), 0) from entries").fetchone()[0])

    def ack(self, seq: int) -> None:
        with self.db:
            self.db.execute("insert or ignore into sync_acks values (?)", (seq,))

    def refused(self, seq: int, reason: str) -> None:
        with self.db:
            self.db.execute("insert or replace into sync_refused values (?, ?)", (seq, reason))

    def receipt(self, sha256: str, seq: int, data: bytes, now: float) -> None:
        from common.files import write_atomic

        write_atomic(self.root / RECEIPTS / f"{sha256}.json", data)
        with self.db:
            self.db.execute(
                "insert or ignore into receipts values (?, ?, ?, null)", (sha256, seq, now)
            )

    def deletable(self, now: float, keep_hours: float) -> list[tuple[str, str]]:
        """(sha256, file) of receipted media whose retention has run out."""
        rows = self.db.execute(
            "select r.sha256, json_extract(e.entry, '$.payload.body.file') as file"
            " from receipts r join entries e on e.seq = r.seq"
            " where r.deleted is null and r.received <= ?",
            (now - keep_hours * 3600,),
        ).fetchall()
        return [(r["sha256"], r["file"]) for r in rows]

    def deleted(self, sha256: str, now: float) -> None:
        with self.db:
            self.db.execute("update receipts set deleted = ? where sha256 = ?", (now, sha256))

    def backlog(self) -> dict[str, Any]:
        entries = self.db.execute(
            "select count(*) from entries where seq not in (select seq from sync_acks)"
        ).fetchone()[0]
        blobs = self.pending_blobs()
        return {
            "entries": entries,
            "blobs": len(blobs),
            "bytes": sum(int(b["size"]) for b in blobs),
            "oldest_unsynced_end": min((float(b["end_wall"]) for b in blobs), default=None),
        }

    def close(self) -> None:
        self.db.close()


PANEL_REPEAT = 5.0  # seconds between repeats of a room panel's state


class Uploader:
    def __init__(
        self,
        root: Path,
        device_id: str,
        link: Link,
        clock: Clock,
        settings: SyncSettings | None = None,
        status_source: Callable[[], dict[str, Any]] | None = None,
        on_command: Callable[[bytes], None] | None = None,
        room: str | None = None,
        on_panel: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.root = root
        self.device_id = device_id
        self.link = link
        self.clock = clock
        self.settings = settings or SyncSettings()
        self.status_source = status_source or dict
        # Agency commands are handed on unverified: the recorder checks and applies them
        # on its own thread (one sealer per chain).
        self.on_command = on_command
        # A room controller also talks with its room's panel, on the same connection.
        self.room = room
        self.on_panel = on_panel
        self.panel_state: str | None = None  # the last state shown; resent on reconnect
        self._panel_sent = 0.0
        self.connected = threading.Event()
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self._transfers: dict[str, _Transfer] = {}
        self._sent_entries: dict[int, float] = {}
        self._tokens = 0.0
        self._token_time = time.monotonic()
        self._last_status = 0.0
        self._rescan = True
        self._next_scan = 0.0
        self._last_reply = 0.0
        self._journal_head = 0  # the newest entry seen: new ones are worth a scan
        self.deadline_level = "ok"  # of the oldest recording without a receipt (R7)
        self.refusals: list[str] = []  # what the store or broker refused, for status/tests
        self.client = self._make_client()

    # -- lifecycle -------------------------------------------------------------------

    def start(self, connect: bool = True) -> None:
        """Start the uploader thread, and (``connect``) the broker connection."""
        if connect:
            self.connect()
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)
        self._thread.start()

    def connect(self) -> None:
        """Open the broker connection (again, after a ``disconnect()``); paho retries."""
        self.client.connect_async(self.link.host, self.link.port, keepalive=15)
        self.client.loop_start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        if self.connected.is_set():  # a clean stop sends no will: say offline ourselves
            ledger = SyncLedger(self.root)
            try:
                doc = self._status_doc(ledger, online=False)
            finally:
                ledger.close()
            info = self.client.publish(
                p.up(self.device_id, "status"), p.dumps(doc), qos=1, retain=True
            )
            info.wait_for_publish(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is left to send and every blob has a receipt."""
        ledger = SyncLedger(self.root)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                b = ledger.backlog()
                if b["entries"] == 0 and b["blobs"] == 0:
                    return True
                time.sleep(0.05)
            return False
        finally:
            ledger.close()

    # -- paho callbacks (network thread): only queue -------------------------------

    def _make_client(self) -> mqtt.Client:
        c = tls_client(self.device_id, self.link.ca, self.link.cert, self.link.key)
        c.will_set(
            p.up(self.device_id, "status"),
            p.dumps({"device": self.device_id, "online": False}),
            qos=1,
            retain=True,
        )
        c.max_inflight_messages_set(self.settings.window)
        c.reconnect_delay_set(min_delay=1, max_delay=15)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        return c

    def _on_connect(
        self, c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if rc.is_failure:
            log.warning("broker refused connection: %s", rc)
            self.refusals.append(f"connect: {rc}")
            return
        c.subscribe(p.reply(self.device_id, "#"), qos=1)
        c.subscribe(p.command(self.device_id, "#"), qos=1)
        if self.room:
            c.subscribe(p.panel(self.room, "door"), qos=1)
            c.subscribe(p.panel(self.room, "key"), qos=1)
            if self.panel_state is not None:
                self._publish_panel(self.panel_state)
        self._inbox.put(("connected", None))

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if self.room and msg.topic.startswith(p.panel(self.room, "")):
            if self.on_panel is not None:  # the recorder decides, on its own thread
                self.on_panel(msg.topic.rsplit("/", 1)[-1], bytes(msg.payload))
            return
        self._inbox.put(("message", msg))

    def show_on_panel(self, state: str) -> None:
        """Thread-safe: what the room panel shows (retained: a panel that reconnects reads
        it at once). Called after every frame; sent when it changes, after a reconnect,
        and every PANEL_REPEAT seconds — a panel stops believing a state not repeated, so
        a controller that died does not leave the RECORDING lamp lit."""
        now = time.monotonic()
        if state == self.panel_state and now - self._panel_sent < PANEL_REPEAT:
            return
        self.panel_state = state
        if self.connected.is_set():
            self._panel_sent = now
            self._publish_panel(state)

    def _publish_panel(self, state: str) -> None:
        assert self.room
        self.client.publish(p.panel(self.room, "state"), state.encode(), qos=1, retain=True)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.connected.clear()
        self._inbox.put(("disconnected", rc))

    def _on_publish(self, _c: mqtt.Client, _u: Any, _mid: int, rc: ReasonCode, _p: Any) -> None:
        with self._inflight_lock:
            self._inflight = max(0, self._inflight - 1)
        self._inbox.put(("room", None))  # wake the uploader: the window has room again
        if rc.is_failure:  # e.g. 135 Not authorized: the ACL refused the topic
            self.refusals.append(f"publish: {rc}")

    # -- the uploader thread ---------------------------------------------------------

    def _run(self) -> None:
        ledger = SyncLedger(self.root)
        try:
            while not self._stop.is_set():
                try:
                    kind, data = self._inbox.get(timeout=0.05)
                    self._handle(ledger, kind, data)
                    while True:  # drain without waiting
                        kind, data = self._inbox.get_nowait()
                        self._handle(ledger, kind, data)
                except queue.Empty:
                    pass
                if self.connected.is_set():
                    self._pump(ledger)
                elif time.monotonic() - self._last_status >= self.settings.status_seconds:
                    # Offline the 24-hour clock still runs: the LED and buzzer must warn.
                    self._last_status = time.monotonic()
                    self._status_doc(ledger, online=False)
        except Exception:  # keep recording even if sync breaks: log loudly, stop syncing
            log.exception("uploader stopped")
        finally:
            ledger.close()

    def _handle(self, ledger: SyncLedger, kind: str, data: Any) -> None:
        if kind in ("message", "connected"):
            self._rescan = True  # an ack or a receipt frees a place for what comes next
            self._last_reply = time.monotonic()
        if kind == "connected":
            # Nothing is assumed delivered across a reconnect: ask again.
            self._transfers.clear()
            self._sent_entries.clear()
            with self._inflight_lock:
                self._inflight = 0
            self.connected.set()
            self._publish_status(ledger, force=True)
        elif kind == "room":
            pass
        elif kind == "disconnected":
            self._transfers.clear()
            self._sent_entries.clear()
        elif kind == "message":
            try:
                self._on_reply(ledger, data)
            except (p.ProtocolError, ReceiptError) as e:
                log.warning("ignored reply on %s: %s", data.topic, e)

    def _on_reply(self, ledger: SyncLedger, msg: mqtt.MQTTMessage) -> None:
        what = msg.topic.rsplit("/", 1)[-1]
        payload = bytes(msg.payload)
        if msg.topic.startswith(p.command(self.device_id, "")):
            if self.on_command is None:
                log.warning("no recorder to apply the command on %s", msg.topic)
            else:
                self.on_command(payload)
            return
        if what == "ack":
            ack = p.Ack.parse(payload)
            self._sent_entries.pop(ack.seq, None)
            if ack.ok:
                ledger.ack(ack.seq)
            else:
                log.error("store refused entry %d: %s", ack.seq, ack.reason)
                self.refusals.append(f"entry {ack.seq}: {ack.reason}")
                ledger.refused(ack.seq, ack.reason)
        elif what == "missing":
            m = p.Missing.parse(payload)
            t = self._transfers.get(m.sha256)
            if t:
                t.to_send = list(m.offsets)
                t.answered = True
                # Nothing lacking but a reason (the manifest has not arrived): wait, then
                # ask again; nothing lacking and no reason: send finish.
                t.finished = not m.offsets and bool(m.reason)
                t.asked_at = time.monotonic()
                if m.reason:
                    log.info("store asks again for %s: %s", m.sha256[:12], m.reason)
        elif what == "receipt":
            receipt = check_receipt(payload, self.link.agency_key, device=self.device_id)
            sha = str(receipt["sha256"])
            ledger.receipt(sha, int(receipt["entry_seq"]), payload, self.clock.wall())
            self._transfers.pop(sha, None)
            self._sweep(ledger)
        elif what == "rejected":
            text = payload.decode("utf-8", "replace")[:300]
            log.warning("store rejected a message: %s", text)
            self.refusals.append(text)

    def _pump(self, ledger: SyncLedger) -> None:
        now = time.monotonic()
        # Reading the journal is the costly part: do it when something was acknowledged or
        # receipted, or a moment has passed (the recorder seals on its own thread).
        if not self._rescan and now >= self._next_scan:
            self._next_scan = now + SCAN_SECONDS
            head = ledger.head()
            waiting = bool(self._sent_entries) and self._quiet(0.0, now)
            self._rescan = head != self._journal_head or waiting
            self._journal_head = head
        if self._rescan:
            self._rescan = False
            self._scan(ledger, now)
        for t in list(self._transfers.values()):
            self._advance(t, now)
        self._publish_status(ledger)

    def _scan(self, ledger: SyncLedger, now: float) -> None:
        # 1. chain entries, in order, before the media they seal
        for e in ledger.unacked(self.settings.window * 4):
            sent = self._sent_entries.get(e.seq)
            if sent is not None and not self._quiet(sent, now):
                continue
            if not self._room():
                self._rescan = True  # the rest when the window has room
                return
            self._publish(p.up(self.device_id, "entry"), e.to_json())
            self._sent_entries[e.seq] = now
        # 2. media, oldest first, a few blobs at a time
        if len(self._transfers) < self.settings.parallel_blobs:
            for b in ledger.pending_blobs():
                if b["sha256"] in self._transfers:
                    continue
                if len(self._transfers) >= self.settings.parallel_blobs:
                    break
                path = self.root / str(b["file"])
                if not path.is_file():
                    continue
                init = p.BlobInit(
                    str(b["sha256"]),
                    int(b["size"]),
                    self.settings.chunk_size,
                    int(b["seq"]),
                    _chunk_hashes(path, self.settings.chunk_size),
                )
                self._transfers[init.sha256] = _Transfer(init.sha256, init.seq, path, init)

    def _advance(self, t: _Transfer, now: float) -> None:
        waiting = not t.answered or t.finished
        if t.asked_at == 0.0 or (waiting and self._quiet(t.asked_at, now)):
            # New, or the store went quiet: ask what it lacks (idempotent).
            self._publish(p.up(self.device_id, "blob", "init"), t.init.to_bytes())
            t.asked_at, t.answered, t.finished = now, False, False
            return
        if waiting:
            return
        with open(t.file, "rb") as f:
            while t.to_send and self._room():
                offset = t.to_send[0]
                f.seek(offset)
                chunk = f.read(p.chunk_length(t.init, offset))
                if not self._spend(len(chunk)):
                    return
                self._publish(p.up(self.device_id, "blob", t.sha256, str(offset)), chunk)
                t.to_send.pop(0)
        if not t.to_send:
            self._publish(p.up(self.device_id, "blob", "finish"), p.dumps({"sha256": t.sha256}))
            t.finished, t.asked_at = True, now

    def _quiet(self, since: float, now: float) -> bool:
        """Whether the store has said nothing for ``retry_seconds`` since ``since``: then
        ask again. While it answers anything, it is busy, not deaf: resending would only
        add to its queue."""
        return now - max(since, self._last_reply) > self.settings.retry_seconds

    def _room(self) -> bool:
        with self._inflight_lock:
            return self._inflight < self.settings.window

    def _spend(self, n: int) -> bool:
        """Token bucket for the optional bandwidth cap."""
        cap = self.settings.bandwidth
        if cap is None:
            return True
        now = time.monotonic()
        self._tokens = min(float(cap), self._tokens + (now - self._token_time) * cap)
        self._token_time = now
        if self._tokens < n and self._tokens < cap:
            return False
        self._tokens -= n
        return True

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        with self._inflight_lock:
            self._inflight += 1
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            with self._inflight_lock:
                self._inflight = max(0, self._inflight - 1)

    def _publish_status(self, ledger: SyncLedger, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_status < self.settings.status_seconds:
            return
        self._last_status = now
        status = self._status_doc(ledger, online=True)
        self._publish(p.up(self.device_id, "status"), p.dumps(status), retain=True)

    def _status_doc(self, ledger: SyncLedger, online: bool) -> dict[str, Any]:
        backlog = ledger.backlog()
        oldest = backlog["oldest_unsynced_end"]
        wall = self.clock.wall()
        self.deadline_level = p.deadline_level(wall, oldest, self.settings.warn_hours)
        return {
            "device": self.device_id,
            "online": online,
            **(self.status_source() if online else {}),
            "backlog": backlog,
            "oldest_unsynced_age": None if oldest is None else round(wall - oldest, 1),
            "deadline": self.deadline_level,
        }

    def _sweep(self, ledger: SyncLedger) -> None:
        keep = self.settings.keep_after_receipt_hours
        if keep is None:
            return
        for sha, file in ledger.deletable(self.clock.wall(), keep):
            (self.root / file).unlink(missing_ok=True)
            ledger.deleted(sha, self.clock.wall())


def _chunk_hashes(path: Path, chunk_size: int) -> tuple[str, ...]:
    out = []
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            out.append(hashlib.sha256(chunk).hexdigest())
    return tuple(out)


def load_receipt_key(path: Path) -> nacl.signing.VerifyKey:
    return nacl.signing.VerifyKey(bytes.fromhex(path.read_text().strip()))


def receipts_of(root: Path) -> dict[str, dict[str, Any]]:
    """Stored receipts by blob hash (unverified: callers check them with the agency key)."""
    out = {}
    for f in (root / RECEIPTS).glob("*.json"):
        try:
            out[f.stem] = json.loads(f.read_bytes())
        except ValueError:
            continue
    return out
