"""Coordinator-signed announcements, phase notices and results a node holds, served on pull.

Gossip is lossy (empty meshes, silent drops), so every node keeps the signed
envelopes it has seen and answers :data:`PROTO_PULL` requests for them: a
peer that missed round n's announcement, a phase notice or the result asks
a neighbour or the coordinator by round (and phase). Envelopes are stored as
received, so whoever pulls checks the coordinator's own signature; a
relaying neighbour cannot forge.
"""

from __future__ import annotations

from protocol.audit.log import HEAD
from protocol.wire.messages import (
    ANNOUNCE,
    NOTICE,
    RESULT,
    PullRequest,
    PullResponse,
    decode,
    encode,
)

KINDS = {"announce": ANNOUNCE, "result": RESULT, "notice": NOTICE, "loghead": HEAD}


class RoundLog:
    def __init__(self, keep: int = 1024):
        self.keep = keep
        self._by_kind: dict[str, dict[tuple[int, str], bytes]] = {d: {} for d in KINDS.values()}

    def add(self, domain: str, round: int, wire: bytes, tag: str = "") -> bool:
        """Store a *verified* envelope; return False when it was already held."""
        table = self._by_kind[domain]
        if (round, tag) in table:
            return False
        table[(round, tag)] = wire
        if len(table) > self.keep:
            oldest = min(r for r, _ in table)
            for key in [k for k in table if k[0] == oldest]:
                del table[key]
        return True

    def forget(self, domain: str, *, before: int) -> None:
        """Drop ``domain`` envelopes of rounds before ``before`` (a closed round's phase
        notices are moot, and a vss notice can be hundreds of kilobytes)."""
        table = self._by_kind[domain]
        for key in [k for k in table if k[0] < before]:
            del table[key]

    def has(self, domain: str, round: int, tag: str = "") -> bool:
        return (round, tag) in self._by_kind[domain]

    def get(self, domain: str, round: int, tag: str = "") -> bytes | None:
        return self._by_kind[domain].get((round, tag))

    def latest(self, domain: str) -> int:
        table = self._by_kind[domain]
        return max(r for r, _ in table) if table else 0

    def notices(self, round: int) -> list[bytes]:
        return [w for (r, _), w in self._by_kind[NOTICE].items() if r == round]

    def answer(self, request: bytes) -> bytes:
        """Serve a :class:`PullRequest`; unknown items get an empty response."""
        req = decode(request, PullRequest)
        out: list[bytes] = []
        if req.kind == "head":
            latest = self.latest(ANNOUNCE)
            if latest:
                out.append(self._by_kind[ANNOUNCE][(latest, "")])
                out += self.notices(latest)[:8]
            latest = self.latest(RESULT)
            if latest:
                out.append(self._by_kind[RESULT][(latest, "")])
        elif req.kind == "loghead" and req.round == 0 and (latest := self.latest(HEAD)):
            out.append(self._by_kind[HEAD][(latest, "")])  # the round log's latest head
        elif req.kind in KINDS:
            wire = self.get(KINDS[req.kind], req.round, req.tag)
            if wire is not None:
                out.append(wire)
        return encode(PullResponse(envelopes=out))
