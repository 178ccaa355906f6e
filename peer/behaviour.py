"""How a peer behaves inside the protocol: honestly, or as a test or an attack makes it.

The daemon calls a :class:`Behaviour` at each point where a peer running
modified code could act differently -- which peer round it builds for a mode,
how it signs a message and what else it sends, what it does with gossip it
sees, what evaluation outputs it reports -- and never asks whether it is honest.
:class:`Honest` is the default. Test knobs are wrappers (:class:`Flaky`: drop
gossip, drop out of rounds); attacks are :class:`peer.attacks.Attack`.
"""

from __future__ import annotations

import logging
import random

from protocol.rounds.base import Leave, Mode, Outgoing, PeerContext, PeerRound
from protocol.wire.envelope import seal
from protocol.wire.identity import Identity

log = logging.getLogger("hypergossip.peer")


class Behaviour:
    """The honest peer."""

    def peer_round(self, mode: Mode, ctx: PeerContext) -> PeerRound:
        """This peer's side of a round (called in a worker thread: it may train)."""
        return mode.peer_round(ctx)

    def seal(self, identity: Identity, domain: str, round: int, payload: bytes) -> bytes:
        return seal(identity, domain, round, payload)

    def extra_wires(self, round: int, wire: bytes) -> list[bytes]:
        """Other envelopes to submit after ``wire`` (none)."""
        return []

    def keeps_gossip(self) -> bool:
        """Whether to take in a gossip message that reached us."""
        return True

    def observe(self, wire: bytes) -> None:
        """A peer's public round message seen on gossip (already checked as signed)."""

    def outputs(self, prompts: list[str], outputs: list[str]) -> list[str]:
        """What to report for a batch of prompt evaluations."""
        return outputs


Honest = Behaviour


class Flaky(Behaviour):
    """Test knobs around another behaviour: lose a fraction ``gossip_drop`` of incoming
    gossip; vanish from a fraction ``dropout`` of rounds, each at a random step. With a
    ``slot`` ``(i, n)`` exactly ``floor(dropout * n)`` of the n slots drop each round
    (a window rotating by round); without one, each round is a coin flip."""

    def __init__(self, inner: Behaviour | None = None, *, gossip_drop: float = 0.0,
                 dropout: float = 0.0, slot: tuple[int, int] | None = None):
        self.inner = inner or Behaviour()
        self.gossip_drop, self.dropout, self.slot = gossip_drop, dropout, slot

    def peer_round(self, mode: Mode, ctx: PeerContext) -> PeerRound:
        inner = self.inner.peer_round(mode, ctx)
        if not self._drops_in(ctx.announce.round):
            return inner
        steps = ["start", *inner.phases]
        return DropOut(inner, ctx.announce.round, steps[random.randrange(len(steps))])

    def _drops_in(self, round: int) -> bool:
        if self.slot is None:
            return random.random() < self.dropout
        i, n = self.slot
        k = int(self.dropout * n)
        return (i + round * k) % n < k

    def seal(self, identity: Identity, domain: str, round: int, payload: bytes) -> bytes:
        return self.inner.seal(identity, domain, round, payload)

    def extra_wires(self, round: int, wire: bytes) -> list[bytes]:
        return self.inner.extra_wires(round, wire)

    def keeps_gossip(self) -> bool:
        return not (self.gossip_drop and random.random() < self.gossip_drop) and \
            self.inner.keeps_gossip()

    def observe(self, wire: bytes) -> None:
        self.inner.observe(wire)

    def outputs(self, prompts: list[str], outputs: list[str]) -> list[str]:
        return self.inner.outputs(prompts, outputs)


class DropOut(PeerRound):
    """A peer round that goes silent before ``step`` (a simulated dropout)."""

    def __init__(self, inner: PeerRound, round: int, step: str):
        self.inner, self.round, self.step = inner, round, step
        self.phases, self.offload = inner.phases, inner.offload

    async def before_step(self, step: str) -> None:
        if step == self.step:
            log.warning("round %d: simulated dropout before %s", self.round, step)
            raise Leave(f"simulated dropout before {step}")
        await self.inner.before_step(step)

    def start(self) -> Outgoing:
        return self.inner.start()

    def needs_personal(self, phase: str) -> bool:
        return self.inner.needs_personal(phase)

    def needs_body(self, phase: str) -> bool:
        return self.inner.needs_body(phase)

    def blobs(self) -> list[bytes]:
        return self.inner.blobs()

    def on_notice(self, phase: str, body: bytes, personal: bytes | None) -> Outgoing:
        return self.inner.on_notice(phase, body, personal)
