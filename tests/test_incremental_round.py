"""The replicated round as a sans-IO state machine: decisions, disputes, reputation, r=1."""

from __future__ import annotations

import hashlib

import msgspec
import numpy as np
import pytest

from peer.attacks import SIGNFLIP_SCALE
from protocol.learning import incremental as inc
from protocol.learning import replicable as rp
from protocol.policy.replication import ReplicaRejected, Reputation
from protocol.rounds import replica
from protocol.rounds import replicated as rep
from protocol.rounds.base import Notice, Outcome, WrongPhase
from protocol.wire.messages import RoundAnnounce, SchemaError, encode

PEERS = [f"peer-{i}" for i in range(8)]


def setup(assignment=None, eligible=PEERS, **opts):
    w = inc.Incremental(**{"segments": 4, "replicas": 3, **opts})
    params = w.make_params(1, b"", eligible)
    if assignment is not None:
        params = msgspec.structs.replace(params, assignment=assignment)
    rnd = rep.ReplicatedRound(1, w, params, Reputation(), 5.0, deadline=100.0)
    ann = RoundAnnounce(round=1, workload="incremental", deadline_ms=0, min_peers=1,
                        workload_params=encode(params))
    return w, params, rnd, ann


def peer_rounds(w, ann, claims=None):
    blobs = {hashlib.sha256(w.state_blob()).digest(): w.state_blob()}
    params = msgspec.msgpack.decode(ann.workload_params, type=rp.TaskParams)
    claims = claims or {}
    return {p: replica.ReplicaPeerRound(p, w, ann, w.dataset, blobs,
                                        claim=claims.get(p, replica.honest))
            for p in params.eligible}


def drive(w, rnd, prs, *, skip=()) -> tuple[Outcome, dict[str, str]]:
    """Run the round to its outcome; returns it and the rejection reasons by peer."""
    refused: dict[str, str] = {}

    def offer(peer, out):
        for domain, payload in out:
            try:
                rnd.offer_message(peer, domain, payload)
            except (ReplicaRejected, WrongPhase, SchemaError) as exc:
                refused[peer] = exc.reason

    for p, pr in prs.items():
        if p not in skip:
            offer(p, pr.start())
    served = {hashlib.sha256(b).digest(): b for pr in prs.values() for b in pr.blobs()}
    while True:
        assert rnd.ready(0.0, set(prs) - set(skip)) or True
        step = rnd.advance(0.0)
        if isinstance(step, Outcome):
            return step, refused
        if isinstance(step, Notice):
            for p, pr in prs.items():
                if p not in skip:
                    offer(p, pr.on_notice(step.phase, step.body, None))
                    served.update({hashlib.sha256(b).digest(): b for b in pr.blobs()})
            continue
        for digest in step.fetch:
            if digest in served:
                rnd.deliver(digest, served[digest])
        if step.compute is not None:  # re-executes the contested segments
            step.compute()


def expected_weights(w, params) -> np.ndarray:
    start = w.weights.astype(np.float64)
    ws = [inc.train_segment(w.weights, w.dataset, params, 1, k) for k in range(params.segments)]
    return (start + np.mean([x - start for x in ws], axis=0)).astype(np.float32)


def test_honest_round_accepts_every_segment_by_quorum_and_lowers_the_loss():
    w, params, rnd, ann = setup(lr=1e-3)  # the seed's lr 0.1 first overshoots, then settles
    before = w.heldout_loss()
    want = expected_weights(w, params)
    out, refused = drive(w, rnd, peer_rounds(w, ann))
    assert out.status == "published" and out.accepted == 4 and not refused
    assert [s["decided_by"] for s in out.result["segments"]] == ["quorum"] * 4
    assert np.allclose(w.weights, want, atol=1e-6)
    assert out.result["loss"] < before
    assert all(s > 0.5 for s in out.result["reputation"].values())  # agreeing earns


def wrong(pr, segment, train):  # the colluders' shared wrong answer
    rng = np.random.default_rng(segment)
    return train() + rng.normal(0, 0.01, 224_601).astype(np.float32)


def test_two_colluders_on_one_segment_pass_the_seed_rule_but_not_ours():
    honest_rows = [["peer-0", "peer-6", "peer-7"], ["peer-1", "peer-2", "peer-3"],
                   ["peer-4", "peer-5", "peer-0"], ["peer-1", "peer-2", "peer-3"]]
    w, params, rnd, ann = setup(assignment=honest_rows)
    want = expected_weights(w, params)
    prs = peer_rounds(w, ann, claims={"peer-6": wrong, "peer-7": wrong})
    # the seed's rule: two equal values accept the segment -- the colluders' digest
    reveals = [prs[p].results[0][0] for p in honest_rows[0]]
    assert reveals[1] == reveals[2] != reveals[0]
    out, _ = drive(w, rnd, prs)
    seg0 = out.result["segments"][0]
    assert seg0["decided_by"] == "re-execution"
    assert seg0["agree"] == ["peer-0"] and seg0["disagree"] == ["peer-6", "peer-7"]
    assert np.allclose(w.weights, want, atol=1e-6)  # the truth, not the majority
    assert rnd.reputation.eligible(PEERS) == [p for p in PEERS if p not in ("peer-6", "peer-7")]


