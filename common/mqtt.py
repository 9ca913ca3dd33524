"""The one way this project opens an MQTT connection: v5, TLS client certificate,
TCP_NODELAY. Used by the device's uploader, the store's workers and the tools.

Why a connection fails: :func:`failure_cause`, :func:`alert_cause`, :func:`refusal_cause`
and :func:`disconnect_cause` name the cause (a TLS alert, a CONNACK refusal, nothing
listening, a name that does not resolve, a timeout, a session taken over), pure, for
:mod:`common.link_log` to tell once per change.

Example::

    c = tls_client("bwc-1", ca, cert, key)
    failure_cause(ConnectionRefusedError(111, "refused"), "10.0.0.5", 8883).text
    # -> 'the broker at 10.0.0.5:8883 refused the connection: is the broker running ...'
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import paho.mqtt.client as mqtt
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from common.files import ConfigError

TAKEN_OVER = 142  # MQTT v5 DISCONNECT: another client connected with this client id
WITH_WILL = 4  # MQTT v5 DISCONNECT: "disconnect with will message"
# What the tools hold of a connection and get from it, without naming paho.
Client = mqtt.Client
Message = mqtt.MQTTMessage


def tls_client(
    client_id: str,
    ca: Path,
    cert: Path | None,
    key: Path | None,
    verdict_in_handshake: bool = False,
) -> mqtt.Client:
    """A v5 client over TLS; a TLS file that is missing or unreadable is a ConfigError.
    ``verdict_in_handshake``: TLS 1.2, where the broker's verdict on this client's
    certificate (revoked, expired) is an alert inside the handshake; with TLS 1.3 it comes
    after, as a connection closed without a reason."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    for path in (ca, cert, key):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{path}: no such TLS file (broker settings)")
    try:
        context = ssl.create_default_context(cafile=str(ca))
        if cert:
            context.load_cert_chain(str(cert), str(key) if key else None)
        if verdict_in_handshake:
            context.maximum_version = ssl.TLSVersion.TLSv1_2
        c.tls_set_context(context)
    except (OSError, ValueError) as e:
        raise ConfigError(f"TLS files {ca}, {cert}, {key} are not usable: {e}") from None
    c.on_socket_open = _nodelay
    return c


def drop(client: mqtt.Client) -> None:
    """Close ``client``'s connection as a link that failed would be: the broker publishes
    its will (the store sees the device go offline); its network loop stops."""
    client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=WITH_WILL))
    client.loop_stop()


def _nodelay(_c: mqtt.Client, _u: Any, sock: Any) -> None:
    # Without TCP_NODELAY, Nagle's algorithm holds back small TLS records and uploads crawl.
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# -- why a connection fails: pure ------------------------------------------------------


@dataclass(frozen=True)
class Cause:
    """Why the broker is not reached: ``kind`` a stable short name (for tests, status),
    ``text`` one line an admin can act on."""

    kind: str
    text: str


_REFUSED_CERT = "the broker at {where} refused this client's certificate"
# The broker's verdict on our certificate, as the TLS alert it sends (OpenSSL's names).
_ALERTS = {
    "SSLV3_ALERT_CERTIFICATE_REVOKED": (
        "revoked",
        _REFUSED_CERT + ": it is revoked (listed in the agency's CRL)",
    ),
    "TLSV1_ALERT_UNKNOWN_CA": (
        "unknown_ca",
        _REFUSED_CERT + ": it is not issued by the CA the broker trusts (another agency's?)",
    ),
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": (
        "expired",
        _REFUSED_CERT + ": it has expired (or the broker's CRL has): renew it",
    ),
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": (
        "no_certificate",
        "the broker at {where} requires a client certificate and none was sent",
    ),
    "SSLV3_ALERT_BAD_CERTIFICATE": ("bad_certificate", _REFUSED_CERT + ": a bad certificate"),
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": (
        "bad_certificate",
        _REFUSED_CERT + ": is it issued by the agency CA, unexpired and not revoked?",
    ),
}
_SSL_REASON = re.compile(r"\[SSL: ([A-Z0-9_]+)\]")


