"""Which store worker serves which device: the rules, without a broker."""

from __future__ import annotations

from store import pinning
from store.db import Database

DEVICES = [f"bwc-{i:04d}" for i in range(400)]


def test_each_device_has_exactly_one_worker_and_the_load_is_spread() -> None:
    workers = ["store-1", "store-2", "store-3"]
    served = {w: pinning.assignment(w, DEVICES, workers) for w in workers}
    assert set().union(*served.values()) == set(DEVICES)
    assert sum(len(s) for s in served.values()) == len(DEVICES)  # never two workers
    assert all(90 < len(s) < 180 for s in served.values()), {w: len(s) for w, s in served.items()}


def test_a_dead_workers_devices_go_to_the_others_and_only_those_move() -> None:
    before = {w: pinning.assignment(w, DEVICES, ["store-1", "store-2", "store-3"]) for w in
              ("store-1", "store-2", "store-3")}  # fmt: skip
    beats = {"store-1": 100.0, "store-2": 100.0, "store-3": 100.0 - pinning.DEAD - 1}
    live = pinning.alive(beats, now=100.0)
    assert live == ["store-1", "store-2"]
    after = {w: pinning.assignment(w, DEVICES, live) for w in live}
    assert set().union(*after.values()) == set(DEVICES)
    for w in live:  # the survivors keep theirs and share the dead one's
        assert before[w] <= after[w]
        assert after[w] - before[w] <= before["store-3"]
    # it comes back: it gets back exactly what it had
    assert pinning.assignment("store-3", DEVICES, live) == before["store-3"]


def test_no_live_worker_owns_nothing_and_a_lone_worker_serves_all() -> None:
    assert pinning.owner("bwc-1", []) is None
    assert pinning.assignment("store-1", DEVICES, []) == set(DEVICES)


def test_heartbeats_are_kept_per_group(db: Database) -> None:
    assert db.heartbeat("stores", "store-1", 10.0) == {"store-1": 10.0}
    assert db.heartbeat("stores", "store-2", 11.0) == {"store-1": 10.0, "store-2": 11.0}
    assert db.heartbeat("stores", "store-1", 12.0) == {"store-1": 12.0, "store-2": 11.0}
    assert db.heartbeat("other", "store-9", 12.0) == {"store-9": 12.0}


def test_a_name_beating_meanwhile_is_taken_and_one_standing_still_is_free() -> None:
    d = pinning.DEAD
    assert not pinning.maybe_running(None, now=100.0)
    assert not pinning.maybe_running(100.0 - d - 1, now=100.0)  # a worker long gone
    assert pinning.maybe_running(99.0, now=100.0)
    # it beat again while this one looked: another worker is running under the name
    taken = pinning.name_in_use("store-1", "stores", before=99.0, after=101.0, now=103.0)
    assert taken == (
        "a store worker named store-1 is already running in group stores (last seen 2 s ago): "
        "give this one another name in store.toml"
    )
    # the same beat both times: the worker that had the name just stopped (a restart)
    assert pinning.name_in_use("store-1", "stores", before=99.0, after=99.0, now=103.0) is None
    assert pinning.name_in_use("store-1", "stores", before=None, after=None, now=103.0) is None
