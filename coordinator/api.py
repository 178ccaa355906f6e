"""The coordinator's AIM endpoints. Read-only views of the coordinator's state."""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from peer.metrics import metrics_response
from protocol.wire.messages import StatsContribution

from .aim import AIM, ClientBudget, HTTPError, example, int_param, read_json
from .dashboard import add_dashboard
from .logapi import add_log_endpoints
from .prompt_jobs import MAX_PER_USER, MAX_QUEUE
from .views import View

if TYPE_CHECKING:
    from sqlite3 import Row


VERSION = "0.1.0"
PEER_ID = "12D3KooW..."
# what one client (IP address) may spend on the expensive endpoints
SEARCH_NOW = ClientBudget(per_minute=10, burst=10, concurrent=1, total_concurrent=2)  # POST /prompt
QUEUE_JOB = ClientBudget(per_minute=1, burst=8, concurrent=1, total_concurrent=4)  # /prompt/jobs


def round_view(row: Row, *, detail: bool = False, store: Any = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "round": row["round"],
        "workload": row["workload"],
        "status": row["status"],
        "opened_at": row["opened_at"],
        "closed_at": row["closed_at"],
        "deadline": row["deadline"],
        "min_peers": row["min_peers"],
        "accepted": row["accepted"],
        "rejected": json.loads(row["rejected"]),
        "seconds": (row["closed_at"] - row["opened_at"]) if row["closed_at"] else None,
        "result": json.loads(row["result"]) if row["result"] else None,
        "state_digest": bytes(row["state_digest"]).hex() if row["state_digest"] else None,
    }
    if detail and store is not None:
        view["messages"] = store.message_digests(row["round"])
    return view


