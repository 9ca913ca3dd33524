"""What board this is, for the identity ``agent keygen`` writes and the agency registers.

A Raspberry Pi (and most ARM boards) names itself in the device tree; a PC or a virtual
machine in DMI. A simulated device (``--sim``) is ``unbroken-sim`` whatever it runs on;
nothing found otherwise: the machine's architecture, said plainly, so that no real board
enrols as the simulator.

Example::

    board_model()                       # 'Raspberry Pi 4 Model B Rev 1.4'
    board_model(simulated=True)         # 'unbroken-sim'
"""

from __future__ import annotations

import platform
import re
from contextlib import suppress
from pathlib import Path

SIMULATED = "unbroken-sim"

# Where a board names itself, first found wins: the device tree (the Pi), then DMI.
MODEL_FILES = (
    "/proc/device-tree/model",
    "/sys/firmware/devicetree/base/model",
    "/sys/class/dmi/id/product_name",
)

# What firmware writes when the vendor left the field empty: not a model.
_PLACEHOLDERS = {
    "",
    "default string",
    "system product name",
    "to be filled by o.e.m.",
    "not applicable",
    "none",
}


def clean_model(raw: bytes) -> str | None:
    """A model string fit for an enrolment request (printable ASCII, at most 64
    characters), or None if ``raw`` names nothing."""
    text = raw.split(b"\x00", 1)[0].decode("ascii", "replace")
    text = re.sub(r"[^\x20-\x7e]", "?", " ".join(text.split()))[:64].strip()
    return None if text.lower() in _PLACEHOLDERS else text


def detect_model(files: tuple[str, ...] = MODEL_FILES) -> str | None:
    """The model the board names itself by, or None."""
    for name in files:
        with suppress(OSError):
            model = clean_model(Path(name).read_bytes())
            if model:
                return model
    return None


def board_model(simulated: bool = False, files: tuple[str, ...] = MODEL_FILES) -> str:
    """The model to enrol as when none is given: the simulator's for a simulated device,
    else the detected one, else the architecture (``unknown x86_64``)."""
    if simulated:
        return SIMULATED
    return detect_model(files) or f"unknown {platform.machine() or 'machine'}"
