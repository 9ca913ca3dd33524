"""`store report` on whatever a device sent (issue 24): a signed entry whose body fields
are not what their names say, a retained status that is no status. What does not read is
named as unreadable, never a traceback, and the rest of that device's report and every
other device's stay as they were. Rows go into the database as Ingest keeps them: the
entry as received once its signature verified, the status as published."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.statements import Attestation, StatementError
from evidence.encryption import SCHEME
from evidence.entries import Assignment, Install
from evidence.manifest import UNKNOWN_LOCATION, Encryption, SegmentManifest, Video
from evidence.seal import Moment, Sealer
from evidence.session_bodies import Interruption, InterruptionEnd, SessionOpen, VoiceExplanation
from store.db import Database
from store.rejections import record_refusal
from store.report import build_report, format_report
from store.report_read import STATUS_MAX, key_store_of, read_status, room_of, shown
from store.report_view import needing_attention, summary
from store.statements import add_statement
from tests.fixtures.store import NOW
from unbroken.cli import main

GOOD = "bwc-good"
HOSTILE = "bwc-hostile"
T0 = NOW - 3600.0
INSTALL = Install("ab" * 32, "agency-key", GOOD, {"host": "127.0.0.1", "port": 8883}, "tpm")
ASSIGNMENT = Assignment("assign", ["012345"], None, None, "room-1", "n-1", T0, "agency", NOW)


def _segment(sha: str, end: float) -> dict[str, Any]:
    video = Video("h264", 640, 360, 15, 2.0, 500_000, 30, 0, "segment")
    return SegmentManifest(
        index=0,
        file="segments/s/000000.mp4",
        sha256=sha,
        size=10,
        start=Moment(end - 2, 1.0, True),
        end=Moment(end, 3.0, True),
        video=video,
        audio=None,
        prebuffer_seconds=0.0,
        location=UNKNOWN_LOCATION,
        badges=["012345"],
        encryption=Encryption(SCHEME, "agency-key"),
    ).to_body()


def _session(session: str, t: float) -> list[tuple[str, dict[str, Any], str | None]]:
    """One session's entries (kind, body, session): opened, a segment, a camera gap that
    resumed and was explained by voice, closed."""
    at = Moment(t, 1.0, True)
    sha = hashlib.sha256(session.encode()).hexdigest()
    return [
        ("session_open", SessionOpen("incident", ["012345"], 0.0, ["main"]).to_body(), session),
        ("segment", _segment(sha, t + 2), session),
        ("interruption", Interruption(f"g-{session}", "camera", ["video"], at).to_body(), session),
        ("interruption_end", InterruptionEnd(f"g-{session}", at).to_body(), session),
        ("explanation", VoiceExplanation(f"g-{session}", at, at).to_body(), session),
        ("session_close", {"segments": 1, "tracks": {"main": 1}}, session),
    ]


def _chain(swap: tuple[str, Any] | None = None) -> list[tuple[str, dict[str, Any], str | None]]:
    """A device's chain: installed, assigned to a room, two sessions; ``swap`` (kind,
    body) replaces the body of the first entry of that kind (in the first session)."""
    chain = [
        ("install", INSTALL.to_body(), None),
        ("assignment", ASSIGNMENT.to_body(), None),
        *_session("s1", T0),
        *_session("s2", T0 + 60),
    ]
    if swap is not None:
        i = next(i for i, (kind, _, _) in enumerate(chain) if kind == swap[0])
        chain[i] = (swap[0], swap[1], chain[i][2])
    return chain


def _store(db: Database, device: str, chain: list[tuple[str, dict[str, Any], str | None]]) -> None:
    """Sealed by the device's key and kept as Ingest keeps an entry, with the receipts of
    its segments whose manifests name a hash."""
    sealer = Sealer(nacl.signing.SigningKey.generate(), device, None)
    with db.transaction():
        for n, (kind, body, session) in enumerate(chain):
            e = sealer.seal(kind, body, Moment(T0 + n, 1.0, True), session)
            wall = e.payload["at"]["wall"]
            row = (device, e.seq, e.hash, e.payload["prev"], e.kind, e.session, wall)
            db.execute(
                "insert into entries values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row, e.to_json().decode(), wall + 1, None),
            )
            sha = body.get("sha256") if kind == "segment" else None
            if isinstance(sha, str):
                db.execute(
                    "insert into receipts values (?, ?, ?, ?, ?)", (device, sha, e.seq, NOW, "{}")
                )


def _status(db: Database, device: str, text: str) -> None:
    with db.transaction():
        db.execute(
            "insert into statuses values (?, ?, ?) on conflict (device) do update"
            " set status = excluded.status, at = excluded.at",
            (device, text, NOW - 60),
        )


GOOD_STATUS = json.dumps({"device": GOOD, "online": True, "backlog": {"blobs": 0, "bytes": 0}})


def _rendered(db: Database) -> tuple[dict[str, Any], str]:
    """The report, its text and its JSON: none may raise."""
    report = build_report(db, NOW)
    text = format_report(report)
    json.dumps(report, ensure_ascii=False, allow_nan=False)
    format_report({**needing_attention(report), "summary": summary(needing_attention(report))})
    return report, text


def _by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["device"]: d for d in report["devices"]}


def _sessions(device: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["session"]: s for s in device["sessions"]}


def test_a_well_formed_chain_reads_whole(db: Database) -> None:
    _store(db, GOOD, _chain())
    _status(db, GOOD, GOOD_STATUS)
    report, text = _rendered(db)
    (d,) = report["devices"]
    assert d["key_store"] == "tpm" and d["status_unreadable"] is None
    s1 = _sessions(d)["s1"]
    assert (s1["segments"], s1["receipted"], s1["in_the_clear"], s1["unreadable"]) == (1, 1, 0, [])
    assert [g["explanation"] for g in s1["gaps"]] == ["voice"]
    assert "UNREADABLE" not in text


HOSTILE_BODIES = [
    ("session_open", {"category": ["a", {"b": 1}], "badges": "012345", "tracks": [1, 2]}),
    ("session_open", {"category": "x" * 100_000, "badges": [None], "room": {"nested": [1]}}),
    ("session_open", {}),
    ("segment", {"sha256": ["not", "a", "hash"], "end": "yesterday"}),
    ("segment", {**_segment("ab" * 32, T0), "encryption": "none"}),
    ("segment", {**_segment("cd" * 32, T0), "end": {"wall": "1773500000"}}),
    ("interruption", {"id": "g-s1", "cause": "camera", "start": "now", "affects": None}),
    ("interruption", {"id": ["g"], "cause": 7, "start": {"wall": 1, "mono": 1, "synced": 1}}),
    ("interruption_end", {"id": {"g-s1": 1}, "end": []}),
    ("explanation", {"interruption": "g-s1", "kind": "written", "statement": None}),
    (
        "explanation",
        {"interruption": "g-s1", "kind": "written", "statement": {"attestations": "ab"}},
    ),
    ("explanation", {"interruption": ["g-s1"], "kind": ["voice"]}),
    ("assignment", {"room": {"name": "room-1"}}),
    ("install", {"key_store": ["tpm"]}),
]


@pytest.mark.parametrize(("kind", "body"), HOSTILE_BODIES, ids=lambda v: str(v)[:30])
def test_a_body_that_is_not_what_its_kind_says_is_named_and_hides_nothing_else(
    db: Database, kind: str, body: dict[str, Any]
) -> None:
    _store(db, GOOD, _chain())
    _status(db, GOOD, GOOD_STATUS)
    alone, _ = _rendered(db)
    _store(db, HOSTILE, _chain((kind, body)))
    report, text = _rendered(db)
    devices = _by_name(report)
    assert devices[GOOD] == _by_name(alone)[GOOD]  # another device's report is its own
    hostile = _sessions(devices[HOSTILE])
    good = _sessions(devices[GOOD])
    # the session it did not touch reads whole
    assert {**hostile["s2"], "clock_skew": None} == {**good["s2"], "clock_skew": None}
    s1 = hostile["s1"]
    assert s1["segments"] == 1 and s1["closed"] is not None and s1["opened"] is not None
    if kind == "install":  # read as keys in a file: the weaker, said
        assert (devices[HOSTILE]["key_store"], devices[GOOD]["key_store"]) == ("file", "tpm")
        assert HOSTILE in report["weaker_key_stores"]
    if kind in ("assignment", "install"):
        return  # an assignment that does not read names no room
    assert s1["unreadable"] and s1["unreadable"][0].startswith("entry ")
    assert f"UNREADABLE {shown(s1['unreadable'][0], 200)}" in text
    assert [d["device"] for d in needing_attention(report)["devices"]] == [HOSTILE]
    assert summary(report)["unreadable"] == len(s1["unreadable"])


def test_a_value_a_device_chose_cannot_forge_a_line_of_the_report(db: Database) -> None:
    forged = "x\nDevice bwc-9: chain ok, 0 entries\u202e"
    body = SessionOpen(forged, [forged], 0.0, ["main", forged]).to_body()
    _store(db, HOSTILE, _chain(("session_open", body)))
    _, text = _rendered(db)
    assert not any(line.startswith("Device bwc-9") for line in text.splitlines())
    assert "x\\u000aDevice bwc-9: chain ok, 0 entries\\u202e" in text
    assert "\u202e" not in text


HOSTILE_STATUSES = [
    ("not json {", "not JSON"),
    ("[1, 2, 3]", "not an object but a list"),
    ('"online"', "not an object but a string"),
    ('{"online": "yes", "backlog": [1]}', "'online' is a string, not true or false"),
    ('{"online": true, "backlog": {"blobs": "many", "bytes": 1.5}}', "'backlog.blobs' is a"),
    ('{"deadline": {"level": ["ok"]}, "oldest_unsynced_age": true}', "'deadline' is an object"),
    ('{"online": true, "deadline": "' + "w" * 50_000 + '"}', None),
    ("[" * 5000 + "]" * 5000, "nested more than"),
    ('{"blobs": ' + "9" * 5000 + "}", "out of range"),
    (json.dumps({"online": True, "pad": "x" * STATUS_MAX}), "more than a status may have"),
]


@pytest.mark.parametrize(("stored", "says"), HOSTILE_STATUSES, ids=lambda v: str(v)[:20])
def test_a_status_that_is_no_status_is_named_and_the_rest_reads(
    db: Database, stored: str, says: str | None
) -> None:
    _store(db, GOOD, _chain())
    _status(db, GOOD, GOOD_STATUS)
    alone, _ = _rendered(db)
    _store(db, HOSTILE, _chain())
    _status(db, HOSTILE, stored)
    report, text = _rendered(db)
    devices = _by_name(report)
    assert devices[GOOD] == _by_name(alone)[GOOD]
    d = devices[HOSTILE]
    assert [s["receipted"] for s in d["sessions"]] == [1, 1]
    if says is None:
        assert d["status_unreadable"] is None
        assert "deadline " + "w" * 80 + "… (50000 characters)" in text
        return
    assert says in d["status_unreadable"]
    assert "UNREADABLE status as reported" in text
    assert [x["device"] for x in needing_attention(report)["devices"]] == [HOSTILE]


def test_a_status_is_read_field_by_field() -> None:
    status, problem = read_status('{"online": false, "backlog": {"blobs": 2}, "deadline": "ok"}')
    assert problem is None and status is not None
    assert status["online"] is False and status["backlog"] == {"blobs": 2, "bytes": None}
    status, problem = read_status('{"online": 1, "oldest_unsynced_age": 3}')
    assert status is not None and status["online"] is None and status["oldest_unsynced_age"] == 3
    assert problem == "'online' is a number, not true or false"


def test_refusals_are_counted_by_code_in_the_database(db: Database) -> None:
    reasons = ["quota: 9 uploads", "quota", "tooXlarge: like too_large", "expired: 24 h", "odd"]
    with db.transaction():
        for i, reason in enumerate([*reasons, "too_large: 1 GB"]):
            record_refusal(db, "bwc-r", "t", reason, i)
        record_refusal(db, "?", "t", "malformed: x", 0)
    (d,) = build_report(db, NOW)["devices"]
    assert d["refusals"] == {"expired": 1, "other": 2, "quota": 2, "too_large": 1}
    assert d["rejected_messages"] == 6 and d["quota_hits"] == 2


class _Recording(Database):
    """The store's database, noting every query asked of it."""

    def __init__(self, conn: Any) -> None:
        super().__init__(conn, postgres=False)
        self.asked: list[tuple[str, tuple[Any, ...]]] = []

    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        self.asked.append((sql, tuple(params)))
        return super().query(sql, params)


