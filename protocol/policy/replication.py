"""Replicated training with commit-reveal: who trains what, and when a result is accepted.

Theory of operation
-------------------
Each round every data segment is trained by ``replicas`` peers. Training is
deterministic (protocol.learning.models), so honest replicas produce the same weight
digest; a liar must either guess it or copy it. Copying is prevented by
commit-reveal: a replica first publishes ``H(tag, round, segment, peer,
digest, salt)``, and reveals ``(digest, salt)`` only after the commit phase
closed, when nobody can commit any more. Choosing one's segment or
co-replicas is prevented by assigning them from a public beacon that is
unknown before the previous round's result exists.

Decision rule for one segment (stricter than the seed's "two equal values"):

=========================================  ==========================================
revealed digests                           decision
=========================================  ==========================================
>= ``quorum`` valid reveals, all equal      ACCEPTED (digest); non-revealers missing
two or more different digests               DISPUTED: more replicas or re-execution
fewer than ``quorum`` valid reveals         UNDECIDED: more replicas
=========================================  ==========================================

A reveal that does not open its commitment, or comes from a peer that did
not commit, or twice, is refused (:class:`ReplicaRejected`). A dispute is
settled by :meth:`SegmentVote.settle` with the digest a trusted
re-execution (or a larger replica set) produced: replicas that revealed it
win, the others lose reputation.
"""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass, field

from ..wire.envelope import RejectedMessage

TAG = b"hypergossip/replication/v1\x00"


class ReplicaRejected(RejectedMessage):
    reason = "replica"


def beacon(prev_state_digest: bytes, round: int) -> bytes:
    """Public randomness for round ``round``: unpredictable before the previous result."""
    return hashlib.sha256(TAG + b"beacon" + prev_state_digest + round.to_bytes(8, "big")).digest()


def assign(beacon_value: bytes, segments: int, replicas: int, eligible: list[str]) -> dict[
        int, list[str]]:
    """Segment -> replicas. Each segment ranks the eligible peers by
    ``H(beacon, segment, peer)`` and takes the best ``replicas`` that still have capacity
    (at most ``ceil(segments * replicas / n)`` tasks each), so work is spread evenly and
    anybody can recompute the assignment. A segment left short once the capacity is used
    up (the last ones can be) is topped up from its ranking beyond the capacity: every
    segment gets ``min(replicas, n)`` distinct replicas, so that two colluders cannot be
    a short segment's only replicas and its quorum."""
    peers = sorted(set(eligible))
    if not peers or replicas < 1:
        return {}
    r = min(replicas, len(peers))
    cap = math.ceil(segments * r / len(peers))
    load = dict.fromkeys(peers, 0)
    out: dict[int, list[str]] = {}
    for k in range(segments):
        ranked = sorted(peers, key=lambda p: hashlib.sha256(
            TAG + beacon_value + k.to_bytes(4, "big") + p.encode()).digest())
        chosen = [p for p in ranked if load[p] < cap][:r]
        chosen += [p for p in ranked if p not in chosen][:r - len(chosen)]
        for p in chosen:
            load[p] += 1
        out[k] = chosen
    return out


def commitment(round: int, segment: int, peer: str, digest: bytes, salt: bytes) -> bytes:
    if len(salt) < 16:
        raise ValueError("salt must be at least 16 random bytes")
    return hashlib.sha256(TAG + b"commit" + round.to_bytes(8, "big") + segment.to_bytes(4, "big")
                          + peer.encode() + b"\x00" + digest + salt).digest()


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    DISPUTED = "disputed"
    UNDECIDED = "undecided"


@dataclass
class Decision:
    verdict: Verdict
    digest: bytes | None = None
    agree: list[str] = field(default_factory=list)  # revealed the decided digest
    disagree: list[str] = field(default_factory=list)  # revealed another digest
    missing: list[str] = field(default_factory=list)  # assigned, no valid reveal


