"""The coordinator's durable state in SQLite: admissions, rounds, accepted messages, rejections.

Everything a restarted coordinator needs to carry on lives here: admitted
peers, every round with its signed announcement and result envelopes, the
digest, nonce and payload of every accepted message (so an open round can be
resumed and a replay refused after a restart), and rejection counters by
claimed sender and reason. Writes commit immediately (WAL mode), so a kill
at any point loses at most the message being handled.

Rejections from senders that are not admitted are capped at
``MAX_STRANGER_ROWS`` distinct ids; beyond that they are counted under
``"*"`` so that a flood of fresh keys cannot grow the table without bound.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from .segments import Segments

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS peers (
    peer_id TEXT PRIMARY KEY, admitted_at REAL NOT NULL, last_seen REAL NOT NULL,
    addrs TEXT NOT NULL DEFAULT '[]', agent TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS rejections (
    peer_id TEXT NOT NULL, reason TEXT NOT NULL, count INTEGER NOT NULL,
    last_at REAL NOT NULL, PRIMARY KEY (peer_id, reason));
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, workload TEXT NOT NULL, status TEXT NOT NULL,
    opened_at REAL NOT NULL, deadline REAL NOT NULL, closed_at REAL,
    min_peers INTEGER NOT NULL, accepted INTEGER NOT NULL DEFAULT 0,
    rejected TEXT NOT NULL DEFAULT '{}', result TEXT, state_digest BLOB,
    announce_wire BLOB NOT NULL, result_wire BLOB);
CREATE TABLE IF NOT EXISTS messages (
    digest BLOB PRIMARY KEY, round INTEGER NOT NULL, sender TEXT NOT NULL,
    domain TEXT NOT NULL, nonce BLOB NOT NULL, received_at REAL NOT NULL, payload BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS messages_round ON messages (round, domain);
CREATE TABLE IF NOT EXISTS blobs (digest TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS prompt_jobs (
    job_number INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, request TEXT NOT NULL,
    status TEXT NOT NULL, progress TEXT, result TEXT, created REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS llm_outputs (
    key TEXT PRIMARY KEY, model TEXT NOT NULL, output TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS round_log (
    round INTEGER PRIMARY KEY, hash BLOB NOT NULL, record BLOB NOT NULL, head BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS reputation (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, round INTEGER NOT NULL, peer_id TEXT NOT NULL,
    score REAL NOT NULL, why TEXT NOT NULL);
"""
MAX_STRANGER_ROWS = 1000


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(messages)")}
        if "wire" not in columns:  # a database from before the round log
            self.db.execute("ALTER TABLE messages ADD COLUMN wire BLOB NOT NULL DEFAULT x''")
            self.db.execute("ALTER TABLE messages ADD COLUMN size INTEGER NOT NULL DEFAULT 0")
        if "wire_at" not in columns:  # -1: no envelope in a segment file (segments.py)
            self.db.execute("ALTER TABLE messages ADD COLUMN wire_at INT NOT NULL DEFAULT -1")
        self.segments = Segments(self.path.with_name(self.path.name + "-envelopes"))
        self._touched: dict[str, float] = {}  # peer -> when its last_seen was last written
        self._admitted: frozenset[str] | None = None  # admitted(), until a peer comes or goes
        self.log = LogStore(self.db, self.segments)

    def close(self) -> None:
        self.segments.close()
        self.db.close()

    # --- peers ---------------------------------------------------------------------------
    def admit(self, peer_id: str, addrs: list[str], agent: str) -> bool:
        """Record an admission; return True when the peer is new."""
        now = time.time()
        cur = self.db.execute(
            "INSERT INTO peers (peer_id, admitted_at, last_seen, addrs, agent) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(peer_id) DO UPDATE SET"
            " last_seen=excluded.last_seen, addrs=excluded.addrs, agent=excluded.agent"
            " RETURNING admitted_at",
            (peer_id, now, now, json.dumps(addrs), agent))
        new = cur.fetchone()[0] == now
        if new:
            self._admitted = None
        return new

    def is_admitted(self, peer_id: str) -> bool:
        return peer_id in self.admitted()

    def admitted(self) -> frozenset[str]:
        """Every admitted peer, from memory: asked at every message and every few tenths of
        a second by the round driver, it was an O(N) SELECT each time."""
        if self._admitted is None:
            self._admitted = frozenset(r[0] for r in self.db.execute("SELECT peer_id FROM peers"))
        return self._admitted

    def count_admitted(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM peers").fetchone()[0]

    def forget_silent(self, before: float, keep: set[str]) -> list[str]:
        """Forget admitted peers last seen before ``before`` (unix s), except ``keep`` (those
        connected now); they must enrol again to come back. Returns whom."""
        gone = [r[0] for r in self.db.execute("SELECT peer_id FROM peers WHERE last_seen < ?",
                                               (before,)) if r[0] not in keep]
        for i in range(0, len(gone), 500):
            chunk = gone[i:i + 500]
            self.db.execute(f"DELETE FROM peers WHERE peer_id IN ({','.join('?' * len(chunk))})",
                            chunk)
        for peer in gone:
            self._touched.pop(peer, None)
        if gone:
            self._admitted = None
        return gone

    def touch(self, peer_id: str, every: float = 1.0) -> None:
        """Note that ``peer_id`` was heard from; written at most once every ``every`` seconds
        per peer (a secure round hears from each peer five times in about a second)."""
        now = time.time()
        if now - self._touched.get(peer_id, 0.0) < every:
            return
        if len(self._touched) > 100_000:
            self._touched.clear()
        self._touched[peer_id] = now
        self.db.execute("UPDATE peers SET last_seen=? WHERE peer_id=?", (now, peer_id))

    def peers(self, limit: int = 2**31, offset: int = 0) -> list[dict[str, Any]]:
        return [{"peer_id": r["peer_id"], "admitted_at": r["admitted_at"],
                 "last_seen": r["last_seen"], "addrs": json.loads(r["addrs"]), "agent": r["agent"]}
                for r in self.db.execute("SELECT * FROM peers ORDER BY admitted_at, peer_id "
                                         "LIMIT ? OFFSET ?", (limit, offset))]

    def recent_peers(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` admitted peers seen last, most recent first."""
        return [{"peer_id": r["peer_id"], "last_seen": r["last_seen"]}
                for r in self.db.execute("SELECT peer_id, last_seen FROM peers ORDER BY "
                                         "last_seen DESC, peer_id LIMIT ?", (limit,))]

    def rejections_by_peer(self, peers: list[str] | None = None) -> dict[str, dict[str, int]]:
        """Refusal counts by peer and reason (of ``peers`` only, when given)."""
        out: dict[str, dict[str, int]] = {}
        if peers is None:
            rows = self.db.execute("SELECT peer_id, reason, count FROM rejections ORDER BY reason")
        else:
            rows = []
            for i in range(0, len(peers), 500):
                chunk = peers[i:i + 500]
                rows += self.db.execute(
                    "SELECT peer_id, reason, count FROM rejections WHERE peer_id IN "
                    f"({','.join('?' * len(chunk))}) ORDER BY reason", chunk).fetchall()
        for r in rows:
            out.setdefault(r["peer_id"], {})[r["reason"]] = r["count"]
        return out

    def stranger_rejections(self, limit: int) -> dict[str, dict[str, int]]:
        """Refusal counts of up to ``limit`` peers that are not admitted, most recent first."""
        out: dict[str, dict[str, int]] = {}
        rows = self.db.execute(
            "SELECT r.peer_id, r.reason, r.count FROM rejections r WHERE r.peer_id IN ("
            " SELECT peer_id FROM rejections WHERE peer_id NOT IN (SELECT peer_id FROM peers)"
            " GROUP BY peer_id ORDER BY MAX(last_at) DESC LIMIT ?) ORDER BY r.reason", (limit,))
        for r in rows:
            out.setdefault(r["peer_id"], {})[r["reason"]] = r["count"]
        return out

    def count_rejection(self, peer_id: str, reason: str) -> None:
        if not self.is_admitted(peer_id):
            n = self.db.execute("SELECT COUNT(DISTINCT peer_id) FROM rejections").fetchone()[0]
            known = self.db.execute("SELECT 1 FROM rejections WHERE peer_id=?",
                                    (peer_id,)).fetchone()
            if known is None and n >= MAX_STRANGER_ROWS:
                peer_id = "*"
        self.db.execute(
            "INSERT INTO rejections (peer_id, reason, count, last_at) VALUES (?, ?, 1, ?) "
            "ON CONFLICT(peer_id, reason) DO UPDATE SET count=count+1, last_at=excluded.last_at",
            (peer_id, reason, time.time()))

    def rejection_totals(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute(
            "SELECT reason, SUM(count) FROM rejections GROUP BY reason ORDER BY reason")}

    # --- rounds --------------------------------------------------------------------------
    def last_round(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(round), 0) FROM rounds").fetchone()[0]

    def open_round(self, round: int, workload: str, deadline: float, min_peers: int,
                   announce_wire: bytes) -> None:
        self.db.execute(
            "INSERT INTO rounds (round, workload, status, opened_at, deadline, min_peers,"
            " announce_wire) VALUES (?, ?, 'open', ?, ?, ?, ?)",
            (round, workload, time.time(), deadline, min_peers, announce_wire))

    def close_round(self, round: int, status: str, accepted: int, rejected: dict[str, int],
                    result: dict[str, Any], state_digest: bytes, result_wire: bytes) -> None:
        self.db.execute(
            "UPDATE rounds SET status=?, closed_at=?, accepted=?, rejected=?, result=?,"
            " state_digest=?, result_wire=? WHERE round=?",
            (status, time.time(), accepted, json.dumps(rejected), json.dumps(result),
             state_digest, result_wire, round))

    def open_rounds(self) -> list[sqlite3.Row]:
        return list(self.db.execute("SELECT * FROM rounds WHERE status='open' ORDER BY round"))

    def round_row(self, round: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM rounds WHERE round=?", (round,)).fetchone()

    def latest_published(self) -> sqlite3.Row | None:
        return self.db.execute(
            "SELECT * FROM rounds WHERE status='published' ORDER BY round DESC LIMIT 1").fetchone()

    def rounds(self, limit: int, offset: int) -> list[sqlite3.Row]:
        return list(self.db.execute("SELECT * FROM rounds ORDER BY round DESC LIMIT ? OFFSET ?",
                                    (limit, offset)))

    def count_rounds(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM rounds").fetchone()[0]

    def wires(self, kind: str, since: int) -> list[tuple[int, bytes]]:
        col = {"announce": "announce_wire", "result": "result_wire"}[kind]
        return [(r[0], r[1]) for r in self.db.execute(
            f"SELECT round, {col} FROM rounds WHERE round>=? AND {col} IS NOT NULL", (since,))]

    # --- accepted messages ------------------------------------------------------------------
    def record_message(self, digest: bytes, round: int, sender: str, domain: str,
                       nonce: bytes, payload: bytes, wire: bytes = b"", size: int = 0) -> None:
        """An accepted message: ``payload`` where a resumed round needs it, ``wire`` (the
        signed envelope, ``size`` bytes) where the round log serves it (appended to the
        round's segment file; the row says where)."""
        wire_at = self.segments.append(round, wire) if wire else -1
        self.db.execute(
            "INSERT OR IGNORE INTO messages (digest, round, sender, domain, nonce, received_at,"
            " payload, size, wire_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (digest, round, sender, domain, nonce, time.time(), payload, size, wire_at))

    def messages(self, round: int, domain: str) -> list[sqlite3.Row]:
        return list(self.db.execute(
            "SELECT * FROM messages WHERE round=? AND domain=? ORDER BY received_at",
            (round, domain)))

    def move_messages(self, domain: str, from_round: int, to_round: int) -> None:
        self.db.execute("UPDATE messages SET round=? WHERE round=? AND domain=?",
                        (to_round, from_round, domain))

    def message_digests(self, round: int) -> list[dict[str, str]]:
        return [{"sender": r["sender"], "domain": r["domain"], "digest": r["digest"].hex()}
                for r in self.db.execute(
                    "SELECT sender, domain, digest FROM messages WHERE round=? "
                    "ORDER BY received_at", (round,))]

    def prune_rounds(self, before: int) -> int:
        """Forget rounds numbered below ``before`` and their messages (the retention setting:
        a coordinator runs for months; the database's free pages are then reused, so its
        file stops growing). Returns the rounds forgotten."""
        gone = self.db.execute("DELETE FROM rounds WHERE round < ? AND status != 'open'",
                               (before,)).rowcount
        self.db.execute("DELETE FROM messages WHERE round < ?", (before,))
        self.segments.drop_before(before)
        return gone

    def count_messages(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]

    # --- published states (model weights) --------------------------------------------------
    def put_blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self.db.execute("INSERT OR IGNORE INTO blobs (digest, data) VALUES (?, ?)", (digest, data))
        return digest

    def prune_blobs(self, keep: str, recent: int = 0) -> None:
        """Drop older states but ``keep`` (the current one, served after a restart) and the
        ``recent`` last stored (the round log's auditors fetch a round's starting model)."""
        self.db.execute("DELETE FROM blobs WHERE digest != ? AND rowid NOT IN (SELECT rowid "
                        "FROM blobs ORDER BY rowid DESC LIMIT ?)", (keep, recent))

    def get_blob(self, digest: str) -> bytes | None:
        row = self.db.execute("SELECT data FROM blobs WHERE digest=?", (digest,)).fetchone()
        return None if row is None else bytes(row[0])

    # --- reputation (incremental learning) ------------------------------------------------
    def add_reputation(self, events: list[tuple[int, str, float, str]]) -> None:
        self.db.executemany("INSERT INTO reputation (round, peer_id, score, why) "
                            "VALUES (?, ?, ?, ?)", events)

    def reputation_events(self) -> list[tuple[int, str, float, str]]:
        return [(r[0], r[1], r[2], r[3]) for r in self.db.execute(
            "SELECT round, peer_id, score, why FROM reputation ORDER BY seq")]

    # --- prompt-search jobs and the LLM output cache ----------------------------------------
    def add_job(self, user: str, request: str) -> int:
        cur = self.db.execute("INSERT INTO prompt_jobs (user, request, status, created) "
                              "VALUES (?, ?, 'queued', ?)", (user, request, time.time()))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def job(self, number: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM prompt_jobs WHERE job_number=?",
                               (number,)).fetchone()

    def set_job(self, number: int, *, status: str | None = None, progress: str | None = None,
                result: str | None = None) -> None:
        if status is not None:
            finished = time.time() if status in ("done", "failed") else None
            self.db.execute("UPDATE prompt_jobs SET status=?, finished=? WHERE job_number=?",
                            (status, finished, number))
        if progress is not None:
            self.db.execute("UPDATE prompt_jobs SET progress=? WHERE job_number=?",
                            (progress, number))
        if result is not None:
            self.db.execute("UPDATE prompt_jobs SET result=? WHERE job_number=?",
                            (result, number))

    def next_queued_job(self) -> int | None:
        row = self.db.execute("SELECT MIN(job_number) FROM prompt_jobs WHERE status='queued'"
                              ).fetchone()
        return row[0]

    def active_jobs(self, user: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM prompt_jobs WHERE user=? AND status IN "
                               "('queued', 'running')", (user,)).fetchone()[0]

    def queue_length(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM prompt_jobs WHERE status='queued'"
                               ).fetchone()[0]

    def requeue_running_jobs(self) -> None:
        self.db.execute("UPDATE prompt_jobs SET status='queued' WHERE status='running'")

    def cached_outputs(self, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            out.update((r[0], r[1]) for r in self.db.execute(
                f"SELECT key, output FROM llm_outputs WHERE key IN ({marks})", chunk))
        return out

    def cache_output(self, key: str, model: str, output: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO llm_outputs (key, model, output, created) "
                        "VALUES (?, ?, ?, ?)", (key, model, output, time.time()))

    # --- meta ------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                        "SET value=excluded.value", (key, value))


class LogStore:
    """The round log's records and signed heads (protocol.audit.log), in the store's
    database (table ``round_log``)."""

    def __init__(self, db: sqlite3.Connection, segments: Segments):
        self.db, self.segments = db, segments

    def add(self, round: int, hash: bytes, record: bytes, head: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO round_log (round, hash, record, head) "
                        "VALUES (?, ?, ?, ?)", (round, hash, record, head))

    def record(self, round: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM round_log WHERE round=?", (round,)).fetchone()

    def bounds(self) -> tuple[int, int, bytes | None]:
        """(first, last) rounds the log holds, and the last record's hash."""
        first, last = self.db.execute("SELECT MIN(round), MAX(round) FROM round_log").fetchone()
        if last is None:
            return 0, 0, None
        return first, last, bytes(self.record(last)["hash"])

    def sizes(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT LENGTH(record) FROM round_log")]

    def prune(self, before: int) -> int:
        return self.db.execute("DELETE FROM round_log WHERE round < ?", (before,)).rowcount

    def accepted(self, round: int, skip: str) -> list[sqlite3.Row]:
        """Round ``round``'s accepted messages in the order they came (domain ``skip``
        left out: values posted over HTTP, which are not signed envelopes)."""
        return list(self.db.execute(
            "SELECT digest, sender, domain, size FROM messages WHERE round=? AND domain!=? "
            "ORDER BY received_at, rowid", (round, skip)))

    def strip_wires(self, before: int) -> None:
        """Forget the envelopes of rounds before ``before`` (their digests stay in the
        log's records; a resumable round's payloads stay for as long as the round)."""
        self.db.execute("UPDATE messages SET wire=x'', wire_at=-1 WHERE round < ? AND "
                        "(wire_at >= 0 OR LENGTH(wire) > 0)", (before,))
        self.segments.drop_before(before)

    def round_wires(self, round: int, limit: int) -> dict[bytes, bytes] | None:
        """Round ``round``'s kept envelopes by digest; None when they add up to more than
        ``limit`` bytes (the caller then asks for them one by one)."""
        kept = "round=? AND (wire_at >= 0 OR LENGTH(wire) > 0)"
        total = self.db.execute(f"SELECT COALESCE(SUM(size), 0) FROM messages WHERE {kept}",
                                (round,)).fetchone()[0]
        if total > limit:
            return None
        wires = {bytes(r[0]): self._wire(r) for r in self.db.execute(
            f"SELECT digest, round, wire, wire_at, size FROM messages WHERE {kept}", (round,))}
        return {d: w for d, w in wires.items() if w is not None}

    def message_wire(self, digest: bytes) -> bytes | None:
        row = self.db.execute("SELECT digest, round, wire, wire_at, size FROM messages "
                              "WHERE digest=?", (digest,)).fetchone()
        return None if row is None else self._wire(row)

    def _wire(self, row: sqlite3.Row) -> bytes | None:
        """A message's envelope: from its round's segment file, or (a database from before
        the segment files) from the row itself."""
        if row["wire_at"] >= 0:
            return self.segments.read(row["round"], row["wire_at"], row["size"])
        return bytes(row["wire"]) if row["wire"] else None
