"""Range-checked secure sums (protocol.crypto.vss, protocol.crypto.rangeproof): correctness
with dropouts, malicious dealers and members caught, and the privacy claim attacked directly."""

from __future__ import annotations

import os

import numpy as np
import pytest

from protocol.crypto import group, rangeproof, vss
from protocol.crypto.vss import (
    Accusations,
    AggregateShare,
    Dealing,
    Reveal,
    VssAbort,
    VssClient,
    VssConfig,
    VssRejected,
    VssServer,
)
from protocol.learning.registry import get_workload
from protocol.rounds import MODES
from protocol.rounds import verified as verified_round
from protocol.rounds.base import Settings
from protocol.rounds.local import LocalPeer, run_round
from protocol.wire.identity import Identity
from protocol.wire.messages import PhaseNotice, StatsContribution, encode

LOW, HIGH = (50.0, 20.0), (250.0, 300.0)  # the stats workload's height/weight ranges


def make(n: int, committee: int = 16, **kw) -> tuple[VssConfig, list[str], dict[str, np.ndarray]]:
    ids = sorted(Identity.generate().peer_id for _ in range(n))
    cfg = VssConfig.default(1, ids, os.urandom(32), LOW, HIGH, committee_size=committee, **kw)
    rng = np.random.default_rng(n)
    return cfg, ids, {p: np.array([rng.uniform(150, 200), rng.uniform(45, 110)]) for p in ids}


def run(cfg, ids, xs, *, skip_deal=(), tamper_deal=None, skip_aggregate=(),
        tamper_aggregate=None, accuse=None, silent_reveal=(), silent=()):
    """Drive one round in memory; returns (outcome, server, clients). The ``silent``
    participants never send anything."""
    server = VssServer(cfg)
    clients = {p: VssClient(p, cfg) for p in ids if p not in silent}
    for p, c in clients.items():
        key = c.advertise()
        if key is not None:
            server.receive_key(p, key)
    directory = server.close_keys()
    for p, c in clients.items():
        dealing = c.deal(directory, xs[p])
        if p in skip_deal:
            continue
        if tamper_deal is not None:
            dealing = tamper_deal(p, dealing)
        try:
            server.receive_dealing(p, dealing)
        except VssRejected:
            pass
    body, inboxes = server.close_deal()
    for p, c in clients.items():
        acc = c.check(body, inboxes.get(p, vss.MemberInbox(ciphertexts={})))  # None: not a member
        if accuse is not None and acc is not None:
            acc = accuse(p, acc)
        if acc is not None:
            server.receive_accusations(p, acc)
    disputes = server.close_check()
    for p, c in clients.items():
        reveal = c.reveal(disputes)  # None unless accused
        if p not in silent_reveal and reveal is not None:
            server.receive_reveal(p, reveal)
    inclusion = server.close_resolve()
    for m in sorted(inboxes):
        if m in skip_aggregate:
            continue
        share = clients[m].aggregate(inclusion)
        if tamper_aggregate is not None:
            share = tamper_aggregate(m, share)
        try:
            server.receive_aggregate(m, share)
        except VssRejected:
            pass
    return server.close_aggregate(), server, clients


def truth(cfg, xs, who) -> np.ndarray:
    return sum(np.clip(xs[p], cfg.low, cfg.high) for p in who)


@pytest.mark.parametrize("n", [2, 4, 12])
def test_sum_equals_the_clipped_sum_within_the_bound(n):
    cfg, ids, xs = make(n)
    out, _, _ = run(cfg, ids, xs)
    assert out.included == ids and not out.rejected and not out.disqualified
    assert np.max(np.abs(out.total - truth(cfg, xs, ids))) <= cfg.error_bound(n)


def test_thirty_percent_of_dealers_and_members_vanish_and_the_sum_still_decodes():
    cfg, ids, xs = make(20, committee=10)
    assert cfg.threshold == 7 and len(cfg.committee) == 10
    gone = ids[:6]  # never deal
    members_gone = [m for m in cfg.committee if m not in gone][:3]  # deal, never aggregate
    out, _, _ = run(cfg, ids, xs, skip_deal=gone, skip_aggregate=members_gone)
    live = [p for p in ids if p not in gone]
    assert out.included == live and out.members == 10 - len(members_gone)  # 7 = threshold
    assert np.max(np.abs(out.total - truth(cfg, xs, live))) <= cfg.error_bound(len(live))


