"""The vss server: collect dealings, accusations and reveals, decide who is
included, and interpolate the sum from the members' aggregate shares.

See :mod:`protocol.crypto.vss` for the protocol and its guarantees.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import msgspec
import numpy as np

from .. import group, rangeproof
from ..common import (
    admit,
    usable_public_key,
)
from ..group import GroupError, L
from .config import (
    VssConfig,
    decode_share,
    lagrange_at_zero,
    share_ok,
    summed,
)
from .messages import (
    Accusations,
    AggregateShare,
    Commitments,
    Dealing,
    Disputes,
    Inclusion,
    MemberInbox,
    MemberKey,
    MemberKeys,
    Reveal,
    SharePoint,
    VssAbort,
    VssMisuse,
    VssRejected,
    included_digest,
)


# --- server ---------------------------------------------------------------------------------
class VssPhase(enum.Enum):
    KEYS = 0
    DEAL = 1
    CHECK = 2
    RESOLVE = 3
    AGGREGATE = 4
    DONE = 5


@dataclass
class VssOutcome:
    total: np.ndarray  # decoded float64 sum over ``included``
    included: list[str]
    rejected: dict[str, str] = field(default_factory=dict)  # peer -> why its message was refused
    disqualified: dict[str, str] = field(default_factory=dict)  # dealer -> why it was excluded
    members: int = 0  # valid aggregate shares received


class VssServer:
    def __init__(self, cfg: VssConfig):
        self.cfg = cfg
        self.phase = VssPhase.KEYS
        self.keys: dict[str, bytes] = {}  # everyone who advertised (members only, if fixed)
        self.members: dict[str, bytes] = {}  # the committee members with keys, once closed
        self.dealings: dict[str, Dealing] = {}
        self.accusations: dict[str, list[str]] = {}  # member -> dealers it accused
        self.disputes: dict[str, list[str]] = {}  # dealer -> members it must answer
        self.reveals: dict[str, Reveal] = {}
        self.revealed: dict[str, dict[str, bytes]] = {}  # dealer -> member -> valid share
        self.disqualified: dict[str, str] = {}
        self.included: list[str] = []
        self.aggregates: dict[str, AggregateShare] = {}
        self.rejected: dict[str, str] = {}  # peer -> why its last refused message was
        self.refused: dict[VssPhase, set[str]] = {p: set() for p in VssPhase}  # by phase
        self.summed: list[list[bytes]] = []  # per coordinate and coefficient, over included

    def _check(self, phase: VssPhase, peer: str, seen: Mapping[str, object],
               allowed: Iterable[str]) -> None:
        admit(self.phase, phase, peer, seen, allowed, VssRejected)

    def _reject(self, peer: str, why: str) -> VssRejected:
        self.rejected[peer] = why
        self.refused[self.phase].add(peer)
        return VssRejected(why)

    def _close(self, phase: VssPhase, count: int = 0, need: int = 0, what: str = "") -> None:
        if self.phase is not phase:
            raise VssMisuse(f"closing {phase.name} while in {self.phase.name}")
        if count < need:
            self.phase = VssPhase.DONE
            raise VssAbort(f"phase {phase.name.lower()} ended with {count} {what}; "
                           f"{need} needed")
        self.phase = VssPhase(phase.value + 1)

    # keys
    def receive_key(self, peer: str, msg: MemberKey) -> None:
        self._check(VssPhase.KEYS, peer, self.keys,
                    self.cfg.participants if self.cfg.replan else self.cfg.committee)
        if not usable_public_key(msg.enc_pk):
            raise self._reject(peer, "an X25519 key of small order")
        self.keys[peer] = msg.enc_pk

    def close_keys(self) -> MemberKeys:
        """Close the keys phase. A re-planning round goes on with the participants that
        advertised (at least ``min_included``), its committee drawn again from them, and
        the directory holds every member's key; a fixed one needs ``threshold`` of its
        committee."""
        if not self.cfg.replan:
            self._close(VssPhase.KEYS, len(self.keys), self.cfg.threshold, "members")
        else:
            self._close(VssPhase.KEYS, len(self.keys), max(2, self.cfg.min_included), "members")
            self.cfg = self.cfg.restricted(self.keys)
        self.members = {m: self.keys[m] for m in self.cfg.committee if m in self.keys}
        return MemberKeys(keys=dict(self.keys))

    # deal
    def receive_dealing(self, peer: str, msg: Dealing) -> None:
        """Accept a dealing whose every point and range proof verifies (the expensive step:
        about 4 scalar multiplications per proven bit)."""
        self._check(VssPhase.DEAL, peer, self.dealings, self.cfg.participants)
        cfg = self.cfg
        if len(msg.commitments) != cfg.dim or len(msg.proofs) != cfg.dim or any(
                len(c) != cfg.threshold for c in msg.commitments):
            raise self._reject(peer, f"dealing must hold {cfg.dim} x {cfg.threshold} "
                                     "commitments and a range proof per coordinate")
        if set(msg.ciphertexts) != set(self.members):
            raise self._reject(peer, "ciphertexts must go to exactly the members with keys")
        if any(len(c) > 12 + 16 + 72 * cfg.dim + 16 for c in msg.ciphertexts.values()):
            raise self._reject(peer, "oversized share ciphertext")
        if not usable_public_key(msg.dealer_pk):
            raise self._reject(peer, "an X25519 dealer key of small order")
        try:
            for points in msg.commitments:
                for p in points:
                    group.point(p)
        except (GroupError, ValueError) as exc:
            raise self._reject(peer, f"bad point in the dealing: {exc}") from exc
        for j in range(cfg.dim):
            if not rangeproof.verify(msg.commitments[j][0], msg.proofs[j], cfg.bits,
                                     cfg.context(peer, j)):
                raise self._reject(peer, f"range proof of coordinate {j} does not verify: "
                                         f"the value is outside [{cfg.low[j]}, {cfg.high[j]}]"
                                         " or the proof is forged")
        self.dealings[peer] = msg

    def close_deal(self) -> tuple[Commitments, dict[str, MemberInbox]]:
        self._close(VssPhase.DEAL, len(self.dealings), self.cfg.min_included, "dealers")
        body = Commitments(dealers={u: d.commitments for u, d in self.dealings.items()},
                           dealer_pks={u: d.dealer_pk for u, d in self.dealings.items()})
        inboxes = {m: MemberInbox(ciphertexts={u: d.ciphertexts[m]
                                               for u, d in self.dealings.items()})
                   for m in self.members}
        return body, inboxes

    # check
    def receive_accusations(self, peer: str, msg: Accusations) -> None:
        self._check(VssPhase.CHECK, peer, self.accusations, self.members)
        if not set(msg.dealers) <= set(self.dealings):
            raise self._reject(peer, "accuses dealers that did not deal")
        self.accusations[peer] = sorted(set(msg.dealers))

    def close_check(self) -> Disputes:
        self._close(VssPhase.CHECK)  # members that stay silent accuse nobody
        for member, dealers in self.accusations.items():
            for u in dealers:
                self.disputes.setdefault(u, []).append(member)
        return Disputes(accused={u: sorted(ms) for u, ms in self.disputes.items()})

    # resolve
    def receive_reveal(self, peer: str, msg: Reveal) -> None:
        self._check(VssPhase.RESOLVE, peer, self.reveals, self.disputes)
        if set(msg.shares) != set(self.disputes[peer]):
            raise self._reject(peer, "must reveal exactly the disputed shares")
        self.reveals[peer] = msg
        for member, plain in msg.shares.items():
            try:
                share = decode_share(plain)
            except (ValueError, msgspec.DecodeError):
                share = None
            if share is None or not share_ok(self.cfg, self.dealings[peer].commitments,
                                              self.cfg.x_of(member), share):
                self.disqualified[peer] = f"its share for {member} does not match its " \
                                          "commitments"
                return
        self.revealed[peer] = dict(msg.shares)

    def close_resolve(self) -> Inclusion:
        self._close(VssPhase.RESOLVE)
        for u in self.disputes:
            if u not in self.reveals and u not in self.disqualified:
                self.disqualified[u] = "accused and did not reveal its shares"
        self.included = sorted(u for u in self.dealings if u not in self.disqualified)
        if len(self.included) < self.cfg.min_included:
            self.phase = VssPhase.DONE
            raise VssAbort(f"only {len(self.included)} dealers left to include")
        self.summed = summed(self.cfg, {u: d.commitments for u, d in self.dealings.items()},
                               self.included)
        return Inclusion(included=self.included,
                         revealed={u: s for u, s in self.revealed.items()
                                   if u in self.included})

    # aggregate
    def receive_aggregate(self, peer: str, msg: AggregateShare) -> None:
        self._check(VssPhase.AGGREGATE, peer, self.aggregates, self.members)
        if msg.included_digest != included_digest(self.included):
            raise self._reject(peer, "aggregate share over another set of dealers")
        share = SharePoint(f=msg.f, g=msg.g)
        if not share_ok(self.cfg, self.summed, self.cfg.x_of(peer), share):
            raise self._reject(peer, "aggregate share does not match the commitments")
        self.aggregates[peer] = msg

    def close_aggregate(self) -> VssOutcome:
        self._close(VssPhase.AGGREGATE, len(self.aggregates), self.cfg.threshold,
                    "valid aggregate shares")
        holders = sorted(self.aggregates, key=self.cfg.x_of)[:self.cfg.threshold]
        xs = [self.cfg.x_of(m) for m in holders]
        basis = lagrange_at_zero(xs)
        totals = []
        for j in range(self.cfg.dim):
            total = sum(b * group.scalar(self.aggregates[m].f[j])
                        for b, m in zip(basis, holders, strict=True)) % L
            if total >= len(self.included) * 2**self.cfg.bits:
                raise VssAbort("the interpolated sum is out of range (inconsistent shares)")
            totals.append(total)
        return VssOutcome(self.cfg.decode_sum(totals, len(self.included)), list(self.included),
                       dict(self.rejected), dict(self.disqualified), len(self.aggregates))




