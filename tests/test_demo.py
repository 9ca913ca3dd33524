"""``unbroken demo``: it deletes only what an earlier demo made, and a clean run leaves a
clean record (no clock going back, the sessions dated in the order they were recorded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.archive.device_directory import DeviceDirectory, read_public_key
from common.archive.verify import verify_archive
from evidence.layout import PUBKEY
from simulator.demo import DEVICE, MARKER, ROOM_DEVICE, WorkdirRefused, prepare_workdir
from unbroken.cli import main


def test_a_directory_the_demo_did_not_make_is_refused_and_kept(tmp_path: Path) -> None:
    mine = tmp_path / "notes.txt"
    mine.write_text("the only copy")
    with pytest.raises(WorkdirRefused, match="holds files the demo did not make"):
        prepare_workdir(tmp_path)
    assert mine.read_text() == "the only copy" and not (tmp_path / MARKER).exists()


def test_the_cli_refuses_with_exit_2_naming_the_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "evidence").mkdir()
    (tmp_path / "evidence" / "keep.mp4").write_bytes(b"\0" * 10)
    assert main(["demo", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--workdir {tmp_path}: holds files the demo did not make" in err
    assert "Give a new or empty directory, or one an earlier demo made" in err
    assert "Traceback" not in err
    assert (tmp_path / "evidence" / "keep.mp4").read_bytes() == b"\0" * 10


def test_a_file_is_not_a_workdir(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(WorkdirRefused, match="not a directory"):
        prepare_workdir(tmp_path / "f")


def test_new_empty_and_own_directories_are_prepared(tmp_path: Path) -> None:
    new = tmp_path / "a" / "b"
    prepare_workdir(new)
    assert [p.name for p in new.iterdir()] == [MARKER]
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_workdir(empty)
    assert (empty / MARKER).is_file()
    (new / "agency").mkdir()  # what the last run left
    (new / "agency" / "agency.toml").write_text("")
    prepare_workdir(new)
    assert [p.name for p in new.iterdir()] == [MARKER]


@pytest.mark.slow
def test_a_clean_demo_twice_in_its_own_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = tmp_path / "demo"
    assert main(["demo", "--workdir", str(workdir)]) == 0
    out = capsys.readouterr().out
    assert "Demo complete" in out and "clock_backwards" not in out

    (summary,) = (workdir / "case").glob("*-custody.json")
    assert "clock_backwards" not in summary.read_text(encoding="utf-8")
    assert json.loads(summary.read_text(encoding="utf-8"))  # a summary, not an empty file
    (text,) = (workdir / "case").glob("*-custody.txt")
    assert "clock_backwards" not in text.read_text(encoding="utf-8")

    reports = {}
    for device in (DEVICE, ROOM_DEVICE):
        data = workdir / "devices" / device
        reports[device] = report = verify_archive(
            DeviceDirectory(data), read_public_key(data / PUBKEY), strict=True
        )
        assert report.ok and not [n for n in report.notices if n.code == "clock_backwards"]
    (body,) = reports[DEVICE].sessions
    (room,) = reports[ROOM_DEVICE].sessions
    assert body.opened is not None and body.closed is not None and room.opened is not None
    assert body.opened < body.closed < room.opened  # the room's session was recorded after

    # A rerun of the same command on the directory it made starts afresh.
    old_session = body.id
    assert main(["demo", "--workdir", str(workdir)]) == 0
    assert "Demo complete" in capsys.readouterr().out
    (again,) = verify_archive(DeviceDirectory(workdir / "devices" / DEVICE), None).sessions
    assert again.id != old_session and (workdir / MARKER).is_file()


def test_a_workdir_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkdirRefused, match=r"file/demo: Not a directory"):
        prepare_workdir(tmp_path / "file" / "demo")