def build_app(view: View):
    aim = AIM(name="hypergossip coordinator", short_name="hypergossip", version=VERSION,
              license="MIT", author="hypergossip developers",
              description="Coordinator of a libp2p learning network: admits peers, verifies "
                          "signed contributions, runs rounds and publishes their results.")
    store = view.store

    @aim.endpoint(
        "/health", documentation="Liveness, this coordinator's libp2p peer id and multiaddrs "
        "(give one to a peer as --bootstrap), the current round and uptime, and 'contained': "
        "inputs below our envelopes that were refused or broke a task of the network stack "
        "and were contained, by kind (gossip flood, yamux window, request limit, ...).",
        output={"status": "ok", "peer_id": "<str>", "multiaddrs": ["<str>"], "round": "<int>",
                "workload": "<str>", "uptime_s": "<float>", "contained": {"<kind>": "<int>"}},
        example_calls=[example({"status": "ok", "peer_id": PEER_ID,
                                "multiaddrs": [f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER_ID}"],
                                "round": 3, "workload": "stats", "uptime_s": 12.5})])
    async def health(request: Request) -> dict[str, Any]:
        return {"status": "ok", "peer_id": view.peer_id, "multiaddrs": view.node.addrs,
                "round": view.round_number(),
                "workload": view.workload.name, "uptime_s": time.time() - view.started_at,
                "contained": dict(view.node.faults.by_kind)}

    @aim.endpoint(
        "/metrics", documentation="Prometheus metrics in the text exposition format: rounds "
        "by status, round and phase durations (histograms), messages accepted by domain and "
        "refused by reason, admitted, live and connected peers, sessions and their queued "
        "frames, libp2p bytes in and out, blob fetches and requests, inputs contained by the "
        "network layer, prompt jobs queued, LLM calls and cache hits.",
        output="<text/plain; version=0.0.4>",
        example_calls=[example("# HELP hypergossip_rounds_total Rounds closed, by status\n"
                               "# TYPE hypergossip_rounds_total counter\n"
                               'hypergossip_rounds_total{status="published"} 3.0\n')])
    async def metrics(request: Request) -> Response:
        return metrics_response(view.metrics)

    @aim.endpoint(
        "/peers", documentation="Admitted peers, oldest first, a page at a time (query: limit "
        "1-1000, default 100; offset), with last-seen time, whether connected now, and "
        "counts of the messages they delivered that were refused, by reason (counted against "
        "the peer the transport authenticated, never the key a message names); refusals of "
        "peers that are not admitted are under 'strangers' (at most 100 listed); "
        "'rejected_total' sums all by reason; 'admission' counts enrolments the admission "
        "policy refused, by reason.", input_query="limit=<int>&offset=<int>",
        output={"total": "<int>", "peers": [{"peer_id": "<str>", "admitted_at": "<unix s>",
                                              "last_seen": "<unix s>", "connected": "<bool>",
                                              "rejected": {"<reason>": "<int>"}}],
                "strangers": {"<peer id>": {"<reason>": "<int>"}},
                "rejected_total": {"<reason>": "<int>"}, "admission": {"<reason>": "<int>"}},
        example_calls=[example({"total": 1, "peers": [
            {"peer_id": PEER_ID, "admitted_at": 1764070000.0, "last_seen": 1764070042.1,
             "connected": True, "addrs": [], "agent": "hypergossip-peer/0.1",
             "rejected": {"replay": 1}}], "strangers": {}, "rejected_total": {"replay": 1},
            "admission": {}}, query="limit=100")])
    async def peers(request: Request) -> dict[str, Any]:
        limit = int_param(request.query_params.get("limit"), "limit", default=100, lo=1,
                          hi=1000)
        offset = int_param(request.query_params.get("offset"), "offset", default=0)
        connected = set(view.node.connected_peers())
        listed = store.peers(limit, offset)
        rejections = store.rejections_by_peer([p["peer_id"] for p in listed])
        for p in listed:
            p["connected"] = p["peer_id"] in connected
            p["rejected"] = rejections.get(p["peer_id"], {})
        return {"total": store.count_admitted(), "peers": listed,
                "strangers": store.stranger_rejections(100),
                "rejected_total": store.rejection_totals(),
                "admission": dict(view.admission.refused)}

    @aim.endpoint(
        "/model", documentation="The current round and its status, and the latest published "
        "result with the digest of the published state (SHA-256 of its canonical JSON). With "
        "differential privacy on, 'dp' gives that round's epsilon at delta and the cumulative "
        "epsilon over all DP rounds so far (RDP accountant).",
        output={"round": "<int>", "status": "<open|published|failed|idle>",
                "published_round": "<int|null>", "result": {}, "state_digest": "<hex>",
                "dp": {"epsilon": "<float>", "delta": "<float>",
                       "cumulative_epsilon": "<float>"}},
        example_calls=[example({"round": 4, "status": "open", "published_round": 3,
                                "result": {"count": 4, "mean_height": 171.2,
                                           "mean_weight": 70.1},
                                "state_digest": "9f86d0..."})])
    async def model(request: Request) -> dict[str, Any]:
        pub = store.latest_published()
        result = json.loads(pub["result"]) if pub else None
        current = view.open.number
        last = store.round_row(store.last_round())
        return {
            "round": current if current is not None else (last["round"] if last else 0),
            "status": "open" if current is not None else (last["status"] if last else "idle"),
            "workload": view.workload.name,
            "published_round": pub["round"] if pub else None,
            "result": result,
            "dp": (result or {}).get("dp"),
            "loss": (result or {}).get("loss"),
            "model_digest": (result or {}).get("model_digest"),
            "state_digest": bytes(pub["state_digest"]).hex() if pub else None,
        }

    add_dashboard(aim, view)
    add_log_endpoints(aim, view)
    if view.workload.state_blob() is not None:
        add_model_endpoints(aim, view)
    if view.prompt_jobs is not None:
        add_prompt_endpoints(aim, view)
    if getattr(view.workload, "replicated", False) or view.workload.name == "prompt":
        add_reputation_endpoint(aim, view)

    @aim.endpoint(
        "/rounds", documentation="Rounds, newest first. Query: limit (1-500, default 50), "
        "offset (default 0).", input_query="limit=<int>&offset=<int>",
        output={"total": "<int>", "rounds": [{"round": "<int>", "status": "<str>"}]},
        example_calls=[example({"total": 1, "rounds": [{"round": 1, "status": "published",
                                                        "accepted": 4}]},
                               query="limit=10")])
    async def rounds(request: Request) -> dict[str, Any]:
        limit = int_param(request.query_params.get("limit"), "limit", default=50, lo=1, hi=500)
        offset = int_param(request.query_params.get("offset"), "offset", default=0)
        return {"total": store.count_rounds(),
                "rounds": [round_view(r) for r in store.rounds(limit, offset)]}

    @aim.endpoint(
        "/rounds/{n}", documentation="One round: status, timing, accepted count, rejections by "
        "reason, published result, state digest, and the digests of its accepted messages.",
        output={"round": "<int>", "status": "<str>", "result": {}, "messages": [
            {"sender": "<peer id>", "domain": "<str>", "digest": "<hex>"}]},
        example_calls=[example({"round": 1, "status": "published", "accepted": 4,
                                "rejected": {}, "result": {"count": 4}, "messages": []})])
    async def round_detail(request: Request) -> dict[str, Any]:
        n = int_param(request.path_params.get("n"), "n", lo=1)
        row = store.round_row(n)
        if row is None:
            raise HTTPError(404, f"no round {n} (latest is {store.last_round()})")
        return round_view(row, detail=True, store=store)

    if view.workload.takes_unprotected:
        add_legacy_endpoints(aim, view)
    return aim.app()


def _user(request: Request) -> str:
    return (request.headers.get("hypc_user") or "anonymous")[:128]


