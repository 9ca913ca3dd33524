"""The device's configuration: an explicit ``device.toml``, else the settings provisioning
installed in the data directory, else the defaults (models in :mod:`common.settings`); and the
officers or room the agency assigned to this device."""

from __future__ import annotations

import json
from pathlib import Path

from agent.identity import load_identity
from agent.keys import key_store
from common.files import ConfigError, load_toml
from common.settings import DeviceConfig
from device.keystore import TLS_KEY


def load_config(path: Path | None) -> DeviceConfig:
    """Read a TOML file into a DeviceConfig; None gives the defaults."""
    return DeviceConfig() if path is None else load_toml(path, DeviceConfig)


DEVICE_TOML = "device.toml"  # settings installed from the provisioning bundle
ASSIGNMENT = "assignment.json"  # the officers (badges) or room this device serves


def device_config(root: Path, explicit: Path | None = None) -> DeviceConfig:
    """An explicit file, else the settings provisioning installed in ``root``, else defaults;
    a room controller without a ``[room]`` section gets the default room, and a ``[room]``
    section on an enrolled device that is not a room controller is a ConfigError."""
    installed = root / DEVICE_TOML
    source = explicit if explicit is not None else installed if installed.exists() else None
    config = load_config(source)
    try:
        identity = load_identity(root)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if identity is None:
        return config
    if identity.role == "room_controller":
        return config.for_room_controller()
    if config.room is not None and _enrolled(root):
        # The agency registered this device in its role: a body recorder given a [room]
        # would record tracks and obey room commands the broker's ACL and the store do not
        # expect of it, so the mismatch stops the start instead of recording something else.
        raise ConfigError(
            f"{source}: [room] is for a room controller, but {identity.device_id} is a "
            f"{identity.role} (enrolled as one): remove [room], or keygen the controller "
            "with `unbroken agent keygen --role room_controller`"
        )
    return config


def _enrolled(root: Path) -> bool:
    """Whether keygen made this device's enrolment keys: its role is then the one it asked
    the agency for. (A device never enrolled gets an identity at its first start, with the
    default role: a simulated room on a test bench has one of those.)"""
    return key_store(root).has(TLS_KEY)


def _assignment(root: Path) -> dict[str, object]:
    """The last agency-signed assignment applied on this device ({} if none)."""
    path = root / ASSIGNMENT
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise ConfigError(f"{path}: not valid JSON") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: not a JSON object")
    return doc


def assigned_badges(root: Path) -> list[str] | None:
    """Badges from the last agency-signed assignment applied on this device, if any."""
    doc = _assignment(root)
    if not doc:
        return None
    badges = doc.get("badges")
    if not isinstance(badges, list) or not all(isinstance(b, str) for b in badges):
        raise ConfigError(f"{root / ASSIGNMENT}: badges must be a list of strings")
    return badges


def assigned_room(root: Path) -> str | None:
    """The room a room controller serves, from its last assignment, if any."""
    room = _assignment(root).get("room")
    return room if isinstance(room, str) else None
