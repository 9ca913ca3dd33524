"""The device frees footage only against its own record (issue 14): receipts that verify
with the agency key but name another hash, size, entry or a hostile path free nothing,
and no message stops the uploader thread. No broker: replies go straight to the inbox."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.journal.sync_ledger import SyncLedger
from agent.sync import Uploader
from common.archive.device_directory import load_chain
from common.settings import Sync
from device.clock import SimClock
from evidence import protocol as p
from evidence.receipt import make_receipt
from evidence.seal import Entry
from simulator.device import SimDevice
from simulator.site import LocalSite
from tests.fixtures.config import small_config

DEV = "bwc-0001"


@dataclass
class Message:
    topic: str
    payload: bytes


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalSite, Path]]:
    with LocalSite(tmp_path_factory.mktemp("site")) as site:
        data = site.provision_device(DEV)
        dev = SimDevice(data, small_config(prebuffer_seconds=1))
        dev.start()
        dev.recorder.open_session()
        dev.run(4)
        dev.recorder.close_session()
        dev.stop()
        yield site, data


def _segments(data: Path) -> list[Entry]:
    return [e for _, e in load_chain(data) if isinstance(e, Entry) and e.kind == "segment"]


def _receipt(site: LocalSite, seg: Entry, **change: object) -> bytes:
    fields: dict[str, object] = {
        "device": DEV,
        "sha256": seg.body["sha256"],
        "size": seg.body["size"],
        "entry_seq": seg.seq,
        "entry_hash": seg.hash,
        "session": seg.session,
        "stored_at": time.time(),
        "store": "1",
    }
    fields.update(change)
    return make_receipt(site.agency.signing_key, **fields)  # type: ignore[arg-type]


def _deliver(up: Uploader, *payloads: bytes) -> None:
    """Hand receipts to the running uploader thread and wait until it took them."""
    for payload in payloads:
        up.link.inbox.put(("message", Message(p.reply(DEV, "receipt"), payload)))
    deadline = time.monotonic() + 10
    while not up.link.inbox.empty() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # the last one is being handled


def _receipted(data: Path) -> set[str]:
    ledger = SyncLedger(data)
    try:
        return {r[0] for r in ledger.db.execute("select sha256 from receipts")}
    finally:
        ledger.close()


def test_receipts_that_do_not_match_the_journal_free_nothing(
    recorded: tuple[LocalSite, Path],
) -> None:
    site, data = recorded
    segs = _segments(data)
    assert len(segs) >= 2
    first, second = segs[0], segs[1]
    settings = Sync(keep_after_receipt_hours=0.0)
    up = site.uploader(data, SimClock(wall_start=time.time()), settings)
    up.start(connect=False)
    try:
        random_hash = hashlib.sha256(b"random").hexdigest()
        _deliver(
            up,
            _receipt(site, first, sha256=random_hash),  # a random hash, a real entry_seq
            _receipt(site, first, entry_seq=second.seq),  # segment 7's hash, 8's seq
            _receipt(site, first, size=first.body["size"] + 1),  # a wrong size
            _receipt(site, first, entry_hash=second.hash),  # a wrong entry hash
            _receipt(site, first, sha256="../../../../tmp/x"),  # a path, not a hash
            _receipt(site, first, entry_seq="x"),  # does not resolve
            _receipt(site, first, entry_seq=-5),
        )
        for seg in segs:
            assert (data / seg.body["file"]).is_file()
        assert _receipted(data) == set()
        assert not (data.parent / "tmp").exists() and not Path("/tmp/x.json").exists()
        assert len(up.refusals) == 4  # the well-formed four; the malformed are logged
        # the thread is alive: a receipt naming exactly what was sealed frees the footage
        _deliver(up, _receipt(site, first))
        assert _receipted(data) == {first.body["sha256"]}
        assert not (data / first.body["file"]).exists()
        assert (data / second.body["file"]).is_file()
    finally:
        up.stop()
