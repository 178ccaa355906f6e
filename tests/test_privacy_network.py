"""The privacy claim attacked on a real round: a coordinator and five peers over libp2p.

The coalition holds everything the coordinator has -- its SQLite database and the
in-memory state of its SecAgg+ server (every message it received, the self-mask seeds it
legitimately rebuilt) -- plus the round state of ``t - 1`` of the victim's neighbours (their
keys and every share they decrypted). It tries to recover the victim's input and fails;
one more share, ``t`` in all, recovers it exactly, so the attack code is sound."""

from __future__ import annotations

import sqlite3

import nacl.bindings
import numpy as np
import trio

from protocol.crypto import common, secagg, shamir
from protocol.rounds import secure as secure_round

from .netutil import start_coordinator, start_peer, wait_for

INPUTS = [(160.3, 55.1), (172.25, 68.5), (181.0, 90.25), (168.9, 61.0), (175.5, 80.0)]


def interpolate_at_zero(shares: list[bytes]) -> bytes:
    """The coalition's best guess at a secret: Lagrange at 0 over the shares it holds."""
    points = [shamir.parse(s) for s in shares]
    return (shamir.interpolate(points, 0) % 2**256).to_bytes(32, "big")


def coordinators_view(server, cfg, victim: str) -> np.ndarray:
    """What the coordinator holds of the victim's input: its masked vector, minus the self
    mask it legitimately rebuilt from the survivors' shares."""
    y = server.masked[victim].copy()
    b_shares = {v: r.self_mask_shares[victim] for v, r in server.unmask_replies.items()
                if victim in r.self_mask_shares}
    b = server._rebuild(victim, b_shares, lambda s: secagg.seed_commitment(s) ==
                        server.keys[victim].self_mask_commit, {})
    secagg.Masker(cfg).apply(y, [(b, -1)])
    return y


def unmask_with(key_shares: list[bytes], y: np.ndarray, victim: str, server, cfg
                ) -> tuple[bytes, np.ndarray]:
    """Remove the victim's pairwise masks with the mask key rebuilt from ``key_shares``."""
    guess = interpolate_at_zero(key_shares)
    z = y.copy()
    masks = []
    for v in cfg.neighbours(victim):
        shared = common.x25519(guess, server.keys[v].mask_pk)
        masks.append((secagg.pairwise_seed(shared, cfg.round, victim, v),
                      -secagg.mask_sign(victim, v)))
    secagg.Masker(cfg).apply(z, masks)
    return nacl.bindings.crypto_scalarmult_base(guess), cfg.encoding.decode_sum(z, 1)


async def test_coordinator_state_and_t_minus_1_peers_cannot_recover_an_honest_input(data_dir):
    rounds: list[secure_round.SecureRound] = []

    async def keep_the_round(coord) -> None:  # the test keeps what the coordinator held
        while True:
            if isinstance(coord.current, secure_round.SecureRound) and not rounds:
                rounds.append(coord.current)
            await trio.sleep(0.005)

    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=5, max_rounds=1,
                                        secure=True, secure_protocol="secagg")
        nursery.start_soon(keep_the_round, coord)
        peers = [await start_peer(nursery, [coord.node.addrs[0]], h, w) for h, w in INPUTS]
        await wait_for(lambda: coord.rounds_run >= 1, timeout=60)
        nursery.cancel_scope.cancel()
    rnd = rounds[0]
    server, cfg = rnd.server, rnd.cfg
    assert sorted(server.masked) == sorted(p.identity.peer_id for p in peers)  # all 5 in
    t = cfg.threshold
    assert t == 3  # (n - 1) - floor(0.3 n) at n = 5: two colluders

    # the database keeps digests of secure-round messages, never their payloads
    with sqlite3.connect(coord.config.db_path) as db:
        rows = db.execute("SELECT domain, payload FROM messages WHERE round=1").fetchall()
    assert {d for d, _ in rows} >= {secure_round.DOMAIN[p] for p in secure_round.PHASES}
    assert all(payload == b"" for _, payload in rows)

    by_id = {p.identity.peer_id: p for p in peers}
    victim = sorted(by_id)[2]
    neighbours = list(cfg.neighbours(victim))
    colluders, honest = neighbours[:t - 1], neighbours[t - 1:]
    held = {v: by_id[v].rounds[1].client._received[victim] for v in neighbours}
    logic = by_id[victim].rounds[1]
    truth = np.clip(logic.workload.bound(logic.vector), -cfg.encoding.clip, cfg.encoding.clip)

    y = coordinators_view(server, cfg, victim)

    public, guess = unmask_with([held[c].mask_key_share for c in colluders], y, victim,
                                server, cfg)
    assert public != server.keys[victim].mask_pk  # a wrong key ...
    assert np.max(np.abs(guess - truth)) > 1.0  # ... and garbage, not the input

    public, recovered = unmask_with([held[c].mask_key_share for c in colluders] +
                                    [held[honest[0]].mask_key_share], y, victim, server, cfg)
    assert public == server.keys[victim].mask_pk
    assert np.max(np.abs(recovered - truth)) <= cfg.encoding.error_bound(1)


