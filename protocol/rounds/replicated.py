"""The replicated mode: replicas train the same task, commit, reveal, and agree.

The protocol is described in :mod:`protocol.learning.incremental` (the workload it
runs); this module is its round: the coordinator's :class:`ReplicatedRound`, a
replica's :class:`ReplicaPeerRound`, and :class:`ReplicatedMode`. Everything is
sans-IO: the round returns a :class:`Work` step when it needs blobs fetched or
segments re-executed, and the driver delivers the bytes. Commitments and reveals are
public: peers also gossip them (``public_domains``) so anyone can audit a round.
A replicated round cannot be resumed after a coordinator restart.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..learning.replicable import Replicable, TaskParams, extra_replicas
from ..learning.workloads import models  # lazy: torch loads only when a round trains
from ..policy.replication import (
    Decision,
    ReplicaRejected,
    Reputation,
    SegmentVote,
    Verdict,
    commitment,
    settle,
)
from ..wire.messages import RoundAnnounce, SchemaError, decode, encode
from .base import (
    Mode,
    Notice,
    Opening,
    Outcome,
    PeerContext,
    RoundLogic,
    RoundMisuse,
    Setup,
    Work,
    WrongPhase,
)
from .replica import (
    COMMIT,
    DOMAIN_COMMIT,
    DOMAIN_REVEAL,
    DOMAINS,
    EXTRA_COMMIT,
    EXTRA_REVEAL,
    REVEAL,
    WORK,
    BadReveal,
    Commits,
    ExtraAssignment,
    ReplicaPeerRound,
    Reveals,
)


# --- the coordinator's round ------------------------------------------------------------------
@dataclass
class ReplicatedRound(RoundLogic):
    number: int
    workload: Replicable
    params: TaskParams
    reputation: Reputation
    phase_timeout: float
    deadline: float
    rejected: dict[str, int] = field(default_factory=dict)
    stage: str = COMMIT
    votes: dict[int, SegmentVote] = field(default_factory=dict)
    extra: dict[int, SegmentVote] = field(default_factory=dict)
    bad_reveals: dict[int, set[str]] = field(default_factory=dict)
    decisions: dict[int, Decision] = field(default_factory=dict)
    how: dict[int, str] = field(default_factory=dict)
    blobs: dict[bytes, bytes] = field(default_factory=dict)
    weights: dict[int, np.ndarray] = field(default_factory=dict)
    pending: list[int] = field(default_factory=list)  # segments awaiting re-execution
    work_done: int = 0

    def __post_init__(self) -> None:
        for k, reps in enumerate(self.params.assignment):
            if reps:
                self.votes[k] = SegmentVote(self.number, k, list(reps), self.params.quorum)

    def domains(self) -> frozenset[str]:
        return DOMAINS

    @property
    def verified(self) -> bool:
        return self.params.replicas > 1

    def _open_votes(self) -> dict[int, SegmentVote]:
        return self.extra if self.stage in (EXTRA_COMMIT, EXTRA_REVEAL) else self.votes

    def offer_message(self, sender: str, domain: str, payload: bytes) -> None:
        votes = self._open_votes()
        if domain == DOMAIN_COMMIT and self.stage in (COMMIT, EXTRA_COMMIT):
            items = decode(payload, Commits).items
            self._check_items(sender, [i.segment for i in items], votes)
            for i in items:
                if sender in votes[i.segment].commits:
                    raise ReplicaRejected(f"{sender} already committed to segment {i.segment}")
            for i in items:
                votes[i.segment].commit(sender, i.commitment)
        elif domain == DOMAIN_REVEAL and self.stage in (REVEAL, EXTRA_REVEAL):
            items = decode(payload, Reveals).items
            self._check_items(sender, [i.segment for i in items], votes)
            for i in items:
                vote = votes[i.segment]
                if sender not in vote.commits or sender in vote.reveals:
                    raise ReplicaRejected(f"{sender} has no open commitment on segment "
                                          f"{i.segment}")
                if commitment(self.number, i.segment, sender, i.digest, i.salt) != \
                        vote.commits[sender]:
                    # signed evidence of equivocation (or of copying someone's answer)
                    self.bad_reveals.setdefault(i.segment, set()).add(sender)
                    raise BadReveal(f"reveal for segment {i.segment} does not open "
                                    f"{sender}'s commitment")
            for i in items:
                votes[i.segment].reveal(sender, i.digest, i.salt)
        else:
            raise WrongPhase(f"{domain} is not taken in the {self.stage} phase")

    def _check_items(self, sender: str, segments: list[int],
                     votes: Mapping[int, SegmentVote]) -> None:
        if len(set(segments)) != len(segments):
            raise SchemaError("a segment is listed twice")
        for k in segments:
            if k not in votes or sender not in votes[k].replicas:
                raise ReplicaRejected(f"{sender} is not a replica of segment {k} now")

    def _waiting_for(self) -> set[str]:
        votes = self._open_votes()
        if self.stage in (COMMIT, EXTRA_COMMIT):
            return {p for v in votes.values() for p in v.replicas if p not in v.commits}
        bad = {p for s in self.bad_reveals.values() for p in s}
        return {p for v in votes.values() for p in v.commits
                if p not in v.reveals and p not in bad}

    def ready(self, now: float, live: set[str]) -> bool:
        if self.stage == WORK:
            return True
        return now >= self.deadline or not (self._waiting_for() & live)

    def accepted_count(self) -> int:
        return len(self.weights)

    def advance(self, now: float) -> Notice | Outcome | Work:
        if self.stage == COMMIT:
            for v in self.votes.values():
                v.close_commits()
            self.stage, self.deadline = REVEAL, now + self.phase_timeout
            return Notice(REVEAL)
        if self.stage == REVEAL:
            contested = self._decide_first()
            if contested and self.params.dispute == "replicas":
                body = self._open_extra(contested)
                if body is not None:
                    self.stage, self.deadline = EXTRA_COMMIT, now + self.phase_timeout
                    return Notice(EXTRA_COMMIT, body=encode(body))
            self.pending = contested
            return self._work()
        if self.stage == EXTRA_COMMIT:
            for v in self.extra.values():
                v.close_commits()
            self.stage, self.deadline = EXTRA_REVEAL, now + self.phase_timeout
            return Notice(EXTRA_REVEAL)
        if self.stage == EXTRA_REVEAL:
            self.pending = self._decide_extra()
            return self._work()
        if self.stage == WORK:
            return self._after_work()
        raise RoundMisuse(f"round {self.number}: advance in stage {self.stage}")

    def _decide_first(self) -> list[int]:
        """Decide every segment on its first replicas; return the contested ones."""
        contested = []
        for k, vote in self.votes.items():
            d = vote.decide()
            if d.verdict is Verdict.ACCEPTED:
                self.decisions[k] = d
                self.how[k] = "quorum" if self.verified else "unverified (r=1)"
            elif self.verified:
                contested.append(k)
            else:
                self.how[k] = "no result"
        return contested

    def _open_extra(self, contested: list[int]) -> ExtraAssignment | None:
        segs, reps = [], []
        for k in contested:
            extra = extra_replicas(self.params, k, self.params.replicas)
            if extra:
                self.extra[k] = SegmentVote(self.number, k, extra, 1)
                segs.append(k)
                reps.append(extra)
        return ExtraAssignment(segs, reps) if segs else None

    def _decide_extra(self) -> list[int]:
        """Decide contested segments on all their reveals: a digest revealed by a quorum and
        by more than half of all who revealed wins; otherwise the coordinator re-executes."""
        left = []
        for k in sorted(set(self.votes) - set(self.decisions)):
            reveals = dict(self.votes[k].reveals)
            if k in self.extra:
                reveals.update(self.extra[k].reveals)
            top = Counter(reveals.values()).most_common(1)
            if top and top[0][1] >= self.params.quorum and 2 * top[0][1] > len(reveals):
                self.decisions[k] = self._settle(k, top[0][0])
                self.how[k] = "extra replicas"
            else:
                left.append(k)
        return left

    def _settle(self, k: int, truth: bytes) -> Decision:
        """Settle segment ``k`` over its first and extra replicas together."""
        reveals = dict(self.votes[k].reveals)
        replicas = list(self.votes[k].replicas)
        if k in self.extra:
            reveals.update(self.extra[k].reveals)
            replicas += self.extra[k].replicas
        return settle(reveals, replicas, truth)

    def _work(self) -> Work:
        self.stage = WORK
        fetch = {}
        for k, d in self.decisions.items():
            assert d.digest is not None
            if k not in self.weights and d.digest not in self.blobs:
                fetch[d.digest] = list(d.agree)
        recompute = list(self.pending) if self.verified else []
        start = self.workload.weights.copy()  # the round's start: the published model
        compute = (lambda: self.recompute(start)) if recompute else None
        return Work(fetch=fetch, max_size=self.params.model_size + 4096, compute=compute,
                    what=f"re-executing contested segments {recompute}")

    def deliver(self, digest: bytes, blob: bytes) -> None:
        """The driver fetched ``blob`` (its SHA-256 already checked against ``digest``)."""
        if hashlib.sha256(blob).digest() != digest:
            raise RoundMisuse("delivered a blob under the wrong digest")
        self.blobs[digest] = blob

    def remake(self, digest: bytes) -> bytes | None:
        """The agreed weights of the segment decided on ``digest``, trained again here from
        the round's start (an auditor's replay); None if training does not give them."""
        for k, d in sorted(self.decisions.items()):
            if d.digest == digest:
                w = self.workload.train_task(self.workload.weights.copy(),
                                             self.workload.task_data(), self.params,
                                             self.number, k)
                blob = models.encode_weights(w)
                return blob if hashlib.sha256(blob).digest() == digest else None
        return None

    def recompute(self, start: np.ndarray) -> None:
        """Coordinator re-execution of the pending segments (CPU work: run it in a thread)."""
        for k in self.pending:
            w = self.workload.train_task(start, self.workload.task_data(), self.params,
                                         self.number, k)
            blob = models.encode_weights(w)
            digest = hashlib.sha256(blob).digest()
            self.blobs[digest] = blob
            self.decisions[k] = self._settle(k, digest)
            self.how[k] = "re-execution"
        self.pending = []

    def _after_work(self) -> Outcome | Work:
        self.work_done += 1
        for k, d in sorted(self.decisions.items()):
            blob = self.blobs.get(d.digest or b"")
            if blob is None or k in self.weights:
                continue
            try:
                self.weights[k] = self.workload.decode_model(blob)
            except Exception as exc:  # an agreed digest of bytes that are not weights
                self.how[k] = f"refused: {exc}"[:120]
        unfetched = [k for k in self.decisions if k not in self.weights]
        if unfetched and self.verified and self.work_done < 2:
            for k in unfetched:  # nobody served the agreed weights: the coordinator trains
                del self.decisions[k]
            self.pending = unfetched
            return self._work()
        return self._finish()

    def _finish(self) -> Outcome:
        if self.verified:
            for k, d in sorted(self.decisions.items()):
                self.reputation.apply(self.number, k, d)
        for k, vote in self.votes.items():  # r=1: no verdict to reward, but no-shows cost
            if not self.verified and k not in self.decisions:
                for p in vote.replicas:
                    self.reputation.apply(self.number, k, Decision(
                        Verdict.ACCEPTED, None, [], [], [p]))
        for k, peers in sorted(self.bad_reveals.items()):
            for p in sorted(peers):
                self.reputation.penalize(self.number, p,
                                         f"segment {k}: reveal did not open its commitment")
        result = self.workload.apply(self.number, self.weights)
        result.update(self._report())
        status = "published" if self.weights else "failed"
        if not self.weights:
            result["error"] = "no segment result was accepted"
        return Outcome(status, len(self.weights), result)

    def _report(self) -> dict[str, Any]:
        rows = []
        for k, vote in sorted(self.votes.items()):
            d = self.decisions.get(k)
            rows.append({
                "segment": k, "replicas": vote.replicas,
                "extra_replicas": self.extra[k].replicas if k in self.extra else [],
                "decided_by": self.how.get(k, "no result"),
                "digest": d.digest.hex() if d and d.digest else None,
                "agree": d.agree if d else [], "disagree": d.disagree if d else [],
                "missing": d.missing if d else [p for p in vote.replicas
                                                 if p not in vote.reveals],
                "bad_reveal": sorted(self.bad_reveals.get(k, ())),
                "used": k in self.weights,
            })
        changed = {p: self.reputation.score(p) for r, p, _, _ in self.reputation.history
                   if r == self.number}
        return {"round_task": {"segments": self.params.segments,
                               "replicas": self.params.replicas, "quorum": self.params.quorum,
                               "dispute": self.params.dispute,
                               "beacon": self.params.beacon.hex()},
                "segments": rows, "reputation": changed,
                "disputes": sum(1 for r in rows if r["decided_by"] in (
                    "re-execution", "extra replicas"))}








class ReplicatedMode(Mode):
    """Replicated deterministic training with commit-reveal, for replicated workloads."""

    name = "replicated"
    domains = DOMAINS
    public_domains = DOMAINS

    def serves(self, workload: Any) -> bool:
        return isinstance(workload, Replicable)

    def open(self, setup: Setup) -> Opening:
        workload: Replicable = setup.workload  # type: ignore[assignment]
        eligible = setup.reputation.eligible(setup.participants)
        task = workload.make_params(setup.number, setup.prev_digest, eligible)
        deadline = setup.now + setup.settings.phase_timeout
        rnd = ReplicatedRound(setup.number, workload, task, setup.reputation,
                              setup.settings.phase_timeout, deadline)
        left_out = sorted(set(setup.participants) - set(eligible))
        notes = [f"{len(left_out)} peers below the reputation threshold get no task: "
                 f"{left_out}"] if left_out else []
        # replicas answer for no-shows by reputation, not attendance: nobody is asked
        return Opening(rnd, deadline, workload_params=encode(task), asked=[], notes=notes)

    def replay(self, announce: RoundAnnounce, workload: Any) -> ReplicatedRound:
        """The round as announced; reputation starts afresh (the published result's
        reputation changes are not re-derived: they run over every earlier round)."""
        if not isinstance(workload, Replicable):
            raise SchemaError(f"workload {workload.name} cannot run replicated rounds")
        task = decode(announce.workload_params, TaskParams)
        if workload.shared_digest(workload.task_data(), task.segments) != task.data_digest:
            raise SchemaError("the training data here differs from the round's")
        return ReplicatedRound(announce.round, workload, task, Reputation(), 0.0,
                               float("inf"))

    def participants(self, announce: RoundAnnounce) -> list[str]:
        return decode(announce.workload_params, TaskParams).eligible

    def peer_round(self, ctx: PeerContext) -> ReplicaPeerRound:
        if not isinstance(ctx.workload, Replicable):
            raise SchemaError(f"workload {ctx.workload.name} cannot run replicated rounds")
        return ReplicaPeerRound(ctx.peer_id, ctx.workload, ctx.announce, ctx.data, ctx.blobs)


MODE = ReplicatedMode()
