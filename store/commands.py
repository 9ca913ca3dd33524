"""``unbroken store send``: deliver an agency-signed command to a device, and say what
became of it.

The agency signs commands (``provision assign``, ``provision open-session``); the store's
client is the one the broker lets write ``unbroken/c/<device>/<command>``. The command is
checked before it is sent (agency key, validity window), so a wrong file is refused here
with its reason instead of being ignored by the device. It is then kept in the store's
mailbox (:mod:`store.mailbox`) — a device offline now gets it when it connects, until it
expires — published at once, and ``send`` waits (bounded) for the device's signed answer,
which the store worker serving the device records.

Example::

    unbroken provision open-session --device room-1 --case A-17 --badge 012345 --out open.cmd
    unbroken store send --config store.toml open.cmd --wait 30
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from common.commands import AgencyCommand, check_command
from evidence import protocol as p
from evidence.messages import Status
from evidence.names import iso
from evidence.signed import SignedError, parse
from provisioning.agency import Agency
from store.config import StoreConfig
from store.db import Database
from store.mailbox import Mailbox, QueuedCommand

__all__ = ["Outcome", "SignedError", "check", "outcome", "publish_command", "send_command"]

APPLIED, REFUSED, PENDING = 0, 1, 3  # the exit status of `store send` for each outcome


@dataclass(frozen=True)
class Outcome:
    text: str
    status: int


def check(config: StoreConfig, data: bytes, now: float) -> AgencyCommand:
    """``data`` checked as an agency command of this agency, valid now."""
    payload, _ = parse(data, "command")
    agency = Agency(config.agency)
    try:
        return check_command(data, agency.verify_key, str(payload.get("device")), now)
    finally:
        agency.close()


def send_command(
    config: StoreConfig,
    data: bytes,
    now: float,
    wait: float = 30.0,
    clock: Callable[[], float] = time.time,
    timeout: float = 10.0,
) -> Outcome:
    """Check, keep, publish, and wait up to ``wait`` seconds for the device's answer."""
    cmd = check(config, data, now)
    db = Database.connect(config.database)
    try:
        box = Mailbox(db)
        queued = box.queue(cmd, data, now)
        unreachable = None
        if queued.state == "pending":
            try:
                publish_command(config, cmd.device, cmd.command, data, timeout)
                box.sent(cmd.nonce, clock())
            except OSError as e:  # kept all the same: the store delivers it later
                unreachable = str(e)
        deadline = clock() + wait
        while queued.state == "pending" and unreachable is None and clock() < deadline:
            time.sleep(0.2)
            queued = box.get(cmd.nonce, clock()) or queued
        return outcome(queued, device_online(db, cmd.device), unreachable)
    finally:
        db.close()


def outcome(c: QueuedCommand, online: bool | None, unreachable: str | None = None) -> Outcome:
    """What ``store send`` says of a command, and its exit status."""
    what = f"{c.command} on {c.device}"
    if c.state == "applied":
        entry = f", chain entry {c.seq}" if c.seq is not None else ""
        again = f" ({c.reason})" if c.reason else ""
        return Outcome(f"applied: {what}{entry}{again}", APPLIED)
    if c.state == "refused":
        return Outcome(f"refused: {c.reason or 'no reason given'} ({what})", REFUSED)
    if c.state == "expired":
        return Outcome(
            f"expired: {c.device} never answered {c.command}; it expired at {iso(c.expires)}",
            REFUSED,
        )
    until = f"queued until {iso(c.expires)}: the store delivers it when {c.device} connects"
    if unreachable is not None:
        return Outcome(f"pending: broker not reachable ({unreachable}); {until}", PENDING)
    if online:
        return Outcome(f"pending: {c.device} is online but has not answered; {until}", PENDING)
    if online is None:
        return Outcome(f"pending: device offline (no status from it yet), {until}", PENDING)
    return Outcome(f"pending: device offline, {until}", PENDING)


def device_online(db: Database, device: str) -> bool | None:
    """What the device's last status said (None: it never sent one, or none that reads)."""
    rows = db.query("select status from statuses where device = ?", (device,))
    if not rows:
        return None
    try:
        return Status.parse(rows[0]["status"].encode()).online
    except p.ProtocolError:
        return None


def publish_command(
    config: StoreConfig, device: str, name: str, data: bytes, timeout: float = 10.0
) -> None:
    """Publish ``data`` as is on the device's command topic (unchecked: tests send
    forgeries). OSError naming the broker when it cannot be reached or does not take it."""
    from common.mqtt import tls_client

    b = config.broker
    client = tls_client(f"{config.name}-commands", b.ca, b.cert, b.key)
    try:
        client.connect(b.host, b.port)
    except OSError as e:
        raise OSError(f"the broker at {b.host}:{b.port}: {e.strerror or e}") from None
    client.loop_start()
    try:
        info = client.publish(p.command(device, name), data, qos=1)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise OSError(f"the broker at {b.host}:{b.port} did not take the command")
    finally:
        client.disconnect()
        client.loop_stop()
