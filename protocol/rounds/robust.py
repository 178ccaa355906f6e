"""The robust secure mode: private and Byzantine-robust at once, by secure bucketing.

Theory of operation
-------------------
Under a plain secure sum (:mod:`.secure`) the coordinator sees only the total,
so it can neither check one input nor run a robust aggregator: one peer that
writes large ring elements moves the model anywhere. This mode trades a
little of what the coordinator may learn for robustness, following the
bucketing argument of Karimireddy, He and Jaggi (ICLR 2022, "Byzantine-robust
learning on heterogeneous datasets via bucketing"), with each bucket summed
under SecAgg+ (Bell et al. 2020):

1. **Groups from a public beacon.** The participants are ordered by
   ``SHA-256(beacon || peer id)``, ``beacon = SHA-256(tag || previous state
   digest || round)``, and dealt round-robin into ``G = floor(N / k)`` groups
   of ``k`` or ``k + 1`` (:func:`assign_groups`). Every peer recomputes the
   assignment from the announcement and leaves a round whose groups differ.
2. **One SecAgg+ instance per group**, run in lockstep with the other groups
   (one notice per phase carries every group's body, :class:`GroupBodies`).
   Each group's ``agreement`` (survivor signatures a peer needs before it
   reveals anything) is at least ``k``: an honest peer never helps unmask a
   sum of fewer than ``k`` inputs, whatever the coordinator claims dropped.
   A group that loses a member after the keys phase (``k`` members) is lost
   for this round; the round goes on with the others.
3. **Each group sum is checked** against what ``n`` honest inputs can make:
   every coordinate within ``n * clip``, and, where the workload has an L2
   bound ``C`` on an input (fedavg's clipped update), the L2 norm within
   ``n * C`` (both plus the quantisation error and, with DP on, a bound on
   the noise that fails with probability below 1e-12). A sum outside it proves
   that a member lied; the group is left out (``over_bound``), never wrapped
   into the model. So no input, however crafted (unclipped, maximal
   coordinates, raw ring elements, non-finite), can make a group's mean leave
   the ball an honest mean lies in.
4. **A robust aggregator over the group means** (default
   ``nnm+centered_clipping``: nearest-neighbour mixing, Allouah et al. 2023,
   then centered clipping, Karimireddy et al. 2021), told to tolerate ``f =
   min(floor(tolerance * N) - P, (G' - 1) // 2)`` bad groups among the ``G'``
   that passed (the stages that take an ``f``), where ``P`` groups were left
   out over their bound (each held at least one liar of the ``tolerance * N``
   assumed, and groups are disjoint). ``B`` lying peers touch at
   most ``B`` groups, so the aggregator's guarantee holds while ``B <= f``:
   with the default ``k = floor(1 / (2 * tolerance))`` that is any
   ``B <= tolerance * N`` for ``tolerance < 1/4``.

What the coordinator learns: the sum of each group (at least ``k`` inputs,
with DP noise of the full ``sigma`` when DP is on) and which groups passed;
never one peer's input. SecAgg+'s guarantee holds per group: a coalition of
the coordinator and fewer than a group's threshold of its members learns
nothing beyond that group's sum; colluding members can of course subtract
their own inputs from it, as under any secure sum.

DP: each peer adds noise of std ``sigma / sqrt(k)`` (:func:`protocol.crypto.dp.
calibrate` with ``min_peers = k``), so each group sum is (epsilon, delta)-DP on
its own; groups are disjoint, so releasing all of them is too (parallel
composition), and the model is post-processing.

What it tolerates: ``tolerance`` (default 0.2) of the participants lying in any
way the protocol lets them; ``k`` is the privacy/robustness dial (larger groups
hide more and tolerate fewer liars: ``B < G / 2``). A round cannot be resumed
after a coordinator restart (as :mod:`.secure`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import numpy as np

from ..crypto import dp, secagg
from ..learning import aggregators
from ..wire.messages import RoundAnnounce, Strict, decode, encode
from .base import (
    Leave,
    Mode,
    Notice,
    NotParticipant,
    Opening,
    Outcome,
    Outgoing,
    PeerContext,
    PeerRound,
    RoundClosed,
    RoundLogic,
    RoundMisuse,
    Setup,
)
from .secure import DOMAIN, PHASES, SecureParams, SecurePeerRound, SecureRound, make_params

if TYPE_CHECKING:
    from ..learning.workloads import Workload

TAG = b"hypergossip/groups/v1"
DEFAULT_TOLERANCE = 0.2
DEFAULT_AGGREGATOR = "nnm+centered_clipping"
NOISE_TAIL = 7.0  # standard deviations of slack: a chi or Gaussian tail below 1e-12


class RobustParams(Strict):
    """A robust round's announcement: the groups, each a SecAgg+ round of its own."""

    group_size: Annotated[int, msgspec.Meta(ge=2, le=1000)]  # k
    groups: Annotated[list[SecureParams], msgspec.Meta(max_length=2500)]
    aggregator: Annotated[str, msgspec.Meta(max_length=64)]
    tolerance: Annotated[float, msgspec.Meta(ge=0.0, lt=0.5)]
    l2_bound: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0  # per input; 0: none


