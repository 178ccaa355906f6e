"""The coordinator's side of the round log (:mod:`protocol.audit.log`): after each round's
result, write its record (chained to the last one), sign its head, keep both in SQLite.

The record names the round's accepted messages by digest; their envelopes stay in the
store's messages table (served by digest to auditors) for the last ``--log-keep``
rounds (then the round stays in the chain by digest, no longer re-derivable), and the
records themselves until ``--log-retain`` (default: forever). Values posted over the legacy HTTP
API are not signed envelopes: they are not listed, and the result labels them
unprotected.
"""

from __future__ import annotations

from protocol.audit.log import (
    GENESIS,
    HEAD,
    Accepted,
    Refusal,
    build,
    record_hash,
)
from protocol.wire.messages import encode

from .legacy import LEGACY
from .outbox import Outbox
from .store import Store

# rounds whose accepted envelopes stay served: a round of 100 fedavg peers holds 20 MB of
# them (masked model vectors), one of 100 SecAgg+ peers with M=1000 about 2 MB
KEEP_ENVELOPES = 32


class LogWriter:
    def __init__(self, store: Store, outbox: Outbox, *, retain: int = 0,
                 keep: int = KEEP_ENVELOPES, lie: str = ""):
        self.store, self.outbox, self.retain = store, outbox, retain
        self.keep, self.lie = keep, lie  # lie: coordinator.lies, tests only
        store.set_meta("log_keep", str(keep))  # GET /log tells auditors

    def write(self, number: int, result_wire: bytes, refusals: list[Refusal],
              uncounted: int = 0) -> tuple[bytes, bytes | None]:
        """Record round ``number`` (closed, its result sealed as ``result_wire``) and return
        its signed head (and, for ``--lie equivocate`` only, a second head over another
        history). Call before the outbox forgets the round's notices."""
        row = self.store.round_row(number)
        announce = bytes(row["announce_wire"]) if row is not None and row["announce_wire"] \
            else b""
        accepted = [Accepted(bytes(r["digest"]), r["sender"], r["domain"], r["size"])
                    for r in self.store.log.accepted(number, skip=LEGACY)]
        if self.lie == "drop-hidden" and len(accepted) > 1:  # the one the result left out
            hidden = min(a.sender for a in accepted)
            accepted = [a for a in accepted if a.sender != hidden]
        _, _, prev = self.store.log.bounds()
        notices = self.outbox.roundlog.notices(number)
        data, wire = self._signed(number, prev or GENESIS, announce, notices, result_wire,
                                  accepted, refusals, uncounted)
        self.store.log.add(number, record_hash(data), data, wire)
        forged = None
        if self.lie == "equivocate" and accepted:  # a second history: one accepted message fewer
            forged = self._signed(number, prev or GENESIS, announce, notices, result_wire,
                                  accepted[:-1], refusals, uncounted)[1]
        if self.retain and number > self.retain:
            self.store.log.prune(before=number - self.retain + 1)
        self.store.log.strip_wires(before=number - self.keep + 1)
        return wire, forged

    def _signed(self, number: int, prev: bytes, announce: bytes, notices: list[bytes],
                result: bytes, accepted: list[Accepted], refusals: list[Refusal],
                uncounted: int) -> tuple[bytes, bytes]:
        """A record's bytes and its signed head."""
        data, head = build(number, prev, announce, notices, result, accepted, refusals,
                           uncounted)
        return data, self.outbox.seal(HEAD, number, encode(head))
