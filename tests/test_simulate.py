"""The simulator drives the real round state machines: small rounds publish the true
sums, a dropout fraction is survived, and its accounting adds up.

(``scripts/bench/simulate.py`` runs the same for 1,000 and 10,000 peers.)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def simulate():
    sys.path.insert(0, str(ROOT / "scripts/bench"))
    spec = importlib.util.spec_from_file_location("simulate", ROOT / "scripts/bench/simulate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["simulate"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("mode", ["secagg", "vss"])
def test_simulated_rounds_publish_and_survive_dropout(simulate, mode):
    args = simulate.parse_args(["--vector", "50"])
    whole = simulate.simulate(30, mode, 0.0, args)
    assert (whole.status, whole.accepted) == ("published", 30)
    assert whole.coord_cpu_s > 0 and whole.round_s > 2 * args.latency  # real work, real hops
    # every byte a peer sent the coordinator received, and the other way round
    assert whole.coord_received == pytest.approx(whole.peer_sent_mean * 30)
    assert whole.coord_sent == pytest.approx(whole.peer_received_mean * 30)
    lossy = simulate.simulate(30, mode, 0.3, args)
    assert lossy.status == "published"
    assert 30 - 9 <= lossy.accepted < 30  # 9 vanished, some after their input counted
    assert lossy.round_s < args.phase_timeout  # seen gone, not waited for


def test_simulated_replicated_rounds_decide_every_segment(simulate):
    args = simulate.parse_args([])
    whole = simulate.simulate(30, "replicated", 0.0, args)  # 10 segments, 3 replicas
    assert (whole.status, whole.accepted) == ("published", 10)
    assert whole.note == "segments decided by quorum: 10"
    assert whole.coord_received >= 10 * 898_000  # it fetched every agreed segment's weights
    lossy = simulate.simulate(30, "replicated", 0.3, args)
    assert (lossy.status, lossy.accepted) == ("published", 10)  # short ones re-executed
    assert "re-execution" in lossy.note


def test_simulated_prompt_batches_accept_only_agreeing_evaluations(simulate):
    args = simulate.parse_args(["--generation-s", "0.5"])
    whole = simulate.simulate(40, "prompts", 0.0, args)
    assert (whole.status, whole.accepted, whole.error) == ("published", 40, None)
    assert whole.peer_cpu_mean_s >= 2 * 0.5  # two evaluations each, 0.5 s apiece
    assert whole.note.startswith("1 attempts")
    lossy = simulate.simulate(40, "prompts", 0.3, args)
    assert lossy.status == "published" and lossy.accepted >= 40 - 12
    # the lost evaluators' prompts went to live ones in a second attempt, after they failed
    assert not lossy.note.startswith("1 ") and lossy.round_s > whole.round_s
