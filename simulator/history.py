"""A device with a long history, made cheaply: a recorded device's evidence sealed again
after many small entries (settings entries, as a device seals at each change), so that
reading one session can be set against the device's whole past. For tests and benchmarks.

Example::

    entries = with_history(recorded, Path("/tmp/long"), 40_000)   # a device's directory
    into_store(ingest, entries, Path("/tmp/long"), time.time())   # and what a store holds
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Sequence
from pathlib import Path

import nacl.signing

from common.archive.device_directory import load_chain
from evidence import protocol as p
from evidence.layout import CHAIN, KEYS, PUBKEY, SEGMENTS, entry_name, key_name
from evidence.seal import Entry, Moment, Sealer, key_id
from store.ingest import Ingest

HISTORY_KIND = "config"


def with_history(
    recorded: Path, dest: Path, history: int, key: nacl.signing.SigningKey | None = None
) -> list[Entry]:
    """``recorded``'s entries sealed again by ``key`` after ``history`` settings entries,
    written to ``dest`` (new) with its segment files and public key; the entries."""
    src = sorted((e for _, e in load_chain(recorded) if isinstance(e, Entry)), key=lambda e: e.seq)
    key = key or nacl.signing.SigningKey.generate()
    sealer = Sealer(key, str(src[0].payload["device"]), None)
    start = float(src[0].payload["at"]["wall"]) - history * 0.01 - 1
    entries = [
        sealer.seal(
            HISTORY_KIND,
            {"sha256": f"{i:064x}", "settings": {"revision": i}},
            Moment(start + i * 0.01, i * 0.01, True),
        )
        for i in range(history)
    ]
    for e in src:
        at = e.payload["at"]
        moment = Moment(float(at["wall"]), float(at["mono"]), bool(at["synced"]))
        entries.append(sealer.seal(e.kind, e.body, moment, e.session))
    for sub in (CHAIN, KEYS):
        (dest / sub).mkdir(parents=True)
    for e in entries:
        (dest / entry_name(e.seq)).write_bytes(e.to_json())
    shutil.copytree(recorded / SEGMENTS, dest / SEGMENTS)
    pub = bytes(key.verify_key).hex() + "\n"
    (dest / PUBKEY).write_text(pub)
    (dest / key_name(key_id(key.verify_key))).write_text(pub)
    return entries


def into_store(ingest: Ingest, entries: Sequence[Entry], root: Path, now: float) -> None:
    """What a store holds once ``entries`` (of the device directory ``root``) are synced:
    the history kept as the store keeps an entry it judged (in one transaction, where a
    worker takes one at a time), the rest through the store's own ingest, each segment
    whole with its entry."""
    device = str(entries[0].payload["device"])
    history = list(itertools.takewhile(_made_up, entries))
    with ingest.db.transaction():
        for e in history:
            ingest.chain.record(device, e, now, (float(e.payload["at"]["wall"]), None))
    for e in entries[len(history) :]:
        if e.kind == "segment":
            payload, properties = p.whole_segment(e.to_json(), (root / e.body["file"]).read_bytes())
            ingest.handle_many([(p.up(device, "segment"), payload, properties)], now)
        else:
            ingest.handle(p.up(device, "entry"), e.to_json(), now)


def _made_up(e: Entry) -> bool:
    settings = e.body.get("settings")
    return e.kind == HISTORY_KIND and isinstance(settings, dict) and "revision" in settings
