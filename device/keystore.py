"""Where the device's private keys live: a port with two backends.

Two keys: the Ed25519 device key (it seals the chain; ``device.key``, and
``device.key.next`` while a rotation is under way) and the TLS client key (P-256,
``tls.key``). Both backends keep their files in ``DATA/private/``:

- :class:`FileKeyStore`: the keys as files (hex, PEM; 0600), as every device had them
  before. Weaker: a copied card can sign as this device (a clone then shows as a fork at
  the store, after the fact).
- :class:`TpmKeyStore`: each key's 32 private bytes sealed by the device's TPM 2.0
  (``device.key.sealed``, ``tls.key.sealed``: the sealed blob, JSON); unsealed into memory
  when needed. A copied card gives nothing: the blobs load only on this TPM.

Which one a device uses is recorded at keygen in ``DATA/private/keystore.json``
(``{"backend": "tpm", "tcti": "device:/dev/tpmrm0"}``); without that file it is the file
backend, so devices set up before the TPM backend existed go on as they were.

Example::

    store = new_key_store(root / "private", "tpm", "device:/dev/tpmrm0")   # keygen
    store.save_signing_key(nacl.signing.SigningKey.generate())   # sealed, then kept
    record_key_store(store)
    store = open_key_store(root / "private")        # later: the backend keygen chose
    key = store.signing_key()                       # None if there is none yet
    ssl_ctx.load_cert_chain(cert, store.tls_key_file())
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import nacl.encoding
import nacl.signing

from common.files import write_atomic
from device.tpm import Sealed, Tpm
from evidence.names import ProvisionError

if TYPE_CHECKING:  # the TLS key's type; the library is loaded only when a TLS key is used
    from common.pki import PrivateKey

Backend = Literal["file", "tpm"]
DEVICE_KEY = "device.key"
NEXT_KEY = "device.key.next"  # a rotation in progress
TLS_KEY = "tls.key"
RECORD = "keystore.json"
SEALED = ".sealed"
SEALED_FORMAT = "unbroken-tpm2-sealed/1"
WEAKER = "keys in files: a copied card can sign as this device"


class KeyStoreError(ProvisionError):
    """A key cannot be read or kept: one line naming the file and the problem."""


class KeyStore(ABC):
    """The port: load, save, promote and drop the device's private keys."""

    backend: ClassVar[Backend]
    weaker: ClassVar[bool]
    tcti: str | None = None  # how the TPM is reached (the TPM backend)

    def __init__(self, private: Path) -> None:
        self.private = private

    @abstractmethod
    def path(self, name: str) -> Path:
        """The file that holds key ``name`` (named in messages)."""

    @abstractmethod
    def signing_key(self, name: str = DEVICE_KEY) -> nacl.signing.SigningKey | None:
        """The Ed25519 key ``name``; None if there is none."""

    @abstractmethod
    def save_signing_key(self, key: nacl.signing.SigningKey, name: str = DEVICE_KEY) -> None:
        """Keep ``key`` as ``name``, replacing it in one step."""

    @abstractmethod
    def tls_key(self) -> PrivateKey | None:
        """The TLS client key; None if there is none."""

    @abstractmethod
    def save_tls_key(self, key: PrivateKey) -> None: ...

    @abstractmethod
    def tls_key_file(self) -> Path:
        """A path Python's ssl can load the TLS key from (a file, or memory)."""

    def has(self, name: str) -> bool:
        return self.path(name).exists()

    def check(self) -> None:
        """Raise :class:`~device.tpm.TpmError` if the backend cannot be used here."""
        return None  # files can always be kept

    def promote(self, src: str, dst: str) -> None:
        """Key ``src`` becomes key ``dst`` in one rename (the old ``dst`` is gone)."""
        os.replace(self.path(src), self.path(dst))

    def discard(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def describe(self) -> dict[str, object]:
        """For ``agent status``: the backend, and why it is weaker if it is."""
        return {"backend": self.backend, "weaker": self.weaker}

    def _mkdir(self) -> None:
        self.private.mkdir(mode=0o700, parents=True, exist_ok=True)


class FileKeyStore(KeyStore):
    """Today's files: ``device.key`` (Ed25519 seed, hex) and ``tls.key`` (PEM), 0600."""

    backend = "file"
    weaker = True

    def path(self, name: str) -> Path:
        return self.private / name

    def signing_key(self, name: str = DEVICE_KEY) -> nacl.signing.SigningKey | None:
        path = self.path(name)
        try:
            return nacl.signing.SigningKey(path.read_bytes().strip(), nacl.encoding.HexEncoder)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as e:
            raise KeyStoreError(f"{path}: not a device key ({e})") from None

    def save_signing_key(self, key: nacl.signing.SigningKey, name: str = DEVICE_KEY) -> None:
        self._write(name, key.encode(nacl.encoding.HexEncoder) + b"\n")

    def tls_key(self) -> PrivateKey | None:
        path = self.path(TLS_KEY)
        try:
            from common import pki  # X.509 and key parsing: not needed while recording

            return pki.load_key(path.read_bytes(), str(path))
        except FileNotFoundError:
            return None

    def save_tls_key(self, key: PrivateKey) -> None:
        from common import pki

        self._write(TLS_KEY, pki.key_pem(key))

    def _write(self, name: str, data: bytes) -> None:
        self._mkdir()
        write_atomic(self.path(name), data, mode=0o600)
        os.chmod(self.path(name), 0o600)  # write_atomic's mode is under the umask

    def tls_key_file(self) -> Path:
        return self.path(TLS_KEY)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "note": WEAKER}


