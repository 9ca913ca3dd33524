"""What a store worker does for the mailbox (:mod:`store.mailbox`) with what devices send:
a device's online status makes its pending commands due; its signed answer to a command is
checked, kept, and published for the case system on ``unbroken/a/<device>/<nonce>``.

Answers never reach :class:`store.ingest.Ingest` (they are not evidence of the chain);
statuses go on to it as before.

Example::

    desk = Delivery(Mailbox(db), directory.device_keys, directory.revoked_at)
    batch, publish = desk.take(batch, now)    # publish: (topic, payload) to send at QoS 1
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from common.commands import open_answer
from evidence import protocol as p
from evidence.messages import Status
from evidence.names import ProvisionError
from provisioning.registry import RegisteredKey
from store.mailbox import Mailbox

log = logging.getLogger(__name__)

Message = tuple[str, bytes, dict[str, str]]


class Delivery:
    def __init__(
        self,
        mailbox: Mailbox,
        keys: Callable[[str], list[RegisteredKey]],
        revoked_at: Callable[[str], float | None],
    ) -> None:
        self.mailbox = mailbox
        self.keys = keys
        self.revoked_at = revoked_at
        self._online: dict[str, bool] = {}  # per device, as its last status said

    def take(
        self, batch: list[Message], now: float
    ) -> tuple[list[Message], list[tuple[str, bytes]]]:
        """The batch without the answers, and what to publish: commands due to the devices
        that said they are online, and each answer for the case system."""
        rest: list[Message] = []
        publish: list[tuple[str, bytes]] = []
        for msg in batch:
            topic, payload, _ = msg
            try:
                device, parts = p.parse_up(topic)
            except p.ProtocolError:
                rest.append(msg)
                continue
            if parts == ["answer"]:
                publish += self._answer(device, payload, now)
                continue
            rest.append(msg)
            if parts == ["status"]:
                publish += self._status(device, payload, now)
        return rest, publish

    def deliver(
        self, device: str, now: float, came_online: bool = False
    ) -> list[tuple[str, bytes]]:
        """The device's commands that are due now, as messages on its command topics."""
        if self.revoked_at(device) is not None:
            return []
        due = self.mailbox.due(device, now, came_online)
        for c in due:
            log.info(
                "%s: delivering %s (nonce %s, delivery %d)",
                device,
                c.command,
                c.nonce[:8],
                c.sends + 1,
            )
        return [(p.command(device, c.command), c.data) for c in due]

    def _status(self, device: str, payload: bytes, now: float) -> list[tuple[str, bytes]]:
        try:
            status = Status.parse(payload)
        except p.ProtocolError:
            return []  # Ingest refuses it with its reason
        if status.device != device:
            return []  # as is one naming another device
        online = status.online
        came_online = online and not self._online.get(device, False)
        self._online[device] = online
        return self.deliver(device, now, came_online) if online else []

    def _answer(self, device: str, payload: bytes, now: float) -> list[tuple[str, bytes]]:
        try:
            if self.revoked_at(device) is not None:
                raise ProvisionError("the device is revoked")
            current = [k.verify_key for k in self.keys(device) if k.valid_until is None]
            answer = open_answer(payload, current, device)
        except (ProvisionError, p.ProtocolError) as e:
            log.warning("%s: command answer refused: %s", device, e)
            return []
        kept = self.mailbox.record(answer, payload, now)
        if kept is None:
            log.warning(
                "%s: answer to a command this store did not send (nonce %s)",
                device,
                answer.nonce[:8],
            )
            return []
        why = f": {answer.reason}" if answer.reason else ""
        log.info(
            "%s: %s %s%s (nonce %s)", device, answer.command, answer.outcome, why, answer.nonce[:8]
        )
        return [(p.answer(device, answer.nonce), payload)]
