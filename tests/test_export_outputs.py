"""An export writes only its own new files: a link left in the output directory (dangling
or not) is never written through, and a key file that is a device or huge is refused
without being read whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.archive.device_directory import load_chain
from evidence.seal import Entry
from simulator.session import record_session
from tests.fixtures.config import small_config
from unbroken.cli import main


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("recorded") / "dev"
    cfg = small_config()
    cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"encrypt": False})})
    record_session(root, cfg, 2)
    return root


def _session(root: Path) -> str:
    (sid,) = {e.session for _, e in load_chain(root) if isinstance(e, Entry) and e.session}
    return str(sid)


def test_a_link_in_the_output_directory_is_never_written_through(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sid, out = _session(recorded), tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    dangling = tmp_path / "created-through-a-link"
    (out / f"{sid}-custody.json").symlink_to(dangling)
    (out / f"{sid}-custody.txt").symlink_to(victim)
    (out / f".{sid}-main.mp4.partial").symlink_to(victim)  # where partial files once went
    assert main(["export", str(recorded), "--out", str(out)]) == 2
    assert "not overwritten" in capsys.readouterr().err  # a dangling link is there too
    assert main(["export", str(recorded), "--out", str(out), "--force"]) == 0
    assert victim.read_text() == "keep me" and not dangling.exists()
    for name in (f"{sid}-custody.json", f"{sid}-custody.txt", f"{sid}-main.mp4"):
        assert (out / name).is_file() and not (out / name).is_symlink()
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".unbroken-export-")]
    assert leftovers == []


@pytest.mark.parametrize("key", ["/dev/zero", "huge"])
def test_a_key_file_that_is_no_key_is_refused_unread(
    recorded: Path, tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(key)
    if key == "huge":
        path = tmp_path / "huge.key"
        with open(path, "wb") as f:
            f.truncate(3 * 2**30)  # sparse: 3 GiB that are never read
    args = ["--evidence-key", str(path), "--out", str(tmp_path / "o")]
    assert main(["export", str(recorded), *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not an X25519 private key" in err
    assert main(["verify", str(recorded), "--evidence-key", str(path)]) == 2
    assert "not an X25519 private key" in capsys.readouterr().err
