"""A small AIM (HyperCycle AI Machine) framework of our own, on Starlette.

Shape as the AIM spec has it: one decorator per endpoint carries the endpoint's
manifest entry, and ``GET /manifest.json`` is generated from them. Every
response (errors included) carries the AIM CORS headers; unknown routes and
wrong methods answer JSON 404/405; a handler signals a client error by
raising :class:`HTTPError` (JSON ``{"error": reason}``); anything else that
escapes a handler is logged and answered as JSON 500 (a bug to fix, but the
server stays up and never leaks a traceback).

Requests are bounded before any handler runs: a GET that carries a body is
refused (400), a JSON body is read only up to its endpoint's cap (413 past
it, 400 when the client hangs up mid-body), and an endpoint declared with a
:class:`ClientBudget` admits each client (by IP address) only so often and so many
at once (429 with ``Retry-After``), and everyone together only so many at
once (503): what an unauthenticated caller can make the server spend is the
budget, not their persistence.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from protocol.policy.ratelimit import Buckets

log = logging.getLogger("hypergossip.aim")

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Allow-Credentials": "false",
}
DEFAULT_MAX_BODY = 64 * 1024

Handler = Callable[[Request], Awaitable[Any]]


class HTTPError(Exception):
    """A client error: answered as ``{"error": reason}`` with ``status``."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ClientBudget:
    """What one client (IP address) may spend on an expensive endpoint: ``per_minute``
    calls a minute, bursts of ``burst``, ``concurrent`` at once; and every client together
    ``total_concurrent`` at once."""

    per_minute: float
    burst: int
    concurrent: int = 1
    total_concurrent: int = 4


class _Spender:
    """The running tally behind one endpoint's :class:`ClientBudget`."""

    def __init__(self, budget: ClientBudget):
        self.budget = budget
        self.buckets = Buckets(budget.per_minute / 60, budget.burst, max_keys=65536)
        self.running: dict[str, int] = {}

    def enter(self, client: str) -> None:
        b = self.budget
        if sum(self.running.values()) >= b.total_concurrent:
            raise HTTPError(503, f"busy: {b.total_concurrent} such requests running; retry "
                                 "later")
        if self.running.get(client, 0) >= b.concurrent:
            raise HTTPError(429, f"at most {b.concurrent} such request at a time per client")
        bucket = self.buckets.bucket(client, time.monotonic())
        if not bucket.take(time.monotonic()):
            raise HTTPError(429, f"at most {b.per_minute:g} such requests a minute per "
                                 f"client; retry in {bucket.wait(time.monotonic()):.0f} s")
        self.running[client] = self.running.get(client, 0) + 1

    def leave(self, client: str) -> None:
        self.running[client] -= 1
        if not self.running[client]:
            del self.running[client]


@dataclass
class Endpoint:
    uri: str
    methods: list[str]
    handler: Handler
    documentation: str
    output: Any
    input_query: Any = ""
    input_headers: Any = ""
    input_body: Any = ""
    example_calls: list[dict[str, Any]] = field(default_factory=list)
    is_public: bool = True
    budget: ClientBudget | None = None

    def manifest(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "input_methods": self.methods,
            "input_query": self.input_query,
            "input_headers": self.input_headers,
            "input_body": self.input_body,
            "output": self.output,
            "documentation": self.documentation,
            "example_calls": self.example_calls,
            "is_public": self.is_public,
        }


def example(output: Any, *, method: str = "GET", query: str = "", body: Any = "",
            headers: Any = "") -> dict[str, Any]:
    """One ``example_calls`` entry."""
    return {"body": body, "method": method, "query": query, "headers": headers, "output": output}


