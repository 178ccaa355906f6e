"""``hypergossip audit``'s second half: the job log of prompt searches (:mod:`protocol.audit.jobs`).

Every head is public: the chain of signed heads is checked for all entries. A record is
its user's (``--user``, sent as ``hypc_user``); for each record the auditor may read it
checks that every output said to come from peers rests on enough agreeing signed
evaluations, re-runs the outputs the coordinator evaluated itself (with ``--llm``, when
that backend's model digest is the job's: generation is deterministic), replays the
genetic search from the request over those outputs and compares it with the published
result, and checks that the result served at ``/result`` is the one the log signed.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from protocol.audit.derive import CHECKED, FAILED, NOT_CHECKABLE, Finding
from protocol.audit.jobs import (
    COORDINATOR,
    PEERS,
    UNKNOWN,
    JobRecord,
    check_evidence,
    check_job,
    compare,
    open_job_head,
    replay,
)
from protocol.audit.log import GENESIS
from protocol.wire.envelope import RejectedMessage

MODE = "prompt job"
MAX_HEADS = 100_000


class JobAudit:
    def __init__(self, http: httpx.Client, coordinator: str, user: str, llm: str = "echo"):
        self.http, self.coordinator, self.user, self.llm = http, coordinator, user, llm
        self.findings: list[Finding] = []
        self.chained = 0  # entries whose signed heads chain
        self._backend: Any = None
        self._embedder: Any = None

    def run(self) -> None:
        resp = self.http.get("/log/jobs")
        resp.raise_for_status()
        info = resp.json()
        if info["coordinator"] != self.coordinator:
            raise ValueError("the job log names another coordinator than the round log")
        prev: tuple[int, bytes] | None = None
        start = int(info["first"] or 1)
        while start <= int(info["last"]) and self.chained < MAX_HEADS:
            wires = self.http.get("/log/jobs", params={"from": start}).json()["heads"]
            if not wires:
                break
            for wire in wires:
                head = open_job_head(bytes.fromhex(wire), self.coordinator)
                if head.entry == 1 and head.prev != GENESIS or prev is not None and \
                        prev[0] + 1 == head.entry and prev[1] != head.prev:
                    self.findings.append(Finding(head.entry, FAILED, MODE, "its signed head "
                                                 "does not chain to the entry before",
                                                 "bad-record"))
                prev = (head.entry, head.record)
                self.chained += 1
                self.entry(head)
                start = head.entry + 1

    def entry(self, head) -> None:
        resp = self.http.get(f"/log/jobs/{head.entry}", headers={"hypc_user": self.user})
        if resp.status_code == 403:
            return  # another user's job: its head chains, its record is not ours to read
        if resp.status_code != 200:
            self.findings.append(Finding(head.entry, FAILED, MODE, f"its record is not "
                                         f"served: {resp.status_code}", "withheld"))
            return
        try:
            rec = check_job(resp.content, head)
        except RejectedMessage as exc:
            self.findings.append(Finding(head.entry, FAILED, MODE, str(exc)[:200],
                                         "bad-record"))
            return
        self.findings.append(self.check(rec))

    def check(self, rec: JobRecord) -> Finding:
        n, name = rec.entry, f"job {rec.job}" if rec.job else "POST /prompt"
        if rec.truncated:
            return Finding(n, NOT_CHECKABLE, MODE, f"{name}: its record was over the size "
                           "cap and lists no outputs")
        if problems := check_evidence(rec, self.coordinator):
            return Finding(n, FAILED, MODE, f"{name}: {len(problems)} output(s) not backed "
                           f"by agreeing signed evaluations, e.g. {problems[0]}",
                           "unverified-output")
        unknown = sum(o.by == UNKNOWN for o in rec.outputs)
        if unknown:
            return Finding(n, NOT_CHECKABLE, MODE, f"{name}: {unknown} output(s) were cached "
                           "before the job log kept where outputs came from")
        own = [o for o in rec.outputs if o.by == COORDINATOR]
        if own:
            backend = self.backend(rec)
            if backend is None:
                return Finding(n, NOT_CHECKABLE, MODE, f"{name}: {len(own)} output(s) are the "
                               f"coordinator's own evaluations with model "
                               f"{rec.model_digest[:24]}; re-run them with --llm NAME")
            wrong = [o for o in own if backend.generate(o.prompt) != o.output]
            if wrong:
                return Finding(n, FAILED, MODE, f"{name}: {len(wrong)} of the coordinator's "
                               f"own outputs differ from the model's, e.g. for "
                               f"{wrong[0].prompt[:40]!r}", "fake-output")
        embed = self.embedder() if json.loads(rec.request).get("fitness", {}).get(
            "embedding") else None
        replayed, why = replay(rec, embed)
        if why:
            return Finding(n, NOT_CHECKABLE, MODE, f"{name}: {why}")
        published = json.loads(rec.result)
        if diff := compare(replayed, published):
            return Finding(n, FAILED, MODE, f"{name}: {diff}", "fake-fitness")
        if rec.job and (served := self.served(rec.job)) is not None and served != published:
            return Finding(n, FAILED, MODE, f"{name}: the result at /result is not the one "
                           "the job log signed", "fake-result")
        peers = sum(o.by == PEERS for o in rec.outputs)
        return Finding(n, CHECKED, MODE, f"{name}: best {published.get('score', 0):.4f} "
                       f"re-derived over {len(rec.outputs)} outputs ({peers} agreed by "
                       f">= {rec.redundancy} signed peer evaluations, {len(own)} re-run here)")

    def served(self, job: int) -> dict[str, Any] | None:
        resp = self.http.get("/result", params={"job_number": job},
                             headers={"hypc_user": self.user})
        if resp.status_code != 200:
            return None
        result = dict(resp.json().get("result") or {})
        result.pop("log_entry", None)
        return result

    def backend(self, rec: JobRecord) -> Any:
        from peer.llm import gen_params_json, make_backend

        if self._backend is None:
            self._backend = make_backend(self.llm)
        b = self._backend
        ok = b.model_digest == rec.model_digest and gen_params_json(b) == rec.gen_params
        return b if ok else None

    def embedder(self) -> Any:
        from peer.llm import Embedder

        if self._embedder is None:
            self._embedder = Embedder()
        return self._embedder.embed
