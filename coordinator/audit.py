"""``hypergossip audit URL``: re-derive a coordinator's published rounds from its round log.

Trusts nothing the coordinator says that is not signed: it reads ``/log`` (the
coordinator's peer id and latest signed head), then each round's record and head
(``/log/{n}``), and checks, round by round (:mod:`protocol.audit`):

1. the head is the coordinator's signature over the record's hash, and the record
   chains to the one before (``prev``) with a matching Merkle root;
2. the round's own announcement, notices and result are the coordinator's, for that round,
   and the published result (inline, or from ``/rounds/{n}``) hashes to the signed
   ``state_digest``;
3. every accepted message the record names is shown (``/log/message/{digest}``) and is its
   sender's signed envelope;
4. the round replayed (:mod:`protocol.audit.derive`): the mode's own state machine fed
   the signed messages from the round's starting model, its outcome and phase notices
   compared with what was published and signed.

It prints one row per round (checked / failed with the lie / not checkable, and why) and
``audit: N rounds checked, F failed, U not checkable``; the exit status is 1 when any
round failed (or the log could not be read), else 0. The workload must be importable
here: its name from the log, or ``--workload package.module:Class``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from dataclasses import asdict
from typing import Any

import httpx
import msgspec
from rich.console import Console
from rich.table import Table

from coordinator.auditjobs import JobAudit
from protocol.audit.derive import CHECKED, FAILED, NOT_CHECKABLE, Finding, derive
from protocol.audit.log import (
    InclusionProof,
    check_record,
    open_head,
    open_receipt,
    verify_proof,
)
from protocol.learning.registry import get_workload, resolve
from protocol.wire.canonical import state_digest
from protocol.wire.envelope import RejectedMessage, open_envelope
from protocol.wire.messages import RoundAnnounce, RoundResult, decode

MAX_BODY = 64 * 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="hypergossip audit",
        description="Check a coordinator's round log and re-derive every result it can from "
        "public data alone: signatures, the hash chain, the accepted messages' envelopes, and "
        "each round replayed through its mode's own state machine from its signed messages "
        "(clear sums, VSS range proofs and shares, SecAgg+ unmasking, replicated segments "
        "re-executed). Exits 1 when a round fails.",
        epilog="Example: hypergossip audit http://127.0.0.1:4000")
    p.add_argument("url", help="the coordinator's HTTP base URL")
    p.add_argument("--workload", metavar="NAME|MODULE:CLASS",
                   help="the workload's code, when its name in the log is not importable "
                   "here (e.g. examples.wine:Wine)")
    p.add_argument("--rounds", metavar="A:B", default="",
                   help="audit only rounds A..B (default: every round the log holds)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds each request may take (default: %(default)s)")
    p.add_argument("--heads", metavar="PATH",
                   help="a file of signed round-log heads that peers saw (hex envelopes, one "
                   "a line): any that is the coordinator's for a round but not the log's "
                   "head of that round proves it showed two histories (equivocate)")
    p.add_argument("--receipts", metavar="PATH",
                   help="a peer's receipts (peer --receipts PATH): each accepted message is "
                   "proven in its round's signed record by a Merkle inclusion proof, or its "
                   "absence from the record is reported as a drop")
    p.add_argument("--user", default="anonymous", metavar="NAME",
                   help="prompt jobs: audit the job-log records of this hypc_user (a record "
                   "holds its user's target; other users' entries are checked by their signed "
                   "heads alone; default: %(default)s)")
    p.add_argument("--llm", default="echo", metavar="BACKEND",
                   help="prompt jobs: the backend that re-runs the outputs the coordinator "
                   "evaluated itself, when its model digest is the job's (echo, local; default: "
                   "%(default)s)")
    p.add_argument("--json", metavar="PATH", help="also write the findings as JSON")
    return p.parse_args(argv)


class Client:
    def __init__(self, url: str, timeout: float):
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)

    def get(self, path: str, ok: tuple[int, ...] = (404,)) -> httpx.Response:
        resp = self.http.get(path)
        if resp.status_code not in ok:
            resp.raise_for_status()
        if len(resp.content) > MAX_BODY:
            raise ValueError(f"{path}: {len(resp.content)} bytes, over {MAX_BODY}")
        return resp

    def optional(self, path: str) -> bytes | None:
        resp = self.get(path)
        return None if resp.status_code == 404 else resp.content


class Audit:
    """One pass over the log; the workload objects are built once per spec and options."""

    def __init__(self, client: Client, workload_spec: str | None):
        self.client, self.spec = client, workload_spec
        self.findings: list[Finding] = []
        self.last = self.keep = 0
        self.seen: dict[int, set[bytes]] = {}  # round -> record hashes of heads peers saw
        self.contradicted: dict[int, bytes] = {}

    def run(self, first: int, last: int, coordinator: str) -> None:
        prev: bytes | None = None
        for n in range(first, last + 1):
            resp = self.client.get(f"/log/{n}")
            if resp.status_code == 404:
                self.findings.append(Finding(n, FAILED, "-", "the log has no record of this "
                                             "round within its bounds", "withheld"))
                prev = None
                continue
            try:
                _, head = open_head(bytes.fromhex(resp.headers.get("X-Log-Head", "")),
                                    coordinator)
            except (RejectedMessage, ValueError) as exc:
                self.findings.append(Finding(n, FAILED, "-", f"head: {exc}"[:200],
                                             "bad-record"))
                prev = None
                continue
            try:  # the head is signed: the chain goes on from it even if the record is bad
                record = check_record(resp.content, head, coordinator, prev)
            except (RejectedMessage, ValueError) as exc:
                self.findings.append(Finding(n, FAILED, "-", str(exc)[:200], "bad-record"))
                continue
            finally:
                prev = head.record
                other = self.seen.get(n, set()) - {head.record}
                if other:
                    self.contradicted[n] = min(other)
            self.findings.append(self.round(n, record))
        self.findings += [Finding(r, FAILED, "-", f"a peer holds another signed head for "
                                  f"round {r} (record {other.hex()[:16]}): two histories",
                                  "equivocate")
                          for r, other in sorted(self.contradicted.items())]

    def check_receipts(self, wires: list[bytes], coordinator: str) -> list[str]:
        """Each receipt's message proven in its round's record against the signed head, or
        a drop found; lines for the report."""
        lines = []
        for wire in wires:
            try:
                receipt = open_receipt(wire, coordinator)
            except RejectedMessage as exc:
                lines.append(f"receipt not the coordinator's: {exc}")
                continue
            n, digest = receipt.round, receipt.digest
            resp = self.client.get(f"/log/{n}/proof/{digest.hex()}")
            if resp.status_code == 404 and "not among" in resp.text:
                self.findings.append(Finding(n, FAILED, "-", f"{receipt.sender}'s message "
                                             f"{digest.hex()[:16]} was receipted as accepted but "
                                             "its round's record leaves it out", "drop"))
                lines.append(f"round {n}: {digest.hex()[:16]} LEFT OUT of the record")
                continue
            if resp.status_code != 200:
                lines.append(f"round {n}: {digest.hex()[:16]} not checkable: {resp.text[:80]}")
                continue
            body = resp.json()
            _, head = open_head(bytes.fromhex(body["head"]), coordinator)
            p = body["proof"]
            proof = InclusionProof(round=n, digest=digest, index=p["index"], size=p["size"],
                                   path=[bytes.fromhex(x) for x in p["path"]])
            ok = verify_proof(proof, head)
            if not ok:
                self.findings.append(Finding(n, FAILED, "-", f"the inclusion proof of "
                                             f"{digest.hex()[:16]} does not verify against the "
                                             "signed head", "bad-record"))
            lines.append(f"round {n}: {digest.hex()[:16]} "
                         f"{'included (proof verified)' if ok else 'PROOF FAILED'}")
        return lines

    def compare_heads(self, wires: list[bytes], coordinator: str) -> None:
        """Heads peers saw: each the coordinator's, checked later against the log's."""
        for wire in wires:
            try:
                _, head = open_head(wire, coordinator)
            except RejectedMessage:
                continue
            self.seen.setdefault(head.round, set()).add(head.record)

    def round(self, n: int, record) -> Finding:
        signed = decode(open_envelope(record.result).payload, RoundResult)
        result = self.result_json(n, signed)
        if result is None:
            return Finding(n, FAILED, "-", "the published result does not hash to the signed "
                           "state digest", "fake-result")
        if not record.announce:
            return Finding(n, NOT_CHECKABLE, "legacy", "values posted over the legacy HTTP "
                           "API are not signed (labelled unprotected)")
        announce = decode(open_envelope(record.announce).payload, RoundAnnounce)
        wires = self.wires(n, record)
        if None in wires.values():  # a running coordinator may have moved its window since
            self.last = max(self.last, int(self.client.get("/log").json()["last"]))
        return derive(n, announce, record, signed.status, result, signed.accepted, wires,
                      lambda: self.workload(announce.workload, result),
                      lambda d: self.client.optional(f"/log/blob/{d.hex()}"),
                      kept=n > self.last - self.keep)

    def wires(self, n: int, record) -> dict[bytes, bytes | None]:
        """The envelopes round ``n``'s record names, in one request (one by one when the
        round's are too many bytes for one response); None for those not shown."""
        resp = self.client.get(f"/log/{n}/messages", ok=(404, 413))
        if resp.status_code == 200:
            got = msgspec.msgpack.decode(resp.content, type=list[bytes])
            if len(got) == len(record.accepted):
                return {a.digest: w or None for a, w in zip(record.accepted, got, strict=True)}
        return {a.digest: self.client.optional(f"/log/message/{a.digest.hex()}")
                for a in record.accepted}

    def result_json(self, n: int, signed: RoundResult) -> dict[str, Any] | None:
        if signed.result:
            result = json.loads(signed.result)
        else:
            resp = self.client.get(f"/rounds/{n}")
            result = resp.json().get("result") if resp.status_code == 200 else None
        if not isinstance(result, dict) or state_digest(result) != signed.state_digest:
            return None
        return result

    def workload(self, name: str, result: dict[str, Any]):
        """The workload, built with the combining options its result names (those its
        constructor takes)."""
        spec = self.spec or name
        takes = inspect.signature(resolve(spec)).parameters
        anything = any(p.kind is p.VAR_KEYWORD for p in takes.values())
        options = {k: result[k] for k in ("aggregator", "tolerance")
                   if k in result and (anything or k in takes)}
        workload = get_workload(spec, **options)
        if workload.name != name:
            raise ValueError(f"{self.spec} is workload {workload.name}, the log's is {name}")
        return workload