def _cost_only(request: Request, req: Any) -> bool:
    flag = request.query_params.get("cost_only") or request.headers.get("cost_only")
    return bool(getattr(req, "cost_only", False)) or flag not in (None, "", "0", "false")


def add_prompt_endpoints(aim: AIM, view: View) -> None:
    from .prompt_jobs import PromptRequest

    jobs = view.prompt_jobs
    assert jobs is not None
    fields_doc = ("Body: target_output (the seed's field) and optionally task "
                  "('target' or 'sentiment'), population, generations, seed, fitness "
                  "(weights of vader, lexical, length, embedding; default vader), max_calls, "
                  "max_seconds, patience, cost_only.")

    async def read(request: Request) -> Any:
        return await read_json(request, PromptRequest, max_bytes=16 * 1024)

    @aim.endpoint(
        "/prompt", ["POST"], documentation="Evolve a prompt whose LLM output comes close to "
        "target_output (genetic search; each phenotype evaluated at most once, outputs cached "
        "by model digest, parameters and prompt). Answers within 60 s: max_seconds is at most "
        "50 (default 40). " + fields_doc + " With cost_only (body, query or header) it "
        "answers the estimated price instead of working.",
        input_body={"target_output": "<str>"},
        output={"prompt": "<str>", "score": "<float>", "output": "<str>",
                "llm_calls": "<int>", "cache_hits": "<int>", "generations": "<int>",
                "best_per_generation": ["<float>"], "stopped": "<str>"},
        example_calls=[example({"prompt": "cheerful, bright, sassy", "score": 0.996,
                                "llm_calls": 534, "cache_hits": 66, "generations": 6},
                               method="POST", body={"target_output": "simple, lively, strong"})],
        budget=SEARCH_NOW)
    async def prompt(request: Request) -> dict[str, Any]:
        req = await read(request)
        if _cost_only(request, req):
            return jobs.estimate(req)
        if why := req.check(sync=True):
            raise HTTPError(422, why)
        return await jobs.run_now(req, _user(request))

    @aim.endpoint(
        "/prompt/jobs", ["POST"], documentation="Queue a long prompt search; answers its "
        "job_number (see /queue, /result). " + fields_doc + " max_seconds up to 6 hours; "
        f"at most {MAX_PER_USER} jobs waiting or running per hypc_user and {MAX_QUEUE} "
        "waiting in all (429 beyond).",
        input_body={"target_output": "<str>", "generations": "<int>"},
        output={"job_number": "<int>"},
        example_calls=[example({"job_number": 7}, method="POST",
                               body={"target_output": "simple, lively, strong",
                                     "generations": 100, "max_seconds": 3600})],
        budget=QUEUE_JOB)
    async def prompt_job(request: Request) -> dict[str, Any]:
        req = await read(request)
        if _cost_only(request, req):
            return jobs.estimate(req)
        if why := req.check(sync=False):
            raise HTTPError(422, why)
        try:
            return {"job_number": jobs.submit(_user(request), req)}
        except OverflowError as exc:
            raise HTTPError(429, str(exc)) from None

    @aim.endpoint(
        "/queue", documentation="The prompt-job queue: the job running now, the next one, and "
        "how many wait.", output={"current_job_number": "<int|null>",
                                  "next_job_number": "<int|null>", "queue_length": "<int>"},
        example_calls=[example({"current_job_number": 7, "next_job_number": 8,
                                "queue_length": 1})])
    async def queue(request: Request) -> dict[str, Any]:
        return jobs.queue()

    @aim.endpoint(
        "/result", documentation="A prompt job's state and, when completed, its result; "
        "progress holds the best score per generation so far. Only for the hypc_user who "
        "submitted it (403 otherwise).", input_query="job_number=<int>",
        input_headers={"hypc_user": "<the submitting user>"},
        output={"job_number": "<int>", "completed": "<bool>", "status": "<str>",
                "result": {}, "progress": {}},
        example_calls=[example({"job_number": 7, "completed": False, "status": "running",
                                "result": None, "progress": {"best_per_generation": [0.9]}},
                               query="job_number=7")])
    async def result(request: Request) -> dict[str, Any]:
        n = int_param(request.query_params.get("job_number"), "job_number", lo=1)
        row = view.store.job(n)
        if row is None:
            raise HTTPError(404, f"no job {n}")
        if row["user"] != _user(request):
            raise HTTPError(403, f"job {n} belongs to another user")
        return {"job_number": n, "completed": row["status"] in ("done", "failed"),
                "status": row["status"],
                "result": json.loads(row["result"]) if row["result"] else None,
                "progress": json.loads(row["progress"]) if row["progress"] else None}


