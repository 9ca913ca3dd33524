"""The device's configuration: an explicit ``device.toml``, else the settings provisioning
installed in the data directory, else the defaults (models in :mod:`common.settings`); and the
officers or room the agency assigned to this device."""

from __future__ import annotations

import json
from pathlib import Path

from common.files import ConfigError, load_toml
from common.settings import DeviceConfig, Room


def load_config(path: Path | None) -> DeviceConfig:
    """Read a TOML file into a DeviceConfig; None gives the defaults."""
    return DeviceConfig() if path is None else load_toml(path, DeviceConfig)


DEVICE_TOML = "device.toml"  # settings installed from the provisioning bundle
ASSIGNMENT = "assignment.json"  # the officers (badges) or room this device serves


def device_config(root: Path, explicit: Path | None = None) -> DeviceConfig:
    """An explicit file, else the settings provisioning installed in ``root``, else defaults;
    a room controller without a ``[room]`` section gets the default room."""
    if explicit is not None:
        config = load_config(explicit)
    else:
        installed = root / DEVICE_TOML
        config = load_config(installed) if installed.exists() else DeviceConfig()
    from agent.identity import load_identity  # (identity → evidence_dir → media → config)

    identity = load_identity(root)
    if config.room is None and identity and identity.role == "room_controller":
        config = config.model_copy(update={"room": Room()})  # a room records every camera
    return config


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
