"""Commands name what they act on (issue 14): a close for case A never closes the
session open for case B, nor one it does not name."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.room import close_refusal, open_refusal
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


def test_an_open_never_relabels_another_cases_interview() -> None:
    assert open_refusal("s-1", None, case="C-3") is None  # opened at the panel: named now
    assert open_refusal("s-1", "C-3", case="C-3") is None  # its own case again
    assert "case 'B-2''s session s-1 is open: close it first" in str(
        open_refusal("s-1", "B-2", case="C-3")
    )


@contextmanager
def _room_recording_case_b(tmp_path: Path, device: str, room: str) -> Iterator[tuple[Any, ...]]:
    """A room controller whose session the case system opened for case B-2, recording."""
    with LocalSite(tmp_path / "site") as site:
        data = site.provision_device(device, settings={"recording": SMALL}, room=room)
        dev = SimDevice(data, device_config(data), clock=SimClock(wall_start=time.time()))
        dev.start()
        try:
            dev.run(0.5)
            rec = dev.recorder
            rec.apply_command(site.session_command(device, "session_open", case="B-2"))
            dev.run(0.5)
            assert rec.session is not None
            yield site, dev, data, rec.session.id
        finally:
            dev.stop()


def test_a_second_open_is_refused_and_case_b_closes_as_its_own(tmp_path: Path) -> None:
    """The attack: a valid open for case C while case B's session records sealed a case
    change into B's session, and B's own close was then refused."""
    with _room_recording_case_b(tmp_path, "room-0104", "104") as (site, dev, data, sid):
        rec = dev.recorder
        second = site.session_command("room-0104", "session_open", case="C-3")
        assert rec.apply_command(second) is None
        assert "case 'B-2''s session" in str(rec.last_error)
        assert [e for e in entries(data, "event") if e.body.get("type") == "case"] == []
        close_b = site.session_command("room-0104", "session_close", case="B-2", session=sid)
        assert rec.apply_command(close_b) is not None
        dev.run(0.2)
        assert rec.session is None
        assert [e.body["case"] for e in entries(data, "session_close")] == ["B-2"]


def test_a_close_for_case_a_leaves_case_b_recording(tmp_path: Path) -> None:
    with _room_recording_case_b(tmp_path, "room-0103", "103") as (site, dev, data, sid):
        rec = dev.recorder
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
