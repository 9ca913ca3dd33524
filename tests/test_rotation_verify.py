"""After ``agent rotate-key``, ``verify --pubkey`` with the first key follows the signed
rotation; pinning the later key says, in one problem, to pin the first; a wrong key's error
names the key the chain starts with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nacl.signing
import pytest

pytestmark = pytest.mark.slow  # agent processes recording in real time


def unbroken(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unbroken.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_verify_across_a_key_rotation(tmp_path: Path) -> None:
    agency, data = str(tmp_path / "agency"), str(tmp_path / "dev")
    steps = [
        ["provision", "init-agency", "--agency", agency],
        ["agent", "keygen", "--data", data, "--out", str(tmp_path / "r.json"), "--serial", "S1"],
        ["provision", "enroll", str(tmp_path / "r.json"), "--agency", agency,
         "--out", str(tmp_path / "b.json")],
        ["agent", "install", str(tmp_path / "b.json"), "--data", data],
    ]  # fmt: skip
    for step in steps:
        assert unbroken(*step).returncode == 0, step
    first = tmp_path / "first.pub"
    first.write_text((tmp_path / "dev" / "device.pub").read_text())
    record = ["agent", "run", "--sim", "--data", data, "--open", "--seconds", "2", "--no-sync"]
    assert unbroken(*record).returncode == 0
    rotation = str(tmp_path / "rot.json")
    assert unbroken("agent", "rotate-key", "--data", data, "--out", rotation).returncode == 0
    assert unbroken("provision", "rotate", rotation, "--agency", agency).returncode == 0
    assert unbroken(*record).returncode == 0
    ok = unbroken("verify", data, "--pubkey", str(first))
    assert ok.returncode == 0 and "RESULT: OK" in ok.stdout
    later = unbroken("verify", data, "--pubkey", str(tmp_path / "dev" / "device.pub"))
    assert later.returncode == 1
    assert later.stdout.count("PROBLEM") == 1 and "later_key" in later.stdout
    assert "pin the chain's first key" in later.stdout
    stranger = tmp_path / "stranger.pub"
    stranger.write_text(nacl.signing.SigningKey.generate().verify_key.encode().hex())
    wrong = unbroken("verify", data, "--pubkey", str(stranger))
    first_id = first.read_text().strip()
    assert (
        wrong.returncode == 1 and "wrong_key" in wrong.stdout and "entries name key" in wrong.stdout
    )
    assert first_id  # the named key is the chain's first: its id is in keys/
    named = wrong.stdout.split("entries name key ")[1].split()[0]
    assert (tmp_path / "dev" / "keys" / f"{named}.pub").exists()
    assert (tmp_path / "dev" / "keys" / f"{named}.pub").read_text().strip() == first_id
