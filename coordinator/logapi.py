"""HTTP endpoints of the round log (:mod:`protocol.audit.log`): heads, records, inclusion
proofs, and the accepted envelopes and models they name, for ``hypergossip audit``.

Records and envelopes are served as the exact bytes that were hashed and signed
(``application/octet-stream``); a signed head travels hex-encoded (``X-Log-Head`` with a
record, ``head`` in JSON). Every parameter is range-checked: a bad one is a 400 with the
reason, a missing record or envelope a 404 that says why.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from protocol.audit.log import decode_record, prove

from .aim import AIM, ClientBudget, HTTPError, example, int_param
from .joblog import JobLog
from .views import View

HEX = "<64 hex digits>"
MESSAGES_MAX = 64 * 1024 * 1024  # one /log/{n}/messages response
# what may be large (records, envelopes, models): few at once per client and in all, so
# that auditors cannot crowd out the coordinator; an audit reads one thing at a time
LOG_FETCH = ClientBudget(per_minute=6000, burst=1000, concurrent=2, total_concurrent=8)


def digest_param(value: str | None) -> bytes:
    try:
        digest = bytes.fromhex(value or "")
    except ValueError:
        raise HTTPError(400, "digest must be 64 hex digits") from None
    if len(digest) != 32:
        raise HTTPError(400, "digest must be 64 hex digits")
    return digest


def add_log_endpoints(aim: AIM, view: View) -> None:
    store = view.store
    joblog = view.prompt_jobs.joblog if view.prompt_jobs is not None else None
    jobs = joblog is not None
    if joblog is not None:
        add_job_log_endpoints(aim, joblog, view.peer_id)

    def record_row(request: Request) -> Any:
        n = int_param(request.path_params.get("n"), "n", lo=1)
        row = store.log.record(n)
        if row is None:
            first, last, _ = store.log.bounds()
            raise HTTPError(404, f"the round log holds no record of round {n} (it holds "
                            f"{first}..{last})" if last else "the round log is empty")
        return row

    @aim.endpoint(
        "/log", documentation="The round log: the coordinator's peer id, the first and last "
        "rounds it holds, the latest signed head (an envelope of domain log/head, hex), and "
        "for how many last rounds the accepted envelopes stay served (keep). "
        "Each record chains to the one before by hash; `hypergossip audit URL` checks them. "
        "job_log: whether prompt jobs have their own log (/log/jobs).",
        output={"coordinator": "<peer id>", "first": "<int>", "last": "<int>",
                "head": "<hex envelope>", "keep": "<int>", "job_log": "<bool>"},
        example_calls=[example({"coordinator": "12D3KooW...", "first": 1, "last": 5,
                                "head": "98 01 ...", "keep": 32, "job_log": False})])
    async def log_info(request: Request) -> dict[str, Any]:
        first, last, _ = store.log.bounds()
        head = store.log.record(last)["head"] if last else b""
        return {"coordinator": view.peer_id, "first": first, "last": last,
                "head": bytes(head).hex(),
                "keep": int(store.get_meta("log_keep") or 0), "job_log": jobs}

    @aim.endpoint(
        "/log/{n}", documentation="Round n's record (msgpack, protocol.audit.log.RoundRecord: "
        "signed announcement, notices and result, accepted message digests with their Merkle "
        "root, refusals, the previous record's hash), exactly as hashed; its signed head in "
        "the X-Log-Head header (hex).", output="<record bytes>",
        example_calls=[example("<record bytes>")], budget=LOG_FETCH)
    async def log_record(request: Request) -> Response:
        row = record_row(request)
        return Response(bytes(row["record"]), media_type="application/octet-stream",
                        headers={"X-Log-Head": bytes(row["head"]).hex()})

    @aim.endpoint(
        "/log/{n}/proof/{digest}", documentation="The inclusion proof of an accepted message "
        "(its wire digest, hex) in round n's record, with the round's signed head: whoever "
        "holds the proof and the head can check it with the coordinator's key alone. 404 when "
        "the message is not among the accepted.",
        output={"head": "<hex envelope>", "proof": {"round": "<int>", "digest": HEX,
                                                    "index": "<int>", "size": "<int>",
                                                    "path": [HEX]}},
        example_calls=[example({"head": "98 01 ...", "proof": {
            "round": 3, "digest": "ab" * 32, "index": 0, "size": 1, "path": []}})])
    async def log_proof(request: Request) -> dict[str, Any]:
        row = record_row(request)
        digest = digest_param(request.path_params.get("digest"))
        proof = prove(decode_record(bytes(row["record"])), digest)
        if proof is None:
            raise HTTPError(404, f"message {digest.hex()} is not among round "
                            f"{row['round']}'s accepted messages")
        return {"head": bytes(row["head"]).hex(), "proof": {
            "round": proof.round, "digest": proof.digest.hex(), "index": proof.index,
            "size": proof.size, "path": [p.hex() for p in proof.path]}}

    @aim.endpoint(
        "/log/{n}/messages", documentation="Every envelope round n's record names and the "
        "coordinator still keeps, in one response: a msgpack array of the envelopes' bytes in "
        "the record's order (empty bytes for one not kept). 413 when they add up to more than "
        "64 MiB (ask for them one by one: /log/message/{digest}).",
        output="<msgpack array of envelope bytes>", example_calls=[example("<bytes>")],
        budget=LOG_FETCH)
    async def log_messages(request: Request) -> Response:
        row = record_row(request)
        wires = store.log.round_wires(row["round"], MESSAGES_MAX)
        if wires is None:
            raise HTTPError(413, f"round {row['round']}'s envelopes add up to more than "
                            f"{MESSAGES_MAX} bytes: ask for them one by one")
        record = decode_record(bytes(row["record"]))
        return Response(msgspec.msgpack.encode([wires.get(a.digest, b"")
                                                for a in record.accepted]),
                        media_type="application/octet-stream")

    @aim.endpoint(
        "/log/message/{digest}", documentation="An accepted message's signed envelope by its "
        "wire digest (hex), as the sender signed it; 404 once the round's messages are "
        "pruned (--retain-rounds) or when only its digest was kept (large masked vectors).",
        output="<envelope bytes>", example_calls=[example("<envelope bytes>")],
        budget=LOG_FETCH)
    async def log_message(request: Request) -> Response:
        digest = digest_param(request.path_params.get("digest"))
        wire = store.log.message_wire(digest)
        if wire is None:
            raise HTTPError(404, f"no envelope kept for message {digest.hex()}")
        return Response(wire, media_type="application/octet-stream")

    @aim.endpoint(
        "/log/blob/{digest}", documentation="A model the log's rounds started from, by its "
        "SHA-256 (hex): the current one and the last few (safetensors).",
        output="<blob bytes>", example_calls=[example("<blob bytes>")], budget=LOG_FETCH)
    async def log_blob(request: Request) -> Response:
        digest = digest_param(request.path_params.get("digest"))
        blob = store.get_blob(digest.hex())
        if blob is None:
            raise HTTPError(404, f"no blob {digest.hex()} kept")
        return Response(blob, media_type="application/octet-stream")


def add_job_log_endpoints(aim: AIM, joblog: JobLog, peer_id: str) -> None:
    @aim.endpoint(
        "/log/jobs", documentation="The job log (prompt search): the coordinator's peer id, "
        "the first and last entries, and the signed heads (hex envelopes of domain log/job: "
        "entry, record hash, previous hash, job number) from entry `from` on (at most 1000). "
        "Anyone can check the chain; a record itself is its user's (/log/jobs/{n}).",
        input_query="from=<int>",
        output={"coordinator": "<peer id>", "first": "<int>", "last": "<int>",
                "heads": ["<hex envelope>"]},
        example_calls=[example({"coordinator": "12D3KooW...", "first": 1, "last": 2,
                                "heads": ["98 01 ...", "98 01 ..."]}, query="from=1")])
    async def job_log(request: Request) -> dict[str, Any]:
        first, last = joblog.bounds()
        start = int_param(request.query_params.get("from"), "from", default=first or 1, lo=1)
        return {"coordinator": peer_id, "first": first, "last": last,
                "heads": [h.hex() for h in joblog.heads(start, 1000)]}

    @aim.endpoint(
        "/log/jobs/{n}", documentation="Job-log entry n's record (msgpack, "
        "protocol.audit.jobs.JobRecord: the request, every LLM output the search used with the "
        "signed evaluations behind it, the published result), exactly as hashed; its signed "
        "head in X-Log-Head. Only for the hypc_user whose job it was (403 otherwise).",
        input_headers={"hypc_user": "<the job's user>"}, output="<record bytes>",
        example_calls=[example("<record bytes>")], budget=LOG_FETCH)
    async def job_record(request: Request) -> Response:
        n = int_param(request.path_params.get("n"), "n", lo=1)
        row = joblog.row(n)
        if row is None:
            first, last = joblog.bounds()
            raise HTTPError(404, f"the job log holds no entry {n} (it holds {first}..{last})")
        if row["user"] != (request.headers.get("hypc_user") or "anonymous")[:128]:
            raise HTTPError(403, f"job-log entry {n} belongs to another user")
        return Response(bytes(row["record"]), media_type="application/octet-stream",
                        headers={"X-Log-Head": bytes(row["head"]).hex()})
