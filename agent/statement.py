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

from common.statements import (
    Attestation,
    CredentialChecker,
    StatementError,
    written_explanation,
)
from device.clock import SystemClock
from evidence.entries import Boot
from evidence.seal import Entry, Moment


def seal_statement(
    root: Path,
    gap_id: str,
    reason: str,
    attestations: list[Attestation],
    checker: CredentialChecker,
    at: Moment,
) -> Entry:
    """Add a written statement to a device's chain (the recorder not running)."""
    from agent.chain import open_chain
    from agent.identity import load_identity
    from agent.keys import load_or_create_key

    identity = load_identity(root)
    if identity is None:
        raise StatementError(f"{root}: no device identity")
    with open_chain(root, load_or_create_key(root), identity.device_id, SystemClock()) as chain:
        found = chain.journal.interruption(gap_id)
        if found is None:
            raise StatementError(f"no interruption {gap_id!r} in this device's chain")
        written = written_explanation(gap_id, reason, attestations, checker)
        # every process that writes the chain opens with a boot entry: its monotonic
        # clock is its own
        chain.seal_body(Boot(software="unbroken", tool="explain"), at=at)
        return chain.seal_body(written, found[1], at=at)
