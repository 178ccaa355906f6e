"""Prompt-search jobs behind the AIM API: a queue, a runner, a shared LLM-output cache.

``PromptJobs.run`` is one trio task that takes queued jobs in order; the
synchronous ``POST /prompt`` runs its (small, time-bounded) job at once in
the caller's request instead. A job is a :class:`protocol.prompts.PromptSearch`
driven generation by generation: look every needed call up in the SQLite
output cache (shared by all jobs, keyed by model digest, parameters and
prompt), evaluate the rest, record progress, breed. Evaluation runs the
coordinator's own backend in a worker thread.

Jobs, their progress and results live in SQLite (``prompt_jobs``); a job
that was running when the coordinator stopped is queued again on start (the
output cache makes the rerun cheap).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from peer.llm import Backend, BackendError, Embedder
from protocol import ga
from protocol.prompts import Budget, PromptSearch

from .store import Store

log = logging.getLogger("hypergossip.prompts")

MAX_QUEUE = 1000


class PromptRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of POST /prompt and /prompt/jobs (only target_output is the seed's)."""

    target_output: str = ""
    task: str = "target"  # or "sentiment" (target_output unused)
    population: int = 16
    generations: int = 30
    seed: int = 0
    fitness: dict[str, float] = {}
    max_calls: int = 2000
    max_seconds: float = 40.0
    patience: int | None = 8
    cost_only: bool = False

    def check(self, *, sync: bool) -> str | None:
        if self.task not in ("target", "sentiment"):
            return "task must be 'target' or 'sentiment'"
        if self.task == "target" and not 1 <= len(self.target_output) <= 500:
            return "target_output must be a string of 1..500 characters"
        if not 2 <= self.population <= 200 or not 1 <= self.generations <= 500:
            return "population must be in [2, 200] and generations in [1, 500]"
        if not 1 <= self.max_calls <= 100_000:
            return "max_calls must be in [1, 100000]"
        limit = 50.0 if sync else 24 * 3600.0
        if not 0 < self.max_seconds <= limit:
            return f"max_seconds must be in (0, {limit:g}] here"
        if any(k not in ("vader", "lexical", "length", "embedding") or not 0 <= v <= 100
               for k, v in self.fitness.items()):
            return "fitness weights: vader, lexical, length, embedding in [0, 100]"
        return None


@dataclass
class JobsConfig:
    price_per_call: float = 0.0001
    currency: str = "HyPC"


class PromptJobs:
    def __init__(self, store: Store, backend: Backend, config: JobsConfig | None = None,
                 embedder: Embedder | None = None):
        self.store, self.backend = store, backend
        self.config = config or JobsConfig()
        self.embedder = embedder
        self._wake = trio.Event()
        self.current: int | None = None
        store.requeue_running_jobs()

    # --- API side ---------------------------------------------------------------------------
    def estimate(self, req: PromptRequest) -> dict[str, Any]:
        """Price from the number of LLM calls: at most one per new phenotype (population x
        generations, capped by max_calls); the estimate assumes the fitness cache saves
        half of them (the baseline bench saves more)."""
        per = 40 if req.task == "sentiment" else 1
        most = min(req.max_calls, req.population * req.generations * per)
        least = min(most, req.population * per)
        expected = max(least, min(most, most // 2))
        p = self.config.price_per_call
        return {"min": least * p, "max": most * p, "estimated_cost": expected * p,
                "currency": self.config.currency, "estimated_llm_calls": expected,
                "max_llm_calls": most}

    def submit(self, user: str, req: PromptRequest) -> int:
        if self.store.queue_length() >= MAX_QUEUE:
            raise OverflowError(f"the queue holds {MAX_QUEUE} jobs already")
        number = self.store.add_job(user, msgspec.json.encode(req).decode())
        self._wake.set()
        return number

    def queue(self) -> dict[str, Any]:
        return {"current_job_number": self.current,
                "next_job_number": self.store.next_queued_job(),
                "queue_length": self.store.queue_length()}

    async def run_now(self, req: PromptRequest) -> dict[str, Any]:
        return await self._run(req, job=None)

    # --- runner ------------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            number = self.store.next_queued_job()
            if number is None:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            row = self.store.job(number)
            assert row is not None
            self.current = number
            self.store.set_job(number, status="running")
            try:
                req = msgspec.json.decode(row["request"], type=PromptRequest)
                result = await self._run(req, job=number)
                self.store.set_job(number, status="done", result=json.dumps(result))
            except (ValueError, BackendError) as exc:
                log.warning("prompt job %d failed: %s", number, exc)
                self.store.set_job(number, status="failed",
                                   result=json.dumps({"error": str(exc)}))
            self.current = None

    async def _run(self, req: PromptRequest, job: int | None) -> dict[str, Any]:
        weights = dict(req.fitness) or {"vader": 1.0}
        embed = self.embedder.embed if self.embedder and weights.get("embedding") else None
        if weights.get("embedding") and embed is None:
            raise ValueError("the embedding scorer is not available on this coordinator")
        config = ga.GAConfig(population=req.population, generations=req.generations,
                             seed=req.seed, elite=2, patience=req.patience)
        if embed is not None:  # loading the embedder takes seconds: not on the event loop
            await trio.to_thread.run_sync(embed, req.target_output)
        search = PromptSearch(req.task, req.target_output, self.backend.model_digest,
                              self.backend.gen_params, config,
                              Budget(req.max_calls, req.max_seconds), weights, embed=embed,
                              started=time.monotonic())
        while True:
            needed = search.calls_needed()
            for key, output in self.store.cached_outputs([search.key(p) for p in needed]).items():
                if key not in search.outputs:
                    search.outputs[key] = output
                    search.hits += 1
            for prompt in [p for p in needed if search.key(p) not in search.outputs]:
                if search.out_of_budget(time.monotonic()):
                    break
                output = await trio.to_thread.run_sync(self.backend.generate, prompt)
                search.deliver(prompt, output)
                self.store.cache_output(search.key(prompt), search.model_digest, output)
            if any(search.key(p) not in search.outputs for p in needed):
                search.search.stopped = search.out_of_budget(time.monotonic())
                break  # budget spent mid-generation: the best so far stands
            going = await trio.to_thread.run_sync(search.step, time.monotonic())
            if job is not None:
                self.store.set_job(job, progress=json.dumps(search.summary(time.monotonic())))
            if not going:
                break
        if search.search.best is None:  # not even the first generation could be scored
            return {"prompt": "", "score": 0.0, "llm_calls": search.calls,
                    "cache_hits": search.hits, "generations": 0,
                    "stopped": search.search.stopped or "budget spent before any score"}
        return search.summary(time.monotonic())