def alert_cause(message: str, host: str, port: int) -> Cause | None:
    """The cause named by a TLS error's text (``str(ssl.SSLError)``, or the line paho logs
    when the broker's alert arrives after the handshake); None: no TLS error named."""
    found = _SSL_REASON.search(message)
    if found is None:
        return None
    return _tls_cause(found.group(1), message, f"{host}:{port}")


def _tls_cause(reason: str, detail: str, where: str) -> Cause:
    if reason in _ALERTS:
        kind, text = _ALERTS[reason]
        return Cause(f"tls_{kind}", text.format(where=where))
    if "ALERT" in reason:
        return Cause("tls_alert", _REFUSED_CERT.format(where=where) + f" ({reason.lower()})")
    return Cause("tls", f"TLS with the broker at {where} failed: {detail}")


def expired_whose(cause: Cause, cert_valid_until: float | None, now: float) -> Cause:
    """A broker says "certificate expired" both for the client's certificate and for its
    own CRL having run out; while the client's certificate is valid, it is the CRL (and
    every client of the fleet is refused until the agency renews it)."""
    if cause.kind != "tls_expired" or cert_valid_until is None or cert_valid_until <= now:
        return cause
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(cert_valid_until))
    where = cause.text.removeprefix("the broker at ").split(" ", 1)[0]
    return Cause(
        "tls_crl_expired",
        f"the broker at {where} refuses this client as expired, but its certificate is "
        f"valid until {until}: the broker's CRL has expired, and it refuses every client "
        "until the agency renews it (provision renew-crl) and reloads the broker",
    )


def certificate_valid_until(path: Path | None) -> float | None:
    """When the certificate in ``path`` expires (None: none, or unreadable)."""
    if path is None:
        return None
    try:
        return x509.load_pem_x509_certificate(
            Path(path).read_bytes()
        ).not_valid_after_utc.timestamp()
    except (OSError, ValueError):
        return None


def failure_cause(e: BaseException, host: str, port: int) -> Cause:
    """Why a connection attempt raised ``e`` (what paho's connect raises, in the caller's
    thread or inside its loop)."""
    where = f"{host}:{port}"
    if isinstance(e, ssl.SSLCertVerificationError):
        return Cause(
            "tls_broker_untrusted",
            f"the broker at {where} has a certificate the configured CA does not trust "
            f"({e.verify_message}): check the broker's ca file",
        )
    if isinstance(e, ssl.SSLError):
        named = _SSL_REASON.search(str(e))
        reason = getattr(e, "reason", None) or (named.group(1) if named else "")
        return _tls_cause(str(reason), str(reason or e), where)
    if isinstance(e, ConnectionRefusedError):
        return Cause(
            "refused",
            f"the broker at {where} refused the connection: is the broker running on that port?",
        )
    if isinstance(e, socket.gaierror):
        return Cause(
            "dns", f"the broker at {where} is unreachable: the host name does not resolve "
            f"({e.strerror})",
        )  # fmt: skip
    if isinstance(e, TimeoutError | socket.timeout):
        return Cause("timeout", f"the broker at {where} did not answer in time: unreachable or "
                     "firewalled")  # fmt: skip
    if isinstance(e, FileNotFoundError | PermissionError):
        return Cause("tls_files", f"cannot read the TLS files: {e.filename}: {e.strerror}")
    if isinstance(e, OSError):
        return Cause("unreachable", f"the broker at {where} is unreachable: {e.strerror or e}")
    return Cause("other", f"cannot connect to the broker at {where}: {e}")


