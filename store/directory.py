"""The store's view of the agency registry: device keys and revocations.

Each thread that asks opens its own connection (SQLite connections belong to the thread
that made them). Answers are kept only while the registry is unchanged (SQLite's
``data_version``, one cheap statement per question), so a revocation takes effect at the
next message.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from provisioning.registry import RegisteredKey, Registry


class RegistryDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def _registry(self) -> tuple[Registry, dict[tuple[str, str], Any]]:
        """This thread's registry, and its answers while the registry is unchanged."""
        local = self._local
        if getattr(local, "registry", None) is None:
            local.registry, local.answers, local.version = Registry(self.path), {}, None
        version = local.registry.changes()
        if version != local.version:  # something was committed since: read afresh
            local.answers, local.version = {}, version
        return local.registry, local.answers

    def device_keys(self, device: str) -> list[RegisteredKey]:
        reg, answers = self._registry()
        if ("keys", device) not in answers:
            answers["keys", device] = reg.device_keys(device)
        return list(answers["keys", device])

    def devices(self) -> list[str]:
        """Every registered device."""
        reg, answers = self._registry()
        if ("devices", "") not in answers:
            answers["devices", ""] = [r["device_id"] for r in reg.devices()]
        return list(answers["devices", ""])

    def revoked_at(self, device: str) -> float | None:
        reg, answers = self._registry()
        if ("revoked", device) not in answers:
            answers["revoked", device] = reg.revoked_at(device)
        value: float | None = answers["revoked", device]
        return value