@dataclass
class SegmentVote:
    """Commit-reveal for one segment of one round. Phases: COMMIT -> REVEAL -> decided."""

    round: int
    segment: int
    replicas: list[str]
    quorum: int = 2
    commits: dict[str, bytes] = field(default_factory=dict)
    reveals: dict[str, bytes] = field(default_factory=dict)
    revealing: bool = False

    def commit(self, peer: str, value: bytes) -> None:
        if self.revealing:
            raise ReplicaRejected("the commit phase is closed")
        if peer not in self.replicas:
            raise ReplicaRejected(f"{peer} is not a replica of segment {self.segment}")
        if peer in self.commits:
            raise ReplicaRejected(f"{peer} already committed")
        if len(value) != 32:
            raise ReplicaRejected("a commitment is 32 bytes")
        self.commits[peer] = value

    def close_commits(self) -> None:
        self.revealing = True

    def reveal(self, peer: str, digest: bytes, salt: bytes) -> None:
        if not self.revealing:
            raise ReplicaRejected("reveals open after the commit phase")
        if peer not in self.commits:
            raise ReplicaRejected(f"{peer} did not commit")
        if peer in self.reveals:
            raise ReplicaRejected(f"{peer} already revealed")
        try:
            opened = commitment(self.round, self.segment, peer, digest, salt)
        except ValueError as exc:
            raise ReplicaRejected(str(exc)) from exc
        if opened != self.commits[peer]:
            raise ReplicaRejected("the reveal does not open the commitment")
        self.reveals[peer] = digest

    def decide(self) -> Decision:
        digests = set(self.reveals.values())
        missing = [p for p in self.replicas if p not in self.reveals]
        if len(digests) > 1:
            return Decision(Verdict.DISPUTED, missing=missing)
        if len(self.reveals) < self.quorum:
            return Decision(Verdict.UNDECIDED, missing=missing)
        (digest,) = digests
        return Decision(Verdict.ACCEPTED, digest, sorted(self.reveals), [], missing)

    def settle(self, truth: bytes) -> Decision:
        """Resolve a dispute with the digest a trusted re-execution produced."""
        return settle(self.reveals, self.replicas, truth)


def settle(reveals: dict[str, bytes], replicas: list[str], truth: bytes) -> Decision:
    """The decision once ``truth`` is known: who revealed it, who revealed something else,
    who was assigned and revealed nothing."""
    agree = sorted(p for p, d in reveals.items() if d == truth)
    disagree = sorted(p for p, d in reveals.items() if d != truth)
    missing = [p for p in replicas if p not in reveals]
    return Decision(Verdict.ACCEPTED, truth, agree, disagree, missing)


@dataclass
class Reputation:
    """Scores in [0, 1] starting at ``initial``; agreeing with a decided result earns a
    little, contradicting it costs a lot, failing to reveal costs some. Below
    ``threshold`` a peer gets no more work. Every change is recorded with its reason."""

    initial: float = 0.5
    reward: float = 0.05
    penalty: float = 0.5
    missing_penalty: float = 0.15
    refusal_penalty: float = 0.15  # a clear contribution refused: three take a peer out
    threshold: float = 0.2
    scores: dict[str, float] = field(default_factory=dict)
    history: list[tuple[int, str, float, str]] = field(default_factory=list)

    def score(self, peer: str) -> float:
        return self.scores.get(peer, self.initial)

    def _change(self, round: int, peer: str, delta: float, why: str) -> None:
        new = min(1.0, max(0.0, self.score(peer) + delta))
        new = math.floor(new * 1e9 + 0.5) / 1e9  # no float drift around the threshold
        self.scores[peer] = new
        self.history.append((round, peer, new, why))

    def apply(self, round: int, segment: int, decision: Decision) -> None:
        if decision.verdict is not Verdict.ACCEPTED:
            return
        for p in decision.agree:
            self._change(round, p, self.reward, f"segment {segment}: agreed with the result")
        for p in decision.disagree:
            self._change(round, p, -self.penalty,
                         f"segment {segment}: revealed a digest the decision refuted")
        for p in decision.missing:
            self._change(round, p, -self.missing_penalty, f"segment {segment}: no reveal")

    def reward_for(self, round: int, peer: str, why: str) -> None:
        self._change(round, peer, self.reward, why)

    def penalize(self, round: int, peer: str, why: str) -> None:
        """A proven fault outside a segment decision (e.g. a reveal that does not open its
        own commitment): the full penalty."""
        self._change(round, peer, -self.penalty, why)

    def refused(self, round: int, peer: str, why: str) -> None:
        """A signed contribution that failed validation (over its bound, not finite, the
        wrong shape): costs ``refusal_penalty``; from ``initial`` the third one takes the
        peer below ``threshold``."""
        self._change(round, peer, -self.refusal_penalty, why)

    def eligible(self, peers: list[str]) -> list[str]:
        return [p for p in peers if self.score(p) >= self.threshold]
