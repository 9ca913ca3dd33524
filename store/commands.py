"""``unbroken store send``: deliver an agency-signed command to a device over MQTT.

The agency signs commands (``provision assign``, ``provision open-session``); the store's
client is the one the broker lets write ``unbroken/c/<device>/<command>``. The command is
checked before it is sent (agency key, validity window), so a wrong file is refused here
with its reason instead of being ignored by the device.

Example::

    unbroken provision open-session --device room-1 --case A-17 --badge 012345 --out open.cmd
    unbroken store send --config store.toml open.cmd
"""

from __future__ import annotations

from common.commands import AgencyCommand, check_command
from evidence.signed import SignedError, parse
from provisioning.agency import Agency
from store.config import StoreConfig

__all__ = ["SignedError", "publish_command", "send_command"]


def send_command(
    config: StoreConfig, data: bytes, now: float, timeout: float = 10.0
) -> AgencyCommand:
    """Check ``data`` as an agency command and publish it (QoS 1) to the device it names."""
    payload, _ = parse(data, "command")
    agency = Agency(config.agency)
    try:
        cmd = check_command(data, agency.verify_key, str(payload.get("device")), now)
    finally:
        agency.close()
    publish_command(config, cmd.device, cmd.command, data, timeout)
    return cmd


def publish_command(
    config: StoreConfig, device: str, name: str, data: bytes, timeout: float = 10.0
) -> None:
    """Publish ``data`` as is on the device's command topic (unchecked: tests send forgeries)."""
    from common.mqtt import tls_client
    from evidence import protocol as topics

    b = config.broker
    client = tls_client(f"{config.name}-commands", b.ca, b.cert, b.key)
    client.connect(b.host, b.port)
    client.loop_start()
    try:
        info = client.publish(topics.command(device, name), data, qos=1)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise SignedError(f"the broker at {b.host}:{b.port} did not take the command")
    finally:
        client.disconnect()
        client.loop_stop()
