"""The broker never keeps a stale CRL in memory: every run of the renewal asks the broker
itself (with the CRL probe, a certificate revoked in each new CRL) and reloads it until it
holds the newest one, so one failed reload is made again, not left to lock the fleet out at
the old CRL's expiry. Against a real Mosquitto; the retry rule also without one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from common.bundle import Broker
from common.mqtt import probe, tls_client
from evidence.names import ProvisionError
from provisioning.agency import Agency, init_agency
from provisioning.agency_directory import PRIVATE
from provisioning.broker_config import write_broker_config
from provisioning.crl_probe import Verdict, broker_serves, reload_until_current
from simulator.mosquitto import Mosquitto, free_port
from unbroken.cli import main


def _fleet(tmp: Path) -> tuple[Agency, Path, int]:
    port = free_port()
    agency = init_agency(tmp / "agency", "Test", Broker(host="127.0.0.1", port=port), time.time())
    write_broker_config(agency, tmp / "broker", port, time.time())
    return agency, tmp / "broker", port


def _renew(agency: Agency, conf: Path, *extra: str) -> int:
    args = ["provision", "renew-crl", "--agency", str(agency.root), "--out", str(conf)]
    return main([*args, "--tries", "2", "--wait", "0.3", *extra])


def _serves(agency: Agency, port: int) -> bool:
    return broker_serves(agency.root, agency.root / PRIVATE, "127.0.0.1", port).current


@pytest.mark.slow  # a real Mosquitto
def test_a_failed_reload_is_made_again_on_the_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agency, conf, port = _fleet(tmp_path)
    with Mosquitto(conf / "mosquitto.conf", port) as broker:
        assert broker.proc is not None
        assert _serves(agency, port)
        assert _renew(agency, conf) == 0  # not due, and the broker holds it: nothing to do
        assert "holds CRL number" in capsys.readouterr().out
        # Due; the reload fails: the command says so, and the broker holds the old CRL.
        assert _renew(agency, conf, "--within-days", "400", "--reload", "false") == 2
        err = capsys.readouterr().err
        assert "reload command 'false' exited 1" in err
        assert not _serves(agency, port)
        # Not due any more: without --reload it only says so (exit 1) ...
        assert _renew(agency, conf) == 1
        assert "still holds an older CRL" in capsys.readouterr().out
        # ... and the next run with a working reload reloads it, and the broker confirms.
        assert _renew(agency, conf, "--reload", f"kill -HUP {broker.proc.pid}") == 0
        out = capsys.readouterr().out
        assert "not renewed" in out and "holds CRL number" in out and "reloaded" in out
        assert _serves(agency, port)


@pytest.mark.slow  # a real Mosquitto
def test_a_revocation_reaches_the_broker_with_the_next_run(tmp_path: Path) -> None:
    agency, conf, port = _fleet(tmp_path)
    agency.enroll_store("main", tmp_path / "store", time.time())
    store = tmp_path / "store"

    def store_connects() -> str | None:
        client = tls_client(
            "store-main", store / "ca.pem", store / "store.pem", store / "store.key"
        )
        try:
            return probe(client, "127.0.0.1", port, 15, 10)
        finally:
            client.disconnect()

    with Mosquitto(conf / "mosquitto.conf", port) as broker:
        assert broker.proc is not None
        assert store_connects() is None
        assert main(["provision", "revoke", "--agency", str(agency.root), "--device",
                     "store-main", "--reason", "host lost"]) == 0  # fmt: skip
        assert _renew(agency, conf, "--reload", f"kill -HUP {broker.proc.pid}") == 0
        assert (conf / "crl.pem").read_bytes() == (agency.root / "crl.pem").read_bytes()
        assert store_connects() is not None


@pytest.mark.slow  # a real Mosquitto
def test_a_broker_that_is_not_running_cannot_confirm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agency, conf, _ = _fleet(tmp_path)
    assert _renew(agency, conf, "--reload", "true") == 2
    assert "cannot ask whether the broker holds the new CRL" in capsys.readouterr().err


def test_reloads_until_the_broker_holds_it_and_retries_a_failed_reload() -> None:
    answers = iter([False, False, True])
    reloads: list[int] = []

    def ask() -> Verdict:
        return Verdict(next(answers), "asked")

    def reload() -> None:
        reloads.append(1)
        if len(reloads) == 1:
            raise ProvisionError("reload failed")

    verdict, n = reload_until_current(ask, reload, tries=5, wait=0, sleep=lambda s: None)
    assert verdict.current and n == 2 and len(reloads) == 2


def test_gives_up_after_its_tries_naming_the_last_failure() -> None:
    def reload() -> None:
        raise ProvisionError("reload failed")

    with pytest.raises(ProvisionError, match="reload failed"):
        reload_until_current(
            lambda: Verdict(False, "old"), reload, tries=3, wait=0, sleep=lambda s: None
        )
    verdict, n = reload_until_current(
        lambda: Verdict(False, "old"), lambda: None, tries=3, wait=0, sleep=lambda s: None
    )
    assert not verdict.current and n == 3


def test_the_store_report_says_when_the_broker_crl_runs_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from store.db import Database
    from store.report_text import crl_line

    agency, _, _ = _fleet(tmp_path)
    Database.connect(f"sqlite:///{tmp_path / 'store.db'}").close()
    cfg = tmp_path / "store.toml"
    cfg.write_text(
        f'database = "sqlite:///{tmp_path / "store.db"}"\nblobs = "blobs"\n'
        f'agency = "{agency.root}"\n[broker]\nca = "ca.pem"\ncert = "c.pem"\nkey = "k.pem"\n'
    )
    assert main(["store", "report", "--config", str(cfg)]) == 0
    assert "broker CRL valid until" in capsys.readouterr().out
    (agency.root / "crl.pem").write_text("junk")
    assert main(["store", "report", "--config", str(cfg)]) == 0
    assert "BROKER CRL UNREADABLE" in capsys.readouterr().out
    now = time.time()
    assert "EXPIRED" in crl_line({"valid_until": now - 60}, now)
    assert "RUNS OUT" in crl_line({"valid_until": now + 3 * 86400}, now)
    assert "valid until" in crl_line({"valid_until": now + 20 * 86400}, now)


def test_expired_is_the_crl_while_the_certificate_is_valid() -> None:
    from common.mqtt import Cause, expired_whose

    expired = Cause("tls_expired", "the broker at h:1 refused this client's certificate: ...")
    now = time.time()
    assert expired_whose(expired, now + 86400, now).kind == "tls_crl_expired"
    assert expired_whose(expired, now - 1, now) == expired  # its own has run out
    assert expired_whose(expired, None, now) == expired
    other = Cause("tls_revoked", "revoked")
    assert expired_whose(other, now + 86400, now) == other