class GroupBodies(Strict):
    """A phase notice's body: one body per group (b"" for a group that is out)."""

    bodies: Annotated[list[bytes], msgspec.Meta(max_length=2500)]


def group_beacon(prev_state_digest: bytes, round: int) -> bytes:
    """Public and fixed before the round: the previous result's state digest, hashed."""
    return hashlib.sha256(TAG + prev_state_digest + round.to_bytes(8, "big")).digest()


def assign_groups(beacon: bytes, participants: list[str], k: int) -> list[list[str]]:
    """``participants`` in ``floor(N / k)`` groups of ``k`` or ``k + 1`` (none when
    ``N < k``), dealt round-robin in the order the beacon gives them."""
    order = sorted(participants, key=lambda p: hashlib.sha256(beacon + p.encode()).digest())
    g = len(order) // k
    return [sorted(order[j::g]) for j in range(g)] if g else []


def group_size_for(tolerance: float) -> int:
    """The largest ``k`` whose ``floor(N / k)`` groups keep ``tolerance * N`` liars a
    minority of the groups: ``k = floor(1 / (2 * tolerance))``, at least 2."""
    return max(2, math.floor(1 / (2 * tolerance))) if tolerance > 0 else 2


def bad_groups_tolerated(tolerance: float, participants: int, groups: int,
                         proven: int = 0) -> int:
    """``f`` for the aggregator over ``groups`` group means: the liars ``tolerance``
    allows, less the ``proven`` ones (each group left out over its bound held at least one
    liar, and groups are disjoint), at most what ``groups`` means can outvote."""
    return aggregators.tolerable(math.floor(tolerance * participants) - proven, groups)


def check_params(p: RobustParams, beacon: bytes) -> str | None:
    """Why a peer must not take part in a round announced with ``p`` (None: it may)."""
    members = [m for g in p.groups for m in g.participants]
    if len(set(members)) != len(members):
        return "a peer is in two groups"
    if [list(g.participants) for g in p.groups] != assign_groups(beacon, members,
                                                                  p.group_size):
        return "the groups are not the ones the beacon deals"
    for g in p.groups:
        if g.agreement < p.group_size:
            return f"a group unmasks with {g.agreement} signatures, fewer than k"
        if g.dp_split < p.group_size and g.dp_sigma:
            return "the DP noise is split over fewer than k peers"
    return None


def _group_seed(prev_digest: bytes, index: int) -> bytes:
    return hashlib.sha256(TAG + b"/graph" + prev_digest + index.to_bytes(4, "big")).digest()


def make_robust_params(workload: Workload, round: int, participants: list[str],
                       prev_digest: bytes, *, group_size: int | None = None,
                       tolerance: float = DEFAULT_TOLERANCE,
                       aggregator: str = DEFAULT_AGGREGATOR, dp_epsilon: float = 0.0,
                       dp_delta: float = 1e-5) -> RobustParams:
    """The groups of round ``round`` and each one's SecAgg+ parameters (a complete graph
    inside a group; agreement: every member of a group of k, all but one of k + 1)."""
    k = group_size or group_size_for(tolerance)
    aggregators.get_aggregator(aggregator)  # a bad name fails here, not at the end
    groups = []
    for i, members in enumerate(assign_groups(group_beacon(prev_digest, round),
                                              participants, k)):
        groups.append(make_params(workload, round, members, _group_seed(prev_digest, i),
                                  min_peers=k, dp_epsilon=dp_epsilon, dp_delta=dp_delta,
                                  agreement=max(k, len(members) - 1)))
    return RobustParams(k, groups, aggregator, tolerance, workload.l2_bound() or 0.0)


