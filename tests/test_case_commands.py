"""Commands name what they act on (issue 14): a close for case A never closes the
session open for case B, nor one it does not name."""

from __future__ import annotations

import time
from pathlib import Path

from agent.room import close_refusal
from device.clock import SimClock
from simulator.device import SimDevice
from simulator.site import LocalSite, device_config
from tests.fixtures.room import SMALL, entries


def test_a_close_must_name_the_open_session_or_its_case() -> None:
    assert close_refusal("s-1", "A-1", case="A-1", session=None) is None
    assert close_refusal("s-1", "A-1", case="A-1", session="s-1") is None
    assert "the open session is case 'B-2''s" in str(
        close_refusal("s-1", "B-2", case="A-1", session=None)
    )
    assert "opened without a case" in str(close_refusal("s-1", None, case="A-1", session=None))
    assert "names session 's-9'" in str(close_refusal("s-1", "A-1", case="A-1", session="s-9"))


def test_a_close_for_case_a_leaves_case_b_recording(tmp_path: Path) -> None:
    with LocalSite(tmp_path / "site") as site:
        settings = {"recording": SMALL}
        data = site.provision_device("room-0103", settings=settings, room="103")
        dev = SimDevice(data, device_config(data), clock=SimClock(wall_start=time.time()))
        dev.start()
        try:
            dev.run(0.5)
            rec = dev.recorder
            rec.apply_command(site.session_command("room-0103", "session_open", case="B-2"))
            dev.run(0.5)
            assert rec.session is not None
            sid = rec.session.id
            close_a = site.session_command("room-0103", "session_close", case="A-1")
            assert rec.apply_command(close_a) is None
            assert "the open session is case 'B-2''s" in str(rec.last_error)
            wrong = site.session_command("room-0103", "session_close", case="B-2", session="ab-1")
            assert rec.apply_command(wrong) is None and rec.session is not None
            assert rec.session.id == sid
            close_b = site.session_command("room-0103", "session_close", case="B-2", session=sid)
            assert rec.apply_command(close_b) is not None
            dev.run(0.2)
            assert rec.session is None
            assert [e.body["case"] for e in entries(data, "session_close")] == ["B-2"]
        finally:
            dev.stop()
