"""Whether the broker serves the agency's newest CRL, asked of the broker itself.

A broker reads its CRL when it starts or reloads; a renewal whose reload failed leaves the
old one in memory, and at its expiry every client is refused while the file on disk is
valid for weeks. Nothing on disk tells which CRL the broker holds, so each CRL the agency
issues also revokes a certificate made for this question alone (the *probe*, CN
``crl-probe``, serial new with every CRL). The probe connects: a broker that refuses it as
revoked holds this CRL (or a newer one); one that lets it in still holds an older one.
The probe's key is worth nothing to anyone else: it is revoked in every CRL from its own
on, and its name has no rights in the ACL.

Example::

    verdict = broker_serves(agency.root, "127.0.0.1", 8883)
    verdict.current, verdict.text
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from common import pki
from common.files import ConfigError
from common.mqtt import probe_cause, tls_client
from evidence.names import ProvisionError

PROBE_SUBJECT = "crl-probe"
PROBE_CERT = "crl-probe.pem"  # AGENCY/crl-probe.pem
PROBE_KEY = "crl-probe.key"  # AGENCY/private/crl-probe.key (0600)

# Causes that say nothing of the CRL: the broker is not there to ask.
_UNREACHABLE = frozenset({"refused", "dns", "timeout", "unreachable", "tls_broker_untrusted"})


@dataclass(frozen=True)
class Verdict:
    """``current``: the broker holds the CRL the probe was revoked in; ``text``: one line."""

    current: bool
    text: str


def new_probe(
    ca_key: pki.PrivateKey, ca: x509.Certificate, now: float, days: int
) -> tuple[x509.Certificate, bytes]:
    """A client certificate for the probe (valid as long as the CRL it is revoked in) and
    its key as PEM."""
    key = pki.new_key()
    cert = pki.issue(ca_key, ca, key.public_key(), PROBE_SUBJECT, "client", now, days + 1)
    return cert, pki.key_pem(key)


def listener(conf: Path) -> tuple[str, int]:
    """Where the broker configured in ``conf`` (broker-config's mosquitto.conf) listens, as
    an address to connect to on this host (a wildcard listens on loopback too)."""
    try:
        found = re.search(r"(?m)^listener (\d+) (\S+)$", conf.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ProvisionError(f"{conf}: cannot read the broker configuration ({e})") from None
    if found is None:
        raise ProvisionError(f"{conf}: no 'listener PORT ADDRESS' line")
    host = found.group(2)
    return ("127.0.0.1" if host in ("0.0.0.0", "::") else host), int(found.group(1))


def broker_serves(
    agency_root: Path, private: Path, host: str, port: int, timeout: float = 10.0
) -> Verdict:
    """Ask the broker at ``host:port`` whether it holds AGENCY/crl.pem (ProvisionError:
    it cannot be asked: not running, unreachable, or no probe issued yet)."""
    number = crl_number(agency_root / "crl.pem")
    cert, key = agency_root / PROBE_CERT, private / PROBE_KEY
    if not cert.is_file():
        raise ProvisionError(
            f"{cert}: no CRL probe (CRLs made before this version have none): renew the CRL "
            "first (provision renew-crl --within-days 400)"
        )
    try:
        client = tls_client(
            PROBE_SUBJECT, agency_root / "ca.pem", cert, key, verdict_in_handshake=True
        )
    except ConfigError as e:
        raise ProvisionError(str(e)) from None
    try:
        cause = probe_cause(client, host, port, 5, timeout, "the CRL probe")
    finally:
        client.disconnect()
    where = f"the broker at {host}:{port}"
    if cause is None:
        return Verdict(False, f"{where} still holds an older CRL than number {number}")
    if cause.kind == "tls_revoked":
        return Verdict(True, f"{where} holds CRL number {number}")
    if cause.kind in _UNREACHABLE:
        raise ProvisionError(f"cannot ask whether the broker holds the new CRL: {cause.text}")
    if cause.kind == "tls_expired":
        return Verdict(False, f"{where} holds an expired CRL, older than number {number}")
    return Verdict(False, f"{where} did not refuse the probe as revoked ({cause.text})")


def crl_expiry(path: Path) -> float:
    """When the CRL in ``path`` runs out (its nextUpdate): past it, the broker refuses
    every client."""
    try:
        until = x509.load_pem_x509_crl(path.read_bytes()).next_update_utc
    except (OSError, ValueError) as e:
        raise ProvisionError(f"{path}: not a CRL ({e})") from None
    if until is None:
        raise ProvisionError(f"{path}: a CRL with no expiry (nextUpdate)")
    return until.timestamp()


def crl_number(path: Path) -> int:
    """The number of the CRL in ``path``."""
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except (OSError, ValueError, x509.ExtensionNotFound) as e:
        raise ProvisionError(f"{path}: not a numbered CRL ({e})") from None


def reload_until_current(
    ask: Callable[[], Verdict],
    reload: Callable[[], None],
    tries: int,
    wait: float,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Verdict, int]:
    """Reload the broker until it says it holds the newest CRL, at most ``tries`` times
    ``wait`` seconds apart; the last verdict and how many reloads it took. A reload that
    fails (ProvisionError from ``reload``) is tried again the same way: the broker may be
    restarting, and a CRL left stale in memory refuses the whole fleet at its expiry."""
    verdict = first_answer(ask, tries, wait, sleep)
    reloads = 0
    failure: ProvisionError | None = None
    while not verdict.current and reloads < tries:
        reloads += 1
        try:
            reload()
            failure = None
        except ProvisionError as e:
            failure = e
        sleep(wait)
        try:
            verdict = ask()
        except ProvisionError as e:  # a broker restarting on its reload
            verdict = Verdict(False, str(e))
    if failure is not None and not verdict.current:
        raise failure
    return verdict, reloads


def first_answer(
    ask: Callable[[], Verdict], tries: int, wait: float, sleep: Callable[[float], None] = time.sleep
) -> Verdict:
    """The broker's answer, asked again ``wait`` seconds apart while it cannot be reached
    (a broker just started, or restarting), at most ``tries`` times more."""
    for _ in range(tries):
        try:
            return ask()
        except ProvisionError:
            sleep(wait)
    return ask()
