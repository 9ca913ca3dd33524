"""The one way this project opens an MQTT connection: v5, TLS client certificate,
TCP_NODELAY. Used by the device's uploader, the store's workers and the tools."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from pathlib import Path
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from common.files import ConfigError


def tls_client(client_id: str, ca: Path, cert: Path | None, key: Path | None) -> mqtt.Client:
    """A v5 client over TLS; a TLS file that is missing or unreadable is a ConfigError."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    for path in (ca, cert, key):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{path}: no such TLS file (broker settings)")
    try:
        c.tls_set(
            ca_certs=str(ca),
            certfile=str(cert) if cert else None,
            keyfile=str(key) if key else None,
        )
    except (OSError, ValueError) as e:
        raise ConfigError(f"TLS files {ca}, {cert}, {key} are not usable: {e}") from None
    c.on_socket_open = _nodelay
    return c


def _nodelay(_c: mqtt.Client, _u: Any, sock: Any) -> None:
    # Without TCP_NODELAY, Nagle's algorithm holds back small TLS records and uploads crawl.
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect_problem(e: BaseException, host: str, port: int) -> str:
    """Why a connection to the broker failed, as one line an admin can act on."""
    where = f"the broker at {host}:{port}"
    if isinstance(e, ssl.SSLCertVerificationError):
        return (
            f"{where} has a certificate the configured CA does not trust "
            f"({e.verify_message}): check the broker's ca file"
        )
    if isinstance(e, ssl.SSLError):
        text = str(e).lower()
        if "certificate" in text or "alert" in text:
            return (
                f"{where} refused this client's TLS certificate ({e.reason or e}): "
                "is it issued by the agency CA, unexpired and not revoked?"
            )
        return f"TLS with {where} failed: {e.reason or e}"
    if isinstance(e, ConnectionRefusedError):
        return f"{where} refused the connection: is the broker running on that port?"
    if isinstance(e, socket.gaierror):
        return f"{where} is unreachable: the host name does not resolve ({e.strerror})"
    if isinstance(e, TimeoutError | socket.timeout):
        return f"{where} did not answer in time: unreachable or firewalled"
    if isinstance(e, FileNotFoundError | PermissionError):
        return f"cannot read the TLS files: {e.filename}: {e.strerror}"
    if isinstance(e, OSError):
        return f"{where} is unreachable: {e.strerror or e}"
    return f"cannot connect to {where}: {e}"


def refusal_problem(rc: ReasonCode, who: str) -> str:
    """What a CONNACK refusal means for this fleet (identity comes from the certificate)."""
    hint = {
        "Not authorized": "the certificate's name is not allowed by the broker's ACL",
        "Bad user name or password": "the certificate's name is not a known client",
        "Client identifier not valid": "another client is using this id",
    }.get(str(rc), "")
    return f"the broker refused {who}: {rc}" + (f" ({hint})" if hint else "")


def probe(client: mqtt.Client, host: str, port: int, keepalive: int, timeout: float) -> str | None:
    """Connect in the caller's thread and wait for the broker's answer; the problem if none.

    paho's background loop retries silently, so the first attempt is made here, where the
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
            return connect_problem(e, host, port)
        deadline = time.monotonic() + timeout
        while not answered and time.monotonic() < deadline:
            if client.loop(timeout=0.2) != mqtt.MQTT_ERR_SUCCESS:
                # With TLS 1.3 the broker's verdict on our certificate comes after the
                # handshake, as a closed connection: that is what it almost always means.
                tls = next((m for m in errors if "ssl" in m.lower() or "alert" in m.lower()), "")
                return (
                    f"the broker at {host}:{port} closed the connection right after TLS"
                    + (f" ({tls})" if tls else "")
                    + ": it does not accept this client's certificate (another CA's, expired "
                    "or revoked?)"
                )
        if not answered:
            return f"the broker at {host}:{port} did not answer in {timeout:g} s"
        if answered[0].is_failure:
            return refusal_problem(answered[0], "this client")
        return None
    finally:
        client.on_log, client.on_connect = saved_log, saved_connect