# SQLite's plan names how each table is read: SEARCH through an index, or SCAN it all (a
# SEARCH without an index reads it all too). A PostgreSQL plan depends on how many rows it
# has seen, so the indexes are checked here. (Which devices there are is asked once per
# report, of the whole store: not a query per device.)
PER_DEVICE = ("entries", "rejections", "receipts", "forks", "chain_problems", "statements")


def test_the_reports_queries_read_through_indexes_not_whole_tables(tmp_path: Path) -> None:
    conn = Database.connect(str(tmp_path / "store.db")).conn  # migrated, then watched
    db = _Recording(conn)
    _store(db, GOOD, _chain())
    _store(db, HOSTILE, [("install", {}, None), ("boot", {}, None)])
    with db.transaction():
        record_refusal(db, GOOD, "t", "quota: x", 1.0)
        db.execute("update entries set flag = 'future_dated' where seq = 2")
    _status(db, GOOD, GOOD_STATUS)
    db.asked.clear()
    build_report(db, NOW)
    scans = []
    per_device = [(sql, params) for sql, params in db.asked if {GOOD, HOSTILE} & set(params)]
    for sql, params in per_device:
        for row in conn.execute("explain query plan " + sql, params):
            step = str(row[-1]).split()
            whole = step[0] == "SCAN" or (step[0] == "SEARCH" and "INDEX" not in step)
            if whole and step[1] in PER_DEVICE:
                scans.append((" ".join(step), sql))
    assert len(per_device) > 10 and scans == []
    db.close()


