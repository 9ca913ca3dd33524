"""The one way this project opens an MQTT connection: v5, TLS client certificate,
TCP_NODELAY. Used by the device's uploader, the store's workers and the tools."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def tls_client(client_id: str, ca: Path, cert: Path | None, key: Path | None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.tls_set(
        ca_certs=str(ca),
        certfile=str(cert) if cert else None,
        keyfile=str(key) if key else None,
    )
    c.on_socket_open = _nodelay
    return c


def _nodelay(_c: mqtt.Client, _u: Any, sock: Any) -> None:
    # Without TCP_NODELAY, Nagle's algorithm holds back small TLS records and uploads crawl.
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
