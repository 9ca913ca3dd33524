"""Written statements for gaps that never resumed (R-Art 16): reason text plus attestations
by at least two distinct officers, each authenticated.

An attestation names a badge, a method and a proof. The method checked here is ``pin``:
the officer's PIN against a salted scrypt digest in the agency-signed credential list
(``DATA/officers.json``). The interface is the :class:`CredentialChecker`; a stronger
method (an officer's own signing key) plugs in beside it without changing statements.

Example::

    checker = PinCredentials.load(root / "officers.json", agency_key)
    add_statement(recorder_root, gap_id, "battery died in the rain",
                  [Attestation("340102", "pin", "4711"), Attestation("340117", "pin", "0815")],
                  checker)
"""

from __future__ import annotations

from pathlib import Path

from common.statements import Attestation, CredentialChecker, StatementError, statement_body
from evidence.seal import Entry, Moment, Sealer


def seal_statement(
    root: Path,
    gap_id: str,
    reason: str,
    attestations: list[Attestation],
    checker: CredentialChecker,
    at: Moment,
) -> Entry:
    """Add a written statement to a device's chain (the recorder not running)."""
    from agent.identity import load_identity
    from agent.journal import Journal
    from agent.keys import load_or_create_key

    journal = Journal(root)
    try:
        gaps = {str(e.body["id"]): e for e in journal.entries("interruption")}
        if gap_id not in gaps:
            raise StatementError(f"no interruption {gap_id!r} in this device's chain")
        body = statement_body(gap_id, reason, attestations, checker)
        identity = load_identity(root)
        if identity is None:
            raise StatementError(f"{root}: no device identity")
        sealer = Sealer(load_or_create_key(root), identity.device_id, journal.last())
        # every process that writes the chain opens with a boot entry: its monotonic
        # clock is its own
        journal.append(sealer.seal("boot", {"software": "unbroken", "tool": "explain"}, at))
        entry = sealer.seal("explanation", body, at, gaps[gap_id].session)
        journal.append(entry)
        return entry
    finally:
        journal.close()
