"""Receipts have their own key (issue 14): a store key the agency certifies for receipts
only. A device checks the certificate with the agency key; the store key signs nothing
else a device would act on."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import nacl.signing
import pytest

from common.commands import check_command, make_command
from evidence.names import ProvisionError
from evidence.receipt import ReceiptError, certify_receipt_key, check_receipt, make_receipt
from simulator.site import LocalSite
from store.config import load_store_config

AGENCY = nacl.signing.SigningKey.generate()
STORE = nacl.signing.SigningKey.generate()
H1, H2 = (hashlib.sha256(bytes([i])).hexdigest() for i in (1, 2))


def _receipt(key: nacl.signing.SigningKey, cert: bytes | None, store: str = "store-1") -> bytes:
    return make_receipt(
        key,
        device="bwc-1",
        sha256=H1,
        size=10,
        entry_seq=7,
        entry_hash=H2,
        session=None,
        stored_at=1.0,
        store=store,
        certificate=cert,
    )


def test_a_receipt_by_a_certified_store_key_verifies_with_the_agency_key() -> None:
    cert = certify_receipt_key(AGENCY, "store-1", STORE.verify_key, 1.0)
    r = check_receipt(_receipt(STORE, cert), AGENCY.verify_key, device="bwc-1", sha256=H1)
    assert r["store"] == "store-1"


@pytest.mark.parametrize(
    ("signer", "certifier", "store", "problem"),
    [
        (STORE, None, "store-1", "does not verify with the agency key"),  # uncertified
        (STORE, nacl.signing.SigningKey.generate(), "store-1", "not the agency's"),
        (nacl.signing.SigningKey.generate(), AGENCY, "store-1", "does not verify"),
        (STORE, AGENCY, "store-2", "certified for 'store-1'"),
    ],
)
def test_receipts_outside_the_certificate_are_refused(
    signer: nacl.signing.SigningKey,
    certifier: nacl.signing.SigningKey | None,
    store: str,
    problem: str,
) -> None:
    cert = certify_receipt_key(certifier, "store-1", STORE.verify_key, 1.0) if certifier else None
    with pytest.raises(ReceiptError, match=problem):
        check_receipt(_receipt(signer, cert, store), AGENCY.verify_key, device="bwc-1")


def test_the_store_key_cannot_command_a_device() -> None:
    data, _ = make_command(STORE, "bwc-1", "unassign", {}, time.time(), 600)
    with pytest.raises(ProvisionError):
        check_command(data, AGENCY.verify_key, "bwc-1", time.time())


def test_enroll_store_gives_the_store_a_receipt_key_not_the_agency_key(tmp_path: Path) -> None:
    with LocalSite(tmp_path / "site") as site:
        config = load_store_config(site.store_config("1"))
        assert config.receipts is not None
        assert config.receipts.key.stat().st_mode & 0o777 == 0o600
        key = nacl.signing.SigningKey(bytes.fromhex(config.receipts.key.read_text().strip()))
        assert key.verify_key != site.agency.verify_key
        cert = config.receipts.certificate.read_bytes()
        r = _receipt(key, cert, "store-1")
        assert check_receipt(r, site.agency.verify_key, device="bwc-1")["sha256"] == H1
