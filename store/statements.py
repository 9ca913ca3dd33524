"""Written statements added at the agency (R-Art 16), for a gap whose device is not at
hand (broken, or the action ended away from it).

The agency checks the attestations against its officer list, exactly as a device would
(:func:`common.statements.written_explanation`), and keeps the statement signed by the agency
key beside the device's chain; the store report counts the gap as explained in writing.

Example::

    add_statement(db, agency_key, "bwc-1", gap_id, "destroyed in the struggle",
                  [Attestation("340102", "pin", "4711"), Attestation("340117", "pin", "0815")],
                  checker, now)
"""

from __future__ import annotations

import json
from typing import Any

import nacl.signing

from common.statements import (
    Attestation,
    CredentialChecker,
    StatementError,
    written_explanation,
)
from evidence.body_fields import ManifestError
from evidence.seal import Entry, canonical, key_id
from evidence.session_bodies import Interruption
from store.db import Database


def add_statement(
    db: Database,
    agency_key: nacl.signing.SigningKey,
    device: str,
    gap_id: str,
    reason: str,
    attestations: list[Attestation],
    checker: CredentialChecker,
    now: float,
) -> dict[str, Any]:
    gap = [
        Entry.from_json(r["entry"].encode())
        for r in db.query(
            "select entry from entries where device = ? and kind = 'interruption'", (device,)
        )
    ]
    found = [e for e in gap if _gap_id(e) == gap_id]
    if not found:
        raise StatementError(f"the store holds no interruption {gap_id!r} of device {device!r}")
    written = written_explanation(gap_id, reason, attestations, checker)
    payload = {
        "type": "statement",
        "agency": key_id(agency_key.verify_key),
        "device": device,
        "session": found[0].session,
        "at": now,
        **written.to_body(),
    }
    doc = {"payload": payload, "signature": agency_key.sign(canonical(payload)).signature.hex()}
    with db.transaction():
        db.execute(
            "insert into statements values (?, ?, ?, ?) on conflict do nothing",
            (device, gap_id, now, json.dumps(doc, ensure_ascii=False)),
        )
    return doc


def _gap_id(e: Entry) -> str | None:
    """The gap an interruption entry opens; None if its body does not read (the report
    names it, and counts it as no entry: no statement explains it)."""
    try:
        return Interruption.from_body(e.body).id
    except ManifestError:
        return None


def statements_of(db: Database, device: str) -> dict[str, dict[str, Any]]:
    """Agency-side statements of a device, by gap id (their payloads)."""
    rows = db.query("select gap, doc from statements where device = ?", (device,))
    return {r["gap"]: json.loads(r["doc"])["payload"] for r in rows}
