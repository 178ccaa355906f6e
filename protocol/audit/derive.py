"""Re-deriving a round's published result from public data alone, by replaying it.

An auditor holds a round's record (checked against its signed head:
:func:`protocol.audit.log.check_record`), the result the coordinator published (its
canonical JSON hashes to the signed result's ``state_digest``), the accepted envelopes
the record names (each signed by its sender) and the model the round started from
(fetched by the digest its announcement names). It then **replays** the round: the
round mode builds the coordinator's own state machine from the announcement
(:meth:`protocol.rounds.base.Mode.replay`), the accepted messages go in as the record
orders them, the round advances between phases when a message of the next phase comes,
and at the end the replayed outcome is compared with what was published, and each
replayed phase notice with the signed one the coordinator sent. No per-mode audit code:
a clear round re-sums the signed contributions, a VSS round re-checks every range proof
and interpolates the members' aggregate shares against the sum of the included dealers'
Pedersen commitments, a SecAgg+ round re-runs its unmasking, a replicated round
re-executes its contested segments (:meth:`RoundLogic.remake` makes the agreed ones
again by training, where the coordinator fetched them from peers).

Publishing what the coordinator saw gives an outsider no more than the coordinator had:
the secure modes' guarantees are stated against a coordinator that sees all of it.

One :class:`Finding` per round:

===============  ==============================================================
status           meaning
===============  ==============================================================
checked          the replay gives the published result (``detail`` says what)
failed           it does not; ``lie`` names what the coordinator did:
                 ``drop`` (fewer inputs counted than it accepted),
                 ``double`` (more counted, or one sender's input twice),
                 ``fake-result`` (the result is not what its inputs give),
                 ``unfair-dispute`` (a contested segment settled otherwise than
                 re-execution settles it), ``lied-notice`` (a phase notice that
                 is not what the protocol sends), ``bad-record``, ``withheld``
not checkable    what the replay cannot reach (said plainly: an envelope too
                 large to keep, a pruned starting model, a mode without replay)
===============  ==============================================================
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..learning.workloads import Workload
from ..rounds import get as mode_named
from ..rounds.base import Duplicate, Notice, Outcome, RoundLogic, RoundMisuse, Work, WrongPhase
from ..wire.canonical import canonical_json
from ..wire.envelope import Envelope, RejectedMessage, open_envelope
from ..wire.messages import WITHDRAW, PhaseNotice, RoundAnnounce, decode
from .log import RoundRecord

CHECKED, FAILED, NOT_CHECKABLE = "checked", "failed", "not checkable"
# result keys not derived from the signed inputs alone: values posted over the legacy
# HTTP API (labelled unprotected), refusals and withdrawals (of messages the log lists
# as refusals, not inputs), reputation (a running score over every earlier round), and
# the secure modes' reports (the messages they refused are not in the log)
NOT_DERIVED = frozenset({"unprotected", "combined", "refused", "withdrawn", "reputation",
                         "secure_aggregation", "error"})
MAX_ADVANCES = 64


@dataclass
class Finding:
    round: int
    status: str
    mode: str
    detail: str
    lie: str = ""


class Disagreement(Exception):
    """The replay and the record part ways: ``lie`` and a sentence."""

    def __init__(self, lie: str, why: str):
        super().__init__(why)
        self.lie = lie


def envelopes_of(record: RoundRecord, wires: Mapping[bytes, bytes | None], *,
                 kept: bool = True) -> tuple[list[Envelope], str, str]:
    """The record's accepted envelopes from ``wires`` (digest -> bytes, None when the
    coordinator did not show it), each checked against its entry; and, when one is
    missing or does not match, the lie (``withheld``, ``bad-record``, or "" when the
    round is older than the coordinator keeps envelopes for: not ``kept``) and why."""
    out = []
    for a in record.accepted:
        wire = wires.get(a.digest)
        if wire is None and not kept:
            return out, "", (f"the round's envelopes are no longer kept (message "
                             f"{a.digest.hex()[:16]}): its chain and digests are checked, its "
                             "result not")
        if wire is None:
            return out, "withheld", f"message {a.digest.hex()[:16]} from {a.sender} not shown"
        try:
            env = open_envelope(wire, max_wire=max(a.size, 1))
        except RejectedMessage as exc:
            return out, "bad-record", f"message {a.digest.hex()[:16]}: {exc}"
        if env.wire_digest() != a.digest or env.sender_id != a.sender or \
                env.domain != a.domain or env.round != record.round:
            return out, "bad-record", (f"message {a.digest.hex()[:16]} is not what the record "
                                       "says (sender, domain, round or digest)")
        out.append(env)
    return out, "", ""


def derive(number: int, announce: RoundAnnounce, record: RoundRecord, status: str,
           result: dict[str, Any], accepted: int, wires: Mapping[bytes, bytes | None],
           workload: Callable[[], Workload], blob: Callable[[bytes], bytes | None], *,
           kept: bool = True) -> Finding:
    """Round ``number`` replayed and compared (see the module's docstring). ``wires``:
    the accepted envelopes by digest (None: not shown); ``workload()`` builds the
    workload the announcement names; ``blob(digest)`` fetches a model the coordinator
    kept (None: not shown); ``kept``: the round is recent enough that the coordinator
    must still serve its envelopes."""
    mode = announce.mode
    envelopes, lie, missing = envelopes_of(record, wires, kept=kept)
    if missing:
        return Finding(number, FAILED if lie else NOT_CHECKABLE, mode, missing, lie)
    if status == "failed" and str(result.get("error", "")).startswith("coordinator restarted"):
        return Finding(number, NOT_CHECKABLE, mode, "failed by a coordinator restart: "
                       "nothing was computed to re-derive")
    try:
        w = workload()
        rnd = mode_named(mode).replay(announce, w)
    except (ValueError, TypeError, ImportError, RoundMisuse, RejectedMessage) as exc:
        return Finding(number, NOT_CHECKABLE, mode, f"cannot replay here: {exc}"[:200])
    if w.state_blob() is not None:  # the round started from the model its announcement names
        start = blob(w.required_blobs(announce)[0][0])
        if start is None:
            return Finding(number, NOT_CHECKABLE, mode, "the round's starting model is no "
                           "longer kept, so its result cannot be recomputed")
        w.restore({}, start)
    try:
        outcome = replay(rnd, envelopes, _notices(record))
    except Disagreement as exc:
        return Finding(number, FAILED, mode, str(exc)[:300], exc.lie)
    except Exception as exc:  # the workload's own code, on inputs the coordinator took
        if status == "failed":
            return Finding(number, CHECKED, mode, f"failed, and so does the replay: "
                           f"{type(exc).__name__}: {exc}"[:200])
        return Finding(number, FAILED, mode, f"published, but the replay fails: "
                       f"{type(exc).__name__}: {exc}"[:200], "fake-result")
    finding = compare(number, mode, status, accepted, result, outcome, len(envelopes))
    if finding.status == CHECKED and (note := mode_named(mode).audit_note(announce)):
        finding.detail += f"; {note}"
    return finding


def replay(rnd: RoundLogic, envelopes: list[Envelope], notices: list[tuple[str, bytes]]
           ) -> Outcome:
    """Offer ``envelopes`` to ``rnd`` in order, advancing it when one belongs to a later
    phase; check each notice it makes against ``notices`` (phase, body digest) as signed.
    Raises :class:`Disagreement` when an accepted message is one the protocol refuses or
    a notice differs."""
    sent = iter(notices)

    def step() -> Outcome | None:
        out = rnd.advance(0.0)
        if isinstance(out, Notice):
            mine = (out.phase, hashlib.sha256(out.body).digest())
            if next(sent, None) != mine:
                raise Disagreement("lied-notice", f"the {out.phase} notice the coordinator "
                                   "signed is not the one the protocol gives")
        elif isinstance(out, Work):
            for digest in out.fetch:
                made = rnd.remake(digest)
                if made is not None:
                    rnd.deliver(digest, made)
            if out.compute is not None:
                out.compute()
        return out if isinstance(out, Outcome) else None

    for env in envelopes:
        if env.domain == WITHDRAW:
            continue
        for _ in range(MAX_ADVANCES):
            try:
                rnd.offer_message(env.sender_id, env.domain, env.payload)
                break
            except WrongPhase:
                if step() is not None:
                    raise Disagreement("double", f"{env.sender_id}'s {env.domain} message "
                                       "was accepted after the round ended") from None
            except Duplicate as exc:
                raise Disagreement("double", f"accepted twice: {exc}") from None
            except RejectedMessage as exc:
                raise Disagreement("fake-result", f"accepted a message the protocol "
                                   f"refuses: {env.sender_id}'s {env.domain}: {exc}") from None
    for _ in range(MAX_ADVANCES):
        outcome = step()
        if outcome is not None:
            return outcome
    raise Disagreement("fake-result", "the replayed round did not end")


def compare(number: int, mode: str, status: str, accepted: int, result: dict[str, Any],
            outcome: Outcome, messages: int) -> Finding:
    """The published status, count and result against the replay's."""
    if status != outcome.status:
        return Finding(number, FAILED, mode, f"{status}, but its inputs give a "
                       f"{outcome.status} round", "fake-result" if status == "published"
                       else "drop")
    if accepted != outcome.accepted or _count(result) not in (None, outcome.accepted):
        shown = _count(result) if _count(result) is not None else accepted
        # fewer counted than signed, or more said accepted than the record lists (left out
        # of the record too): a drop; more counted than anyone signed: a double count
        dropped = min(shown, accepted) < outcome.accepted or shown == outcome.accepted
        return Finding(number, FAILED, mode, f"{shown} inputs counted ({accepted} accepted), "
                       f"the signed messages give {outcome.accepted}",
                       "drop" if dropped else "double")
    differs = [k for k, v in sorted(outcome.result.items())
               if k not in NOT_DERIVED and not _same(result.get(k), v)]
    if differs:
        unfair = _unfair_segment(result.get("segments"), outcome.result.get("segments"))
        if unfair is not None:
            return Finding(number, FAILED, mode, f"segment {unfair} was settled on a digest "
                           "its re-execution does not give", "unfair-dispute")
        k = differs[0]
        return Finding(number, FAILED, mode, f"{k} published {_short(result.get(k))}, its "
                       f"inputs give {_short(outcome.result[k])}", "fake-result")
    mine = (outcome.result.get("secure_aggregation") or {}).get("included")
    theirs = (result.get("secure_aggregation") or {}).get("included")
    if mine is not None and theirs != mine:
        return Finding(number, FAILED, mode, "the published list of included inputs is not "
                       "the replay's", "drop")
    return Finding(number, CHECKED, mode, f"{outcome.status}: replayed from {messages} signed "
                   "messages")


def _notices(record: RoundRecord) -> list[tuple[str, bytes]]:
    out = []
    for wire in record.notices:
        n = decode(open_envelope(wire).payload, PhaseNotice)
        body = n.body_ref.digest if n.body_ref is not None else hashlib.sha256(n.body).digest()
        out.append((n.phase, body))
    return out


def _unfair_segment(published: Any, replayed: Any) -> int | None:
    """A contested segment (settled by re-execution) whose published digest is not the
    replay's re-execution's."""
    if not isinstance(published, list) or not isinstance(replayed, list):
        return None
    for p, r in zip(published, replayed, strict=False):
        if isinstance(p, dict) and isinstance(r, dict) and p.get("digest") != r.get(
                "digest") and "re-execution" in (p.get("decided_by"), r.get("decided_by")):
            return r.get("segment")
    return None


def _count(result: dict[str, Any]) -> int | None:
    c = result.get("count")
    return c if isinstance(c, int) else None


def _same(a: Any, b: Any) -> bool:
    try:
        return canonical_json(a) == canonical_json(b)
    except (TypeError, ValueError):
        return False


def _short(v: Any) -> str:
    try:
        return canonical_json(v).decode()[:60] if v is not None else "nothing"
    except (TypeError, ValueError):
        return repr(v)[:60]