def test_an_out_of_range_input_cannot_be_proven_and_a_forged_proof_is_refused():
    cfg, ids, xs = make(6)
    liar = ids[2]
    with pytest.raises(ValueError):  # the honest prover refuses a value it cannot prove
        rangeproof.prove(2**cfg.bits, 5, cfg.bits, b"x")

    def lie(p, dealing: Dealing) -> Dealing:
        if p != liar:
            return dealing
        # commit to 10^6 cm instead (as a malicious client would) and reuse a valid proof
        forged = [group.commit(2**cfg.bits + 10**6, 7)] + dealing.commitments[0][1:]
        return Dealing(commitments=[forged, dealing.commitments[1]], proofs=dealing.proofs,
                       dealer_pk=dealing.dealer_pk, ciphertexts=dealing.ciphertexts)

    out, server, _ = run(cfg, ids, xs, tamper_deal=lie)
    assert "range proof of coordinate 0 does not verify" in out.rejected[liar]
    honest = [p for p in ids if p != liar]
    assert out.included == honest
    assert np.max(np.abs(out.total - truth(cfg, xs, honest))) <= cfg.error_bound(len(honest))


def test_proofs_are_bound_to_their_dealer_and_coordinate():
    cfg, ids, xs = make(4)
    r = group.random_scalar()
    proof = rangeproof.prove(1234, r, cfg.bits, cfg.context(ids[0], 0))
    commitment = group.commit(1234, r)
    assert rangeproof.verify(commitment, proof, cfg.bits, cfg.context(ids[0], 0))
    assert not rangeproof.verify(commitment, proof, cfg.bits, cfg.context(ids[1], 0))
    assert not rangeproof.verify(commitment, proof, cfg.bits, cfg.context(ids[0], 1))
    assert not rangeproof.verify(group.commit(1235, r), proof, cfg.bits, cfg.context(ids[0], 0))
    flipped = list(proof)
    flipped[3] = rangeproof.BitProof(proof[3].commitment, proof[3].e1, proof[3].e0,
                                     proof[3].z0, proof[3].z1)
    assert not rangeproof.verify(commitment, flipped, cfg.bits, cfg.context(ids[0], 0))


def test_a_dealer_with_a_bad_share_is_accused_and_disqualified_the_round_completes():
    cfg, ids, xs = make(8)
    cheat, victim = ids[1], cfg.committee[-1]

    def corrupt(p, dealing: Dealing) -> Dealing:
        if p != cheat:
            return dealing
        bad = dict(dealing.ciphertexts)
        bad[victim] = bad[victim][:20] + bytes([bad[victim][20] ^ 1]) + bad[victim][21:]
        return Dealing(commitments=dealing.commitments, proofs=dealing.proofs,
                       dealer_pk=dealing.dealer_pk, ciphertexts=bad)

    # the cheat then stays silent when asked to reveal: disqualified
    out, server, _ = run(cfg, ids, xs, tamper_deal=corrupt, silent_reveal={cheat})
    assert server.disputes == {cheat: [victim]}
    assert "did not reveal" in out.disqualified[cheat]
    honest = [p for p in ids if p != cheat]
    assert out.included == honest
    assert np.max(np.abs(out.total - truth(cfg, xs, honest))) <= cfg.error_bound(len(honest))


def test_a_false_accusation_costs_the_honest_dealer_nothing():
    cfg, ids, xs = make(8)
    liar, target = cfg.committee[0], ids[-1]

    def accuse(m, acc: Accusations) -> Accusations:
        return Accusations(dealers=[target]) if m == liar else acc

    out, server, _ = run(cfg, ids, xs, accuse=accuse)
    assert server.disputes == {target: [liar]} and target in server.revealed
    assert out.included == ids and not out.disqualified
    assert np.max(np.abs(out.total - truth(cfg, xs, ids))) <= cfg.error_bound(len(ids))


