"""The recorder's collaborators, where they decide something: without threads or disks."""

from __future__ import annotations

import pytest

from agent.interruptions import InterruptionTracker
from agent.open_segment import OpenSegment
from agent.session import SessionError, SessionMachine, State
from device.gnss import Fix, GnssState
from evidence.manifest import Location
from evidence.seal import Moment


def _fix(lat: float, received: float) -> Fix:
    return Fix(lat, 117.0, None, 0.0, received, 7, 1.0)


def _segment() -> OpenSegment:
    return OpenSegment({}, Moment(1.0, 1.0, True))


def test_a_segment_with_a_fix_on_every_frame_is_located_ok() -> None:
    seg = _segment()
    seg.note_position(GnssState(_fix(31.0, 10.0), True), 10.0)
    seg.note_position(GnssState(_fix(31.5, 10.1), True), 10.1)
    assert seg.location() == Location("ok", (31.0, 117.0), (31.5, 117.0), None)


def test_a_fix_lost_inside_a_segment_is_partial_with_the_oldest_age() -> None:
    seg = _segment()
    seg.note_position(GnssState(_fix(31.0, 10.0), True), 10.0)
    seg.note_position(GnssState(_fix(31.0, 10.0), False), 12.33333)
    seg.note_position(GnssState(_fix(31.0, 10.0), False), 11.0)
    assert seg.location() == Location("partial", (31.0, 117.0), (31.0, 117.0), 2.333)


def test_a_segment_with_no_fix_says_none() -> None:
    seg = _segment()
    seg.note_position(GnssState(None, False), 10.0)
    assert seg.location() == Location("none", None, None, None)


def test_a_session_recovered_at_boot_records_and_closes_deliberately() -> None:
    m = SessionMachine(prebuffer=True)
    m.start()
    m.recovered()
    assert m.state == State.RECORDING
    m.close()
    with pytest.raises(SessionError):
        m.recovered()  # the close is being sealed: nothing to resume
    m.closed()
    assert m.state == State.BUFFERING


def test_a_gap_ended_at_boot_is_explained_by_the_first_seconds_in_auto_mode() -> None:
    t = InterruptionTracker(explain_seconds=10)
    t.ended_at_boot("g-1", Moment(100.0, 5.0, True))
    assert t.prompting
    assert t.tick(Moment(105.0, 10.0, True)) == []
    (done,) = t.tick(Moment(115.0, 15.0, True))
    assert (done.id, done.start.mono, done.end.mono) == ("g-1", 5.0, 15.0)


def test_a_gap_ended_at_boot_waits_for_the_button_in_button_mode() -> None:
    t = InterruptionTracker(explain_seconds=10, mode="button", explain_timeout=60)
    t.ended_at_boot("g-1", Moment(100.0, 5.0, True))
    assert t.tick(Moment(120.0, 25.0, True)) == []
    assert t.explain_pressed(Moment(120.0, 25.0, True))
    (done,) = t.tick(Moment(130.0, 35.0, True))
    assert done.start.mono == 25.0