class RobustRound(RoundLogic):
    """The coordinator's side: one :class:`SecureRound` per group, closed in lockstep;
    at the end the groups' sums are checked and robustly combined."""

    def __init__(self, number: int, workload: Workload, params: RobustParams, *,
                 min_peers: int, phase_timeout: float, now: float):
        self.number, self.workload, self.params = number, workload, params
        self.min_peers, self.phase_timeout = min_peers, phase_timeout
        self.groups = [SecureRound(number, workload, g, min_peers=1,
                                   phase_timeout=phase_timeout, now=now)
                       for g in params.groups]
        self.group_of = {p: i for i, g in enumerate(params.groups) for p in g.participants}
        self.out: dict[int, str] = {}  # group -> why it is out of this round
        self.phase = PHASES[0]
        self.deadline = now + phase_timeout
        self.rejected: dict[str, int] = {}

    def _active(self) -> list[tuple[int, SecureRound]]:
        return [(i, g) for i, g in enumerate(self.groups) if i not in self.out]

    def offer_message(self, sender: str, domain: str, payload: bytes) -> None:
        i = self.group_of.get(sender)
        if i is None:
            raise NotParticipant(f"{sender} is in no group of round {self.number}")
        if i in self.out:
            raise RoundClosed(f"group {i} of round {self.number} is out: {self.out[i]}")
        self.groups[i].offer_message(sender, domain, payload)

    def ready(self, now: float, live: set[str]) -> bool:
        return now >= self.deadline or not any(g.waiting_for() & live
                                               for _, g in self._active())

    def accepted_count(self) -> int:
        return sum(g.accepted_count() for _, g in self._active())

    def advance(self, now: float) -> Notice | Outcome:
        self.deadline = now + self.phase_timeout
        if self.phase not in PHASES:
            raise RoundMisuse(f"advance after the round ended ({self.phase})")
        if not self.groups:
            self.phase = "failed"
            return Outcome("failed", 0, {"error": f"fewer participants than one group of "
                                         f"{self.params.group_size}"})
        if self.phase != PHASES[-1]:
            return self._close_phase()
        return self._finish()

    def _close_phase(self) -> Notice | Outcome:
        bodies, personal, nxt = [b""] * len(self.groups), {}, None
        for i, g in self._active():
            try:
                notice = g.close(self.phase)
            except secagg.SecAggAbort as exc:
                self.out[i] = f"aborted in {self.phase}: {exc}"
                continue
            g.phase = nxt = notice.phase
            bodies[i] = notice.body
            personal.update(notice.personal)
        if nxt is None:
            self.phase = "failed"
            return Outcome("failed", 0, {"error": "every group aborted",
                                         "secure_aggregation": self._report([])})
        self.phase = nxt
        return Notice(nxt, body=encode(GroupBodies(bodies)), personal=personal)

    def _finish(self) -> Outcome:
        means, sizes, included, rows = [], [], [], []
        for i, g in enumerate(self.groups):
            row: dict[str, Any] = {"group": i, "members": len(self.params.groups[i].participants)}
            rows.append(row)
            if i in self.out:
                row["status"] = "out"
                row["reason"] = self.out[i]
                continue
            try:
                total, survivors, _ = g.finish()
            except secagg.SecAggAbort as exc:
                row.update(status="out", reason=f"aborted in unmask: {exc}")
                continue
            g.phase = "done"
            row["survivors"] = len(survivors)
            why = self._out_of_bound(total, len(survivors), g)
            if why:
                row.update(status="over_bound", reason=why)
                continue
            row["status"] = "ok"
            means.append(total / len(survivors))
            sizes.append(len(survivors))
            included += survivors
        self.phase = "done"
        report = self._report(rows, included, len(means))
        n = len(included)
        if n < self.min_peers or not means:
            return Outcome("failed", n, {"error": f"quorum not met: {n} peers in groups that "
                                         f"passed < {self.min_peers}",
                                         "secure_aggregation": report})
        proven = sum(1 for row in rows if row["status"] == "over_bound")
        f = bad_groups_tolerated(self.params.tolerance, len(self.group_of), len(means), proven)
        mean = aggregators.combine(self.params.aggregator, np.stack(means), f=f)
        result = self.workload.finalize(mean * n, n)
        gp = self.params.groups[0]
        if gp.dp_sigma:
            result["dp"] = dp.report(gp.dp_sigma, gp.dp_split, self.workload.sensitivity(),
                                     gp.dp_delta, gp.dp_epsilon, min(sizes))
        report["f"] = f
        result["secure_aggregation"] = report
        return Outcome("published", n, result)

    def _out_of_bound(self, total: np.ndarray, n: int, g: SecureRound) -> str | None:
        """Why ``total`` (a group's decoded sum of ``n`` inputs) cannot be ``n`` bounded
        inputs' sum plus their noise; None when it can."""
        if not np.all(np.isfinite(total)):
            return "not finite"
        p = g.params
        noise = p.dp_sigma * math.sqrt(n / p.dp_split) if p.dp_sigma else 0.0
        slack = g.cfg.encoding.error_bound(n)
        coord = n * self.workload.clip + slack + NOISE_TAIL * noise
        worst = float(np.max(np.abs(total)))
        if worst > coord:
            return f"a coordinate is {worst:.4g}, beyond {n} inputs' {coord:.4g}"
        if self.params.l2_bound:
            m = len(total)
            bound = (n * self.params.l2_bound + slack * math.sqrt(m) +
                     noise * (math.sqrt(m) + NOISE_TAIL))
            norm = float(np.linalg.norm(total))
            if norm > bound:
                return f"L2 norm {norm:.4g}, beyond {n} inputs' {bound:.4g}"
        return None

    def _report(self, rows: list[dict[str, Any]], included: list[str] | None = None,
                passed: int = 0) -> dict[str, Any]:
        p = self.params
        return {"protocol": "SecAgg+ per group (Bell et al. 2020), robust aggregation of the "
                            "group means (secure bucketing, Karimireddy et al. 2022)",
                "participants": len(self.group_of), "group_size": p.group_size,
                "groups": len(p.groups), "groups_passed": passed, "aggregator": p.aggregator,
                "tolerance": p.tolerance, "l2_bound": p.l2_bound,
                "included": sorted(included or []), "by_group": rows}


