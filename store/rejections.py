"""The store's record of what it refused (``rejections``): the one module that writes it.

Every refusal a device's message meets, and every upload dropped unfinished, is kept with
its reason, so the store report counts them per device and reason (:mod:`store.report`
reads them). The caller's transaction holds the record with what the refusal undid; the
refusals of a batch of messages are kept together (:class:`Refusals`), in one transaction
that spares the fsync: a record lost in a crash is made again when the device resends,
and a flood of refusals must not cost the disk a flush each.
"""

from __future__ import annotations

from store.db import Database


def record_refusal(db: Database, device: str, what: str, reason: str, at: float) -> None:
    """Keep that ``what`` (a topic, an entry, a blob) of ``device`` was refused, and why."""
    db.execute(
        "insert into rejections (device, topic, reason, at) values (?, ?, ?, ?)",
        (device, what, reason, at),
    )


class Refusals:
    """The refusals of one batch, written together by :meth:`flush`."""

    def __init__(self) -> None:
        self._rows: list[tuple[str, str, str, float]] = []

    def add(self, device: str, what: str, reason: str, at: float) -> None:
        self._rows.append((device, what, reason, at))

    def flush(self, db: Database) -> None:
        """Write what was added (the rows are dropped, written or not: the caller logs a
        failure, and the devices resend)."""
        rows, self._rows = self._rows, []
        if rows:
            with db.transaction(durable=False):
                for row in rows:
                    record_refusal(db, *row)
