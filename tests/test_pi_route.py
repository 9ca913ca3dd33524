"""The Raspberry Pi route as a board's users meet it: the service user owns the data, the
admin logs in as someone else. A command refused for a permission names the user, the file,
the directory that stopped it and what to run instead; a request goes to standard output and
a bundle comes from standard input, so the service user needs none of the admin's files;
`agent status` works for a member of the agent's group. And the board's model is what it
says it is, never the simulator's unless simulated.

The commands run as the real user ``nobody`` (the tests run as root, who may read anything)."""

from __future__ import annotations

import grp
import json
import os
import platform
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.board import SIMULATED, board_model, clean_model
from unbroken.cli import main

ROOT = Path(__file__).resolve().parent.parent

# The interpreter may live where only root can enter (a per-user Python under /root): what
# the command needs is loaded first, as root, and only then does the process become the user.
AS_USER = """
import os, pwd, sys
import encodings.ascii, encodings.idna
import common.bundle, common.pki, common.requests, unbroken.cli
unbroken.cli.build_parser([])  # its version, from the package's metadata
user = pwd.getpwnam(sys.argv[1])
os.setgroups([])
os.setgid(user.pw_gid)
os.setuid(user.pw_uid)
sys.argv = ["unbroken", *sys.argv[2:]]
sys.exit(unbroken.cli.main(sys.argv[1:]))
"""

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("id"), reason="needs root, to become another user"
)


def as_user(
    user: str, *argv: str, cwd: Path | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", AS_USER, user, *argv],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture
def board() -> Iterator[Path]:
    """A directory every user may enter (pytest's own tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="unbroken-board-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _nobody() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


@needs_root
def test_a_request_written_where_the_user_cannot_names_user_and_directory(board: Path) -> None:
    home, data = board / "home", board / "data"
    home.mkdir(mode=0o700)  # the admin's home: closed to the service user
    data.mkdir()
    os.chown(data, _nobody().pw_uid, _nobody().pw_gid)
    done = as_user(
        "nobody",
        "agent",
        "keygen",
        "--data",
        str(data),
        "--out",
        "request.json",
        "--serial",
        "S1",
        cwd=home,
    )
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert (
        f"cannot write request.json in {home}: permission denied for user nobody "
        f"({home} is root:root, mode 0700); write it where user nobody can (e.g. under {data}), "
        "or to standard output with --out -"
    ) in err
    assert "Traceback" not in err and not any(data.iterdir())  # refused before any key
    # As the message says: the request on standard output, wherever the command runs.
    done = as_user(
        "nobody", "agent", "keygen", "--data", str(data), "--out", "-", "--serial", "S1", cwd=home
    )
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["payload"]["type"] == "enrolment_request"
    assert "enrolment request on standard output" in done.stderr.decode()


@needs_root
def test_a_bundle_the_user_cannot_read_and_the_same_on_standard_input(board: Path) -> None:
    home, data = board / "home", board / "data"
    home.mkdir(mode=0o700)
    data.mkdir()
    os.chown(data, _nobody().pw_uid, _nobody().pw_gid)
    assert (
        as_user(
            "nobody", "agent", "keygen", "--data", str(data), "--out", "-", "--serial", "S1"
        ).returncode
        == 0
    )
    bundle = home / "bundle.json"
    bundle.write_text('{"payload": {}, "signature": "00"}')
    done = as_user("nobody", "agent", "install", str(bundle), "--data", str(data))
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert f"cannot open {bundle}: permission denied for user nobody ({home} is root:root" in err
    assert f"unbroken agent install - --data {data} < {bundle}" in err
    # On standard input it is read, and judged as a bundle (this one is not a valid one).
    done = as_user(
        "nobody", "agent", "install", "-", "--data", str(data), stdin=bundle.read_bytes()
    )
    err = done.stderr.decode()
    assert done.returncode == 2 and "bundle" in err and "permission" not in err, err


@needs_root
def test_status_for_the_agents_group_and_a_clear_word_for_others(board: Path) -> None:
    data = board / "data"
    assert main(["agent", "keygen", "--data", str(data), "--out", str(board / "r.json"),
                 "--serial", "S1", "--sim"]) == 0  # fmt: skip
    # The agent's user (root here) owns the data; its group (nobody's) may read it.
    os.chown(data, 0, _nobody().pw_gid)
    data.chmod(0o750)
    done = as_user("nobody", "agent", "status", "--data", str(data))
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "device   bwc-" in out and "(body_recorder, unbroken-sim)" in out
    assert f"keys     not readable here ({data / 'private'} is the agent user's only)" in out
    assert "agent    not running" in out
    # Not in the group: what to run instead, and how to join it.
    os.chown(data, 0, 0)
    done = as_user("nobody", "agent", "status", "--data", str(data))
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert f"permission denied for user nobody ({data} is root:{_group(0)}, mode 0750)" in err
    assert f"run it as the agent's user: sudo -u root -- unbroken agent status --data {data}" in err
    assert f"join group {_group(0)}: sudo usermod -a -G {_group(0)} nobody (then log in" in err
    # Closed to the group too: joining it would not help, so it is not offered.
    data.chmod(0o700)
    done = as_user("nobody", "agent", "status", "--data", str(data))
    err = done.stderr.decode()
    assert done.returncode == 2 and "sudo -u root -- unbroken agent status" in err, err
    assert "join group" not in err


def _group(gid: int) -> str:
    return grp.getgrgid(gid).gr_name


def test_the_board_model_from_the_device_tree_else_dmi(tmp_path: Path) -> None:
    tree, dmi = tmp_path / "model", tmp_path / "product_name"
    tree.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    dmi.write_bytes(b"To Be Filled By O.E.M.\n")
    files = (str(tree), str(dmi))
    assert board_model(files=files) == "Raspberry Pi 4 Model B Rev 1.4"
    tree.unlink()  # a PC: DMI, unless the firmware left a placeholder there
    assert board_model(files=files) == f"unknown {platform.machine()}"
    dmi.write_bytes(b"ThinkCentre M720q\n")
    assert board_model(files=files) == "ThinkCentre M720q"
    assert board_model(simulated=True, files=files) == SIMULATED
    assert clean_model(b"  Odd\tboard \xff name\n") == "Odd board ? name"
    assert clean_model(b"x" * 100) == "x" * 64


def test_keygen_enrols_the_board_not_the_simulator(tmp_path: Path) -> None:
    def keygen(data: Path, *extra: str) -> dict[str, str]:
        argv = ["agent", "keygen", "--data", str(data), "--out", str(tmp_path / "r.json")]
        assert main([*argv, "--serial", "S1", *extra]) == 0
        return json.loads((data / "identity.json").read_text())

    assert keygen(tmp_path / "real")["model"] == board_model()
    assert board_model() != SIMULATED
    assert keygen(tmp_path / "sim", "--sim")["model"] == SIMULATED
    assert keygen(tmp_path / "sim")["model"] == SIMULATED  # kept: no detection over it
    assert (
        keygen(tmp_path / "named", "--model", "CM4 on carrier v2")["model"] == "CM4 on carrier v2"
    )
