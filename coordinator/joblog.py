"""The coordinator's side of the job log (:mod:`protocol.audit.jobs`): where each output a
prompt job used came from, and after the job its signed, chained record.

A job keeps a :class:`Trail` while it runs: for each prompt, who evaluated it (peers, the
coordinator itself, or the shared cache and whoever filled it) and the signed task and
answer envelopes behind it. The shared LLM-output cache keeps the same provenance
(tables ``llm_evidence`` and ``eval_wires``: each envelope stored once by digest), so an
output one job took from another's work still shows its evaluations. Outputs cached
before the log existed are ``unknown``: a job that used one is not checkable.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from typing import Any

import msgspec

from protocol.audit.jobs import (
    COORDINATOR,
    JOB_HEAD,
    PEERS,
    UNKNOWN,
    JobRecord,
    Output,
    build_job,
)
from protocol.audit.log import GENESIS
from protocol.prompts.search import PromptSearch
from protocol.wire.messages import encode

SCHEMA = """
CREATE TABLE IF NOT EXISTS job_log (
    entry INTEGER PRIMARY KEY, job INTEGER NOT NULL, user TEXT NOT NULL, hash BLOB NOT NULL,
    record BLOB NOT NULL, head BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS eval_wires (digest BLOB PRIMARY KEY, wire BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS llm_evidence (key TEXT PRIMARY KEY, by TEXT NOT NULL,
    evals BLOB NOT NULL);
"""
Pairs = list[tuple[bytes, bytes]]  # (signed EvalTask, signed EvalResult)


class Trail:
    """One job's provenance, prompt by prompt: (by, taken from the cache, evaluations)."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[str, bool, Pairs]] = {}

    def add(self, prompt: str, by: str, pairs: Pairs, *, hit: bool = False) -> None:
        self.items.setdefault(prompt, (by, hit, pairs))

    def settle(self, prompt: str, pairs: Pairs) -> None:
        """The coordinator evaluated ``prompt`` itself after its peers disagreed."""
        self.items[prompt] = (COORDINATOR, False, pairs)


class JobLog:
    def __init__(self, db: sqlite3.Connection, seal: Callable[[str, int, bytes], bytes],
                 redundancy: int):
        self.db, self.seal, self.redundancy = db, seal, redundancy
        db.executescript(SCHEMA)

    # --- the cache's provenance ----------------------------------------------------------
    def remember(self, key: str, by: str, pairs: Pairs) -> None:
        digests = []
        for task, result in pairs:
            pair = []
            for wire in (task, result):
                d = hashlib.sha256(wire).digest()
                self.db.execute("INSERT OR IGNORE INTO eval_wires (digest, wire) VALUES (?, ?)",
                                (d, wire))
                pair.append(d)
            digests.append(pair)
        self.db.execute("INSERT OR IGNORE INTO llm_evidence (key, by, evals) VALUES (?, ?, ?)",
                        (key, by, msgspec.msgpack.encode(digests)))

    def provenance(self, key: str) -> tuple[str, Pairs]:
        row = self.db.execute("SELECT by, evals FROM llm_evidence WHERE key=?",
                              (key,)).fetchone()
        if row is None:
            return UNKNOWN, []
        pairs = []
        for t, r in msgspec.msgpack.decode(row[1], type=list[tuple[bytes, bytes]]):
            wires = [self.db.execute("SELECT wire FROM eval_wires WHERE digest=?",
                                     (d,)).fetchone() for d in (t, r)]
            if None not in wires:
                pairs.append((bytes(wires[0][0]), bytes(wires[1][0])))
        return row[0], pairs

    # --- records ---------------------------------------------------------------------------
    def write(self, job: int, user: str, request: bytes, search: PromptSearch, trail: Trail,
              result: dict[str, Any], *, partial: bool, gen_params: str) -> int:
        """Record a finished job; its log entry number."""
        last = self.db.execute("SELECT entry, hash FROM job_log ORDER BY entry DESC LIMIT 1"
                               ).fetchone()
        entry, prev = (last[0] + 1, bytes(last[1])) if last else (1, GENESIS)
        index: dict[bytes, int] = {}

        def at(wire: bytes) -> int:
            return index.setdefault(wire, len(index))

        outputs = []
        for prompt, (by, hit, pairs) in trail.items.items():
            output = search.outputs.get(search.key(prompt))
            if output is not None:
                outputs.append(Output(prompt, output, by, hit,
                                      [(at(t), at(r)) for t, r in pairs[:64]]))
        rec = JobRecord(entry=entry, prev=prev, job=job, user=user[:128], request=request,
                        model_digest=search.model_digest, gen_params=gen_params,
                        redundancy=self.redundancy, partial=partial, outputs=outputs,
                        wires=list(index), result=json.dumps(result).encode())
        data, head = build_job(rec)
        wire = self.seal(JOB_HEAD, entry, encode(head))
        self.db.execute("INSERT INTO job_log (entry, job, user, hash, record, head) VALUES "
                        "(?, ?, ?, ?, ?, ?)", (entry, job, user, head.record, data, wire))
        return entry

    def bounds(self) -> tuple[int, int]:
        first, last = self.db.execute("SELECT MIN(entry), MAX(entry) FROM job_log").fetchone()
        return (first or 0, last or 0)

    def row(self, entry: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM job_log WHERE entry=?", (entry,)).fetchone()

    def heads(self, first: int, count: int) -> list[bytes]:
        return [bytes(r[0]) for r in self.db.execute(
            "SELECT head FROM job_log WHERE entry >= ? ORDER BY entry LIMIT ?", (first, count))]


__all__ = ["JobLog", "Trail", "PEERS", "COORDINATOR", "UNKNOWN"]