def add_model_endpoints(aim: AIM, view: View) -> None:
    @aim.endpoint(
        "/model/weights", documentation="The current global model as safetensors (one float32 "
        "tensor 'weights'); its SHA-256 is the published model_digest, also sent in the "
        "X-Model-Digest header.", output="<safetensors bytes>",
        example_calls=[example("<898484 bytes of safetensors>")])
    async def model_weights(request: Request) -> Response:
        blob = view.workload.state_blob()
        if blob is None:
            raise HTTPError(404, "this workload publishes no model weights")
        return Response(blob, media_type="application/octet-stream", headers={
            "X-Model-Digest": hashlib.sha256(blob).hexdigest(),
            "Content-Disposition": 'attachment; filename="model.safetensors"'})



def add_reputation_endpoint(aim: AIM, view: View) -> None:
    rep = view.reputation

    @aim.endpoint(
        "/reputation", documentation="Peers' reputation scores (0..1), whether they are "
        "eligible for tasks (score >= threshold), and every change with its round and "
        "reason (replicas in incremental learning, evaluators in prompt search). Query: peer "
            "(one peer id, optional).", input_query="peer=<peer id>",
        output={"threshold": "<float>", "initial": "<float>", "peers": [
            {"peer_id": "<str>", "score": "<float>", "eligible": "<bool>",
             "changes": [{"round": "<int>", "score": "<float>", "why": "<str>"}]}]},
        example_calls=[example({"threshold": 0.2, "initial": 0.5, "peers": [
            {"peer_id": PEER_ID, "score": 0.0, "eligible": False, "changes": [
                {"round": 1, "score": 0.0,
                 "why": "segment 2: revealed a digest the decision refuted"}]}]})])
    async def reputation(request: Request) -> dict[str, Any]:
        only = request.query_params.get("peer")
        peers: dict[str, dict[str, Any]] = {}
        for p in sorted(view.store.admitted()):
            peers[p] = {"peer_id": p, "score": rep.score(p),
                        "eligible": rep.score(p) >= rep.threshold, "changes": []}
        for rnd, p, score, why in rep.history:
            if p in peers:
                peers[p]["changes"].append({"round": rnd, "score": score, "why": why})
        if only is not None:
            if only not in peers:
                raise HTTPError(404, f"no admitted peer {only[:64]!r}")
            peers = {only: peers[only]}
        return {"threshold": rep.threshold, "initial": rep.initial,
                "peers": sorted(peers.values(), key=lambda v: (v["score"], v["peer_id"]))}


def add_legacy_endpoints(aim: AIM, view: View) -> None:
    """The seed's challenge-1 API, so its reference clients keep working. Values posted here
    travel in the clear: they are counted apart and labelled unprotected in results."""
    store = view.store

    @aim.endpoint(
        "/current_model", documentation="The seed's legacy view: the current epoch (the open "
        "round, else the next) and the latest published totals and averages over every value, "
        "peers' protected inputs and legacy unprotected posts together.",
        output={"epochs": "<int>", "total_height": "<float>", "total_weight": "<float>",
                "samples": "<int>", "average_height": "<float|null>",
                "average_weight": "<float|null>"},
        example_calls=[example({"epochs": 4, "total_height": 686.0, "total_weight": 280.0,
                                "samples": 4, "average_height": 171.5,
                                "average_weight": 70.0})])
    async def current_model(request: Request) -> dict[str, Any]:
        pub = store.latest_published()
        result = json.loads(pub["result"]) if pub else {}
        combined = result.get("combined", result)
        return {"epochs": view.legacy_epoch(),
                "total_height": combined.get("total_height", 0.0),
                "total_weight": combined.get("total_weight", 0.0),
                "samples": combined.get("count", 0),
                "average_height": combined.get("mean_height"),
                "average_weight": combined.get("mean_weight")}

    @aim.endpoint(
        "/post_data/{epoch}", ["POST"], documentation="The seed's legacy upload of one "
        "person's height (cm, 50-250) and weight (kg, 20-300) for the current epoch. UNPROTECTED: "
        "the value travels and is stored in the clear; it is counted separately and labelled "
        "unprotected in the published result. Answers updated=false (with a reason) for another "
        "epoch; 4xx for a malformed body.",
        input_body={"height": "<float>", "weight": "<float>"},
        output={"updated": "<bool>", "reason": "<str, when not updated>"},
        example_calls=[example({"updated": True}, method="POST",
                               body={"height": 172.0, "weight": 68.5})])
    async def post_data(request: Request) -> dict[str, Any]:
        epoch = int_param(request.path_params.get("epoch"), "epoch", lo=0)
        value = await read_json(request, StatsContribution, max_bytes=1024)
        source = request.headers.get("hypc_user") or (
            request.client.host if request.client else "unknown")
        why_not = view.offer_legacy(epoch, value, f"http:{source}")
        return {"updated": True} if why_not is None else {"updated": False, "reason": why_not}
