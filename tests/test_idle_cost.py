"""What keeps peers and the coordinator cheap as N grows: timers that expire together,
gossipsub's score-driven mesh upkeep paced as the spec paces it, and py-libp2p's service
tasks spawned without a walk over every task (``scripts/bench/scale.py --task-profile``
and ``--peers`` measure what each saves; these tests check the mechanisms, not time)."""

from __future__ import annotations

import math
import random
from contextlib import AsyncExitStack

import trio
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.tools.anyio_service import Service, background_trio_service
from libp2p.tools.anyio_service.trio_tasks import FunctionTask

from peer import libp2p_patches, libp2p_tasks
from peer.clock import SlackClock
from peer.gossip import GossipConfig
from peer.node import NetworkNode
from protocol.wire.identity import Identity

from .netutil import wait_for


def test_a_slack_clock_never_wakes_early_and_wakes_on_its_grid():
    clock = SlackClock(0.05)
    now = clock.current_time()
    for ahead in (0.001, 0.0499, 0.05, 0.3, 7.123):
        sleep = clock.deadline_to_sleep_time(now + ahead)
        woken = clock.current_time() + sleep
        assert woken >= now + ahead  # never before the deadline
        assert woken - (now + ahead) <= 0.05 + 1e-6  # at most one slack late
        assert math.isclose(woken / 0.05, round(woken / 0.05), abs_tol=1e-3)  # on the grid
    assert clock.deadline_to_sleep_time(now - 1.0) == 0.0  # overdue: at once
    assert clock.deadline_to_sleep_time(math.inf) == math.inf


class Passes(trio.abc.Instrument):
    """Scheduler passes that waited for I/O or a timer."""

    def __init__(self) -> None:
        self.count = 0

    def after_io_wait(self, timeout: float) -> None:
        self.count += 1


def test_timers_due_within_one_slack_expire_in_one_pass():
    rng = random.Random(5)
    delays = [rng.uniform(0.0, 0.5) for _ in range(200)]  # 200 distinct deadlines
    late: list[float] = []

    async def main(passes: Passes) -> None:
        async def sleeper(delay: float) -> None:
            due = trio.current_time() + delay
            await trio.sleep_until(due)
            late.append(trio.current_time() - due)

        async with trio.open_nursery() as nursery:
            for d in delays:
                nursery.start_soon(sleeper, d)
            trio.lowlevel.add_instrument(passes)

    coalesced, alone = Passes(), Passes()
    trio.run(main, coalesced, clock=SlackClock(0.05))
    assert len(late) == 200 and min(late) >= 0.0  # every timer fired, none early
    assert max(late) <= 0.05 + 0.5  # late by the slack, and whatever this machine adds
    late.clear()
    trio.run(main, alone, clock=SlackClock(1e-5))  # (next to) no slack: a pass each
    assert len(late) == 200 and min(late) >= 0.0
    # 0.5 s of deadlines on a 50-ms grid: ten grid points (two passes each: the timers',
    # then their tasks' exits), against about two for each of the 200 deadlines alone;
    # plus a few passes that are no timer's (the run's start and end, a wake from another
    # thread: under the full suite one run took 26)
    assert coalesced.count <= 2 * (0.5 / 0.05 + 2) + 12, (coalesced.count, alone.count)
    assert coalesced.count * 4 <= alone.count, (coalesced.count, alone.count)


async def test_gossipsub_score_upkeep_runs_every_upkeep_every_heartbeats(monkeypatch):
    upkeep: list[int] = []
    plain = GossipSub._perform_opportunistic_grafting

    def counted(self, topic, peers_to_graft):  # py-libp2p's own, counted
        upkeep.append(self.beats)
        return plain(self, topic, peers_to_graft)

    monkeypatch.setattr(GossipSub, "_perform_opportunistic_grafting", counted)
    config = GossipConfig(heartbeat_interval=0.02, upkeep_every=5)
    nodes = [NetworkNode(Identity.generate(), gossip=config) for _ in range(3)]
    got: list[bytes] = []

    async def handler(data: bytes, origin: str) -> None:
        got.append(data)

    async with nodes[0].running(), nodes[1].running(), nodes[2].running():
        for a, b in ((0, 1), (1, 2)):
            assert await nodes[a].connect(nodes[b].addrs[0])
        for node in nodes:
            await node.subscribe("t", handler)
        await wait_for(lambda: min(n.router.beats for n in nodes) >= 30)
        await wait_for(lambda: all(n.router.mesh.get("t") for n in nodes))
        await nodes[0].publish("t", b"still delivered")
        await wait_for(lambda: len(got) >= 2)  # both others, one of them two hops away
    assert upkeep and all(beat % 5 == 0 for beat in upkeep), upkeep
    beats = sum(n.router.beats for n in nodes)
    assert len(upkeep) <= beats // 5 + 3  # one topic: once per five heartbeats, not each


