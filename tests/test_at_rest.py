"""A lost or stolen recorder gives away nothing: what is on its card is encrypted to the
agency, which alone can decode it; the chain still verifies on the card without any key."""

from __future__ import annotations

import io
import itertools
import json
import shutil
from pathlib import Path

import av
import nacl.public
import pytest

from agent.at_rest import EvidenceKeyError
from agent.recorder import Recorder
from common.archive.device_directory import DeviceDirectory, load_chain
from common.archive.media import plain_media, probe_file
from common.archive.verify import verify_archive
from common.room_settings import Room
from common.settings import DeviceConfig, StorageLimits
from device.clock import SimClock
from evidence.encryption import (
    HEADER_SIZE,
    EncryptionError,
    Encryptor,
    decrypt,
    framing,
    key_id,
)
from evidence.seal import Entry
from simulator.device import SimDevice, sim_factory, stand_in_agency_key
from tests.fixtures.config import small_config

AGENCY = nacl.public.PrivateKey.generate()


def _decodes(data: bytes) -> bool:
    try:
        with av.open(io.BytesIO(data)) as c:
            return any(True for _ in c.decode(video=0))
    except (av.FFmpegError, ValueError):
        return False


def _segments(root: Path) -> list[Entry]:
    return [e for _, e in load_chain(root) if isinstance(e, Entry) and e.kind == "segment"]


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A body recorder's card, taken while it buffers: a session with its pre-event
    footage, then the spool's footage that no session took, one file mid-write."""
    top = tmp_path_factory.mktemp("card")
    dev = SimDevice(top / "dev", small_config(prebuffer_seconds=2))
    dev.start()
    dev.run(3)
    dev.recorder.open_session()
    dev.run(4)
    dev.recorder.close_session()
    dev.run(3.5)
    shutil.copytree(top / "dev", top / "card")  # the card, as pulled out of the running device
    shutil.copy(top / "dev.agency-evidence.key", top / "card.agency-evidence.key")
    dev.stop()
    return top / "card"


def test_no_media_file_on_the_card_decodes(card: Path) -> None:
    files = [p for p in card.rglob("*") if p.is_file() and p.suffix == ".mp4"]
    spooled = [p for p in files if p.parent.name == "spool"]
    assert len(files) >= 4 and spooled, "segments and spooled footage"
    for p in files:
        data = p.read_bytes()
        assert b"ftyp" not in data[:64] and b"moov" not in data, p.name
        assert not _decodes(data), f"{p.name} decodes off the card"


def test_the_agency_decrypts_and_plays_the_same_footage(card: Path) -> None:
    key = stand_in_agency_key(card)
    segments = _segments(card)
    for e in segments:
        enc = e.body["encryption"]
        assert enc["key"] == key_id(key.public_key)
        plain = plain_media(card / e.body["file"], key)
        assert _decodes(plain)
        facts = probe_file(card / e.body["file"], key)
        assert facts.decoded and facts.video_frames == e.body["media"]["video"]["frames"]
        assert facts.plain_sha256 == enc["plain_sha256"] and len(plain) == enc["plain_size"]
    report = verify_archive(DeviceDirectory(card), None, evidence_key=key)
    assert report.ok, report.problems[:3]
    assert not [n for n in report.notices if n.code == "not_decoded"]
    # The spooled footage too (the one being written decrypts up to its last fragment).
    for p in (card / "spool").glob("*.mp4"):
        if framing(p.read_bytes()).records > 1:
            assert _decodes(decrypt(p.read_bytes()[: framing(p.read_bytes()).end], key).plain)


def test_the_card_verifies_without_any_agency_key(card: Path) -> None:
    report = verify_archive(DeviceDirectory(card), None)
    assert report.ok, report.problems[:3]
    [notice] = [n for n in report.notices if n.code == "not_decoded"]
    assert f"{len(_segments(card))} segments are encrypted" in notice.message


def test_another_agencys_key_does_not_open_the_footage(card: Path) -> None:
    e = _segments(card)[0]
    with pytest.raises(EncryptionError, match="not to this key"):
        plain_media(card / e.body["file"], AGENCY)
    report = verify_archive(DeviceDirectory(card), None, evidence_key=AGENCY)
    assert {p.code for p in report.problems} == {"undecodable"}


def test_a_room_encrypts_every_track(tmp_path: Path) -> None:
    base = small_config(prebuffer_seconds=0, width=320, height=180)
    dev = SimDevice(tmp_path / "room", base.model_copy(update={"room": Room()}))
    dev.start()
    dev.recorder.open_session()
    dev.run(2)
    dev.recorder.close_session()
    dev.stop()
    segments = _segments(tmp_path / "room")
    assert {e.body["track"] for e in segments} == set(dev.config.tracks)
    for e in segments:
        assert not _decodes((tmp_path / "room" / e.body["file"]).read_bytes())
    assert verify_archive(DeviceDirectory(tmp_path / "room"), None).ok