async def test_robust_rounds_keep_the_same_privacy_inside_each_group(data_dir):
    """The robust mode over libp2p (fedavg, six peers, groups of k = 3): the coordinator's
    state plus one colluding member of the victim's group (t - 1 with t = 2) cannot
    recover the victim's update; a second share, t in all, can (the attack is sound).
    What the coordinator legitimately learns is each group's sum: three inputs each."""
    from peer.daemon import PeerDaemon
    from protocol.learning.registry import get_workload
    from protocol.rounds import robust
    from protocol.wire.identity import Identity

    rounds: list[robust.RobustRound] = []

    async def keep_the_round(coord) -> None:
        while True:
            if isinstance(coord.current, robust.RobustRound) and not rounds:
                rounds.append(coord.current)
            await trio.sleep(0.005)

    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, workload="fedavg", min_peers=6,
                                        max_rounds=1, secure=True, group_size=3,
                                        phase_timeout=30)
        nursery.start_soon(keep_the_round, coord)
        peers = []
        for i in range(6):
            w = get_workload("fedavg")
            d = PeerDaemon(Identity.generate(), w, w.parse_data(f"part={i}/6,alpha=0.5"),
                           bootstrap=[coord.node.addrs[0]])
            await nursery.start(d.run)
            peers.append(d)
        await wait_for(lambda: coord.rounds_run >= 1, timeout=90)
        nursery.cancel_scope.cancel()
    rnd = rounds[0]
    sa = rnd.params
    assert sa.group_size == 3 and [len(g.participants) for g in sa.groups] == [3, 3]
    group = rnd.groups[0]
    server, cfg = group.server, group.cfg
    assert cfg.threshold == 2 and cfg.agreement == 3  # every member signs before unmasking

    by_id = {p.identity.peer_id: p for p in peers}
    victim = cfg.participants[0]
    neighbours = list(cfg.neighbours(victim))
    colluder, honest = neighbours[0], neighbours[1]
    held = {v: by_id[v].rounds[1].inner.client._received[victim] for v in neighbours}
    logic = by_id[victim].rounds[1].inner
    truth = np.clip(logic.workload.bound(logic.vector), -cfg.encoding.clip, cfg.encoding.clip)

    y = coordinators_view(server, cfg, victim)

    public, guess = unmask_with([held[colluder].mask_key_share], y, victim, server, cfg)
    assert public != server.keys[victim].mask_pk
    assert np.max(np.abs(guess - truth)) > 1.0

    public, recovered = unmask_with([held[colluder].mask_key_share,
                                     held[honest].mask_key_share], y, victim, server, cfg)
    assert public == server.keys[victim].mask_pk
    assert np.max(np.abs(recovered - truth)) <= cfg.encoding.error_bound(1)