class TpmKeyStore(KeyStore):
    """Each key's private bytes sealed by the TPM; only the sealed blobs are on the card."""

    backend = "tpm"
    weaker = False

    def __init__(self, private: Path, tcti: str) -> None:
        super().__init__(private)
        self.tcti = tcti
        self.tpm = Tpm(tcti)

    def path(self, name: str) -> Path:
        return self.private / (name + SEALED)

    def signing_key(self, name: str = DEVICE_KEY) -> nacl.signing.SigningKey | None:
        raw = self._unseal(name)
        return None if raw is None else nacl.signing.SigningKey(raw)

    def save_signing_key(self, key: nacl.signing.SigningKey, name: str = DEVICE_KEY) -> None:
        self._seal(name, bytes(key))  # the 32-byte seed

    def tls_key(self) -> PrivateKey | None:
        raw = self._unseal(TLS_KEY)
        if raw is None:
            return None
        from cryptography.hazmat.primitives.asymmetric import ec

        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())

    def save_tls_key(self, key: PrivateKey) -> None:
        # The private scalar: a PEM (about 240 bytes) is more than a sealed object holds.
        self._seal(TLS_KEY, key.private_numbers().private_value.to_bytes(32, "big"))

    def _unseal(self, name: str) -> bytes | None:
        path = self.path(name)
        try:
            doc = json.loads(path.read_bytes())
            if doc.get("format") != SEALED_FORMAT:
                raise ValueError(doc.get("format"))
            blob = Sealed(bytes.fromhex(doc["public"]), bytes.fromhex(doc["private"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise KeyStoreError(f"{path}: not a sealed key ({SEALED_FORMAT})") from None
        raw = self.tpm.unseal(blob, str(path))
        if len(raw) != 32:
            raise KeyStoreError(f"{path}: the TPM unsealed {len(raw)} bytes, not a 32-byte key")
        return raw

    def _seal(self, name: str, raw: bytes) -> None:
        blob = self.tpm.seal(raw)
        doc = {"format": SEALED_FORMAT, "public": blob.public.hex(), "private": blob.private.hex()}
        self._mkdir()
        write_atomic(self.path(name), json.dumps(doc, indent=1).encode() + b"\n", mode=0o600)

    def tls_key_file(self) -> Path:
        """The PEM in an anonymous memory file, as ``/proc/self/fd/N``: ssl needs a path, and
        the unsealed key must never touch the card. It lives as long as this process."""
        key = self.tls_key()
        if key is None:
            raise KeyStoreError(f"{self.path(TLS_KEY)}: no sealed TLS key")
        from common import pki

        pem = pki.key_pem(key)
        fd = _MEMFDS.get(pem)
        if fd is None:
            fd = os.memfd_create("unbroken-tls.key", os.MFD_CLOEXEC)
            os.write(fd, pem)
            _MEMFDS[pem] = fd
        return Path(f"/proc/self/fd/{fd}")

    def check(self) -> None:
        self.tpm.check()

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "tcti": self.tcti}


_MEMFDS: dict[bytes, int] = {}  # one memory file per TLS key, kept open for the process


def open_key_store(private: Path) -> KeyStore:
    """The key store keygen chose for this device (the file backend if none was recorded)."""
    path = private / RECORD
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return FileKeyStore(private)
    except ValueError:
        raise KeyStoreError(f"{path}: not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("backend") not in ("file", "tpm"):
        raise KeyStoreError(f"{path}: backend is not 'file' or 'tpm'")
    if doc["backend"] == "file":
        return FileKeyStore(private)
    if not isinstance(doc.get("tcti"), str) or not doc["tcti"]:
        raise KeyStoreError(f"{path}: a tpm key store needs its tcti")
    return TpmKeyStore(private, doc["tcti"])


def new_key_store(private: Path, backend: Backend, tcti: str) -> KeyStore:
    """A store of ``backend`` for a device with no keys yet; nothing is written."""
    return TpmKeyStore(private, tcti) if backend == "tpm" else FileKeyStore(private)


def record_key_store(store: KeyStore) -> None:
    """Remember the choice (the file backend is the default and writes nothing)."""
    if isinstance(store, TpmKeyStore):
        store._mkdir()
        doc = {"backend": "tpm", "tcti": store.tcti}
        write_atomic(store.private / RECORD, json.dumps(doc).encode() + b"\n", mode=0o600)