async def test_a_hub_advertises_its_messages_to_at_most_gossip_max_peers_a_heartbeat(
        monkeypatch):
    """The coordinator (a hub every peer connects to) sends IHAVEs to ``gossip_max`` peers a
    heartbeat, not py-libp2p's max(6, 25 % of the topic): at N=1000 a quarter of its peers
    asked again (IWANT) for each message they already had from their sessions."""
    hub = NetworkNode(Identity.generate(), gossip=GossipConfig(heartbeat_interval=0.05,
                                                               gossip_max=2))
    leaves = [NetworkNode(Identity.generate(), gossip=GossipConfig(heartbeat_interval=0.05))
              for _ in range(8)]
    advertised: list[int] = []  # peers each of the hub's heartbeats sent an IHAVE to
    plain = GossipSub._emit_control_msgs

    async def counted(self, graft, prune, gossip):
        if self is hub.router and gossip:
            advertised.append(len(gossip))
        return await plain(self, graft, prune, gossip)

    monkeypatch.setattr(GossipSub, "_emit_control_msgs", counted)
    got: list[bytes] = []

    async def handler(data: bytes, origin: str) -> None:
        got.append(data)

    async with hub.running(), AsyncExitStack() as stack:
        for leaf in leaves:
            await stack.enter_async_context(leaf.running())
            assert await leaf.connect(hub.addrs[0])
            await leaf.subscribe("t", handler)
        await wait_for(lambda: len(hub.pubsub.peer_topics.get("t", ())) == len(leaves))
        await hub.publish("t", b"from the hub")  # not subscribed: its fanout, 4 leaves
        # the message's three heartbeats in the hub's gossip window: 2 leaves each (without
        # the cap, all 4 outside the fanout each time), which asked for it (IWANT)
        await wait_for(lambda: len(advertised) >= 3 and len(got) >= 4 + 2)
    assert max(advertised) == 2, advertised


def test_paced_scores_decay_every_tenth_heartbeat_to_the_same_values_and_keep_no_zeros():
    """``PacedScorer`` decays by ten heartbeats' worth every tenth heartbeat: there its
    scores equal py-libp2p's own scorer decaying each heartbeat; counters that decayed
    away, and peers merely scored, leave nothing behind to decay."""
    from libp2p.peer.id import ID
    from libp2p.pubsub.score import PeerScorer

    from peer.gossip import SCORING, PacedScorer

    peers = [ID.from_base58(Identity.generate().peer_id) for _ in range(50)]
    plain, paced = PeerScorer(SCORING), PacedScorer(SCORING, every=10)
    for scorer in (plain, paced):
        for i, peer in enumerate(peers[:10]):
            for _ in range(i + 1):
                scorer.on_invalid_message(peer, "t")
            scorer.penalize_behavior(peer, 30.0 + i)
            scorer.penalize_iwant_spam(peer, 5.0)
    for beat in range(1, 1001):
        for scorer in (plain, paced):
            for peer in peers:
                scorer.score(peer, ["t", "u"])  # every peer of a topic, as gossip emission does
            scorer.on_heartbeat()
        if beat % 10 == 0:
            for peer in peers:
                assert abs(paced.score(peer, ["t"]) - plain.score(peer, ["t"])) < 0.2, beat
    # decayed away: dropped here, next to nothing there
    assert paced.score(peers[9], ["t"]) == 0.0 and abs(plain.score(peers[9], ["t"])) < 0.01
    # what is left to decay: py-libp2p keeps a counter per peer scored, forever
    assert len(plain.behavior_penalty) == len(plain.invalid_messages) == 50
    assert not paced.behavior_penalty and not paced.iwant_spam_penalties
    assert not any(paced.invalid_messages.values())  # (an empty table per peer scored)


async def test_a_service_task_finds_its_parent_by_lookup_not_by_walking_every_task(
        monkeypatch):
    """py-libp2p walked a service's whole task tree for each new task's parent (O(N) a
    spawn at a coordinator of N peers); ``peer.libp2p_tasks`` looks it up: the same parent,
    with no walk at all."""
    libp2p_patches.install()
    assert libp2p_tasks.applied()
    parents: dict[str, object] = {}
    release = trio.Event()

    class Busy(Service):
        async def run(self) -> None:
            for _ in range(300):  # a service holding many tasks, as a coordinator's pubsub
                self.manager.run_task(trio.sleep_forever)
            self.manager.run_task(self.spawner)
            await trio.sleep_forever()

        async def spawner(self) -> None:
            me = trio.lowlevel.current_task()
            self.manager.run_task(self.child)
            parents["spawner"] = me

        async def child(self) -> None:
            parents["child"] = trio.lowlevel.current_task()
            await release.wait()

    def no_walk(*tasks):
        raise AssertionError("walked the task tree")

    monkeypatch.setattr(FunctionTask, "iterate_tasks", classmethod(no_walk))
    service = Busy()
    async with background_trio_service(service) as manager:
        await wait_for(lambda: "child" in parents)
        tree = list(_walk(manager._root_tasks))
        [spawner] = [t for t, _ in tree if t.name.endswith("spawner")]
        [(child, parent)] = [(t, p) for t, p in tree if t.name.endswith("child")]
        assert parent is spawner  # the task that spawned it: its parent, as before
        assert spawner.trio_task is parents["spawner"]
        assert len(tree) >= 302
        release.set()
        await wait_for(lambda: not spawner.children)  # the child ended and was let go
    # tasks that ended are not kept in the index
    assert parents["child"] not in libp2p_tasks._running


def _walk(tasks, parent=None):
    """(task, its parent) for every task under ``tasks``."""
    for task in tasks:
        yield task, parent
        yield from _walk(getattr(task, "children", ()), task)
