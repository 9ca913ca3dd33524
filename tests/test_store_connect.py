"""A store that cannot reach its broker says why, at once: a CA that does not match the
broker, a client certificate the broker does not accept, nothing listening; a second worker
under a name already running is refused, and one whose session is taken over stops. Against
a real Mosquitto with TLS and the agency's ACL."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from common.bundle import Broker
from common.files import ConfigError
from common.mqtt import tls_client
from provisioning.agency import init_agency
from simulator.mosquitto import free_port
from simulator.site import LocalSite
from store.config import StoreConfig, load_store_config
from store.worker import Worker, start_worker
from tests.fixtures.waiting import messages, until

pytestmark = pytest.mark.slow  # a real Mosquitto


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSite]:
    site = LocalSite(tmp_path_factory.mktemp("site"))
    site.store_config("1")
    site.start_broker()
    yield site
    site.close()


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another agency's store certificate, CA and key: valid TLS files the broker never issued."""
    root = tmp_path_factory.mktemp("stranger")
    agency = init_agency(root / "agency", "Other", Broker(host="127.0.0.1", port=1), time.time())
    agency.enroll_store("9", root / "store", time.time())
    return root / "store"


def problem_of(config: StoreConfig) -> str | None:
    worker: Worker = start_worker(config)
    try:
        return worker.problem
    finally:
        worker.stop()


def with_broker(config: StoreConfig, **changes: object) -> StoreConfig:
    return config.model_copy(update={"broker": config.broker.model_copy(update=changes)})


def test_a_reachable_broker_leaves_no_problem(site: LocalSite) -> None:
    assert problem_of(load_store_config(site.store_config("1"))) is None


def test_nothing_listening_is_named(site: LocalSite) -> None:
    config = with_broker(load_store_config(site.store_config("1")), port=free_port())
    problem = problem_of(config)
    assert problem is not None and "refused the connection" in problem
    assert f":{config.broker.port}" in problem


def test_a_ca_that_does_not_match_the_broker_is_named(site: LocalSite, stranger: Path) -> None:
    config = with_broker(load_store_config(site.store_config("1")), ca=stranger / "ca.pem")
    problem = problem_of(config)
    assert problem is not None and "certificate the configured CA does not trust" in problem


def test_a_certificate_the_broker_did_not_issue_is_named(site: LocalSite, stranger: Path) -> None:
    config = with_broker(
        load_store_config(site.store_config("1")),
        cert=stranger / "store.pem",
        key=stranger / "store.key",
    )
    problem = problem_of(config)
    assert problem is not None and "certificate" in problem, problem


def test_store_run_prints_the_reason(site: LocalSite, stranger: Path, tmp_path: Path) -> None:
    config = load_store_config(site.store_config("1"))
    doc = config.model_dump(mode="json")
    doc["broker"]["ca"] = str(stranger / "ca.pem")
    path = tmp_path / "store.toml"
    path.write_text(tomli_w.dumps(doc))
    proc = subprocess.Popen(
        [sys.executable, "-m", "unbroken.cli", "store", "run", "--config", str(path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(10)
    assert "does not trust" in line and "retrying" in line, line


def test_a_missing_tls_file_is_a_clear_error(site: LocalSite, tmp_path: Path) -> None:
    config = load_store_config(site.store_config("1"))
    doc = config.model_dump(mode="json")
    doc["broker"]["cert"] = str(tmp_path / "nope.pem")
    path = tmp_path / "store.toml"
    path.write_text(tomli_w.dumps(doc))
    done = subprocess.run(
        [sys.executable, "-m", "unbroken.cli", "store", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "nope.pem: no such TLS file" in done.stderr and "Traceback" not in done.stderr


# -- two store workers under one name --------------------------------------------------------


def test_a_second_worker_of_the_same_name_is_refused_at_start(
    site: LocalSite, tmp_path: Path
) -> None:
    path = site.store_config("1")
    config = load_store_config(path)
    first = start_worker(config)
    try:
        assert first.ready.wait(20)
        with pytest.raises(ConfigError) as refused:
            start_worker(config)
        assert "a store worker named store-1 is already running in group" in str(refused.value)
        assert "give this one another name in store.toml" in str(refused.value)
        done = subprocess.run(
            [sys.executable, "-m", "unbroken.cli", "store", "run", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "already running" in done.stderr and "Traceback" not in done.stderr
        assert first.ready.is_set() and not first.halted.is_set()  # never knocked off
    finally:
        first.stop()
        first.ingest.db.close()


def test_a_worker_whose_session_is_taken_over_says_so_and_stops(
    site: LocalSite, caplog: pytest.LogCaptureFixture
) -> None:
    """Another client under the worker's name (a second worker, on another machine, say):
    they knock each other off; the worker says why, once, and stops reconnecting."""
    caplog.set_level(logging.INFO, logger="store.worker")
    config = load_store_config(site.store_config("1"))
    worker = start_worker(config)
    b = config.broker
    intruder = tls_client(config.name, b.ca, b.cert, b.key)
    intruder.reconnect_delay_set(1, 1)
    intruder.connect_async(b.host, b.port)
    # its own thread, by its own name: paho's are named after the client id, the same
    duel = threading.Thread(
        target=intruder.loop_forever, kwargs={"retry_first_connection": True}, name="intruder"
    )
    try:
        assert worker.ready.wait(20)
        duel.start()
        assert worker.halted.wait(60)
        assert worker.problem and f"is a second store worker named {config.name}" in worker.problem
        paho = f"paho-mqtt-client-{config.name}"
        until(lambda: all(t.name != paho for t in threading.enumerate()), "the worker to stop")
        until(intruder.is_connected, "the other client to keep the name")
    finally:
        intruder.disconnect()
        duel.join(10)
        worker.stop()
        worker.ingest.db.close()
    lines = messages(caplog, "store.worker")
    assert len([m for m in lines if "takes this worker's session over" in m]) == 1, lines
    assert not any("session taken over" in m for m in lines), lines  # the worker's own words
