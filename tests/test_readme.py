"""What the README shows a new user works: every device-settings example is valid settings,
and the command-line example records a session that verifies."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from common.settings import DeviceConfig
from store.config import StoreConfig

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("text", _blocks("toml"), ids=lambda t: t.splitlines()[0][:40])
def test_every_settings_example_is_valid(text: str) -> None:
    data = tomllib.loads(text)
    model = StoreConfig if "database" in data else DeviceConfig  # a store.toml, or a device's
    model.model_validate(data)


@pytest.mark.slow
def test_the_command_line_example_records_and_verifies(tmp_path: Path) -> None:
    example = next(b for b in _blocks("sh") if "sim session" in b and "verify" in b)
    for line in example.strip().splitlines():
        args = shlex.split(line.replace("/tmp/bwc", str(tmp_path / "bwc")))
        assert args[0].endswith("unbroken"), line
        done = subprocess.run(
            [sys.executable, "-m", "unbroken.cli", *args[1:]],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (line, done.stderr[-1000:])
    assert "RESULT: OK" in done.stdout
