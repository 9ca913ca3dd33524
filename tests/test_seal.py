"""Sealing: canonical bytes, signatures, the chain head, key rotation."""

from __future__ import annotations

import json

import nacl.signing
import pytest

from evidence.seal import GENESIS, Entry, Moment, Sealer, SealError, canonical, check_signature

AT = Moment(wall=1_773_451_800.5, mono=12.25, synced=True)


def test_canonical_form_is_independent_of_key_order_and_spacing() -> None:
    assert canonical({"b": 1, "a": [1.5, "警号"]}) == canonical({"a": [1.5, "警号"], "b": 1})
    assert canonical({"a": 1}) == b'{"a":1}'


def test_chain_links_each_entry_to_the_one_before() -> None:
    key = nacl.signing.SigningKey.generate()
    s = Sealer(key, "bwc-1", last=None)
    first = s.seal("boot", {"software": "x"}, AT)
    second = s.seal("session_open", {"category": "penalty"}, AT, session="s1")
    assert (first.seq, first.payload["prev"]) == (1, GENESIS)
    assert (second.seq, second.payload["prev"]) == (2, first.hash)
    check_signature(second, key.verify_key)
    # a restarted agent continues from the last stored entry
    resumed = Sealer(key, "bwc-1", last=second).seal("boot", {}, AT)
    assert resumed.seq == 3 and resumed.payload["prev"] == second.hash


def test_altered_payload_fails_the_signature() -> None:
    key = nacl.signing.SigningKey.generate()
    e = Sealer(key, "bwc-1", None).seal("marker", {"type": "rights_notified"}, AT, "s1")
    forged = Entry({**e.payload, "body": {"type": "document_served"}}, e.signature)
    with pytest.raises(SealError, match="does not verify"):
        check_signature(forged, key.verify_key)
    with pytest.raises(SealError):
        check_signature(e, nacl.signing.SigningKey.generate().verify_key)


def test_round_trip_and_malformed_files() -> None:
    key = nacl.signing.SigningKey.generate()
    e = Sealer(key, "bwc-1", None).seal("boot", {}, AT)
    assert Entry.from_json(e.to_json()) == e
    for data, message in [
        (b"\x00\xff garbage", "invalid JSON"),
        (b'{"payload": {}}', "exactly 'payload' and 'signature'"),
        (
            json.dumps({"payload": {**e.payload, "kind": "delete"}, "signature": "AA=="}).encode(),
            "unknown entry kind",
        ),
        (json.dumps({"payload": e.payload, "signature": "AA=="}).encode(), "64 bytes"),
    ]:
        with pytest.raises(SealError, match=message):
            Entry.from_json(data)


def test_unknown_kind_cannot_be_sealed() -> None:
    s = Sealer(nacl.signing.SigningKey.generate(), "bwc-1", None)
    with pytest.raises(SealError, match="unknown entry kind"):
        s.seal("erase", {}, AT)


def test_rotation_entry_is_signed_by_the_old_key_and_names_the_new() -> None:
    old, new = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    s = Sealer(old, "bwc-1", None)
    rot = s.rotate(new, AT)
    check_signature(rot, old.verify_key)
    assert rot.body["new_key"] == bytes(new.verify_key).hex()
    after = s.seal("boot", {}, AT)
    check_signature(after, new.verify_key)


def test_fast_canonical_form_is_rfc8785() -> None:
    import rfc8785

    samples = [
        {"wall": 1_773_451_800.123456, "mono": 1000.0666667, "lat": 31.820603, "n": -17},
        {"s": '警号 "quoted" \u2028 \x01', "nested": [{"b": None, "a": True}], "z": 0.0},
        {"tiny": 0.00001, "big": 1e16, "neg": -0.00001},  # the slow path
        {"é": 1, "e": 2, "\ud7ff": 3, "\U0001f600": 5, "\uffee": 6, "A": 4},
        {"whole": 2.0, "zero": 0.0, "wall": 1_773_451_800.0, "neg": -3.5e-3},
    ]
    for obj in samples:
        assert canonical(obj) == bytes(rfc8785.dumps(obj))
