"""LLM backends: echo, and the OpenAI-compatible client against a real HTTP server."""

from __future__ import annotations

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from peer.llm import BackendError, gen_params_json, make_backend

seen: list[dict] = []


async def chat(request: Request) -> JSONResponse:
    body = await request.json()
    seen.append({"body": body, "auth": request.headers.get("authorization")})
    text = body["messages"][-1]["content"].upper()
    return JSONResponse({"choices": [{"message": {"role": "assistant", "content": text}}]})


async def test_openai_backend_speaks_the_chat_completions_protocol(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cfg = Config()
    cfg.bind = ["127.0.0.1:0"]
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        urls = await nursery.start(lambda task_status: serve(
            Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])]), cfg,
            task_status=task_status, shutdown_trigger=stop.wait))
        backend = make_backend("openai", url=urls[0] + "/v1", model="tiny", max_new_tokens=7)
        out = await trio.to_thread.run_sync(backend.generate, "say hi")
        bad = make_backend("openai", url=urls[0] + "/nope")
        with pytest.raises(BackendError):
            await trio.to_thread.run_sync(bad.generate, "x")
        stop.set()
    assert out == "SAY HI"
    body = seen[0]["body"]
    assert body["model"] == "tiny" and body["temperature"] == 0 and body["max_tokens"] == 7
    assert seen[0]["auth"] == "Bearer sk-test"
    assert backend.model_digest.startswith("openai:")


def test_echo_backend_and_canonical_params():
    b = make_backend("echo", max_new_tokens=4)
    assert b.generate("abc") == "abc" and b.model_digest == "echo"
    assert gen_params_json(b) == '{"decoding":"greedy","max_new_tokens":4}'
    with pytest.raises(ValueError):
        make_backend("nope")
