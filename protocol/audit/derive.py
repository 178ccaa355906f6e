"""Re-deriving a round's published result from public data alone.

An auditor holds a round's record (checked against its signed head:
:func:`protocol.audit.log.check_record`), the result the coordinator published (its
canonical JSON hashes to the signed result's ``state_digest``), the accepted envelopes
the record names (each signed by its sender) and the models the round started from
(fetched by the digest its announcement names). From those it decides one
:class:`Finding` per round:

===============  ==============================================================
status           meaning
===============  ==============================================================
checked          every check this mode allows passed (``detail`` says which)
failed           a check failed; ``lie`` names what the coordinator did:
                 ``drop`` (an accepted contribution left out of the result),
                 ``double`` (one counted twice, or more counted than signed),
                 ``fake-result`` (the result is not what the signed inputs give),
                 ``bad-record`` (a record that is not what the head signed, or an
                 envelope that is not the sender's), ``withheld`` (an envelope or
                 model the record names that it will not show)
not checkable    what this auditor cannot re-derive for the mode (said plainly)
===============  ==============================================================

Per mode: **clear** rounds are recomputed: each accepted contribution decoded and
checked as the coordinator must have, combined by the workload's own ``aggregate``
(for a model, from the round's starting model), and compared key by key with the
published result. The secure and replicated modes are checked for what is public
(signatures, the record's integrity) and marked not checkable for the rest.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..learning.workloads import Workload
from ..wire.canonical import canonical_json
from ..wire.envelope import Envelope, RejectedMessage, open_envelope
from ..wire.messages import CONTRIBUTION, RoundAnnounce, decode
from .log import RoundRecord

CHECKED, FAILED, NOT_CHECKABLE = "checked", "failed", "not checkable"
# keys a clear result holds that are not derived from the contributions alone: values
# posted over the legacy HTTP API (labelled unprotected), refusals, withdrawals
NOT_DERIVED = frozenset({"unprotected", "combined", "refused", "withdrawn"})


@dataclass
class Finding:
    round: int
    status: str
    mode: str
    detail: str
    lie: str = ""


def envelopes_of(record: RoundRecord, wires: Mapping[bytes, bytes | None]
                 ) -> tuple[list[Envelope], str]:
    """The record's accepted envelopes from ``wires`` (digest -> bytes, None when the
    coordinator did not show it), each checked against its entry; and why not, if any is
    missing or does not match."""
    out = []
    for a in record.accepted:
        wire = wires.get(a.digest)
        if wire is None:
            return out, f"message {a.digest.hex()[:16]} from {a.sender} not shown"
        try:
            env = open_envelope(wire)
        except RejectedMessage as exc:
            return out, f"message {a.digest.hex()[:16]}: {exc}"
        if env.wire_digest() != a.digest or env.sender_id != a.sender or \
                env.domain != a.domain or env.round != record.round:
            return out, (f"message {a.digest.hex()[:16]} is not what the record says (sender, "
                         "domain, round or digest)")
        out.append(env)
    return out, ""


def derive_clear(number: int, workload: Workload, announce: RoundAnnounce, status: str,
                 result: dict[str, Any], accepted: int, envelopes: list[Envelope],
                 model: Callable[[bytes], bytes | None]) -> Finding:
    """A clear round re-derived: see the module's docstring. ``accepted`` is the signed
    result's count; ``model(digest)`` the starting model's bytes, when the workload has
    one (None: not shown)."""
    contribs = [e for e in envelopes if e.domain == CONTRIBUTION]
    senders = Counter(e.sender_id for e in contribs)
    twice = sorted(p for p, n in senders.items() if n > 1)
    if twice:
        return Finding(number, FAILED, "clear", f"{twice[0]} has {senders[twice[0]]} "
                       "contributions in the record (one is allowed)", "double")
    n = len(contribs)
    if status != "published":
        if n >= announce.min_peers and "quorum" in str(result.get("error", "")):
            return Finding(number, FAILED, "clear", f"failed for want of a quorum of "
                           f"{announce.min_peers} with {n} signed contributions", "drop")
        return Finding(number, CHECKED, "clear", f"failed round ({n} contributions): "
                       f"{str(result.get('error', ''))[:80]}")
    if accepted != n or _count(result) not in (None, n):
        lie = "drop" if min(accepted, _count(result) or accepted) < n else "double"
        return Finding(number, FAILED, "clear", f"published {_count(result)} counted "
                       f"({accepted} accepted) from {n} signed contributions", lie)
    try:
        if workload.state_blob() is not None:
            start = _start_model(workload, announce, model)
            if start is None:
                return Finding(number, NOT_CHECKABLE, "clear", "the round's starting model "
                               "is no longer kept, so its result cannot be recomputed")
            workload.restore({}, start)
        inputs = {}
        for e in contribs:
            c = decode(e.payload, workload.contribution_schema)
            workload.check(c)
            inputs[e.sender_id] = c
    except RejectedMessage as exc:
        return Finding(number, FAILED, "clear", f"an accepted contribution is invalid: {exc}",
                       "fake-result")
    expected = workload.aggregate(inputs)
    differs = [k for k in expected if k not in NOT_DERIVED and
               not _same(result.get(k), expected[k])]
    if differs:
        k = differs[0]
        return Finding(number, FAILED, "clear", f"{k} published {_short(result.get(k))}, the "
                       f"{n} signed contributions give {_short(expected[k])}", "fake-result")
    return Finding(number, CHECKED, "clear", f"result recomputed from {n} signed "
                   "contributions")


Deriver = Callable[..., Finding]
DERIVERS: dict[str, Deriver] = {}  # round mode -> its re-derivation (filled below)


def derive(number: int, announce: RoundAnnounce, status: str, result: dict[str, Any],
           accepted: int, envelopes: list[Envelope], workload: Callable[[], Workload],
           model: Callable[[bytes], bytes | None]) -> Finding:
    """Round ``number`` re-derived by its mode's deriver (``workload()`` builds the
    workload the announcement names); a mode without one is not checkable past its
    signatures."""
    deriver = DERIVERS.get(announce.mode)
    if deriver is None:
        return Finding(number, NOT_CHECKABLE, announce.mode, f"{len(envelopes)} signed "
                       f"messages checked; the {announce.mode} result is not re-derived by "
                       "this auditor")
    try:
        w = workload()
    except (ValueError, TypeError, ImportError) as exc:  # WorkloadNotFound is a ValueError
        return Finding(number, NOT_CHECKABLE, announce.mode, f"workload not available here: "
                       f"{exc}"[:200])
    return deriver(number, w, announce, status, result, accepted, envelopes, model)


def _start_model(workload: Workload, announce: RoundAnnounce,
                 model: Callable[[bytes], bytes | None]) -> bytes | None:
    digest = workload.required_blobs(announce)[0][0]
    return model(digest)


def _count(result: dict[str, Any]) -> int | None:
    c = result.get("count")
    return c if isinstance(c, int) else None


def _same(a: Any, b: Any) -> bool:
    try:
        return canonical_json(a) == canonical_json(b)
    except (TypeError, ValueError):
        return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)


def _short(v: Any) -> str:
    return canonical_json(v).decode()[:60] if v is not None else "nothing"


DERIVERS["clear"] = derive_clear
