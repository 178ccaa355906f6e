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
from protocol.learning.registry import ENTRY_POINTS, WorkloadNotFound, get_workload, resolve

from .netutil import model_network


async def run_rounds(data_dir, workload, peers_workloads, *, rounds: int, secure: bool,
                     min_peers: int | None = None, ids: list[str] | None = None
                     ) -> Coordinator:
    """:func:`model_network` until ``rounds`` rounds have closed, then stopped; the peers'
    ids go to ``ids``."""
    async with trio.open_nursery() as nursery:
        coord, peer_ids = await model_network(nursery, data_dir, workload, peers_workloads,
                                              secure=secure, rounds=rounds,
                                              min_peers=min_peers, max_rounds=rounds)
        nursery.cancel_scope.cancel()
    if ids is not None:
        ids += peer_ids
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


class Lies(Wine):
    """Reports weights one off from what it trained, on every task."""

    def train(self, params, data, **kw):
        return super().train(params, data, **kw) + 1.0


async def test_a_model_workload_runs_replicated_rounds_that_catch_a_liar(data_dir):
    """``replicas=2``: the public training set in 4 parts, each trained by 2 of the 4 peers
    and accepted on equal commit-revealed digests. The liar's parts are disputed and
    re-executed by the coordinator, so the model is exactly what honest training gives;
    the liar, the only one ever outvoted, loses reputation."""
    ids: list[str] = []
    coord = await run_rounds(data_dir, Wine(replicas=2, segments=4),
                             [Wine(), Wine(), Wine(), Lies()], rounds=3, secure=True, ids=ids)
    assert coord.mode.name == "replicated"
    rows = results(coord)
    assert [r["status"] for r in rows] == ["published"] * 3, rows
    assert all(r["count"] == 4 for r in rows), rows  # every part accepted, every round
    outvoted = {p for r in rows for s in r["segments"] for p in s["disagree"]}
    assert outvoted == {ids[3]}, rows
    assert any(s["decided_by"] == "re-execution" for r in rows for s in r["segments"])
    assert coord.reputation.score(ids[3]) < min(coord.reputation.score(p) for p in ids[:3])
    honest = Wine(replicas=2, segments=4)  # the same three rounds, trained here
    w, shared = honest.weights.copy(), honest.task_data()
    for number in range(1, len(rows) + 1):
        params = honest.make_params(number, b"", ids)
        parts = [honest.train_task(w, shared, params, number, k) for k in range(4)]
        w = (w + np.mean([p.astype(np.float64) - w for p in parts], axis=0)).astype(np.float32)
    assert np.array_equal(coord.workload.weights, w)
    assert rows[-1]["accuracy"] >= 0.85, rows


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
