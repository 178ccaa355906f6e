"""Rounds of more live peers than one round holds draw a cohort: SecAgg+ at most
MAX_MEMBERS members, vss at most its dealer cap, by a seeded draw anyone can redo."""

from __future__ import annotations

from protocol.learning.registry import get_workload
from protocol.rounds import secure
from protocol.wire.identity import Identity
from protocol.wire.messages import decode, encode


def test_a_secure_round_of_too_many_peers_draws_a_public_cohort():
    peers = sorted(Identity.generate().peer_id for _ in range(secure.MAX_MEMBERS + 100))
    stats = get_workload("stats")
    a = secure.make_params(stats, 7, peers, b"\x01" * 32)
    assert len(a.participants) == secure.MAX_MEMBERS
    assert set(a.participants) <= set(peers) and a.participants == sorted(a.participants)
    assert secure.make_params(stats, 7, peers, b"\x01" * 32).participants == a.participants
    other = secure.make_params(stats, 8, peers, b"\x01" * 32).participants
    assert other != a.participants  # another round, another draw
    # the announcement's parameters still decode at a peer (the cap is the schema's)
    assert decode(encode(a), secure.SecureParams).participants == a.participants
    small = secure.make_params(stats, 7, peers[:50], b"\x01" * 32)
    assert small.participants == peers[:50]  # below the cap, everyone


def test_the_secure_mode_asks_only_its_cohort():
    from protocol.policy.replication import Reputation
    from protocol.rounds.base import Settings, Setup

    peers = sorted(Identity.generate().peer_id for _ in range(secure.MAX_MEMBERS + 10))
    opening = secure.MODE.open(Setup(3, get_workload("stats"), peers, b"", 0.0, Settings(),
                                     Reputation()))
    members = decode(opening.params, secure.SecureParams).participants
    assert opening.participants == members and len(members) == secure.MAX_MEMBERS
    assert opening.notes  # the operator's log says who sat out
