"""The command line: the documented commands work, and bad input gets one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from unbroken.cli import main


def test_sim_session_then_verify_as_documented(tmp_path: Path) -> None:
    data = tmp_path / "dev"
    cfg = tmp_path / "device.toml"
    cfg.write_text("[recording]\nwidth = 320\nheight = 180\nfps = 10\nprebuffer_seconds = 2\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "unbroken.cli",
            "sim",
            "session",
            "--seconds",
            "3",
            "--data",
            str(data),
            "--badge",
            "012345",
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert (data / "device.pub").exists()
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "unbroken.cli",
            "verify",
            str(data),
            "--pubkey",
            str(data / "device.pub"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout
    assert "RESULT: OK" in verify.stdout and "012345" in verify.stdout


@pytest.mark.parametrize(
    "argv,message",
    [
        (["verify", "/nonexistent/evidence"], "no such directory"),
        (["verify", "{tmp}"], "public key file not found"),
        (["verify", "{tmp}", "--pubkey", "{tmp}/garbage.pub"], "not an Ed25519 public key"),
        (
            ["sim", "session", "--seconds", "1", "--data", "{tmp}/d", "--config", "{tmp}/bad.toml"],
            "unknown_key: Extra inputs are not permitted",
        ),
        (["agent", "run", "--data", "{tmp}/d"], "hardware.cameras.main: backend 'picamera'"),
        (["agent", "run", "--data", "{tmp}/d", "--offline"], "need --sim"),
    ],
)
def test_bad_input_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "garbage.pub").write_text("zz")
    (tmp_path / "bad.toml").write_text("unknown_key = 1\n")
    (tmp_path / "chain").mkdir()
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unbroken: error:") and message in err


def test_unwritable_data_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["sim", "session", "--seconds", "1", "--data", str(blocker / "d")]) == 2
    assert "is not writable" in capsys.readouterr().err
