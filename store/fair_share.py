"""A store worker's inbox, shared fairly between the devices it serves.

paho's network thread puts each message in its device's own queue; the handler takes a
batch by turns, one message of each waiting device at a time, so a device sending a
flood waits behind itself, never in front of another device's segment. A device may have
only so many messages waiting (``share``): past that its message is not queued but
counted, and the device told to back off (``quota``) — the network thread never waits
for one device, so no device can stall the others. The whole inbox is bounded too
(``total``): when it is full the network thread waits, and the broker with it.

Example::

    inbox = FairInbox(share=64, total=256)
    inbox.put("bwc-1", ("unbroken/d/bwc-1/entry", b"...", {}))   # False: over its share
    batch = inbox.take(64, 64 * 2**20, timeout=5)                # by turns, oldest first
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque

Item = tuple[str, bytes, dict[str, str]]

WAKE: Item = ("", b"", {})  # no message: only wakes the handler


class FairInbox:
    def __init__(self, share: int, total: int) -> None:
        self.share, self.total = share, total
        self._queues: OrderedDict[str, deque[Item]] = OrderedDict()  # in turn order
        self._size = 0
        self._closed = False
        self._overflow: dict[str, int] = {}  # per device, messages not queued since asked
        self._cond = threading.Condition()

    def put(self, device: str, item: Item) -> bool:
        """Queue ``item`` for ``device``; False if the device already has its share
        waiting (counted: :meth:`overflow`). Waits while the whole inbox is full."""
        with self._cond:
            q = self._queues.get(device)
            if q is not None and len(q) >= self.share:
                self._overflow[device] = self._overflow.get(device, 0) + 1
                return False
            while self._size >= self.total and not self._closed:
                self._cond.wait()
            self._queues.setdefault(device, deque()).append(item)
            self._size += 1
            self._cond.notify_all()
            return True

    def wake(self) -> None:
        """Have the handler run once even with nothing queued (subscribe, beat)."""
        self.put("", WAKE)

    def close(self) -> None:
        """The handler takes what is queued, then :meth:`take` returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self, count: int, size: int, timeout: float) -> list[Item] | None:
        """Up to ``count`` messages and about ``size`` bytes, one of each waiting device
        in turn; [] if nothing came within ``timeout``; None once closed and empty."""
        with self._cond:
            if not self._size and not self._closed:
                self._cond.wait(timeout)
            if not self._size:
                return None if self._closed else []
            batch: list[Item] = []
            taken = 0
            while self._queues and len(batch) < count and taken < size:
                device, q = next(iter(self._queues.items()))
                item = q.popleft()
                self._queues.move_to_end(device)  # its next message after every other's
                if not q:
                    del self._queues[device]
                batch.append(item)
                taken += len(item[1])
            self._size -= len(batch)
            self._cond.notify_all()
            return batch

    def overflow(self) -> dict[str, int]:
        """Messages not queued per device since the last call (to record, once a batch)."""
        with self._cond:
            out, self._overflow = self._overflow, {}
            return out
