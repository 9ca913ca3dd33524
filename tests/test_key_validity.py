"""A key in force by its place in the chain: after `agent rotate-key` and `provision rotate`,
an entry signed with the old key after the rotation entry (a copy of the card) is refused by
the store with its code and named by `verify`, while the device's own entries, before and
after the rotation, are evidence as ever."""

from __future__ import annotations

from pathlib import Path

import nacl.signing

from evidence import protocol as p
from evidence.chain_keys import key_out_of_place
from evidence.entries import Boot
from evidence.seal import Entry, Sealer, key_id
from evidence.verify import verify_chain
from provisioning.registry import RegisteredKey
from store.blobs import FileBlobs
from store.db import Database
from store.ingest import Ingest
from tests.fixtures.store import DEV, NOW, Directory, _at, ack_of


def _chain() -> tuple[nacl.signing.SigningKey, nacl.signing.SigningKey, list[Entry], Entry]:
    """Boot (old key), the rotation (old key, seq 2), boot (new key, seq 3); and a copy of
    the old key continuing after them (seq 4, signed by the old key)."""
    old, new = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    device = Sealer(old, DEV, None)
    first = device.seal("boot", Boot("1.0").to_body(), _at(NOW))
    rotation = device.rotate(new, _at(NOW + 1))
    after = device.seal("boot", Boot("1.0").to_body(), _at(NOW + 2))
    copy = Sealer(old, DEV, after).seal("boot", Boot("forged").to_body(), _at(NOW + 3))
    return old, new, [first, rotation, after], copy


def test_a_key_signs_only_between_the_rotations_that_bound_it() -> None:
    assert key_out_of_place("k", None, None, 10**6) is None
    assert key_out_of_place("k", None, 7, 7) is None  # the rotation entry itself
    code, why = key_out_of_place("k", None, 7, 8) or ("", "")
    assert code == "retired_key" and "rotation at entry 7" in why
    code, why = key_out_of_place("k", 8, None, 7) or ("", "")
    assert code == "key_not_yet" and "from entry 8" in why


def test_the_store_refuses_a_retired_key_after_its_rotation(db: Database, tmp_path: Path) -> None:
    old, new, chain, copy = _chain()
    directory = Directory()
    directory.keys[DEV] = [
        RegisteredKey(key_id(old.verify_key), old.verify_key, 0.0, NOW + 1, None, 2),
        RegisteredKey(key_id(new.verify_key), new.verify_key, NOW + 1, None, 3, None),
    ]
    receipt_key = nacl.signing.SigningKey.generate()
    ingest = Ingest(db, FileBlobs(tmp_path / "blobs"), directory, receipt_key, "store-t")
    for e in chain:
        ((_, reply),) = ingest.handle(p.up(DEV, "entry"), e.to_json(), NOW + 10)
        assert ack_of(reply).ok, reply
    ((_, reply),) = ingest.handle(p.up(DEV, "entry"), copy.to_json(), NOW + 10)
    ack = ack_of(reply)
    assert not ack.ok and ack.code == "retired_key" and "rotation at entry 2" in ack.reason
    stored = db.query("select seq from entries where device = ? order by seq", (DEV,))
    assert [r["seq"] for r in stored] == [1, 2, 3]
    # the new key before its rotation is refused too (an entry no device could sign)
    early = Sealer(new, DEV, None).seal("boot", Boot("x").to_body(), _at(NOW))
    ((_, reply),) = ingest.handle(p.up(DEV, "entry"), early.to_json(), NOW + 10)
    assert ack_of(reply).code == "key_not_yet"


def test_verify_names_an_entry_signed_by_a_retired_key() -> None:
    old, _, chain, copy = _chain()
    entries = [(f"chain/{e.seq:010d}.json", e) for e in [*chain, copy]]
    report = verify_chain(entries, old.verify_key, media={})
    codes = [(x.code, x.where) for x in report.problems]
    assert ("retired_key", f"entry 4 ({entries[3][0]})") in codes
    assert not any(c == "bad_signature" for c, _ in codes)
    honest = verify_chain(entries[:3], old.verify_key, media={})
    assert not any(x.code == "retired_key" for x in honest.problems)


def test_a_registry_made_before_keys_had_places_is_brought_up_to_date(tmp_path: Path) -> None:
    import sqlite3

    from provisioning.registry import Registry

    Registry(tmp_path / "registry.db").close()
    conn = sqlite3.connect(tmp_path / "registry.db")
    conn.execute("alter table keys drop column from_seq")
    conn.execute("alter table keys drop column until_seq")
    conn.execute("insert into keys values ('k1', 'd1', ?, 0.0, null)", ("00" * 32,))
    conn.commit()
    conn.close()
    reg = Registry(tmp_path / "registry.db")
    reg.end_key("k1", 5.0, 9)
    (key,) = reg.device_keys("d1")
    assert (key.valid_until, key.from_seq, key.until_seq) == (5.0, None, 9)
