"""The uploader's decisions, fed facts: no broker, no threads, no files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nacl.signing
import pytest

from agent import blob_transfer, sync_replies, sync_timing
from agent import sync_plan as plan
from evidence import messages
from evidence import protocol as p
from evidence.blob_messages import BlobInit, Missing
from evidence.body_fields import ManifestError
from evidence.messages import Ack, Backlog, Status
from evidence.receipt import ReceiptClaim, ReceiptError, make_receipt
from evidence.seal import Entry, Moment, Sealer
from evidence.store_acks import OpenedAck, sign_ack
from tests.fixtures.store import segment_manifest

DEV = "bwc-0001"
AT = Moment(wall=1_773_451_800.0, mono=1.0, synced=True)
H1, H2, H3 = (hashlib.sha256(bytes([i])).hexdigest() for i in (1, 2, 3))


def _entries(n: int) -> list[Entry]:
    s = Sealer(nacl.signing.SigningKey.generate(), DEV, last=None)
    return [s.seal("marker", {"type": "note"}, AT, "s1") for _ in range(n)]


def _segment_entry(seq: int, sha: str, size: int) -> Entry:
    """A segment manifest entry at ``seq``."""
    s = Sealer(nacl.signing.SigningKey.generate(), DEV, last=None)
    for _ in range(seq - 1):
        s.seal("marker", {"type": "note"}, AT, "s1")
    m = segment_manifest(seq, f"segments/{seq}.mp4", sha, size, 3.0)
    return s.seal(m.KIND, m.to_body(), AT, "s1")


def _seg(seq: int, sha: str, size: int = 100, end: float = 1000.0) -> plan.Segment:
    return plan.Segment(seq, sha, size, f"segments/{seq}.mp4", end)


def _init(sha: str = H1, size: int = 2500, chunk: int = 1024) -> BlobInit:
    n = len(range(0, size, chunk))
    return BlobInit(sha256=sha, size=size, chunk_size=chunk, seq=7, chunks=tuple([H2] * n))


# -- the manifest, the backlog, the status -------------------------------------------------


def test_a_segment_manifest_gives_what_the_uploader_needs() -> None:
    manifest = segment_manifest(1, "segments/s1/000001.mp4", H1, 4096, 10.5)
    expected = plan.Segment(9, H1, 4096, "segments/s1/000001.mp4", 12.5)
    assert plan.Segment.sealed(9, manifest) == expected


def test_a_segment_entry_that_does_not_read_is_named_not_sent_whole() -> None:
    s = Sealer(nacl.signing.SigningKey.generate(), DEV, last=None)
    bad = s.seal("segment", {"sha256": H1, "size": 1, "file": "x"}, AT, "s1")
    sp = plan.SyncPlan(plan.SyncRules())
    with pytest.raises(ManifestError, match="entry 1: segment manifest: 'media' is missing"):
        sp.entries_to_send([bad], room=4, now=0.0, whole=lambda _e: Path("x"))
    with pytest.raises(ManifestError, match="entry 1: segment manifest"):
        blob_transfer.whole_init(bad)


def test_backlog_counts_blobs_bytes_and_the_oldest_end() -> None:
    assert plan.backlog(0, []) == Backlog(entries=0, blobs=0, bytes=0, oldest_unsynced_end=None)
    b = plan.backlog(3, [_seg(2, H1, 100, 50.0), _seg(5, H2, 250, 40.0)])
    assert b == Backlog(entries=3, blobs=2, bytes=350, oldest_unsynced_end=40.0)


@pytest.mark.parametrize(
    ("age_hours", "level"),
    [(1, "ok"), (12.5, "warn"), (20.5, "urgent"), (24.5, "overdue")],
)
def test_status_reports_the_24_hour_deadline_level(age_hours: float, level: str) -> None:
    now = 100_000.0
    backlog = plan.backlog(0, [_seg(1, H1, end=now - age_hours * 3600)])
    status = plan.status(DEV, True, backlog, now, (12.0, 20.0), {"state": "idle"})
    assert status.deadline == level
    assert status.oldest_unsynced_age == round(age_hours * 3600, 1)
    assert status.recorder == {"state": "idle"} and status.online is True
    assert Status.parse(status.to_bytes()) == status


def test_offline_status_leaves_out_the_recorder_state() -> None:
    status = plan.status(DEV, False, plan.backlog(0, []), 5.0, (12.0, 20.0), {"state": "x"})
    assert json.loads(status.to_bytes()) == {
        "device": DEV,
        "online": False,
        "backlog": {"entries": 0, "blobs": 0, "bytes": 0, "oldest_unsynced_end": None},
        "oldest_unsynced_age": None,
        "deadline": "ok",
    }


def test_retention_keeps_everything_unless_configured() -> None:
    assert plan.retention_cutoff(10_000.0, None) is None
    assert plan.retention_cutoff(10_000.0, 1.0) == 10_000.0 - 3600


# -- what a reply means --------------------------------------------------------------------


def test_replies_are_read_by_topic() -> None:
    key = nacl.signing.SigningKey.generate()
    vk = key.verify_key

    def read(topic: str, payload: bytes) -> sync_replies.Reply:
        return sync_replies.read_reply(DEV, topic, payload, vk)

    assert read(p.command(DEV, "assign"), b"\x00any") == sync_replies.CommandArrived(b"\x00any")
    refusal = Ack(seq=4, ok=False, reason="fork")
    # unsigned: advice only; signed by the agency (or a store key it certified): acted on
    assert read(p.reply(DEV, "ack"), refusal.to_bytes()) == OpenedAck(refusal, None, False)
    signed_ack = sign_ack(key, refusal, device=DEV, entry_hash=H1, store="store-1")
    assert read(p.reply(DEV, "ack"), signed_ack) == OpenedAck(refusal, H1, True)
    forged = sign_ack(
        nacl.signing.SigningKey.generate(), refusal, device=DEV, entry_hash=H1, store="x"
    )
    with pytest.raises(p.ProtocolError, match="does not verify"):
        read(p.reply(DEV, "ack"), forged)
    with pytest.raises(p.ProtocolError, match="not 'bwc-0001'"):
        read(p.reply(DEV, "ack"), sign_ack(key, refusal, device="x", entry_hash=H1, store="s"))
    assert read(
        p.reply(DEV, "missing"), Missing(sha256=H1, offsets=[0, 1024]).to_bytes()
    ) == Missing(sha256=H1, offsets=[0, 1024])
    # an older store's plain text is the reason
    assert read(p.reply(DEV, "rejected"), "nö".encode() * 300) == messages.Rejected(
        reason="nö" * 250
    )
    assert read(p.reply(DEV, "resend"), b'{"retry":0}') == messages.Resend()
    assert read(p.reply(DEV, "something-new"), b"{}") is None
    receipt = make_receipt(
        key,
        device=DEV,
        sha256=H1,
        size=10,
        entry_seq=7,
        entry_hash=H2,
        session="s1",
        stored_at=1.0,
        store="1",
    )
    claim = ReceiptClaim(H1, 10, 7, H2)
    assert read(p.reply(DEV, "receipt"), receipt) == sync_replies.Receipt(claim, receipt)


def test_a_receipt_frees_only_what_the_journal_sealed_at_its_entry() -> None:
    claim = ReceiptClaim(sha256=H1, size=10, entry_seq=7, entry_hash=H2)
    assert sync_replies.receipt_refusal(claim, sync_replies.Sealed(H1, 10, H2)) is None
    assert (
        sync_replies.receipt_refusal(claim, None)
        == "entry 7 is not a sealed segment on this device"
    )
    wrong = {
        "sha256": sync_replies.Sealed(H3, 10, H2),  # a random hash with a real entry_seq
        "size": sync_replies.Sealed(H1, 11, H2),
        "entry_hash": sync_replies.Sealed(H1, 10, H3),
    }
    for field, sealed in wrong.items():
        assert sync_replies.receipt_refusal(claim, sealed) == (
            f"its {field} is not the one sealed at entry 7"
        )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"sha256": "../../../../tmp/x"}, "sha256 is not 64 lowercase hex"),
        ({"sha256": H1.upper()}, "sha256 is not 64 lowercase hex"),
        ({"entry_hash": None}, "entry_hash is not 64 lowercase hex"),
        ({"entry_seq": "7"}, "entry_seq is not an integer"),
        ({"entry_seq": 0}, "entry_seq is not an integer"),
        ({"size": True}, "size is not an integer"),
        ({"size": 2**50}, "size is not an integer"),
    ],
)
def test_receipt_fields_from_the_network_are_validated(
    change: dict[str, object], problem: str
) -> None:
    key = nacl.signing.SigningKey.generate()
    fields: dict[str, object] = {
        "device": DEV,
        "sha256": H1,
        "size": 10,
        "entry_seq": 7,
        "entry_hash": H2,
        "session": None,
        "stored_at": 1.0,
        "store": "1",
    }
    receipt = make_receipt(key, **{**fields, **change})  # type: ignore[arg-type]
    with pytest.raises(ReceiptError, match=problem):
        sync_replies.read_reply(DEV, p.reply(DEV, "receipt"), receipt, key.verify_key)


def test_bad_replies_are_errors_naming_the_problem() -> None:
    vk = nacl.signing.SigningKey.generate().verify_key
    with pytest.raises(p.ProtocolError, match="ack: not JSON"):
        sync_replies.read_reply(DEV, p.reply(DEV, "ack"), b"{", vk)
    forged = make_receipt(
        nacl.signing.SigningKey.generate(),
        device=DEV,
        sha256=H1,
        size=10,
        entry_seq=7,
        entry_hash=H2,
        session=None,
        stored_at=1.0,
        store="1",
    )
    with pytest.raises(ReceiptError, match="does not verify"):
        sync_replies.read_reply(DEV, p.reply(DEV, "receipt"), forged, vk)


def test_panel_input_is_told_apart_only_for_a_room_controller() -> None:
    assert sync_replies.is_panel_input(p.panel("room-1", "door"), "room-1")
    assert not sync_replies.is_panel_input(p.panel("room-2", "door"), "room-1")
    assert not sync_replies.is_panel_input(p.panel("room-1", "door"), None)
    assert not sync_replies.is_panel_input(p.reply(DEV, "ack"), "room-1")


# -- pacing and timing ---------------------------------------------------------------------


def test_a_store_that_answers_anything_is_not_quiet() -> None:
    s = sync_timing.Silence(retry_seconds=10)
    assert not s.quiet(since=0.0, now=10.0)
    assert s.quiet(since=0.0, now=10.5)
    s.heard(8.0)
    assert not s.quiet(since=0.0, now=15.0)  # it said something 7 s ago
    assert s.quiet(since=0.0, now=18.5)


def test_without_a_cap_every_chunk_goes() -> None:
    assert sync_timing.Pacer(None).spend(10**9, now=0.0)


def test_the_bandwidth_cap_is_a_token_bucket() -> None:
    pacer = sync_timing.Pacer(1000, at=0.0)
    assert not pacer.spend(500, now=0.1)  # 100 tokens so far
    assert pacer.spend(500, now=0.5)  # 500
    assert not pacer.spend(500, now=0.6)  # 100 left
    assert pacer.spend(300, now=1.0)  # 500 again; 200 left
    # a chunk larger than the cap goes once the bucket is full (else it never would)
    assert pacer.spend(4000, now=10.0)
    assert not pacer.spend(1, now=10.0)


def test_every_is_due_once_per_period_unless_forced() -> None:
    e = sync_timing.Every(10.0)
    assert e.due(10.0)
    assert not e.due(15.0)
    assert e.due(15.0, force=True)
    assert not e.due(24.0)
    assert e.due(25.0)


def test_the_journal_is_read_on_news_not_on_every_turn() -> None:
    s = sync_timing.ScanSchedule()
    assert s.take()  # the first turn reads it
    assert not s.take()
    assert s.glance_due(0.0)
    s.glanced(head=5, waiting=False)  # new entries: read them
    assert s.take()
    assert not s.glance_due(0.05)  # a glance at most every SCAN_SECONDS
    assert s.glance_due(0.2)
    s.glanced(head=5, waiting=False)  # nothing new
    assert not s.take()
    assert s.glance_due(0.4)
    s.glanced(head=5, waiting=True)  # sent entries wait on a quiet store
    assert s.take()
    s.wake()  # an ack came
    assert not s.glance_due(1.0)  # no need to glance: reading anyway
    assert s.take()


def test_the_panel_state_is_sent_on_change_and_repeated() -> None:
    panel = sync_timing.PanelEcho()
    assert panel.show("idle", now=0.0, connected=True)
    assert not panel.show("idle", now=1.0, connected=True)
    assert panel.show("recording", now=2.0, connected=True)
    assert not panel.show("recording", now=6.0, connected=True)
    assert panel.show("recording", now=7.0, connected=True)  # repeated after 5 s
    assert not panel.show("fault", now=8.0, connected=False)  # offline: remembered
    assert panel.state == "fault"


# -- chain entries -------------------------------------------------------------------------


def test_entries_go_in_order_as_far_as_the_window_has_room() -> None:
    sp = plan.SyncPlan(plan.SyncRules(window=3))
    entries = _entries(5)
    sent, more = sp.entries_to_send(entries, room=3, now=0.0)
    assert [e.seq for e in sent] == [1, 2, 3] and more
    sent, more = sp.entries_to_send(entries, room=3, now=1.0)
    assert [e.seq for e in sent] == [4, 5] and not more  # 1-3 are in flight


def test_an_unanswered_entry_is_sent_again_only_once_the_store_went_quiet() -> None:
    sp = plan.SyncPlan(plan.SyncRules(retry_seconds=10))
    entries = _entries(2)
    sp.entries_to_send(entries, room=10, now=0.0)
    sp.answered(1)
    assert sp.entries_to_send(entries[1:], room=10, now=5.0) == ([], False)
    assert not sp.waiting_on_quiet_store(5.0)
    assert sp.quiet_entries(5.0) == []
    assert sp.waiting_on_quiet_store(11.0)
    assert sp.quiet_entries(11.0) == [2]
    assert sp.quiet_entries(12.0) == []  # sent again at 11: quiet again only at 21
    # read after the cursor, the journal gives nothing sent before
    assert sp.cursor == 2 and sp.entries_to_send(entries[1:], room=10, now=12.0) == ([], False)


def test_after_a_reconnect_nothing_is_assumed_delivered() -> None:
    sp = plan.SyncPlan(plan.SyncRules())
    entries = _entries(2)
    sp.entries_to_send(entries, room=10, now=0.0)
    sp.add_transfer(_init(), Path("x.mp4"))
    sp.reset()
    assert not sp.transfers
    assert [e.seq for e in sp.entries_to_send(entries, room=10, now=1.0)[0]] == [1, 2]


# -- media ---------------------------------------------------------------------------------


def test_blobs_start_oldest_first_a_few_at_a_time() -> None:
    sp = plan.SyncPlan(plan.SyncRules(parallel_blobs=2))
    pending = [_seg(1, H1), _seg(2, H2), _seg(3, H3)]
    first = sp.blobs_to_start(pending, present=lambda s: True)
    assert [s.seq for s in first] == [1, 2]
    sp.add_transfer(_init(H1), Path("1.mp4"))
    assert [s.seq for s in sp.blobs_to_start(pending, present=lambda s: True)] == [2]
    sp.add_transfer(_init(H2), Path("2.mp4"))
    assert sp.blobs_to_start(pending, present=lambda s: True) == []
    sp.receipted(H1)  # and the journal no longer lists it
    assert [s.seq for s in sp.blobs_to_start(pending[1:], present=lambda s: True)] == [3]


def test_media_no_longer_on_the_device_is_not_started() -> None:
    sp = plan.SyncPlan(plan.SyncRules())
    pending = [_seg(1, H1), _seg(2, H2), _seg(3, H2)]  # 3: the same media sealed again
    started = sp.blobs_to_start(pending, present=lambda s: s.seq != 1)
    assert [s.seq for s in started] == [2]


def _run(t: blob_transfer.Transfer, now: float, room: int = 100) -> list[blob_transfer.Step]:
    """What the uploader would publish now, the window taking ``room`` chunks."""
    quiet = sync_timing.Silence(retry_seconds=10).quiet
    out: list[blob_transfer.Step] = []
    while (step := t.next(now, quiet)) is not None:
        if isinstance(step, blob_transfer.SendChunk):
            if room == 0:
                break
            room -= 1
        out.append(step)
        t.sent(step, now)
    return out


def test_a_blob_is_announced_sent_as_the_store_lacks_it_and_finished() -> None:
    t = blob_transfer.Transfer(_init(size=2500, chunk=1024), Path("x.mp4"))
    assert _run(t, 0.0) == [blob_transfer.AskInit()]
    assert _run(t, 1.0) == []  # awaiting the store's answer
    t.lacks(Missing(sha256=H1, offsets=[0, 2048]), now=2.0)
    assert _run(t, 2.0) == [
        blob_transfer.SendChunk(0, 1024),
        blob_transfer.SendChunk(2048, 452),
        blob_transfer.Finish(),
    ]
    assert _run(t, 3.0) == []  # awaiting the receipt


def test_a_full_window_holds_the_rest_and_the_finish() -> None:
    t = blob_transfer.Transfer(_init(size=3072, chunk=1024), Path("x.mp4"))
    _run(t, 0.0)
    t.lacks(Missing(sha256=H1, offsets=[0, 1024, 2048]), now=1.0)
    assert _run(t, 1.0, room=2) == [
        blob_transfer.SendChunk(0, 1024),
        blob_transfer.SendChunk(1024, 1024),
    ]
    assert _run(t, 1.5, room=5) == [blob_transfer.SendChunk(2048, 1024), blob_transfer.Finish()]


def test_nothing_lacking_with_a_reason_waits_then_asks_again() -> None:
    t = blob_transfer.Transfer(_init(), Path("x.mp4"))
    _run(t, 0.0)
    t.lacks(Missing(sha256=H1, offsets=[], reason="manifest not yet received"), now=1.0)
    assert _run(t, 5.0) == []
    assert _run(t, 11.5) == [blob_transfer.AskInit()]  # the store went quiet: ask again
    t.lacks(Missing(sha256=H1, offsets=[]), now=12.0)  # it has everything: finish
    assert _run(t, 12.0) == [blob_transfer.Finish()]


def test_a_segment_travels_whole_with_its_entry_and_waits_for_a_place() -> None:
    sp = plan.SyncPlan(plan.SyncRules(window=10, parallel_blobs=1))
    marker, seg, seg2 = _entries(1)[0], _segment_entry(2, H1, 900), _segment_entry(3, H2, 900)
    whole = {2: Path("a.mp4"), 3: Path("b.mp4")}
    sent, more = sp.entries_to_send([marker, seg, seg2], 10, 0.0, lambda e: whole.get(e.seq))
    assert [e.seq for e in sent] == [1] and not more  # the manifest is not sent alone
    assert list(sp.transfers) == [H1] and sp.transfers[H1].entry == seg
    # no place for the second: it waits (and what follows it), without a rescan loop
    assert sp.entries_to_send([seg2], 10, 0.5, lambda e: whole.get(e.seq)) == ([], False)
    sp.receipted(H1)
    sp.entries_to_send([seg2], 10, 1.0, lambda e: whole.get(e.seq))
    assert list(sp.transfers) == [H2]
    # refused manifest: its media is not sent with it any more
    sp.answered(3, ok=False)
    assert sp.transfers == {}


def test_a_store_that_says_when_is_asked_again_then() -> None:
    t = blob_transfer.Transfer(_init(), Path("x.mp4"))
    _run(t, 0.0)
    t.lacks(
        Missing(sha256=H1, offsets=[], reason="manifest entry 7 not received", retry=1.5), now=1.0
    )
    assert _run(t, 2.0) == []
    assert _run(t, 2.6) == [blob_transfer.AskInit()]  # when the store said, not after silence
    assert _run(t, 3.0) == []


def test_a_whole_segment_is_one_message_resent_when_the_store_says() -> None:
    e = _segment_entry(7, sha=H1, size=5000)
    t = blob_transfer.Transfer(blob_transfer.whole_init(e), Path("x.mp4"), e)
    assert _run(t, 0.0) == [blob_transfer.SendWhole()]
    assert _run(t, 1.0) == []  # awaiting the receipt
    t.lacks(Missing(sha256=H1, offsets=[], reason="altered in transit: resend"), now=2.0)
    assert _run(t, 2.0) == [blob_transfer.SendWhole()]
    assert _run(t, 13.0) == [blob_transfer.SendWhole()]  # the store went quiet: again


def test_a_store_that_never_answers_is_asked_again() -> None:
    t = blob_transfer.Transfer(_init(), Path("x.mp4"))
    assert _run(t, 0.0) == [blob_transfer.AskInit()]
    assert _run(t, 10.0) == []
    assert _run(t, 10.5) == [blob_transfer.AskInit()]


def test_an_answer_about_another_blob_changes_nothing() -> None:
    sp = plan.SyncPlan(plan.SyncRules())
    t = sp.add_transfer(_init(H1), Path("x.mp4"))
    sp.lacks(Missing(sha256=H2, offsets=[0]), now=1.0)
    assert not t.answered and t.to_send == []
    sp.lacks(Missing(sha256=H1, offsets=[0]), now=1.0)
    assert t.answered and t.to_send == [0]


def test_a_refusal_with_a_back_off_code_holds_the_media() -> None:
    rejected = p.dumps({"topic": "t", "reason": "3 uploads in progress", "code": "quota"})
    refusal = messages.Rejected(topic="t", reason="3 uploads in progress", code="quota")
    assert messages.Rejected.parse(rejected) == refusal
    s = plan.SyncPlan(plan.SyncRules())
    assert not s.refused("malformed", now=100.0) and not s.paused(100.0)
    assert s.refused("quota", now=100.0)
    assert s.paused(100.0 + p.BACK_OFF["quota"] - 1)
    assert not s.paused(100.0 + p.BACK_OFF["quota"])


def test_every_sync_setting_is_settable_from_device_toml_and_read_by_the_planner() -> None:
    """One set of sync settings (common.settings.Sync): what device.toml sets is what the
    uploader and its planner use, and a key it does not know is an error naming it."""
    import tomllib

    from common.settings import DeviceConfig

    toml = (
        "[sync]\nwhole_limit = 0\nchunk_size = 8192\nwindow = 9\nparallel_blobs = 2\n"
        "retry_seconds = 3.5\nstatus_seconds = 5.0\nbandwidth = 5000\n"
        "keep_after_receipt_hours = 1.0\nwarn_hours = [1.0, 2.0]\n"
    )
    s = DeviceConfig.model_validate(tomllib.loads(toml)).sync
    assert set(s.model_fields_set) == set(type(s).model_fields)  # every field settable
    assert plan.rules(s) == plan.SyncRules(
        window=9, parallel_blobs=2, retry_seconds=3.5, whole_limit=0
    )
    with pytest.raises(ValueError, match="parallel_blob"):
        DeviceConfig.model_validate({"sync": {"parallel_blob": 3}})