def test_a_lying_member_is_caught_and_ignored():
    cfg, ids, xs = make(8)
    liar = cfg.committee[2]

    def lie(m, share: AggregateShare) -> AggregateShare:
        if m != liar:
            return share
        f = [group.scalar_bytes(group.scalar(share.f[0]) + 1000)] + share.f[1:]
        return AggregateShare(included_digest=share.included_digest, f=f, g=share.g)

    out, server, _ = run(cfg, ids, xs, tamper_aggregate=lie)
    assert "does not match the commitments" in server.rejected[liar]
    assert np.max(np.abs(out.total - truth(cfg, xs, ids))) <= cfg.error_bound(len(ids))


def test_refusals_out_of_phase_duplicates_and_too_few_members():
    cfg, ids, xs = make(4)
    server = VssServer(cfg)
    clients = {p: VssClient(p, cfg) for p in ids}
    member = cfg.committee[0]
    key = clients[member].advertise()
    server.receive_key(member, key)
    with pytest.raises(VssRejected, match="already sent"):
        server.receive_key(member, key)
    outsider = Identity.generate().peer_id
    with pytest.raises(VssRejected, match="may not send"):
        server.receive_key(outsider, key)
    with pytest.raises(VssRejected, match="outside its phase"):
        server.receive_reveal(member, Reveal(shares={}))
    with pytest.raises(VssAbort):  # one key of the threshold's three
        server.close_keys()


def test_privacy_fewer_than_threshold_members_plus_server_learn_nothing_but_threshold_do():
    """The coalition is the server (every dealing: commitments, proofs, ciphertexts) plus
    tau - 1 members with their decrypted shares. Interpolating the victim's polynomial from
    tau - 1 shares gives a value that is not the victim's (and is uniform: any value in the
    range is consistent with what the coalition holds); with tau shares it comes out exactly,
    so the attack code is sound."""
    cfg, ids, xs = make(10)
    out, server, clients = run(cfg, ids, xs)
    victim = ids[4]
    tau = cfg.threshold
    v_true = cfg.encode(xs[victim])[0]
    holders = list(cfg.committee)

    def interpolate(members: list[str]) -> int:
        pts = [(cfg.x_of(m), group.scalar(clients[m]._shares[victim].f[0])) for m in members]
        basis = vss.lagrange_at_zero([x for x, _ in pts])
        return sum(b * y for b, (_, y) in zip(basis, pts, strict=True)) % group.L

    assert tau >= 3
    guess = interpolate(holders[:tau - 1])
    assert guess != v_true and not 0 <= guess < 2**cfg.bits  # not even a plausible value
    # every candidate value is consistent with tau - 1 shares: for any v there is a
    # degree tau - 1 polynomial through (0, v) and the coalition's points
    assert interpolate(holders[:tau]) == v_true
    assert interpolate(holders[1:tau + 1]) == v_true


def test_a_round_with_more_peers_than_a_notice_holds_draws_who_takes_part():
    people = [Identity.generate().peer_id for _ in range(400)]
    params = verified_round.make_params(get_workload("stats"), 7, people, b"d" * 32,
                                        committee_size=32)
    chosen = params.participants
    assert len(chosen) < 400 and len(chosen) == len(set(chosen)) and set(chosen) <= set(people)
    # the largest notice of such a round (every dealing's commitments) stays within limits
    cfg = verified_round.config(7, params)
    point = group.base(5)
    body = vss.Commitments(dealers={p: [[point] * cfg.threshold] * cfg.dim for p in chosen},
                           dealer_pks={p: point for p in chosen})
    assert len(encode(PhaseNotice(round=7, phase="check", body=encode(body)))) < 400 * 1024
    again = verified_round.make_params(get_workload("stats"), 7, people, b"d" * 32,
                                       committee_size=32)
    assert again.participants == chosen  # a public draw: anyone can recompute it


