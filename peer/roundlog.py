"""Coordinator-signed announcements and results a node holds, served to others on pull.

Gossip is lossy (empty meshes, silent drops), so every node keeps the signed
envelopes it has seen and answers :data:`PROTO_PULL` requests for them: a
peer that missed round n's announcement or result asks a neighbour or the
coordinator by round. Envelopes are stored as received, so whoever pulls
checks the coordinator's own signature; a relaying neighbour cannot forge.
"""

from __future__ import annotations

from protocol.messages import ANNOUNCE, RESULT, PullRequest, PullResponse, decode, encode

KINDS = {"announce": ANNOUNCE, "result": RESULT}


class RoundLog:
    def __init__(self, keep: int = 1024):
        self.keep = keep
        self._by_kind: dict[str, dict[int, bytes]] = {ANNOUNCE: {}, RESULT: {}}

    def add(self, domain: str, round: int, wire: bytes) -> bool:
        """Store a *verified* envelope; return False when it was already held."""
        table = self._by_kind[domain]
        if round in table:
            return False
        table[round] = wire
        if len(table) > self.keep:
            del table[min(table)]
        return True

    def has(self, domain: str, round: int) -> bool:
        return round in self._by_kind[domain]

    def get(self, domain: str, round: int) -> bytes | None:
        return self._by_kind[domain].get(round)

    def latest(self, domain: str) -> int:
        table = self._by_kind[domain]
        return max(table) if table else 0

    def answer(self, request: bytes) -> bytes:
        """Serve a :class:`PullRequest`; unknown rounds get an empty response."""
        req = decode(request, PullRequest)
        out: list[bytes] = []
        if req.kind == "head":
            for domain in (ANNOUNCE, RESULT):
                r = self.latest(domain)
                if r:
                    out.append(self._by_kind[domain][r])
        elif req.kind in KINDS:
            wire = self.get(KINDS[req.kind], req.round)
            if wire is not None:
                out.append(wire)
        return encode(PullResponse(envelopes=out))