def test_a_copied_commitment_never_opens():
    w, params, rnd, ann = setup()
    prs = peer_rounds(w, ann)
    victim, copier = params.assignment[0][0], params.assignment[0][1]
    # the copier commits the victim's commitment, then reveals the victim's (digest, salt)
    rnd.offer_message(victim, *prs[victim].start()[0])
    stolen = rep.commitment(1, 0, victim, *prs[victim].results[0])
    copied = replica.Commits([replica.CommitItem(0, stolen)])
    with pytest.raises(ReplicaRejected, match="not a replica|committed"):
        rnd.offer_message(copier, replica.DOMAIN_COMMIT, encode(
            replica.Commits([replica.CommitItem(9, b"x" * 32)])))
    rnd.offer_message(copier, replica.DOMAIN_COMMIT, encode(copied))
    rnd.advance(0.0)
    rnd.offer_message(victim, *prs[victim].on_notice(replica.REVEAL, b"", None)[0])
    with pytest.raises(replica.BadReveal):
        rnd.offer_message(copier, replica.DOMAIN_REVEAL, encode(
            replica.Reveals([replica.RevealItem(0, *prs[victim].results[0])])))
    assert rnd.bad_reveals == {0: {copier}}


def test_messages_out_of_phase_or_malformed_are_refused():
    w, params, rnd, ann = setup()
    p = params.assignment[0][0]
    pr = peer_rounds(w, ann)[p]
    with pytest.raises(WrongPhase):
        rnd.offer_message(p, replica.DOMAIN_REVEAL, pr.reveals(pr.tasks)[0][1])
    dup = replica.Commits([replica.CommitItem(0, b"a" * 32), replica.CommitItem(0, b"b" * 32)])
    with pytest.raises(SchemaError):
        rnd.offer_message(p, replica.DOMAIN_COMMIT, encode(dup))
    with pytest.raises(SchemaError):
        rnd.offer_message(p, replica.DOMAIN_COMMIT, b"\x81\xa5items\x90")  # empty list
    rnd.offer_message(p, *pr.start()[0])
    with pytest.raises(ReplicaRejected):
        rnd.offer_message(p, *pr.start()[0])  # twice


def test_extra_replicas_settle_a_dispute_without_the_coordinator_training():
    rows = [["peer-0", "peer-6", "peer-7"], ["peer-1", "peer-2", "peer-3"],
            ["peer-1", "peer-2", "peer-3"], ["peer-1", "peer-2", "peer-3"]]
    w, params, rnd, ann = setup(assignment=rows, dispute="replicas")
    prs = peer_rounds(w, ann, claims={"peer-6": wrong, "peer-7": wrong})
    out, _ = drive(w, rnd, prs)
    seg0 = out.result["segments"][0]
    assert seg0["decided_by"] == "extra replicas"
    assert seg0["extra_replicas"] == rp.extra_replicas(params, 0, 3)
    assert set(seg0["extra_replicas"]) <= {"peer-1", "peer-2", "peer-3", "peer-4", "peer-5"}
    assert set(seg0["disagree"]) == {"peer-6", "peer-7"}
    assert np.allclose(w.weights, expected_weights(inc.Incremental(segments=4), params),
                       atol=1e-6)


@pytest.mark.parametrize("agg", ["mean", "median"])
def test_without_verification_the_aggregator_decides_what_signflip_does(agg):
    ids = PEERS + ["peer-8", "peer-9"]
    w, params, rnd, ann = setup(eligible=ids, segments=10, replicas=1, aggregator=agg)
    attackers = {params.assignment[0][0], params.assignment[1][0]}
    start = w.weights.copy()

    def flip(pr, segment, train):
        return start - SIGNFLIP_SCALE * (train() - start)

    out, _ = drive(w, rnd, peer_rounds(w, ann, claims=dict.fromkeys(attackers, flip)))
    assert out.accepted == 10
    assert all(s["decided_by"] == "unverified (r=1)" for s in out.result["segments"])
    w2, _, rnd2, ann2 = setup(eligible=ids, segments=10, replicas=1, aggregator=agg)
    clean, _ = drive(w2, rnd2, peer_rounds(w2, ann2))
    # with the mean, two flipped (x4) updates cancel most of the round's progress; the
    # coordinate median barely notices them
    gap = out.result["loss"] / clean.result["loss"]
    assert (gap > 1.04) if agg == "mean" else (gap < 1.01), gap


def test_one_non_finite_segment_cannot_fail_an_unreplicated_round():
    """replicas=1 accepts each segment's weights as sent: an all-inf segment is left out of
    the aggregate (and counted), not raised from the aggregator."""
    w = inc.Incremental(segments=4, replicas=1)
    good = {s: w.weights.copy() for s in range(3)}
    result = w.apply(1, {**good, 3: np.full_like(w.weights, np.inf)})
    assert np.all(np.isfinite(w.weights))
    assert result["count"] == 3 and result["non_finite"] == [3]


def test_a_round_over_thousands_of_peers_fits_its_announcement_and_draws_its_replicas():
    from protocol.wire.identity import Identity
    from protocol.wire.messages import decode

    many = [Identity(hashlib.sha256(b"many%d" % k).digest()).peer_id for k in range(4000)]
    w = inc.Incremental(segments=1000, replicas=3)
    params = w.make_params(1, b"", many)
    ann = RoundAnnounce(round=1, workload="incremental", deadline_ms=0, min_peers=1,
                        workload_params=encode(params))
    got = decode(decode(encode(ann), RoundAnnounce).workload_params, rp.TaskParams)
    assert len(got.eligible) == rp.MAX_ELIGIBLE < len(many)  # a draw, not the first ones
    assert set(got.eligible) <= set(many) and got.eligible != sorted(many)[:rp.MAX_ELIGIBLE]
    assert all(len(set(r)) == 3 and set(r) <= set(got.eligible) for r in got.assignment)
    assert w.make_params(1, b"", list(reversed(many))).eligible == got.eligible  # by beacon
    assert w.make_params(2, b"", many).eligible != got.eligible  # another round, another draw
