"""The Raspberry Pi install path (``sudo make install-pi`` → ``agent/units/install.sh``), run
for real into a temporary prefix: the venv sees the system's site packages (picamera2 comes
from Raspberry Pi OS's apt), the agent runs from it and is on PATH, the data directory is
closed to others, and the installed unit points at the venv, names no group a system may
lack, and verifies. The apt and systemctl steps are left out here (they belong to the
board)."""

from __future__ import annotations

import getpass
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a venv and the project installed into it

ROOT = Path(__file__).resolve().parent.parent


def test_install_script_builds_a_service_install(tmp_path: Path) -> None:
    prefix, data, units = tmp_path / "opt", tmp_path / "data", tmp_path / "units"
    bin_dir = tmp_path / "bin"
    env = {
        **os.environ,
        "PREFIX": str(prefix),
        "DATA": str(data),
        "UNIT_DIR": str(units),
        "BIN_DIR": str(bin_dir),
        "AGENT_USER": getpass.getuser(),
        "ADMIN_USER": "",
        "UNBROKEN_SKIP_APT": "1",
        "UNBROKEN_SKIP_SYSTEMD": "1",
    }
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        ["sh", str(ROOT / "agent" / "units" / "install.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("unbroken ")
    # The command on PATH is the venv's: `sudo -u unbroken unbroken agent ...` as written.
    assert (bin_dir / "unbroken").resolve() == (prefix / "venv" / "bin" / "unbroken").resolve()
    help_text = subprocess.run(
        [str(bin_dir / "unbroken"), "agent", "keygen", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert help_text.returncode == 0 and "--sim" in help_text.stdout, help_text.stderr
    cfg = (prefix / "venv" / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg
    mode = stat.S_IMODE(data.stat().st_mode)
    assert data.is_dir() and mode == 0o750, oct(mode)
    unit = (units / "unbroken-agent.service").read_text()
    assert f"ExecStart={prefix}/venv/bin/unbroken agent run --data {data}" in unit
    assert f"ReadWritePaths={data}" in unit and "Type=notify" in unit
    # A group named in the unit that the system lacks (plain Debian has no gpio) stops the
    # service at start; the script gives the user only the groups that exist instead.
    assert "SupplementaryGroups" not in unit
    if shutil.which("systemd-analyze"):
        check = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(units / "unbroken-agent.service")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert check.returncode == 0 and not check.stderr, check.stderr
