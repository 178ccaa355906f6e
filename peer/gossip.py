"""Gossipsub as we run it: its configuration, its v1.1 scoring, and the guarded pubsub.

:class:`GuardedPubsub` spends a per-forwarder budget before a message costs anything,
keeps one inbound pubsub stream per peer, and contains a failure in one message;
:data:`SCORING` makes invalid messages and floods cost their forwarder (P4, P5).

Gossipsub settings differ from py-libp2p's defaults on purpose (each measured
on our 2-core machines): adaptive gossip off (it let heartbeats drift to
30-60 s), spam protection off (its 10 msg/s/topic limit drops bursts of
honest traffic; our own signature checks and caps do that job), eclipse
protection off (it wants 3 distinct IPs in a mesh, which loopback testnets
never have), degree 4 / high 12 and a 5 s prune back-off.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import PeerScorer, ScoreParams, TopicScoreParams

from protocol.policy.ratelimit import Buckets

from .faults import Faults
from .limits import Limits
from .streams import (
    StreamProtocolError,
    reset,
)

GOSSIP_MAX = 512 * 1024


GOSSIPSUB_PROTOCOLS = [TProtocol("/meshsub/1.1.0"), TProtocol("/meshsub/1.0.0")]


@dataclass(frozen=True)
class GossipConfig:
    degree: int = 4
    degree_low: int = 2
    degree_high: int = 12
    heartbeat_interval: float = 1.0
    # s, the gossipsub spec's: at 5, peers re-grafted a full coordinator every few
    # heartbeats (0.3 GRAFTs a second per peer, idle), costing both sides CPU
    prune_back_off: int = 60
    eclipse_protection: bool = False
    # heartbeats between py-libp2p's score-driven mesh upkeep (opportunistic grafting, the
    # replacement of a mesh's worst peer): the gossipsub v1.1 spec's opportunistic grafting
    # runs every 60 heartbeats; py-libp2p ran both on every heartbeat (PacedGossipSub)
    upkeep_every: int = 60
    # heartbeats between score decays (the spec's DecayInterval), each by that many
    # heartbeats' worth; py-libp2p decayed every counter of every peer each heartbeat
    decay_every: int = 10
    # most peers a heartbeat's IHAVE goes to, per topic (None: the spec's max(6, 25 % of
    # the topic's peers)); the coordinator's messages reach every participant on its
    # session, and at N=1000 a quarter of its peers asked for each one again (IWANT)
    gossip_max: int | None = None


DEFAULT_GOSSIP = GossipConfig()


def origin_of(msg) -> str:
    """The libp2p sender a gossip message names (pubsub checked its signature)."""
    try:
        return ID(msg.from_id).to_base58()
    except Exception:
        return "?"


class GuardedPubsub(Pubsub):
    """Pubsub that one peer can neither crash nor flood.

    py-libp2p 0.8.1's pubsub lets remote input escape in two places: its stream handler (a
    malformed RPC raises protobuf's DecodeError), and ``push_msg``, a task per received
    message, whose signature check raises on a ``key`` field that is not a public key.
    Either stopped the pubsub service, the host and the process. Here a failure on one
    peer's stream ends that stream and forgets that peer's subscriptions, and a failure on
    one message drops that message; both are counted in ``faults`` against the peer that
    sent it (:mod:`peer.libp2p_patches` contains every other per-input task the same way).

    Floods: each forwarding peer has a budget of :attr:`Limits.gossip_rate` messages a
    second (burst :attr:`Limits.gossip_burst`; a message costs one more per 64 KiB it
    carries), spent before anything else is done with a message. py-libp2p's bounded
    queues otherwise dropped 99.6 % of a 3,400 msg/s flood, silently, and honest messages
    shared those queues. Beyond its budget a peer's messages are dropped unread, counted,
    and raise its gossipsub behaviour penalty (P5), so that a peer which keeps flooding is
    pruned from our meshes and its messages are refused by score before they cost a
    signature check."""

    def __init__(self, *args: Any, faults: Faults, limits: Limits,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.faults = faults
        self.budgets = Buckets(limits.gossip_rate, limits.gossip_burst, max_keys=16384)
        self._inbound: dict[ID, Any] = {}  # peer -> its inbound pubsub stream

    async def stream_handler(self, stream) -> None:
        """One inbound stream per peer, as in go-libp2p-pubsub: a newer one resets the older
        (py-libp2p read every stream a peer opened, each holding its last RPC, up to 1 MiB
        parsed: 63 streams of subscription floods held 34 MB)."""
        peer_id = stream.muxed_conn.peer_id
        older = self._inbound.get(peer_id)
        self._inbound[peer_id] = stream
        if older is not None:
            await reset(older)  # its reader ends quietly: a reset stream is not a dead peer
        try:
            await super().stream_handler(stream)
        except Exception as exc:
            self.faults.record("pubsub stream", peer_id.to_base58(), exc)
            try:
                await stream.reset()
            except Exception:
                pass
            self._handle_dead_peer(peer_id)
        finally:
            if self._inbound.get(peer_id) is stream:
                del self._inbound[peer_id]

    async def push_msg(self, msg_forwarder: ID, msg) -> None:
        if msg_forwarder == self.my_id:  # our own publish: its caller sees any error
            return await super().push_msg(msg_forwarder, msg)
        if not self.budgets.take(msg_forwarder, time.monotonic(), 1 + len(msg.data) // 65536):
            self.faults.record("gossip flood", msg_forwarder.to_base58(), StreamProtocolError(
                f"over its budget of {self.budgets.rate:g} messages/s"))
            scorer = getattr(self.router, "scorer", None)
            if scorer is not None:
                scorer.penalize_behavior(msg_forwarder, 1.0)
            return
        try:
            await super().push_msg(msg_forwarder, msg)
        except Exception as exc:
            self.faults.record("gossip message", msg_forwarder.to_base58(), exc)


# gossipsub v1.1 peer scores (py-libp2p's thresholds default to minus infinity: no effect).
# Only penalties count here; an honest peer scores 0. Each message a validator refuses costs
# its forwarder 10 (P4), each message over its flood budget 1 (P5, past a slack of 20);
# both decay by 1 % a heartbeat (about a minute's half-life at 1 s). Below -100 a peer's
# messages are refused before validation, below -50 we stop gossiping to it, below -200
# it is graylisted (pruned from meshes, its GRAFTs refused). IP colocation (P7) stays off:
# loopback testnets put every peer on one address.
SCORING = ScoreParams(
    p4_invalid_messages=TopicScoreParams(weight=10.0, cap=1000.0, decay=0.99),
    p5_behavior_penalty_weight=1.0, p5_behavior_penalty_decay=0.99,
    p5_behavior_penalty_threshold=20.0,
    publish_threshold=-100.0, gossip_threshold=-50.0, graylist_threshold=-200.0,
    accept_px_threshold=0.0)


DECAY_TO_ZERO = 0.01  # a decayed counter below this is dropped (go-libp2p's DecayToZero)


class PacedScorer(PeerScorer):
    """py-libp2p's scorer, decaying every ``every`` heartbeats (the gossipsub v1.1 spec's
    ``DecayInterval``) by that many heartbeats' worth, and only the counters that decay.

    py-libp2p 0.8.1 multiplied every counter of every peer and topic by its decay on every
    heartbeat, including those whose decay is 1 (P1-P3 and P6 here: unweighted), and kept
    them at 0.0 forever: at a coordinator of 1000 peers that was 19 % of its CPU in a
    SecAgg+ round (py-spy). Here a counter is multiplied by ``decay ** every`` every
    ``every`` heartbeats (the same value at each of those heartbeats, up to rounding; in
    between it is up to ``every`` heartbeats stale) and dropped once below
    :data:`DECAY_TO_ZERO`, as go-libp2p does; a peer with no counters left costs
    nothing."""

    def __init__(self, params: ScoreParams, every: int):
        super().__init__(params)
        self.every, self.beats = max(1, every), 0
        # reading a score leaves no zero counter behind to decay (py-libp2p's defaultdicts
        # made one for every peer scored, i.e. every peer of a topic each heartbeat)
        for table in ("time_in_mesh", "first_message_deliveries", "mesh_message_deliveries",
                      "invalid_messages"):
            setattr(self, table, defaultdict(_Zeros))
        for flat in ("behavior_penalty", "app_specific_scores", "graft_flood_penalties",
                     "iwant_spam_penalties", "ihave_spam_penalties", "equivocation_penalties"):
            setattr(self, flat, _Zeros())
        # what decays, by ``every`` heartbeats' worth (a decay of 1 is left alone)
        p, p5 = params, params.p5_behavior_penalty_decay
        self._by_topic = [(t, d ** self.every) for t, d in (
            (self.time_in_mesh, p.p1_time_in_mesh.decay),
            (self.first_message_deliveries, p.p2_first_message_deliveries.decay),
            (self.mesh_message_deliveries, p.p3_mesh_message_deliveries.decay),
            (self.invalid_messages, p.p4_invalid_messages.decay)) if d != 1.0]
        self._by_peer = [(t, d ** self.every) for t, d in (
            (self.behavior_penalty, p5), (self.app_specific_scores, p.p6_appl_slack_decay),
            (self.graft_flood_penalties, p5), (self.iwant_spam_penalties, p5),
            (self.ihave_spam_penalties, p5), (self.equivocation_penalties, p5)) if d != 1.0]

    def on_heartbeat(self, dt_seconds: float = 1.0) -> None:
        self.beats += 1
        if self.beats % self.every:
            return
        for table, factor in self._by_topic:
            for peer in list(table):
                _decay(table[peer], factor)
                if not table[peer]:
                    del table[peer]
        for counters, factor in self._by_peer:
            _decay(counters, factor)


class _Zeros(dict):
    """Counters that read 0.0 when absent, without adding the key."""

    def __missing__(self, key: Any) -> float:
        return 0.0


def _decay(counters: dict, factor: float) -> None:
    for key, value in list(counters.items()):
        if abs(value * factor) < DECAY_TO_ZERO:
            del counters[key]
        else:
            counters[key] = value * factor


class PacedGossipSub(GossipSub):
    """GossipSub whose score-driven mesh upkeep runs every ``upkeep_every`` heartbeats.

    py-libp2p 0.8.1 runs opportunistic grafting and the mesh-quality replacement on every
    heartbeat, for every topic; each scores every peer in the topic (every peer, at a
    coordinator). The heartbeat was about a third of an idle peer's CPU, and the upkeep
    0.08 of its 0.29 ms/s at N=250 (``scale.py --task-profile``). The gossipsub v1.1 spec
    runs opportunistic grafting every 60 heartbeats (go-libp2p's
    ``OpportunisticGraftTicks``), and the mesh's degree bounds, which need no scores, are
    still kept every heartbeat. Its scores decay every ``decay_every`` heartbeats
    (:class:`PacedScorer`), and its IHAVEs go to at most ``gossip_max`` peers a topic."""

    def __init__(self, *args: Any, upkeep_every: int, decay_every: int = 1,
                 gossip_max: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.upkeep_every = max(1, upkeep_every)
        self.gossip_max = gossip_max
        self.beats = 0
        assert self.scorer is not None
        self.scorer = PacedScorer(self.scorer.params, decay_every)

    def _upkeep_due(self) -> bool:
        return self.beats % self.upkeep_every == 0

    def mesh_heartbeat(self):  # the first step of each heartbeat
        self.beats += 1
        return super().mesh_heartbeat()

    def _perform_opportunistic_grafting(self, topic, peers_to_graft) -> int:
        return super()._perform_opportunistic_grafting(topic, peers_to_graft) \
            if self._upkeep_due() else 0

    async def _maintain_mesh_quality(self, topic: str) -> None:
        if self._upkeep_due():
            await super()._maintain_mesh_quality(topic)

    def _get_adaptive_gossip_peers_count(self, topic: str, total_peers: int) -> int:
        count = super()._get_adaptive_gossip_peers_count(topic, total_peers)
        return count if self.gossip_max is None else min(count, self.gossip_max)


def make_router(gossip: GossipConfig) -> GossipSub:
    return PacedGossipSub(
        upkeep_every=gossip.upkeep_every,
        decay_every=gossip.decay_every,
        gossip_max=gossip.gossip_max,
        protocols=GOSSIPSUB_PROTOCOLS,
        degree=gossip.degree,
        degree_low=gossip.degree_low,
        degree_high=gossip.degree_high,
        heartbeat_interval=gossip.heartbeat_interval,  # type: ignore[arg-type]
        prune_back_off=gossip.prune_back_off,
        adaptive_gossip_enabled=False,
        spam_protection_enabled=False,
        eclipse_protection_enabled=gossip.eclipse_protection,
        score_params=SCORING,
    )
