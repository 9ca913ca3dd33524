"""Sealing small secrets with a TPM 2.0, through the tpm2-tools programs.

TPM 2.0 has no Ed25519, so a key is not made *in* the TPM: its private bytes are sealed
(a keyedhash data object) under a storage key the TPM derives from its owner seed. Only the
sealed blob (public and private parts) is kept on disk; unsealing needs this TPM, so a
copy of the blob is useless on another one (or after the TPM is cleared).

Why tpm2-tools and not tpm2-pytss: the agent runs on Raspberry Pi OS (aarch64) with wheels
only, and tpm2-pytss publishes no aarch64 wheel; Debian and Raspberry Pi OS package
tpm2-tools. The secret goes in on stdin and comes back on stdout: never through a file.

The storage key (the parent) is made afresh each time with a fixed template, not kept at
a persistent handle: the same owner seed and template give the same key after a restart,
and nothing is left in the TPM's few persistent slots.

Example::

    tpm = Tpm("swtpm:host=127.0.0.1,port=2321")      # or "device:/dev/tpmrm0" on a board
    blob = tpm.seal(secret32)                          # Sealed(public=..., private=...)
    assert tpm.unseal(blob, "DATA/private/device.key.sealed") == secret32
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from evidence.names import ProvisionError

# The parent's template, fixed so that it is the same key after every restart.
PRIMARY = ["-C", "o", "-g", "sha256", "-G", "ecc256:aes128cfb"]
PRIMARY_ATTRS = "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda"
SEALED_ATTRS = "fixedtpm|fixedparent|userwithauth|noda"
MAX_SECRET = 128  # MAX_SYM_DATA: the most a sealed data object holds
TIMEOUT = 30.0


class TpmError(ProvisionError):
    """The TPM cannot be used (absent, tools missing, refused): one line naming why."""


class NotThisTpm(TpmError):
    """A sealed blob does not load here: another TPM sealed it, or this one was cleared."""


@dataclass(frozen=True)
class Sealed:
    """A sealed data object as ``tpm2_create`` writes it: TPM2B_PUBLIC and TPM2B_PRIVATE."""

    public: bytes
    private: bytes


class Tpm:
    """One TPM, reached through a TCTI (``device:/dev/tpmrm0``, ``swtpm:host=…,port=…``)."""

    def __init__(self, tcti: str) -> None:
        self.tcti = tcti

    def check(self) -> None:
        """Whether the TPM answers and makes the storage key: TpmError naming why not."""
        with tempfile.TemporaryDirectory(prefix="unbroken-tpm-") as tmp:
            self._primary(Path(tmp))

    def seal(self, secret: bytes) -> Sealed:
        if not 0 < len(secret) <= MAX_SECRET:
            raise TpmError(f"a sealed secret holds 1 to {MAX_SECRET} bytes, not {len(secret)}")
        with tempfile.TemporaryDirectory(prefix="unbroken-tpm-") as tmp, self._flushed():
            d = Path(tmp)
            self._primary(d)
            self._run(
                "tpm2_create",
                ["-C", str(d / "parent.ctx"), "-g", "sha256", "-a", SEALED_ATTRS],
                ["-u", str(d / "sealed.pub"), "-r", str(d / "sealed.priv"), "-i", "-"],
                stdin=secret,
            )
            return Sealed((d / "sealed.pub").read_bytes(), (d / "sealed.priv").read_bytes())

    def unseal(self, blob: Sealed, where: str) -> bytes:
        """The secret; :class:`NotThisTpm` naming ``where`` if the blob is not this TPM's."""
        with tempfile.TemporaryDirectory(prefix="unbroken-tpm-") as tmp, self._flushed():
            d = Path(tmp)
            (d / "sealed.pub").write_bytes(blob.public)
            (d / "sealed.priv").write_bytes(blob.private)
            self._primary(d)
            try:
                self._run(
                    "tpm2_load",
                    ["-C", str(d / "parent.ctx"), "-u", str(d / "sealed.pub")],
                    ["-r", str(d / "sealed.priv"), "-c", str(d / "sealed.ctx")],
                )
            except TpmError as e:
                if "integrity check failed" in str(e):
                    raise NotThisTpm(
                        f"the sealed key in {where} does not load on this TPM: it was sealed "
                        f"by another TPM or the TPM was cleared (TPM at {self.tcti})"
                    ) from None
                if "refused tpm2_load" in str(e):
                    raise TpmError(f"the sealed key in {where} does not load: {e}") from None
                raise
            self._flush()
            return self._run("tpm2_unseal", ["-c", str(d / "sealed.ctx")])

    # -- the programs ---------------------------------------------------------------------

    def _primary(self, d: Path) -> None:
        self._flush()  # whatever a killed process left loaded (no resource manager: swtpm)
        self._run("tpm2_createprimary", PRIMARY, ["-a", PRIMARY_ATTRS, "-c", str(d / "parent.ctx")])
        # Without a resource manager (swtpm, /dev/tpm0) every tool leaves its objects loaded
        # and the next one loads the saved context again: the TPM runs out of object slots.
        self._flush()

    def _flush(self) -> None:
        self._run("tpm2_flushcontext", ["-t"])

    @contextmanager
    def _flushed(self) -> Iterator[None]:
        """Nothing of ours stays loaded, whatever happens (the TPM has few object slots)."""
        try:
            yield
        finally:
            with suppress(TpmError):
                self._flush()

    def _run(self, tool: str, *args: list[str], stdin: bytes | None = None) -> bytes:
        cmd = [tool, "-T", self.tcti, *(a for part in args for a in part)]
        try:
            done = subprocess.run(
                cmd, input=stdin or b"", capture_output=True, timeout=TIMEOUT, check=False
            )
        except FileNotFoundError:
            raise TpmError(
                f"{tool} not found: the TPM key store needs tpm2-tools (apt-get install tpm2-tools)"
            ) from None
        except subprocess.TimeoutExpired:
            raise TpmError(
                f"the TPM at {self.tcti} did not answer {tool} in {TIMEOUT:.0f} s"
            ) from None
        if done.returncode != 0:
            raise TpmError(self._problem(tool, done.stderr.decode(errors="replace")))
        return done.stdout

    def _problem(self, tool: str, stderr: str) -> str:
        """One line an admin can act on, from what the tool and the TSS libraries said."""
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        if any("Could not load tcti" in ln or "Failed to instantiate TCTI" in ln for ln in lines):
            tss = [_tss_message(ln) for ln in lines if ":tcti:" in ln and "tctildr" not in ln]
            kind = self.tcti.split(":", 1)[0]
            cause = tss[0] if tss else f"no TCTI library {kind!r} (Debian's libtss2-tcti-{kind}0)"
            hint = ""
            if "Permission denied" in cause:
                hint = " (is the user in group tss?)"
            elif "No such file" in cause:
                hint = (
                    " (is a TPM 2.0 fitted and enabled? on a Raspberry Pi: "
                    "dtoverlay=tpm-slb9670 in config.txt)"
                )
            return f"no TPM reachable at {self.tcti}: {cause}{hint}"
        errors = [ln.removeprefix("ERROR: ") for ln in lines if ln.startswith("ERROR: ")]
        detail = errors[0] if errors else (lines[-1] if lines else "no message")
        if "authorization" in detail.lower() or "0x9a2" in detail.lower():
            detail += " (the owner hierarchy has a password: the key store needs it empty)"
        return f"the TPM at {self.tcti} refused {tool}: {detail}"


def _tss_message(line: str) -> str:
    """``ERROR:tcti:src/…/tcti-device.c:452:Tss2_Tcti_Device_Init() Failed to open …``
    → ``Failed to open …``."""
    return re.sub(r"^\S+\(\)\s*", "", line.split(":", 4)[-1]).strip()
