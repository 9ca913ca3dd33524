"""The store's view of the agency registry: device keys and revocations.

Each thread that asks opens its own connection (SQLite connections belong to the thread
that made them; a worker answers on paho's network thread), and every answer is read
fresh, so a revocation takes effect at the next message.
"""

from __future__ import annotations

import threading
from pathlib import Path

from provisioning.registry import RegisteredKey, Registry


class RegistryDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def _registry(self) -> Registry:
        reg: Registry | None = getattr(self._local, "registry", None)
        if reg is None:
            reg = self._local.registry = Registry(self.path)
        return reg

    def device_keys(self, device: str) -> list[RegisteredKey]:
        return self._registry().device_keys(device)

    def revoked_at(self, device: str) -> float | None:
        return self._registry().revoked_at(device)
