"""The chain writer: the one way the device seals, in the documented write order."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import nacl.signing
import pytest

from agent.chain import ChainWriter, open_chain
from agent.journal.chain_index import Journal
from common.archive.device_directory import load_chain
from device.clock import SimClock
from evidence.entries import Boot, Event, KeyRotation, Shutdown
from evidence.seal import Entry, Moment, check_signature
from evidence.session_bodies import InterruptionEnd, Marker, SessionClose
from evidence.verify import verify_chain

KEY = nacl.signing.SigningKey.generate()


def _chain(root: Path) -> list[Entry]:
    return [e for _, e in load_chain(root) if isinstance(e, Entry)]


def _marker(n: int) -> Marker:
    return Marker("note", str(n), {})


def test_what_is_sealed_is_on_file_and_in_the_journal(tmp_path: Path) -> None:
    clock = SimClock()
    with open_chain(tmp_path, KEY, "bwc-1", clock) as chain:
        boot = chain.seal_body(Boot(software="test"))
        end = chain.seal_body(InterruptionEnd("g-1", chain.now()), "s1")
        assert chain.head == (2, end.hash)
    files = _chain(tmp_path)
    assert [e.kind for e in files] == ["boot", "interruption_end"]
    assert files[1].session == "s1" and InterruptionEnd.from_body(files[1].body).id == "g-1"
    assert files[1].payload["prev"] == boot.hash
    check_signature(files[1], KEY.verify_key)
    journal = Journal(tmp_path)
    try:
        assert [e.kind for e in journal.entries()] == ["boot", "interruption_end"]
    finally:
        journal.close()


def test_a_later_writer_continues_the_chain(tmp_path: Path) -> None:
    clock = SimClock()
    for n in range(3):
        with open_chain(tmp_path, KEY, "bwc-1", clock) as chain:
            chain.seal_body(Boot(software=f"test {n}"))
    entries = _chain(tmp_path)
    assert [e.seq for e in entries] == [1, 2, 3]
    named = [(f"chain/{e.seq:010d}.json", e) for e in entries]
    assert verify_chain(named, KEY.verify_key, {}).ok


def test_an_agent_command_never_goes_back_in_monotonic_time(tmp_path: Path) -> None:
    clock = SimClock()
    journal = Journal(tmp_path)
    recorder = ChainWriter(journal, KEY, "bwc-1", clock)
    recorder.seal_body(Boot(), at=Moment(clock.wall(), 5000.0, True))
    journal.close()
    # a command process after a reboot: its clock is behind the chain
    with open_chain(tmp_path, KEY, "bwc-1", clock) as chain:
        assert chain.clock.monotonic() < 5000
        entry = chain.seal_body(Shutdown("test"))
    assert entry.payload["at"]["mono"] == 5000
    # the recorder's own writer takes its clock as it is
    journal = Journal(tmp_path)
    try:
        mine = ChainWriter(journal, KEY, "bwc-1", clock).seal_body(Boot())
        assert mine.payload["at"]["mono"] == pytest.approx(clock.monotonic())
    finally:
        journal.close()


def test_a_given_moment_is_the_entry_time(tmp_path: Path) -> None:
    at = Moment(1773451800.0, 7.0, False)
    with open_chain(tmp_path, KEY, "bwc-1", SimClock()) as chain:
        entry = chain.seal_body(Event("gnss_lost"), at=at)
    assert entry.payload["at"] == at.as_dict()


def test_a_segment_is_in_place_before_its_manifest(tmp_path: Path) -> None:
    spool = tmp_path / "spool" / "0.mp4"
    spool.parent.mkdir()
    spool.write_bytes(b"media")
    dest = tmp_path / "segments" / "s1" / "000000.mp4"
    with open_chain(tmp_path, KEY, "bwc-1", SimClock()) as chain:
        chain.place_segment(spool, dest)
    assert dest.read_bytes() == b"media" and not spool.exists()


def test_rotation_hands_the_chain_to_the_new_key(tmp_path: Path) -> None:
    new = nacl.signing.SigningKey.generate()
    with open_chain(tmp_path, KEY, "bwc-1", SimClock()) as chain:
        rotation = chain.rotate(new)
        after = chain.seal_body(Boot())
    check_signature(rotation, KEY.verify_key)
    check_signature(after, new.verify_key)
    assert KeyRotation.from_body(rotation.body).new_key == bytes(new.verify_key).hex()
    assert json.loads(after.to_json())["payload"]["prev"] == rotation.hash


def test_work_handed_to_the_sealer_thread_keeps_the_chain_in_order(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    chain = ChainWriter(
        journal, nacl.signing.SigningKey.generate(), "bwc-1", SimClock(), background=True
    )
    gate = threading.Event()
    caller = threading.current_thread()
    ran_on: list[threading.Thread] = []

    def slow_seal(n: int) -> None:
        gate.wait(10)  # a slow disk: the caller must not wait for it
        ran_on.append(threading.current_thread())
        chain.seal_body(_marker(n))

    chain.later(lambda: slow_seal(1))
    chain.later(lambda: slow_seal(2))
    assert _chain(tmp_path) == []  # handed over, not done: the caller went on
    gate.set()
    chain.seal_body(_marker(3))  # waits for what was handed over first
    assert [Marker.from_body(e.body).note for e in _chain(tmp_path)] == ["1", "2", "3"]
    assert ran_on and all(t is not caller for t in ran_on)
    journal.close()


def test_a_failure_on_the_sealer_thread_is_raised_to_the_caller(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    chain = ChainWriter(
        journal, nacl.signing.SigningKey.generate(), "bwc-1", SimClock(), background=True
    )

    def full_disk() -> None:
        raise OSError(28, "No space left on device")

    chain.later(full_disk)
    with pytest.raises(OSError, match="No space left"):
        chain.drain()
    chain.seal_body(_marker(1))  # raised once: sealing goes on
    assert [e.kind for e in _chain(tmp_path)] == ["marker"]
    journal.close()


@pytest.mark.parametrize("background", [False, True])
def test_a_statement_of_what_was_sealed_is_made_once_it_is_sealed(
    tmp_path: Path, background: bool
) -> None:
    """A session's close counts the segments handed over before it, though the sealer had
    not sealed them when the close was asked for: its body is made on the sealer's thread."""
    journal = Journal(tmp_path)
    chain = ChainWriter(
        journal, nacl.signing.SigningKey.generate(), "bwc-1", SimClock(), background=background
    )
    waited = threading.Event()
    drain = chain.drain
    sealed: list[int] = []

    def draining() -> None:
        waited.set()  # the slow disk catches up only once the caller waits for it
        drain()

    def slow_seal(n: int) -> None:
        waited.wait(10)
        chain.seal_body(_marker(n), "s1")
        sealed.append(n)

    chain.drain = draining  # type: ignore[method-assign]
    if not background:
        waited.set()  # inline: handed-over work is sealed at once
    chain.later(lambda: slow_seal(1))
    chain.later(lambda: slow_seal(2))
    built_on: list[str] = []
    caller = threading.current_thread().name

    def close() -> SessionClose:
        built_on.append(threading.current_thread().name)
        return SessionClose(len(sealed), {"main": len(sealed)})

    entry = chain.seal_when_sealed(close, "s1")
    assert (SessionClose.from_body(entry.body).segments, entry.session) == (2, "s1")
    assert built_on == ["sealer" if background else caller]
    assert [e.kind for e in _chain(tmp_path)] == ["marker", "marker", "session_close"]
    journal.close()
