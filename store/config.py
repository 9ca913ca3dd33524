"""Store configuration (``store.toml``): strict, self-documenting.

Example::

    name = "store-1"
    database = "sqlite:///var/lib/unbroken/store.db"    # or postgresql://user@host/db
    blobs = "/var/lib/unbroken/blobs"
    agency = "/etc/unbroken/agency"

    [broker]
    host = "127.0.0.1"
    port = 8883
    ca = "/etc/unbroken/store/ca.pem"
    cert = "/etc/unbroken/store/store.pem"
    key = "/etc/unbroken/store/store.key"

    [receipts]              # the receipt key (provision enroll-store writes it)
    key = "/etc/unbroken/store/receipt.key"
    certificate = "/etc/unbroken/store/receipt.cert"

    [limits]                # optional: store.limits.Limits
    uploads = 64
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from common.files import load_toml
from evidence.models import Strict as _Strict
from store.limits import Limits


class Broker(_Strict):
    host: str = Field("127.0.0.1", description="Broker address.")
    port: int = Field(8883, description="Broker TLS port.")
    ca: Path = Field(description="CA certificate (PEM) the broker's certificate chains to.")
    cert: Path = Field(description="This store's client certificate (PEM).")
    key: Path = Field(description="This store's client key (PEM).")


class ReceiptSigner(_Strict):
    key: Path = Field(description="This store's receipt key (Ed25519 seed, hex; 0600).")
    certificate: Path = Field(description="The agency's certificate for that key.")


class StoreConfig(_Strict):
    name: str = Field("store-1", description="Worker name, written into receipts.")
    group: str = Field(
        "stores", description="Workers of one group split a fleet, one device to one worker."
    )
    database: str = Field(description="sqlite:///PATH or postgresql://USER@HOST/DB.")
    blobs: Path = Field(description="Directory for content-addressed media.")
    agency: Path = Field(description="Agency directory: registry and receipt signing key.")
    broker: Broker
    receipts: ReceiptSigner | None = Field(
        None, description="The receipt key the agency certified (from enroll-store)."
    )
    limits: Limits = Field(
        default_factory=Limits, description="What one device may declare and have in progress."
    )


def load_store_config(path: Path) -> StoreConfig:
    cfg = load_toml(path, StoreConfig, "store configuration")
    base = Path(path).parent
    # relative paths are relative to the configuration file
    return cfg.model_copy(
        update={
            "blobs": base / cfg.blobs,
            "agency": base / cfg.agency,
            "receipts": cfg.receipts
            and cfg.receipts.model_copy(
                update={
                    "key": base / cfg.receipts.key,
                    "certificate": base / cfg.receipts.certificate,
                }
            ),
            "broker": cfg.broker.model_copy(
                update={
                    "ca": base / cfg.broker.ca,
                    "cert": base / cfg.broker.cert,
                    "key": base / cfg.broker.key,
                }
            ),
        }
    )
