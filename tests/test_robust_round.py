"""The robust secure mode, sans-IO (protocol/rounds/local.py drives the real round objects
and crypto): groups from the beacon, every bound enforced, robust combination."""

from __future__ import annotations

import hashlib

import msgspec
import numpy as np
import pytest

from peer.fedavg_attacks import Lie, LyingSecure
from protocol.crypto import secagg
from protocol.learning.aggregators import combine
from protocol.learning.workloads import Workload
from protocol.rounds import MODES, robust, secure
from protocol.rounds.base import Leave, PeerContext, Settings
from protocol.rounds.local import LocalPeer, run_round
from protocol.wire.identity import Identity
from protocol.wire.messages import PlainVector, decode, encode

D = 6


class Vec(Workload):
    """A vector mean with inputs L2-clipped to 1 (fedavg's shape, without torch)."""

    name = "vec-test"
    contribution_schema = PlainVector
    clip = 1.0

    def vector_len(self) -> int:
        return D

    def bound(self, v: np.ndarray) -> np.ndarray:
        n = float(np.linalg.norm(v))
        return v if n <= 1.0 else v / n

    def sensitivity(self) -> float:
        return 2.0

    def l2_bound(self) -> float:
        return 1.0

    def finalize(self, total: np.ndarray, n: int) -> dict:
        return {"count": n, "mean": (total / n).tolist()}

    def vector(self, announce, data, blobs) -> np.ndarray:
        return np.asarray(data, dtype=np.float64)


def ident(i: int) -> Identity:
    return Identity(hashlib.sha256(f"robust-test/{i}".encode()).digest())


