"""The session state machine, without threads, sockets or disks."""

from __future__ import annotations

import pytest

from agent.session import Action, SessionError, SessionMachine, State


def test_starts_buffering_with_a_prebuffer_and_idle_without() -> None:
    with_buffer, without = SessionMachine(prebuffer=True), SessionMachine(prebuffer=False)
    with_buffer.start()
    without.start()
    assert with_buffer.state == State.BUFFERING
    assert without.state == State.IDLE


def test_one_press_opens() -> None:
    m = SessionMachine(prebuffer=True)
    m.start()
    assert m.press(now=1.0) == [Action.OPEN]
    assert m.state == State.RECORDING


def test_a_single_press_while_recording_does_not_close() -> None:
    m = SessionMachine(prebuffer=True, confirm_window=3.0)
    m.start()
    m.press(now=0.0)
    assert m.press(now=10.0) == [Action.ARM_CLOSE]
    assert m.state == State.RECORDING and m.close_armed
    assert m.tick(now=13.5) == [Action.DISARM_CLOSE]
    assert m.state == State.RECORDING and not m.close_armed
    # a press after the window lapsed arms again instead of closing
    assert m.press(now=14.0) == [Action.ARM_CLOSE]


def test_press_and_confirm_closes() -> None:
    m = SessionMachine(prebuffer=True, confirm_window=3.0)
    m.start()
    m.press(now=0.0)
    m.press(now=10.0)
    assert m.press(now=12.9) == [Action.CLOSE]
    assert m.state == State.CLOSING
    assert m.press(now=13.0) == []  # presses while closing do nothing
    m.closed()
    assert m.state == State.BUFFERING


def test_hold_closes_at_once_and_opens_when_not_recording() -> None:
    m = SessionMachine(prebuffer=False)
    m.start()
    assert m.hold(now=0.0) == [Action.OPEN]
    m.release()
    assert m.press(now=5.0) == [Action.ARM_CLOSE]
    assert m.hold(now=7.0) == [Action.CLOSE]
    m.closed()
    assert m.state == State.IDLE


def test_the_session_opens_on_the_press_edge_and_its_own_hold_does_not_close_it() -> None:
    """The officer presses and keeps the button down past the hold time: the session
    opened when the button went down, and that same press held does not close it."""
    m = SessionMachine(prebuffer=True)
    m.start()
    assert m.press(now=0.0) == [Action.OPEN]  # the edge, not the release
    assert m.hold(now=2.0) == []
    m.release()
    assert m.state == State.RECORDING
    # a later deliberate long press still closes, and so does press-and-confirm
    assert m.press(now=10.0) == [Action.ARM_CLOSE]
    assert m.hold(now=12.0) == [Action.CLOSE]
    m.closed()
    assert m.press(now=20.0) == [Action.OPEN]
    m.release()
    m.press(now=30.0)
    m.release()
    assert m.press(now=31.0) == [Action.CLOSE]


def test_api_open_and_close_refuse_what_does_not_fit() -> None:
    m = SessionMachine(prebuffer=True)
    m.start()
    with pytest.raises(SessionError, match="no session is open"):
        m.close()
    assert m.open() == [Action.OPEN]
    with pytest.raises(SessionError, match="already open"):
        m.open()
    assert m.close() == [Action.CLOSE]
    with pytest.raises(SessionError, match="still closing"):
        m.open()
