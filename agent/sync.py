"""The device's uploader: chain entries and media to the agency store over MQTT v5.

Transfer state lives in the journal (``sync_acks``, ``receipts``: :class:`SyncLedger`),
never in paho's in-memory session: after a restart, a broker outage or a store restart the
uploader asks the store what it still lacks and sends only that. Oldest recordings go
first, so every one meets its 24-hour deadline (R7). Local media is deleted only after a
receipt that verifies with the agency key is stored, and only once the configured retention
allows (R9).

This module is the I/O shell: the decisions are in :mod:`agent.sync_plan`, what goes on the
wire in :mod:`agent.sync_send`. Threads: paho's
network thread only queues what arrives; one uploader thread owns the journal connection,
asks the plan what to do, and does it (journal reads, file reads, publishes, receipts).

Example::

    up = Uploader(root, device_id, broker_settings(root), clock)
    up.start()
    ...
    backlog(SyncLedger(root))
    # {'entries': 0, 'blobs': 0, 'bytes': 0, 'oldest_unsynced_end': None}
    up.stop()
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.signing

from agent import sync_plan as plan
from agent import sync_replies, sync_timing
from agent.journal.sync_ledger import SyncLedger
from agent.sync_send import Sender
from agent.uplink import BrokerSettings, RoomOf, Uplink
from common.settings import Sync
from device.clock import Clock
from evidence import messages
from evidence import protocol as p
from evidence.blob_messages import Missing
from evidence.receipt import ReceiptError
from evidence.store_acks import OpenedAck

log = logging.getLogger(__name__)


def unreceipted(ledger: SyncLedger) -> list[plan.Segment]:
    """Sealed segments without a receipt, oldest first."""
    return [plan.Segment.sealed(seq, m) for seq, m in ledger.unreceipted_segments()]


def backlog(ledger: SyncLedger) -> messages.Backlog:
    """What the device has yet to get stored at the agency (the status's ``backlog``)."""
    return plan.backlog(ledger.unacked_count(), unreceipted(ledger))


# Refusals of the device as a whole, not of one message: agent status shows them as errors
# until the store accepts something again.
STANDING_REFUSALS = frozenset({"revoked", "quota", "store_full", "store_error"})
# An entry the store refused is sent again after a while: it stays in the backlog and its
# deadline until the store takes it (or the agency signs it off), never dropped for good.
REFUSED_WAIT, RETRY_REFUSED_EVERY = 3600.0, 600.0


class Uploader:
    """Chain entries and media from the journal to the store, on the uploader thread; the
    connection is an :class:`agent.uplink.Uplink`, the decisions a
    :class:`agent.sync_plan.SyncPlan`."""

    def __init__(
        self,
        root: Path,
        device_id: str,
        broker: BrokerSettings,
        clock: Clock,
        settings: Sync | None = None,
        status_source: Callable[[], dict[str, Any]] | None = None,
        on_command: Callable[[bytes], None] | None = None,
        room: str | RoomOf | None = None,
        on_panel: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.root = root
        self.device_id = device_id
        self.broker = broker
        self.clock = clock
        self.settings = settings or Sync()
        self.status_source = status_source or dict
        # Agency commands are handed on unverified: the recorder checks and applies them
        # on its own thread (one sealer per chain).
        self.on_command = on_command
        # A room controller also talks with its room's panel, on the same connection.
        self.link = Uplink(device_id, broker, self.settings.window, room, on_panel)
        self.connected = self.link.connected  # set once the uploader has taken the news
        self.client = self.link.client
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.plan = plan.SyncPlan(plan.rules(self.settings))
        pacer = sync_timing.Pacer(self.settings.bandwidth, at=time.monotonic())
        self.sender = Sender(root, device_id, self.link, self.plan, self.settings, pacer)
        self._status_due = sync_timing.Every(self.settings.status_seconds)
        self._retry_due = sync_timing.Every(RETRY_REFUSED_EVERY)
        self.deadline_level = "ok"  # of the oldest recording without a receipt (R7)
        self.refusals = self.link.refusals  # what the store or broker refused
        # The store's standing refusal of this device ("revoked: …", "store_full: …"),
        # cleared by the next receipt or accepted entry: agent status shows it as an error.
        self.store_refusal: str | None = None
        self._receipted: list[int] = []  # entries receipted in the batch being handled

    @property
    def panel_state(self) -> str | None:
        """The last state shown on the room panel."""
        return self.link.panel.state

    def answer(self, signed_answer: bytes) -> None:
        """Thread-safe: the device's signed answer to an agency command, to the store. One
        lost on the way is no loss: the store delivers the command again until answered."""
        self.link.publish(p.up(self.device_id, "answer"), signed_answer)

    def show_on_panel(self, state: str) -> None:
        """Thread-safe: see :meth:`agent.uplink.Uplink.show_on_panel`."""
        self.link.show_on_panel(state)

    # -- lifecycle -------------------------------------------------------------------

    def start(self, connect: bool = True) -> None:
        """Start the uploader thread, and (``connect``) the broker connection."""
        if connect:
            self.connect()
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)
        self._thread.start()

    def connect(self) -> None:
        """Open the broker connection (again, after a ``disconnect()``); paho retries."""
        self.link.connect()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        if self.connected.is_set():  # a clean stop sends no will: say offline ourselves
            ledger = SyncLedger(self.root)
            try:
                status = self._status(ledger, online=False)
            finally:
                ledger.close()
            info = self.client.publish(
                p.up(self.device_id, "status"), status.to_bytes(), qos=1, retain=True
            )
            info.wait_for_publish(timeout=5)
        self.link.close()

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is left to send and every blob has a receipt."""
        ledger = SyncLedger(self.root)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if ledger.unacked_count() == 0 and ledger.unreceipted_count() == 0:
                    return True
                time.sleep(0.05)
            return False
        finally:
            ledger.close()

    # -- the uploader thread ---------------------------------------------------------

    def _run(self) -> None:
        ledger = SyncLedger(self.root)
        try:
            while not self._stop.is_set():
                try:
                    self._turn(ledger)
                except Exception as e:  # a fault (a full disk, a vanished file) is retried
                    log.error("uploader: %s: %s; retrying", type(e).__name__, e)
                    self._stop.wait(1.0)
        finally:
            ledger.close()

    def _turn(self, ledger: SyncLedger) -> None:
        messages = 0
        try:
            kind, data = self.link.inbox.get(timeout=0.05)
            with ledger.batch():  # what arrived together is committed together
                while True:
                    self._handle_safely(ledger, kind, data)
                    messages += kind == "message"
                    kind, data = self.link.inbox.get_nowait()  # drain without waiting
        except queue.Empty:
            pass
        if self._receipted:  # one line a batch, not one a segment (thousands an hour)
            seqs, self._receipted = self._receipted, []
            log.info(
                "store receipted %d segment(s), entries %d-%d", len(seqs), min(seqs), max(seqs)
            )
        if messages:
            self._sweep(ledger)  # after the receipts are committed, never before
        if self.connected.is_set():
            self._pump(ledger)
        elif self._status_due.due(time.monotonic()):
            # Offline the 24-hour clock still runs: the LED and buzzer must warn.
            self._status(ledger, online=False)

    def _handle_safely(self, ledger: SyncLedger, kind: str, data: Any) -> None:
        """One message never stops the uploader, whatever it holds."""
        try:
            self._handle(ledger, kind, data)
        except Exception as e:
            topic = getattr(data, "topic", kind)
            log.warning("ignored message on %s: %s: %s", topic, type(e).__name__, e)

    def _handle(self, ledger: SyncLedger, kind: str, data: Any) -> None:
        if kind in ("message", "connected"):
            self.plan.heard(time.monotonic())
        if kind == "connected":
            self.plan.reset()
            self.link.clear_window()
            self.connected.set()
            self._publish_status(ledger, force=True)
        elif kind == "disconnected":
            self.plan.reset()
        elif kind == "message":
            try:
                reply = sync_replies.read_reply(
                    self.device_id, data.topic, bytes(data.payload), self.broker.agency_key
                )
            except ReceiptError as e:
                log.warning("receipt refused: %s", e)
                return
            except p.ProtocolError as e:
                log.warning("ignored reply on %s: %s", data.topic, e)
                return
            self._apply(ledger, reply, data.topic)

    def _apply(self, ledger: SyncLedger, reply: sync_replies.Reply, topic: str) -> None:
        if isinstance(reply, sync_replies.CommandArrived):
            if self.on_command is None:
                log.warning("no recorder to apply the command on %s", topic)
            else:
                self.on_command(reply.payload)
        elif isinstance(reply, OpenedAck):
            self._ack(ledger, reply)
        elif isinstance(reply, Missing):
            self.plan.lacks(reply, time.monotonic())
            if reply.reason:
                log.info("store asks again for %s: %s", reply.sha256[:12], reply.reason)
        elif isinstance(reply, sync_replies.Receipt):
            self._receipt(ledger, reply)
        elif isinstance(reply, messages.Resend):
            log.info("a store worker took this device over: sending again what was in flight")
            self.plan.reset()  # the journal says again what is unsent
        elif isinstance(reply, messages.Rejected):
            backs_off = self.plan.refused(reply.code, time.monotonic())
            log.warning(
                "store rejected a message (%s): %s%s",
                reply.code or "no code",
                reply.text,
                "; media waits" if backs_off else "",
            )
            self.refusals.append(reply.text)
            if reply.code in STANDING_REFUSALS:
                self.store_refusal = f"{reply.code}: {reply.text}"

    def _ack(self, ledger: SyncLedger, opened: OpenedAck) -> None:
        """Act on an ack only when the store signed it for this very entry: an unsigned
        one (anyone on the reply topic could send it) changes nothing, and the entry waits
        for the store's own answer, or is sent again."""
        reply = opened.ack
        entry = ledger.entry(reply.seq)
        if not opened.signed or entry is None or entry.hash != opened.entry_hash:
            why = "unsigned" if not opened.signed else "for another entry than this device's"
            log.warning("ack of entry %d ignored: %s", reply.seq, why)
            return
        self.plan.answered(reply.seq, reply.ok)
        if reply.ok:
            ledger.ack(reply.seq)
            self.store_refusal = None
            return
        log.error("store refused entry %d (%s): %s", reply.seq, reply.code, reply.reason)
        self.refusals.append(f"entry {reply.seq}: {reply.reason}")
        ledger.refused(reply.seq, reply.reason, self.clock.wall())
        if reply.code in STANDING_REFUSALS:
            self.store_refusal = f"{reply.code}: {reply.reason}"

    def _receipt(self, ledger: SyncLedger, reply: sync_replies.Receipt) -> None:
        found = ledger.sealed(reply.seq)
        sealed = None
        if found is not None:
            entry_hash, m = found
            sealed = sync_replies.Sealed(m.sha256, m.size, entry_hash)
        why = sync_replies.receipt_refusal(reply.claim, sealed)
        if why is not None:
            log.warning("receipt for %s refused: %s", reply.sha256[:12], why)
            self.refusals.append(f"receipt {reply.sha256[:12]}: {why}")
            return
        # A receipt acknowledges the manifest entry too (it may have travelled with it).
        ledger.ack(reply.seq)
        ledger.receipt(reply.sha256, reply.seq, reply.data, self.clock.wall())
        log.debug("receipt accepted for entry %d (%s)", reply.seq, reply.sha256[:12])
        self._receipted.append(reply.seq)
        self.plan.answered(reply.seq)
        self.plan.receipted(reply.sha256)
        self.store_refusal = None

    def _pump(self, ledger: SyncLedger) -> None:
        now = time.monotonic()
        scans = self.plan.scans
        if scans.glance_due(now):
            scans.glanced(ledger.head(), self.plan.waiting_on_quiet_store(now))
        if self._retry_due.due(now) and ledger.retry_refused(self.clock.wall() - REFUSED_WAIT):
            scans.wake()  # refused a while ago: sent again (only a sign-off ends it)
        if scans.take():
            self.sender.scan(ledger, now)
        if self.plan.paused(now):
            self._publish_status(ledger)
            return
        for t in list(self.plan.transfers.values()):
            self.sender.advance(t, now)
        self._publish_status(ledger)

    def _publish_status(self, ledger: SyncLedger, force: bool = False) -> None:
        if not self._status_due.due(time.monotonic(), force):
            return
        status = self._status(ledger, online=True)
        self.link.publish(p.up(self.device_id, "status"), status.to_bytes(), retain=True)

    def _status(self, ledger: SyncLedger, online: bool) -> messages.Status:
        status = plan.status(
            self.device_id,
            online,
            backlog(ledger),
            self.clock.wall(),
            self.settings.warn_hours,
            self.status_source() if online else {},
        )
        self.deadline_level = status.deadline or "ok"
        return status

    def _sweep(self, ledger: SyncLedger) -> None:
        cutoff = plan.retention_cutoff(self.clock.wall(), self.settings.keep_after_receipt_hours)
        if cutoff is None:
            return
        for sha, manifest in ledger.receipted_before(cutoff):
            (self.root / manifest.file).unlink(missing_ok=True)
            ledger.deleted(sha, self.clock.wall())


def load_receipt_key(path: Path) -> nacl.signing.VerifyKey:
    return nacl.signing.VerifyKey(bytes.fromhex(path.read_text().strip()))