def test_small_order_keys_are_refused_from_members_and_dealers():
    # A zero X25519 agreement would break every dealer sealing to that member (or every
    # member opening that dealer's share): refused at intake, with the reason.
    small = bytes(32)
    cfg, ids, xs = make(4)
    server = VssServer(cfg)
    clients = {p: VssClient(p, cfg) for p in ids}
    first = cfg.committee[0]
    with pytest.raises(VssRejected, match="small order"):
        server.receive_key(first, vss.MemberKey(enc_pk=small))
    assert "small order" in server.rejected[first]
    server2 = VssServer(cfg)
    for p, c in clients.items():
        key = c.advertise()
        if key is not None:
            server2.receive_key(p, key)
    directory = server2.close_keys()
    dealer = ids[1]
    dealing = clients[dealer].deal(directory, xs[dealer])
    forged = Dealing(commitments=dealing.commitments, proofs=dealing.proofs,
                     dealer_pk=small, ciphertexts=dealing.ciphertexts)
    with pytest.raises(VssRejected, match="small order"):
        server2.receive_dealing(dealer, forged)


def test_a_round_that_replans_draws_its_committee_again_from_those_that_answered():
    """Most of a committee says nothing (members are drawn from free keys): a fixed round
    aborts at the keys phase; a re-planning one (what the coordinator runs) draws its
    committee again from the participants that advertised, with the same seed, and sums
    exactly their inputs."""
    cfg, ids, xs = make(10, committee=6, replan=True)
    silent = list(cfg.committee[:4])  # 4 of the 6 members: far past the 30 % tolerance
    answered = [p for p in ids if p not in silent]
    fixed = VssConfig(cfg.round, cfg.participants, cfg.committee, cfg.threshold, cfg.low,
                   cfg.high, cfg.bits, cfg.min_included)
    with pytest.raises(VssAbort, match="keys ended with 2 members"):
        run(fixed, ids, xs, silent=silent)
    out, server, clients = run(cfg, ids, xs, silent=silent)
    assert server.cfg.participants == tuple(answered)
    assert server.cfg.committee == tuple(vss.rank(answered, cfg.seed)[:6])
    assert not set(silent) & set(server.cfg.committee)
    assert all(c.cfg == server.cfg for c in clients.values())
    assert out.included == answered
    assert np.max(np.abs(out.total - truth(cfg, xs, answered))) <= cfg.error_bound(6)


def test_only_committee_members_get_the_commitments_and_read_the_inclusion():
    # The commitments are O(N) bytes (255 KB for a cohort of 300): they go to the members
    # alone, in their personal check message; the inclusion body is handed to the other
    # dealers as b"" (they never fetch it), and the round still sums all.
    values = [(150.0 + i, 50.0 + i) for i in range(10)]
    peers = [LocalPeer(Identity.generate(), get_workload("stats"),
                       StatsContribution(height=h, weight=w)) for h, w in values]
    read: dict[str, list[str]] = {}

    def watched(mode, ctx):
        pr = mode.peer_round(ctx)
        on_notice = pr.on_notice

        def spy(phase, body, personal):
            read.setdefault(ctx.peer_id, []).append(
                f"{phase}:{'body' if body else '-'}{'+personal' if personal else ''}")
            return on_notice(phase, body, personal)

        pr.on_notice = spy
        return pr

    for p in peers:
        p.factory = watched
    res = run_round(MODES["vss"], get_workload("stats"), 1, peers,
                    settings=Settings(vss_committee=4))
    assert res.outcome.status == "published", res.outcome
    assert res.outcome.result["count"] == 10
    assert abs(res.outcome.result["mean_height"] - 154.5) < 0.01
    params = verified_round.make_params(get_workload("stats"), 1,
                                        sorted(p.identity.peer_id for p in peers), b"",
                                        committee_size=4)
    committee = set(verified_round.config(1, params).committee)
    for pid, steps in read.items():
        member = pid in committee  # only members get the commitments (with their shares)
        assert ("check:-+personal" if member else "check:-") in steps, (pid, steps)
        assert ("aggregate:body" if member else "aggregate:-") in steps, (pid, steps)
    assert len(committee) == 4 and committee <= set(read)
