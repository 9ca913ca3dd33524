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
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class StoreConfigError(ValueError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Broker(_Strict):
    host: str = Field("127.0.0.1", description="Broker address.")
    port: int = Field(8883, description="Broker TLS port.")
    ca: Path = Field(description="CA certificate (PEM) the broker's certificate chains to.")
    cert: Path = Field(description="This store's client certificate (PEM).")
    key: Path = Field(description="This store's client key (PEM).")


class StoreConfig(_Strict):
    name: str = Field("store-1", description="Worker name, written into receipts.")
    group: str = Field("stores", description="Shared-subscription group: workers split load.")
    database: str = Field(description="sqlite:///PATH or postgresql://USER@HOST/DB.")
    blobs: Path = Field(description="Directory for content-addressed media.")
    agency: Path = Field(description="Agency directory: registry and receipt signing key.")
    broker: Broker


def load_store_config(path: Path) -> StoreConfig:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreConfigError(f"{path}: no such configuration file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StoreConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        cfg = StoreConfig.model_validate(data)
    except ValidationError as e:
        lines = [f"  {'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise StoreConfigError(
            f"{path}: invalid store configuration\n" + "\n".join(lines)
        ) from None
    base = Path(path).parent
    # relative paths are relative to the configuration file
    return cfg.model_copy(
        update={
            "blobs": base / cfg.blobs,
            "agency": base / cfg.agency,
            "broker": cfg.broker.model_copy(
                update={
                    "ca": base / cfg.broker.ca,
                    "cert": base / cfg.broker.cert,
                    "key": base / cfg.broker.key,
                }
            ),
        }
    )