def test_the_command_renders_a_hostile_store_as_text_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    db = Database.connect(url)
    _store(db, GOOD, _chain())
    _store(db, HOSTILE, _chain(("segment", {"end": [], "sha256": {"a": 1}})))
    _status(db, HOSTILE, "[" * 100)
    db.close()
    cfg = tmp_path / "store.toml"
    cfg.write_text(
        f'database = "{url}"\nblobs = "blobs"\nagency = "agency"\n'
        '[broker]\nca = "ca.pem"\ncert = "c.pem"\nkey = "k.pem"\n'
    )
    assert main(["store", "report", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "UNREADABLE entry 4: segment manifest" in out and "UNREADABLE status" in out
    assert out.rstrip().endswith("2 UNREADABLE")
    assert main(["store", "report", "--config", str(cfg), "--json", "--problems"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["device"] for d in doc["devices"]] == [HOSTILE]
    assert doc["summary"]["unreadable"] == 2


# -- fuzzed: any JSON where a body field or a status was -------------------------------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)  # what a device can seal (RFC 8785)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=12,
)
_KINDS = ["session_open", "segment", "interruption", "interruption_end", "explanation"]


def _mutated(kind: str, key: str, value: Any, drop: bool) -> dict[str, Any]:
    body = dict(next(b for k, b, _ in _chain() if k == kind))
    if drop:
        body.pop(key, None)
    else:
        body[key] = value
    return body


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(_KINDS),
    key=st.sampled_from(
        [
            *("category", "badges", "tracks", "room", "sha256", "end", "start", "encryption"),
            *("id", "affects", "interruption", "kind", "statement", "cause", "media"),
        ]
    ),
    value=_JSON,
    drop=st.booleans(),
    # any text a database keeps (PostgreSQL keeps no NUL, and Ingest writes none: it
    # stores the status as json.dumps writes it)
    status=_JSON.map(json.dumps) | st.text(st.characters(blacklist_characters="\x00"), max_size=60),
)
def test_fuzz_the_report_on_any_body_field_and_any_status(
    db: Database, kind: str, key: str, value: Any, drop: bool, status: str
) -> None:
    with db.transaction():
        for table in ("entries", "receipts", "statuses"):
            db.execute(f"delete from {table}")
    _store(db, GOOD, _chain())
    _status(db, GOOD, GOOD_STATUS)
    alone, _ = _rendered(db)
    _store(db, HOSTILE, _chain((kind, _mutated(kind, key, value, drop))))
    _status(db, HOSTILE, status)
    report, _ = _rendered(db)
    devices = _by_name(report)
    assert devices[GOOD] == _by_name(alone)[GOOD]
    assert _sessions(devices[HOSTILE])["s2"]["receipted"] == 1


def test_the_room_and_the_key_store_are_read_through_their_owners() -> None:
    sealer = Sealer(nacl.signing.SigningKey.generate(), HOSTILE, None)
    at = Moment(T0, 1.0, True)
    assert room_of(sealer.seal("assignment", ASSIGNMENT.to_body(), at)) == "room-1"
    assert key_store_of(sealer.seal("install", INSTALL.to_body(), at)) == "tpm"
    # a room or a key store beside fields that do not read: the body does not read
    half = {k: v for k, v in ASSIGNMENT.to_body().items() if k != "nonce"}
    assert room_of(sealer.seal("assignment", half, at)) is None
    assert key_store_of(sealer.seal("install", {"key_store": "tpm"}, at)) == "file"


class _Anyone:
    def check(self, a: Attestation) -> bool:
        return True


def test_a_statement_at_the_agency_explains_only_an_interruption_that_reads(
    db: Database,
) -> None:
    _store(db, HOSTILE, _chain(("interruption", {"id": "g-s1", "cause": 7})))
    key, said = nacl.signing.SigningKey.generate(), [Attestation("1", "pin", "p")]
    said.append(Attestation("2", "pin", "q"))
    with pytest.raises(StatementError, match="holds no interruption 'g-s1'"):
        add_statement(db, key, HOSTILE, "g-s1", "lost", said, _Anyone(), NOW)
    doc = add_statement(db, key, HOSTILE, "g-s2", " lost ", said, _Anyone(), NOW)
    assert (doc["payload"]["interruption"], doc["payload"]["session"]) == ("g-s2", "s2")
    assert doc["payload"]["statement"]["reason"] == "lost"