class RobustPeerRound(PeerRound):
    """A peer's side: check the announced groups, then run SecAgg+ in its own group,
    reading its group's body from each notice."""

    phases = SecurePeerRound.phases
    offload = False

    def __init__(self, peer_id: str, workload: Workload, announce: RoundAnnounce,
                 vector: np.ndarray, sign: Callable[[bytes], bytes],
                 inner: Callable[..., SecurePeerRound] = SecurePeerRound):
        """``inner``: the SecAgg+ client round run in this peer's group (a test or an
        attack substitutes its own)."""
        params = decode(announce.params, RobustParams)
        why = check_params(params, group_beacon(announce.prev_state_digest, announce.round))
        if why:
            raise Leave(f"round {announce.round}: {why}")
        mine = [i for i, g in enumerate(params.groups) if peer_id in g.participants]
        if not mine:
            raise Leave(f"round {announce.round}: this peer is in no group")
        self.index = mine[0]
        group = msgspec.structs.replace(announce, params=encode(params.groups[self.index]))
        self.inner = inner(peer_id, workload, group, vector, sign)

    def start(self) -> Outgoing:
        return self.inner.start()

    def needs_personal(self, phase: str) -> bool:
        return self.inner.needs_personal(phase)

    def needs_body(self, phase: str) -> bool:
        return self.inner.needs_body(phase)

    def on_notice(self, phase: str, body: bytes, personal: bytes | None) -> Outgoing:
        bodies = decode(body, GroupBodies).bodies
        if self.index >= len(bodies):
            raise Leave(f"the {phase} notice has no body for group {self.index}")
        mine = bodies[self.index]
        if not mine and phase != PHASES[2]:  # the masked phase's notice is all personal
            raise Leave(f"group {self.index} is out of this round")
        return self.inner.on_notice(phase, mine, personal)


class RobustMode(Mode):
    """SecAgg+ per beacon-drawn group, each group sum bound-checked, a robust aggregator
    over the group means: the default secure mode of workloads with an L2 input bound."""

    name = "robust"
    min_participants = 2
    domains = frozenset(DOMAIN.values())

    def serves(self, workload: Workload) -> bool:
        return workload.l2_bound() is not None

    def open(self, setup: Setup) -> Opening:
        s = setup.settings
        params = make_robust_params(setup.workload, setup.number, setup.participants,
                                    setup.prev_digest, group_size=s.group_size,
                                    tolerance=s.robust_tolerance,
                                    aggregator=s.robust_aggregator, dp_epsilon=s.dp_epsilon,
                                    dp_delta=s.dp_delta)
        rnd = RobustRound(setup.number, setup.workload, params, min_peers=s.min_peers,
                          phase_timeout=s.phase_timeout, now=setup.now)
        members = sorted(rnd.group_of)
        notes = []
        if len(members) < len(setup.participants):
            notes.append(f"{len(setup.participants) - len(members)} participants fit no group "
                         f"of {params.group_size}")
        return Opening(rnd, setup.now + 4 * s.phase_timeout, params=encode(params),
                       participants=members or None, asked=members, notes=notes)

    def replay(self, announce: RoundAnnounce, workload: Workload) -> RobustRound:
        return RobustRound(announce.round, workload, decode(announce.params, RobustParams),
                           min_peers=announce.min_peers, phase_timeout=0.0, now=0.0)

    def participants(self, announce: RoundAnnounce) -> list[str]:
        return [m for g in decode(announce.params, RobustParams).groups for m in g.participants]

    def peer_round(self, ctx: PeerContext) -> RobustPeerRound:
        x = ctx.workload.vector(ctx.announce, ctx.data, ctx.blobs)
        return RobustPeerRound(ctx.peer_id, ctx.workload, ctx.announce, x, ctx.sign)


MODE = RobustMode()