def refusal_cause(rc: ReasonCode, who: str) -> Cause:
    """What a CONNACK refusal means for this fleet (identity comes from the certificate)."""
    kind, hint = {
        "Not authorized": ("not_authorized", "the certificate's name is not allowed by the ACL"),
        "Bad user name or password": ("bad_credentials", "the certificate's name is unknown"),
        "Client identifier not valid": ("bad_client_id", "another client is using this id"),
    }.get(str(rc), ("refused_connack", ""))
    return Cause(kind, f"the broker refused {who}: {rc}" + (f" ({hint})" if hint else ""))


def disconnect_cause(rc: ReasonCode, host: str, port: int, alert: Cause | None) -> Cause:
    """Why an open (or opening) connection ended: the TLS alert paho logged just before,
    a session taken over, or the reason code itself."""
    if alert is not None:
        return alert
    if rc.value == TAKEN_OVER:
        return taken_over(f"the broker at {host}:{port}")
    why = "closed by the broker, or the network failed" if rc.value == 128 else str(rc)
    return Cause("lost", f"lost the connection to the broker at {host}:{port} ({why})")


def taken_over(where: str) -> Cause:
    """Another client connects with this client's name: the broker closes the older
    connection (MQTT v5 reason 142, or — as Mosquitto 2.0 does — just closes it)."""
    return Cause(
        "taken_over",
        f"{where} keeps handing this client's session to another client connecting with "
        "the same name (MQTT session taken over)",
    )


def connect_problem(e: BaseException, host: str, port: int) -> str:
    """Why a connection to the broker failed, as one line an admin can act on."""
    return failure_cause(e, host, port).text


def refusal_problem(rc: ReasonCode, who: str) -> str:
    return refusal_cause(rc, who).text


def probe(client: mqtt.Client, host: str, port: int, keepalive: int, timeout: float) -> str | None:
    """Connect in the caller's thread and wait for the broker's answer; the problem if none
    (:func:`probe_cause`'s text)."""
    cause = probe_cause(client, host, port, keepalive, timeout, "this client")
    return cause.text if cause else None


def probe_cause(
    client: mqtt.Client, host: str, port: int, keepalive: int, timeout: float, who: str
) -> Cause | None:
    """Connect in the caller's thread and wait for the broker's answer; why not, if none.

    paho's background loop retries on its own, so the first attempt is made here, where the
    exception (or the TLS alert paho only logs) can be told to the user. On success the
    connection is up and ``loop_start()`` carries on with it."""
    errors: list[str] = []
    answered: list[ReasonCode] = []
    saved_log, saved_connect = client.on_log, client.on_connect

    def on_log(_c: mqtt.Client, _u: Any, level: int, msg: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            errors.append(msg)

    def on_connect(c: mqtt.Client, u: Any, f: Any, rc: ReasonCode, props: Any) -> None:
        answered.append(rc)
        if saved_connect is not None:
            cast(Any, saved_connect)(c, u, f, rc, props)

    client.on_log, client.on_connect = on_log, on_connect
    try:
        try:
            client.connect(host, port, keepalive=keepalive)
        except (OSError, ValueError) as e:
            return failure_cause(e, host, port)
        deadline = time.monotonic() + timeout
        while not answered and time.monotonic() < deadline:
            if client.loop(timeout=0.2) != mqtt.MQTT_ERR_SUCCESS:
                alert = next((a for m in errors if (a := alert_cause(m, host, port))), None)
                # With TLS 1.3 the broker's verdict on our certificate comes after the
                # handshake, as a closed connection: that is what it almost always means.
                return alert or Cause(
                    "tls_closed",
                    f"the broker at {host}:{port} closed the connection right after TLS: it "
                    "does not accept this client's certificate (another CA's, expired or "
                    "revoked?)",
                )
        if not answered:
            return Cause("timeout", f"the broker at {host}:{port} did not answer in {timeout:g} s")
        if answered[0].is_failure:
            return refusal_cause(answered[0], who)
        return None
    finally:
        client.on_log, client.on_connect = saved_log, saved_connect