class AIM:
    def __init__(self, *, name: str, short_name: str, version: str, license: str, author: str,
                 description: str = "", documentation_url: str | None = None):
        self.info = {"name": name, "short_name": short_name, "version": version,
                     "license": license, "author": author}
        if description:
            self.info["description"] = description
        if documentation_url:
            self.info["documentation_url"] = documentation_url
        self.endpoints: list[Endpoint] = []

    def endpoint(self, uri: str, methods: Sequence[str] = ("GET",), *, documentation: str,
                 output: Any, example_calls: Sequence[dict[str, Any]] = (),
                 input_query: Any = "", input_headers: Any = "", input_body: Any = "",
                 is_public: bool = True, budget: ClientBudget | None = None
                 ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(Endpoint(
                uri, [m.upper() for m in methods], handler, documentation, output,
                input_query, input_headers, input_body, list(example_calls), is_public,
                budget))
            return handler

        return register

    def manifest(self) -> dict[str, Any]:
        manifest_entry = Endpoint("/manifest.json", ["GET"], _noop,
                                  "This AIM's manifest: its endpoints and example calls.",
                                  {"name": "...", "endpoints": ["..."]},
                                  example_calls=[example({"name": self.info["name"]})])
        eps = [e.manifest() for e in self.endpoints] + [manifest_entry.manifest()]
        return {**self.info, "endpoints": eps}

    def app(self) -> Starlette:
        routes = [Route(e.uri, _wrap(e.handler, e.budget), methods=e.methods)
                  for e in self.endpoints]
        if not any(e.uri == "/manifest.json" for e in self.endpoints):
            async def manifest(_: Request) -> dict[str, Any]:
                return self.manifest()

            routes.append(Route("/manifest.json", _wrap(manifest), methods=["GET"]))
        app = Starlette(routes=routes, exception_handlers={
            HTTPException: _http_exception, Exception: _server_error})
        return CORSMiddleware(NoBodyOnGet(app))  # type: ignore[return-value]


async def _noop(_: Request) -> None:
    return None


def json_response(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def _wrap(handler: Handler, budget: ClientBudget | None = None
          ) -> Callable[[Request], Awaitable[Response]]:
    spender = None if budget is None else _Spender(budget)

    async def endpoint(request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        try:
            if spender is not None:
                spender.enter(client)
            try:
                out = await handler(request)
            finally:
                if spender is not None:
                    spender.leave(client)
        except HTTPError as exc:
            headers = {"Retry-After": "10"} if exc.status in (429, 503) else None
            return JSONResponse({"error": exc.reason, "status": exc.status}, exc.status,
                                headers=headers)
        return out if isinstance(out, Response) else json_response(out)

    return endpoint


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    reason = exc.detail
    if exc.status_code == 404:
        reason = f"no such endpoint: {request.url.path} (see /manifest.json)"
    elif exc.status_code == 405:
        reason = f"method {request.method} not allowed on {request.url.path}"
    return json_response({"error": reason, "status": exc.status_code}, exc.status_code)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error serving %s %s", request.method, request.url.path)
    return json_response({"error": "internal error", "status": 500}, 500)


class NoBodyOnGet:
    """GET and HEAD carry no body here: one that declares one is refused before routing
    (a 60 kB body on ``GET /peers`` used to sit in the server unread)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            headers = dict(scope.get("headers", []))
            length = headers.get(b"content-length", b"0").strip()
            if length not in (b"", b"0") or b"transfer-encoding" in headers:
                await json_response({"error": f"{scope['method']} requests carry no body",
                                     "status": 400}, 400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class CORSMiddleware:
    """Adds the AIM CORS headers to every HTTP response; answers preflight OPTIONS."""

    def __init__(self, app: Any):
        self.app = app
        self._raw = [(k.lower().encode(), v.encode()) for k, v in CORS_HEADERS.items()]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await Response(status_code=204, headers=CORS_HEADERS)(scope, receive, send)
            return

        async def send_with_cors(message: dict) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in self._raw if h[0] not in names]
            await send(message)

        await self.app(scope, receive, send_with_cors)


# --- request helpers -------------------------------------------------------------------------
async def read_json(request: Request, schema: type | None = None, *,
                    max_bytes: int = DEFAULT_MAX_BODY) -> Any:
    """Read a size-capped JSON body, optionally strictly validated into ``schema``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPError(400, "bad Content-Length")
        if int(declared) > max_bytes:
            raise HTTPError(413, f"body over {max_bytes} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise HTTPError(413, f"body over {max_bytes} bytes")
    except ClientDisconnect:  # nobody reads the answer, but the log stays clean
        raise HTTPError(400, "the request body was cut short (client disconnected)") from None
    if not body:
        raise HTTPError(400, "expected a JSON body")
    try:
        if schema is None:
            return json.loads(body)
        return msgspec.json.decode(bytes(body), type=schema, strict=False)
    except msgspec.ValidationError as exc:
        raise HTTPError(422, f"invalid body: {exc}") from exc
    except (ValueError, UnicodeDecodeError, msgspec.DecodeError) as exc:
        raise HTTPError(400, f"body is not valid JSON: {exc}") from exc


def int_param(value: str | None, name: str, *, default: int | None = None, lo: int = 0,
              hi: int = 2**53) -> int:
    """Parse an integer path/query parameter within [lo, hi], else HTTP 400."""
    if value is None or value == "":
        if default is None:
            raise HTTPError(400, f"missing parameter {name}")
        return default
    try:
        n = int(value)
    except ValueError:
        raise HTTPError(400, f"parameter {name} must be an integer, got {value[:32]!r}") from None
    if not lo <= n <= hi:
        raise HTTPError(400, f"parameter {name} must be in [{lo}, {hi}]")
    return n