def render(findings: list[Finding], console: Console, title: str = "round log audit",
           first: str = "round") -> None:
    table = Table(title=title)
    for col in (first, "mode", "status", "lie", "detail"):
        table.add_column(col, overflow="fold")
    style = {CHECKED: "green", FAILED: "bold red", NOT_CHECKABLE: "yellow"}
    for f in findings:
        table.add_row(str(f.round), f.mode, f"[{style[f.status]}]{f.status}[/]", f.lie or "-",
                      f.detail)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=140)
    started = time.monotonic()
    client = Client(args.url, args.timeout)
    try:
        info = client.get("/log").json()
        first, last = int(info["first"]), int(info["last"])
        if args.rounds:
            a, _, b = args.rounds.partition(":")
            first, last = max(first, int(a or first)), min(last, int(b or last))
        audit = Audit(client, args.workload)
        audit.last, audit.keep = int(info["last"]), int(info.get("keep", 0))
        if args.heads:
            with open(args.heads) as fh:
                audit.compare_heads([bytes.fromhex(x) for x in fh.read().split()],
                                    info["coordinator"])
        if last:
            open_head(bytes.fromhex(info["head"]), info["coordinator"])
            audit.run(first, last, info["coordinator"])
    except (httpx.HTTPError, ValueError, KeyError, RejectedMessage) as exc:
        print(f"audit: could not read the round log at {args.url}: {exc}", file=sys.stderr)
        return 1
    if args.receipts:
        try:
            with open(args.receipts) as fh:
                for line in audit.check_receipts([bytes.fromhex(x) for x in fh.read().split()],
                                                 info["coordinator"]):
                    print(f"receipt: {line}")
        except (httpx.HTTPError, ValueError, RejectedMessage) as exc:
            print(f"audit: could not check the receipts: {exc}", file=sys.stderr)
            return 1
    jobs = JobAudit(client.http, info["coordinator"], args.user, args.llm)
    try:
        if info.get("job_log"):
            jobs.run()
    except (httpx.HTTPError, ValueError, KeyError, RejectedMessage) as exc:
        print(f"audit: could not read the job log at {args.url}: {exc}", file=sys.stderr)
        return 1
    if audit.findings or not jobs.chained:
        render(audit.findings, console)
    counts = {s: sum(f.status == s for f in audit.findings)
              for s in (CHECKED, FAILED, NOT_CHECKABLE)}
    if last or not jobs.chained:
        print(f"audit: {counts[CHECKED]} rounds checked, {counts[FAILED]} failed, "
              f"{counts[NOT_CHECKABLE]} not checkable ({time.monotonic() - started:.1f} s)")
    failed = counts[FAILED]
    if jobs.chained:
        render(jobs.findings, console, "job log audit (prompt search)", "entry")
        jc = {s: sum(f.status == s for f in jobs.findings)
              for s in (CHECKED, FAILED, NOT_CHECKABLE)}
        print(f"audit: {jc[CHECKED]} prompt jobs checked, {jc[FAILED]} failed, "
              f"{jc[NOT_CHECKABLE]} not checkable; the signed heads of all {jobs.chained} "
              f"job-log entries read ({time.monotonic() - started:.1f} s)")
        failed += jc[FAILED]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"coordinator": info["coordinator"],
                       "findings": [asdict(f) for f in audit.findings],
                       "jobs": [asdict(f) for f in jobs.findings]}, fh, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
