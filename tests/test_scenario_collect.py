"""What a scenario collects from a device's chain is read through each entry kind's owner:
an entry whose body does not read is a named problem of the device, never a traceback,
and the rest of its chain is read as it is."""

from __future__ import annotations

from pathlib import Path

import nacl.signing

from agent.chain import ChainWriter
from agent.journal.chain_index import Journal
from device.clock import SimClock
from evidence.entries import Boot, Event, Shutdown
from evidence.seal import Moment, Sealer
from evidence.session_bodies import Marker
from simulator.scenario_collect import collect_device

KEY = nacl.signing.SigningKey.generate()


def test_a_body_that_does_not_read_is_a_named_problem(tmp_path: Path) -> None:
    clock = SimClock()
    journal = Journal(tmp_path)
    chain = ChainWriter(journal, KEY, "bwc-1", clock)
    chain.seal_body(Boot(software="test"))
    chain.seal_body(Boot(software="unbroken", tool="explain"))  # a tool's: no boot
    chain.seal_body(Marker("rights_notified", "at the door", {}))
    chain.seal_body(Event("gnss_lost"))
    bad = Sealer(KEY, "bwc-1", journal.last()).seal("marker", {"note": 7}, chain.now())
    journal.append(bad)
    chain = ChainWriter(journal, KEY, "bwc-1", clock)
    chain.seal_body(Shutdown("battery"), at=Moment(clock.wall() + 5, clock.monotonic(), True))
    journal.close()
    (tmp_path / "device.pub").write_text(bytes(KEY.verify_key).hex() + "\n")
    wall0 = clock.wall()
    facts = collect_device(tmp_path, "bwc-1", "body", ["main"], [], wall0, None, {}, [], [])
    unread = [p for p in facts.problems if p["code"] == "malformed_entry"]
    assert [p["message"] for p in unread] == [f"entry {bad.seq}: marker: 'type' is missing"]
    assert len(facts.boots) == 1
    assert [(m.type, m.note) for m in facts.markers] == [("rights_notified", "at the door")]
    assert [kind for _, kind in facts.events] == ["gnss_lost"]
    assert [why for _, why in facts.shutdowns] == ["battery"]