def test_encryption_off_is_said_in_every_manifest_and_by_verify(tmp_path: Path) -> None:
    base = small_config(prebuffer_seconds=0)
    config = base.model_copy(update={"storage": StorageLimits(encrypt=False)})
    dev = SimDevice(tmp_path / "bench", config)
    dev.start()
    dev.recorder.open_session()
    dev.run(4)
    dev.recorder.close_session()
    dev.stop()
    assert not (tmp_path / "bench.agency-evidence.key").exists(), "no key made for nothing"
    segments = _segments(tmp_path / "bench")
    assert segments and all(e.body["encryption"] == {"scheme": "none"} for e in segments)
    report = verify_archive(DeviceDirectory(tmp_path / "bench"), None)
    assert report.ok
    [notice] = [n for n in report.notices if n.code == "in_the_clear"]
    assert "2 segments stored unencrypted" in notice.message


def test_a_device_without_the_agencys_key_does_not_record_in_the_clear(tmp_path: Path) -> None:
    config = DeviceConfig()
    hardware = sim_factory().build(config, tmp_path, SimClock())
    with pytest.raises(EvidenceKeyError, match=r"agent install.*encrypt = false"):
        Recorder(tmp_path / "dev", config, hardware, SimClock())


# -- the file format, without a recorder ------------------------------------------------


def _file(messages: list[bytes], final: bool = True) -> bytes:
    enc = Encryptor(AGENCY.public_key)
    out = enc.header
    for i, m in enumerate(messages):
        out += enc.record(m, i * 10, i * 15, final=final and i == len(messages) - 1)
    return out


def test_records_decrypt_in_order_and_the_framing_reads_without_the_key() -> None:
    data = _file([b"head", b"fragment one", b"fragment two"])
    f = framing(data)
    assert (f.records, f.video_frames, f.audio_frames, f.complete) == (3, 20, 30, True)
    assert f.key_id == key_id(AGENCY.public_key)
    d = decrypt(data, AGENCY)
    assert d.plain == b"headfragment onefragment two" and d.final


def test_a_power_cut_keeps_whole_records_and_says_the_file_was_not_closed() -> None:
    data = _file([b"head", b"fragment one", b"fragment two"], final=False)
    cut = data[:-7]
    f = framing(cut)
    assert f.records == 2 and not f.complete
    d = decrypt(cut[: f.end], AGENCY)
    assert d.plain == b"headfragment one" and not d.final


@pytest.mark.parametrize("where", ["counts", "cipher", "order", "drop"])
def test_any_change_to_the_records_fails_to_decrypt(where: str) -> None:
    data = bytearray(_file([b"head", b"fragment one", b"fragment two"]))
    records = []
    pos = HEADER_SIZE
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        records.append(bytes(data[pos : pos + 12 + size]))
        pos += 12 + size
    head = bytes(data[:HEADER_SIZE])
    if where == "counts":  # the clear frame counts are authenticated
        r = bytearray(records[1])
        r[7] ^= 1
        records[1] = bytes(r)
    elif where == "cipher":
        r = bytearray(records[1])
        r[-1] ^= 1
        records[1] = bytes(r)
    elif where == "order":
        records[0], records[1] = records[1], records[0]
    else:
        del records[1]
    changed = head + b"".join(records)
    with pytest.raises(EncryptionError, match=r"does not decrypt|go backwards"):
        decrypt(changed, AGENCY)


def test_the_file_key_is_gone_once_the_file_is_final() -> None:
    enc = Encryptor(AGENCY.public_key)
    enc.record(b"x", 0, 0, final=True)
    with pytest.raises(EncryptionError, match="already finished"):
        enc.record(b"y", 1, 1)
    assert not [k for k in vars(enc) if "key" in k and vars(enc)[k] is not None]


def test_every_file_has_its_own_key() -> None:
    headers = {Encryptor(AGENCY.public_key).header for _ in range(3)}
    assert len(headers) == 3
    sealed = [h[16:96] for h in headers]
    assert all(a != b for a, b in itertools.combinations(sealed, 2))


def test_verify_decodes_with_the_key_given_on_the_command_line(
    card: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from unbroken.cli import main

    key_file = card.parent / "card.agency-evidence.key"
    assert main(["verify", str(card), "--json"]) == 0
    without = json.loads(capsys.readouterr().out)
    assert [n["code"] for n in without["notices"]] == ["not_decoded"]
    assert main(["verify", str(card), "--json", "--evidence-key", str(key_file)]) == 0
    assert json.loads(capsys.readouterr().out)["notices"] == []
    assert main(["verify", str(card), "--evidence-key", str(card / "nope")]) == 2
    assert "evidence key file not found" in capsys.readouterr().err