def inputs(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [Vec().bound(0.5 + 0.1 * rng.normal(size=D)) for _ in range(n)]


def liar(lie: Lie):
    def factory(mode, ctx: PeerContext):
        def lying(*args):
            return LyingSecure(*args, lie=lie)

        if mode.name == "robust":
            return robust.RobustPeerRound(ctx.peer_id, ctx.workload, ctx.announce,
                                          np.zeros(D), ctx.sign, inner=lying)
        return lying(ctx.peer_id, ctx.workload, ctx.announce, np.zeros(D), ctx.sign)
    return factory


def peers(xs, liars=None):
    out = [LocalPeer(ident(i), Vec(), x) for i, x in enumerate(xs)]
    for i, f in (liars or {}).items():
        out[i].factory = f
    return out


def test_groups_are_dealt_by_the_beacon():
    ids = [ident(i).peer_id for i in range(11)]
    beacon = robust.group_beacon(b"\x01" * 32, 5)
    groups = robust.assign_groups(beacon, ids, 3)
    assert sorted(len(g) for g in groups) == [3, 4, 4]  # floor(11 / 3) groups of k or k + 1
    assert sorted(m for g in groups for m in g) == sorted(ids)
    assert groups == robust.assign_groups(beacon, list(reversed(ids)), 3)  # order-free
    assert groups != robust.assign_groups(robust.group_beacon(b"\x01" * 32, 6), ids, 3)
    assert robust.assign_groups(beacon, ids[:2], 3) == []
    assert robust.group_size_for(0.2) == 2 and robust.group_size_for(0.1) == 5


def test_an_honest_round_publishes_the_robust_combination_of_the_group_means():
    xs = inputs(10)
    res = run_round(MODES["robust"], Vec(), 1, peers(xs))
    assert res.outcome.status == "published", res.outcome.result
    sa = res.outcome.result["secure_aggregation"]
    assert sa["group_size"] == 2 and sa["groups"] == sa["groups_passed"] == 5
    by_id = {ident(i).peer_id: x for i, x in enumerate(xs)}
    params = msgspec.msgpack.decode(res.announce.params, type=robust.RobustParams)
    means = np.stack([np.mean([by_id[p] for p in g.participants], axis=0)
                      for g in params.groups])
    expected = combine(sa["aggregator"], means, f=sa["f"])
    assert np.allclose(res.outcome.result["mean"], expected, atol=1e-4)
    assert res.outcome.accepted == 10 and not res.refused and not res.left


@pytest.mark.parametrize("lie", [
    Lie(ring=2**30),  # raw ring elements: decode to 16384 per coordinate
    Lie(np.full(D, 1.0)),  # every coordinate at the encoding's clip: L2 sqrt(6) > 1
    Lie(100 * np.ones(D) / np.sqrt(D)),  # unclipped, L2 100
    Lie(ring=2**31),  # what a NaN becomes
], ids=["ring", "maxcoord", "unclipped", "nonfinite"])
def test_an_out_of_bound_input_is_refused_with_its_group_or_cannot_move_the_model(lie):
    xs = inputs(10)
    honest_mean = np.mean(xs[1:], axis=0)
    res = run_round(MODES["robust"], Vec(), 1, peers(xs, {0: liar(lie)}))
    assert res.outcome.status == "published"
    sa = res.outcome.result["secure_aggregation"]
    liars_group = [g for g in sa["by_group"] if g["status"] != "ok"]
    assert len(liars_group) == 1 and liars_group[0]["status"] == "over_bound"
    assert ident(0).peer_id not in sa["included"] and len(sa["included"]) == 8
    moved = np.linalg.norm(np.asarray(res.outcome.result["mean"]) - honest_mean)
    assert moved < 0.2  # the honest inputs' spread (0.1 per coordinate)
    # the same lie under the plain secure sum moves the mean further (the ring ones: by
    # thousands)
    plain = run_round(MODES["secagg"], Vec(), 1, peers(xs, {0: liar(lie)}))
    assert plain.outcome.status == "published"
    assert np.linalg.norm(np.asarray(plain.outcome.result["mean"]) - honest_mean) > 2 * moved


def test_a_liar_in_bound_is_outvoted_by_the_robust_aggregator():
    xs = inputs(12)
    flip = Lie(-np.ones(D) / np.sqrt(D))  # at the L2 bound, against the others
    lying = {0: liar(flip), 1: liar(flip)}
    robust_mean = run_round(MODES["robust"], Vec(), 1, peers(xs, lying)).outcome.result["mean"]
    plain_mean = run_round(MODES["secagg"], Vec(), 1, peers(xs, lying)).outcome.result["mean"]
    honest = np.mean(xs[2:], axis=0)
    assert np.linalg.norm(robust_mean - honest) < 0.5 * np.linalg.norm(plain_mean - honest)


def test_peers_leave_a_round_whose_groups_break_the_rule():
    xs = inputs(6)
    ws = Vec()
    ids = sorted(ident(i).peer_id for i in range(6))
    good = robust.make_robust_params(ws, 3, ids, b"\x02" * 32, group_size=2)

    def announce(params):
        return msgspec.structs.replace(
            run_round(MODES["robust"], ws, 3, peers(xs), prev_digest=b"\x02" * 32).announce,
            params=encode(params))

    regrouped = msgspec.structs.replace(good, groups=[
        msgspec.structs.replace(good.groups[0], participants=sorted(
            [good.groups[0].participants[0], good.groups[1].participants[0]])),
        msgspec.structs.replace(good.groups[1], participants=sorted(
            [good.groups[0].participants[1], good.groups[1].participants[1]])),
        good.groups[2]])
    weak = msgspec.structs.replace(good, groups=[
        msgspec.structs.replace(g, agreement=1) for g in good.groups])
    for bad, why in ((regrouped, "not the ones the beacon deals"), (weak, "fewer than k")):
        with pytest.raises(Leave, match=why):
            robust.RobustPeerRound(ids[0], ws, announce(bad), xs[0], ident(0).sign)


def test_no_group_sum_of_fewer_than_k_inputs_is_unmasked():
    """A member that vanishes after sending its masked input leaves its partner alone in a
    group of k = 2: an honest coordinator cannot go on with that group; the others
    publish."""
    xs = inputs(8)

    class Vanish(secure.SecurePeerRound):
        def _step(self, phase, body, personal):
            if phase == secure.CONSISTENCY:
                raise Leave("gone")
            return super()._step(phase, body, personal)

    def vanishing(mode, ctx):
        return robust.RobustPeerRound(ctx.peer_id, ctx.workload, ctx.announce,
                                      np.asarray(ctx.data), ctx.sign, inner=Vanish)

    res = run_round(MODES["robust"], Vec(), 1, peers(xs, {0: vanishing}),
                    settings=Settings(min_peers=2))
    assert res.outcome.status == "published"
    sa = res.outcome.result["secure_aggregation"]
    out = [g for g in sa["by_group"] if g["status"] != "ok"]
    assert len(out) == 1 and "needs 2" in out[0]["reason"]
    assert len(sa["included"]) == 6 and ident(0).peer_id not in sa["included"]


def test_a_dishonest_coordinator_gets_no_sum_of_fewer_than_k_inputs():
    """A coordinator that shows a group of two a survivor list of one (to unmask a
    single input) gets no signature and so no unmask share: each member refuses."""

    class Shrinking(robust.RobustRound):
        def _close_phase(self):
            closing = self.phase
            notice = super()._close_phase()
            if closing == secure.MASKED:
                bodies = decode(notice.body, robust.GroupBodies).bodies
                bits = decode(bodies[0], secagg.SurvivorBits).bits  # keep the first only
                first = next(i for i in range(8 * len(bits)) if bits[i // 8] & 0x80 >> i % 8)
                shown = bytearray(len(bits))
                shown[first // 8] = 0x80 >> first % 8
                bodies[0] = encode(secagg.SurvivorBits(bits=bytes(shown)))
                notice.body = encode(robust.GroupBodies(bodies))
            return notice

    class Dishonest(robust.RobustMode):
        def open(self, setup):
            opening = super().open(setup)
            opening.round.__class__ = Shrinking
            return opening

    res = run_round(Dishonest(), Vec(), 1, peers(inputs(8)), settings=Settings(min_peers=2))
    group0 = res.outcome.result["secure_aggregation"]["by_group"][0]
    assert group0["status"] == "out", group0
    assert sorted(res.left.values()) == [
        "1 survivors; unmasking needs 2 to have signed the list",
        "survivor set names strangers or leaves this client out"]
    assert res.outcome.status == "published" and res.outcome.accepted == 6


def test_dp_noise_is_split_over_k_and_passes_the_bound_check():
    """With DP on, each group sum carries the full sigma (each of >= k peers adds
    sigma / sqrt(k)), and the bound check leaves room for it: no honest group fails."""
    xs = inputs(12)
    res = run_round(MODES["robust"], Vec(), 1, peers(xs),
                    settings=Settings(min_peers=2, dp_epsilon=2.0))
    assert res.outcome.status == "published", res.outcome.result
    sa = res.outcome.result["secure_aggregation"]
    assert sa["groups_passed"] == sa["groups"] == 6
    params = msgspec.msgpack.decode(res.announce.params, type=robust.RobustParams)
    assert all(g.dp_split == 2 and g.dp_sigma > 0 for g in params.groups)
    assert res.outcome.result["dp"]["epsilon"] <= 2.0 + 1e-9


def test_each_group_left_out_over_its_bound_counts_as_a_liar_found():
    """With tolerance 0.2 of 20 peers the aggregator is told f = 4; a group left out over
    its bound held one of those four, so the nine that passed are combined with f = 3."""
    res = run_round(MODES["robust"], Vec(), 1, peers(inputs(20), {0: liar(Lie(ring=2**30))}))
    sa = res.outcome.result["secure_aggregation"]
    assert sa["groups_passed"] == 9 and sa["f"] == 3
    assert robust.bad_groups_tolerated(0.2, 20, 10) == 4
