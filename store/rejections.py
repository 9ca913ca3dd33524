"""The store's record of what it refused (``rejections``): the one module that writes it.

Every refusal a device's message meets, and every upload dropped unfinished, is kept with
its reason, so the store report counts them per device and reason (:mod:`store.report`
reads them). The caller's transaction holds the record with what the refusal undid.
"""

from __future__ import annotations

from store.db import Database


def record_refusal(db: Database, device: str, what: str, reason: str, at: float) -> None:
    """Keep that ``what`` (a topic, an entry, a blob) of ``device`` was refused, and why."""
    db.execute(
        "insert into rejections (device, topic, reason, at) values (?, ?, ?, ?)",
        (device, what, reason, at),
    )
