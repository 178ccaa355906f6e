"""The live dashboard: ``GET /`` (a page that ships with the package, no CDN) and
``GET /dashboard/state``, the one JSON document the page polls every two seconds.

The page shows the round running now (number, phase, accepted so far, time left), the
metric curve over published rounds (stats: the mean height; fedavg: accuracy;
incremental: loss), the last rounds (accepted, dropped, rejected by reason), peers
(admitted, connected, last seen, reputation, refusals), the privacy budget spent (DP
rounds) and prompt jobs' progress. Everything it reads is already public on the API.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .aim import AIM, ClientBudget, example
from .views import View

HISTORY = 200  # rounds on the curve
POLLING = ClientBudget(per_minute=120, burst=20, concurrent=2, total_concurrent=16)
PEERS_SHOWN = 50
METRICS = ("accuracy", "loss", "mean_height", "score")  # the first a result holds is plotted
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"),
          "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
          "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8")}


def _asset(name: str) -> bytes:
    return resources.files("coordinator").joinpath("static", name).read_bytes()


def _metric(result: dict[str, Any] | None) -> tuple[str | None, float | None]:
    if not result:
        return None, None
    combined = result.get("combined") or {}
    for name in METRICS:
        value = result.get(name, combined.get(name))
        if isinstance(value, int | float):
            return name, float(value)
    return None, None


def _dropped(result: dict[str, Any]) -> int:
    for part in (result, *(v for v in result.values() if isinstance(v, dict))):
        if isinstance(part.get("dropped"), int):
            return part["dropped"]
    return 0


def _summary(row: Any, cache: dict[tuple[int, float], dict[str, Any]]) -> dict[str, Any]:
    """One round's line and point. A closed round's never changes, so it is decoded once
    (a SecAgg+ result at N=1000 is 50 KB of JSON; 200 of them per poll would be 10 MB)."""
    key = (row["round"], row["closed_at"] or 0.0)
    if key in cache:
        return cache[key]
    result = json.loads(row["result"]) if row["result"] else {}
    name, value = _metric(result)
    line = {"round": row["round"], "status": row["status"], "accepted": row["accepted"] or 0,
            "dropped": _dropped(result), "rejected": json.loads(row["rejected"] or "{}"),
            "seconds": (row["closed_at"] - row["opened_at"]) if row["closed_at"] else None,
            "metric": name, "value": value}
    if row["closed_at"]:
        if len(cache) >= 2 * HISTORY:
            cache.clear()
        cache[key] = line
    return line


def state(view: View, cache: dict[tuple[int, float], dict[str, Any]]) -> dict[str, Any]:
    store, now = view.store, time.time()
    rnd = view.open.round
    current = None
    if rnd is not None:
        current = {"round": rnd.number, "phase": view.open.phase,
                   "mode": getattr(view.open.mode, "name", None),
                   "participants": len(view.open.participants),
                   "accepted": rnd.accepted_count(),
                   "seconds_left": max(0.0, rnd.deadline - now)}
    rounds = [_summary(row, cache) for row in reversed(store.rounds(HISTORY, 0))]
    connected = set(view.node.connected_peers())
    listed = store.recent_peers(PEERS_SHOWN)
    refusals = store.rejections_by_peer([p["peer_id"] for p in listed])
    peers = [{"peer_id": p["peer_id"], "connected": p["peer_id"] in connected,
              "last_seen_s": now - p["last_seen"], "reputation": view.reputation.score(
                  p["peer_id"]) if view.reputation.scores else None,
              "rejected": refusals.get(p["peer_id"], {})} for p in listed]
    pub = store.latest_published()
    dp = (json.loads(pub["result"]).get("dp") if pub and pub["result"] else None)
    prompt = None
    if view.prompt_jobs is not None:
        prompt = view.prompt_jobs.queue()
        if prompt["current_job_number"] is not None:
            row = store.job(prompt["current_job_number"])
            prompt["progress"] = json.loads(row["progress"]) if row and row["progress"] \
                else None
    return {"coordinator": {"peer_id": view.peer_id, "workload": view.workload.name,
                            "uptime_s": now - view.started_at},
            "current": current, "last_round": store.last_round(), "rounds": rounds,
            "peers": {"admitted": store.count_admitted(),
                      "connected": len(connected & store.admitted()), "shown": peers},
            "rejected_total": store.rejection_totals(), "dp": dp, "prompt": prompt,
            "at": now}


def add_dashboard(aim: AIM, view: View) -> None:
    cache: dict[tuple[int, float], dict[str, Any]] = {}
    for uri, (name, media) in ASSETS.items():
        body = _asset(name)

        @aim.endpoint(uri, documentation="The live dashboard" + (
            "'s page (open it in a browser): rounds as they run, the metric curve, peers, "
            "privacy budget and prompt jobs; it polls /dashboard/state" if uri == "/" else
            f": {name}, shipped with the package"), output=f"<{media.split(';')[0]}>",
            example_calls=[example("<!doctype html>..." if uri == "/" else f"<{name}>")])
        async def asset(request: Request, body: bytes = body, media: str = media) -> Response:
            return Response(body, media_type=media, headers={"Cache-Control": "no-cache"})

    @aim.endpoint(
        "/dashboard/state", documentation="What the dashboard shows, in one document: the "
        "round running now (phase, accepted so far, seconds left), the last 200 rounds "
        "(status, accepted, dropped, rejected by reason, duration, the plotted metric), "
        "peers (admitted, connected, the 50 seen last with reputation and refusals), "
        "refusals by reason, the DP budget spent, prompt jobs' progress. At most 120 calls "
        "a minute per client (the page makes 30).",
        output={"current": {"round": "<int>", "phase": "<str>", "accepted": "<int>"},
                "rounds": [{"round": "<int>", "status": "<str>", "metric": "<str>",
                            "value": "<float>"}],
                "peers": {"admitted": "<int>", "connected": "<int>", "shown": []}},
        example_calls=[example({"current": None, "last_round": 3, "rounds": [
            {"round": 3, "status": "published", "accepted": 4, "dropped": 0, "rejected": {},
             "seconds": 0.4, "metric": "mean_height", "value": 171.5}],
            "peers": {"admitted": 4, "connected": 4, "shown": []}})], budget=POLLING)
    async def dashboard_state(request: Request) -> dict[str, Any]:
        return state(view, cache)
