"""Users' own workloads: ``--workload package.module:Class`` and installed entry points,
the example in ``examples/wine.py`` trained over real libp2p in clear and secure rounds,
and workloads that fail (raise, wrong length, NaN) failing their round, not a process."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import trio

from coordinator.service import Coordinator
from examples.wine import Wine
from peer.daemon import PeerDaemon
from protocol.learning.registry import ENTRY_POINTS, WorkloadNotFound, get_workload, resolve
from protocol.wire.identity import Identity

from .netutil import coordinator_config, wait_for


async def run_rounds(data_dir, workload, peers_workloads, *, rounds: int, secure: bool,
                     min_peers: int | None = None) -> Coordinator:
    """A coordinator running ``workload`` and a peer per entry of ``peers_workloads`` (its
    data: part i of n), until ``rounds`` rounds have closed."""
    n = len(peers_workloads)
    coord = Coordinator(coordinator_config(data_dir, min_peers=min_peers or n,
                                           start_peers=n, max_rounds=rounds, secure=secure,
                                           phase_timeout=10.0, round_timeout=20.0,
                                           workload=workload.name), workload=workload)
    async with trio.open_nursery() as nursery:
        await nursery.start(coord.run)
        boot = [coord.node.addrs[0]]
        for i, w in enumerate(peers_workloads):
            daemon = PeerDaemon(Identity.generate(), w, w.parse_data(f"part={i}/{n}"),
                                bootstrap=boot)
            await nursery.start(daemon.run)
        await wait_for(lambda: coord.rounds_run >= rounds, timeout=120)
        nursery.cancel_scope.cancel()
    return coord


def results(coord: Coordinator) -> list[dict]:
    return [{"status": r["status"], **json.loads(r["result"] or "{}")}
            for r in reversed(coord.store.rounds(100, 0))]


def test_a_workload_is_found_by_module_path_by_entry_point_or_not_at_all(tmp_path,
                                                                          monkeypatch):
    w = get_workload("examples.wine:Wine")
    assert isinstance(w, Wine) and w.name == "wine" and w.vector_len() == 42
    # an installed package declaring it (a real distribution on sys.path, its metadata read
    # by importlib.metadata as pip would have written it)
    dist = tmp_path / "winepkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: winepkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINTS}]\nwine = examples.wine:Wine\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve("wine") is Wine
    with pytest.raises(WorkloadNotFound, match="unknown workload 'nope'"):
        get_workload("nope")
    with pytest.raises(WorkloadNotFound, match="cannot import"):
        get_workload("no_such_module_here:Thing")
    with pytest.raises(WorkloadNotFound, match="has no Missing"):
        get_workload("examples.wine:Missing")
    with pytest.raises(WorkloadNotFound, match="not a Workload subclass"):
        get_workload("numpy:ndarray")


@pytest.mark.parametrize("secure", [False, True], ids=["clear", "secure"])
async def test_the_wine_example_learns_over_libp2p(data_dir, secure):
    coord = await run_rounds(data_dir, Wine(), [Wine() for _ in range(4)], rounds=4,
                             secure=secure)
    rows = results(coord)
    assert [r["status"] for r in rows] == ["published"] * 4
    assert all(r["count"] == 4 for r in rows)
    assert rows[-1]["accuracy"] >= 0.85, rows  # from 1/3 (all-zero weights)
    assert coord.mode.name == ("robust" if secure else "clear")  # models: robust by default


class NaNMetrics(Wine):
    """Its evaluation returns NaN from the second round on."""

    calls = 0

    def evaluate(self, params):
        NaNMetrics.calls += 1
        return {"accuracy": float("nan") if NaNMetrics.calls > 1 else 0.5}


class WrongLength(Wine):
    def train(self, params, data, **kw):
        return np.zeros(7, dtype=np.float32)


class Raises(Wine):
    def train(self, params, data, **kw):
        raise RuntimeError("this peer's training code is broken")


async def test_a_failing_workload_fails_its_round_never_the_process(data_dir):
    """The coordinator's evaluate returns NaN: those rounds are published failed with the
    reason, and its model does not move; two of five peers fail (one returns 7 values,
    one raises): each withdraws with the reason and the other three's rounds publish."""
    NaNMetrics.calls = 0
    peers = [Wine(), Wine(), Wine(), WrongLength(), Raises()]
    coord = await run_rounds(data_dir, NaNMetrics(), peers, rounds=3, secure=False,
                             min_peers=3)
    rows = results(coord)
    assert rows[0]["status"] == "published" and rows[0]["count"] == 3  # the 3 sound peers
    for r in rows[1:]:  # NaN accuracy: failed with the reason, the coordinator went on
        assert r["status"] == "failed"
        assert "non-finite" in r["error"] and "NaNMetrics.evaluate()" in r["error"], r
    assert math.isfinite(float(np.linalg.norm(coord.workload.weights)))
    withdrawn = coord.store.rejection_totals()  # withdrawals are not refusals
    assert not withdrawn.get("schema"), withdrawn  # nobody sent a bad vector: they withdrew
    assert rows[0].get("withdrawn") == 2, rows[0]
