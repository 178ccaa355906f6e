"""Prompt-search jobs behind the AIM API: a queue, a runner, a shared LLM-output cache.

``PromptJobs.run`` is one trio task that takes queued jobs in order; the
synchronous ``POST /prompt`` runs its (small, time-bounded) job at once in
the caller's request instead. A job is a :class:`protocol.prompts.search.PromptSearch`
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
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from peer.llm import Backend, BackendError, Embedder, gen_params_json
from protocol.prompts import ga
from protocol.prompts.evaluation import Verification
from protocol.prompts.search import BASELINE_SENTIMENT, Budget, PromptSearch

from .joblog import COORDINATOR, PEERS, JobLog, Trail
from .store import Store

log = logging.getLogger("hypergossip.prompts")

MAX_QUEUE = 64  # jobs waiting, all users together
MAX_PER_USER = 4  # jobs waiting or running for one hypc_user
MAX_JOB_SECONDS = 6 * 3600.0
# (prompts, model digest, gen params JSON) -> the peers' verified answers, or None (no peers)
Remote = Callable[[list[str], str, str], Awaitable[Verification | None]]


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
        limit = 50.0 if sync else MAX_JOB_SECONDS
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
                 embedder: Embedder | None = None, remote: Remote | None = None,
                 settle: Callable[[Verification, dict[str, str]], None] | None = None,
                 joblog: JobLog | None = None, lie: str = ""):
        self.store, self.backend = store, backend
        self.joblog, self.lie = joblog, lie  # lie: "fake-fitness" (coordinator.lies, tests)
        self.remote, self.settle = remote, settle
        self.params_json = gen_params_json(backend)
        self.config = config or JobsConfig()
        self.embedder = embedder
        self._wake = trio.Event()
        self.current: int | None = None
        self.llm_calls: Counter[str] = Counter()  # LLM outputs made, by where ("here", "peers")
        self.cache_hits = 0  # outputs taken from the shared cache instead
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
        if self.store.active_jobs(user) >= MAX_PER_USER:
            raise OverflowError(f"{user} has {MAX_PER_USER} jobs waiting or running already")
        number = self.store.add_job(user, msgspec.json.encode(req).decode())
        self._wake.set()
        return number

    def queue(self) -> dict[str, Any]:
        return {"current_job_number": self.current,
                "next_job_number": self.store.next_queued_job(),
                "queue_length": self.store.queue_length()}

    async def run_now(self, req: PromptRequest, user: str = "anonymous") -> dict[str, Any]:
        return await self._run(req, job=None, user=user)

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
                result = await self._run(req, job=number, user=row["user"])
                self.store.set_job(number, status="done", result=json.dumps(result))
            except (ValueError, BackendError) as exc:
                log.warning("prompt job %d failed: %s", number, exc)
                self.store.set_job(number, status="failed",
                                   result=json.dumps({"error": str(exc)}))
            self.current = None

    async def _run(self, req: PromptRequest, job: int | None, user: str) -> dict[str, Any]:
        trail = Trail()
        out, partial, search = await self._search(req, job, trail)
        if self.lie == "fake-fitness" and out.get("prompt"):
            out["score"] += 0.125
        if self.joblog is not None and search is not None:
            out["log_entry"] = self.joblog.write(  # the record holds out as it was before
                job or 0, user, msgspec.json.encode(req), search, trail, out, partial=partial,
                gen_params=self.params_json)
        return out

    async def _search(self, req: PromptRequest, job: int | None, trail: Trail
                      ) -> tuple[dict[str, Any], bool, PromptSearch | None]:
        """The search itself: (its result, whether it ended mid-generation, the search)."""
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
        partial = False
        while True:
            needed = search.calls_needed()
            await self._evaluate(search, needed, trail, budget=True)
            if any(search.key(p) not in search.outputs for p in needed):
                search.search.stopped = search.out_of_budget(time.monotonic())
                search.settle_partial()  # budget spent mid-generation: the best so far stands
                partial = True
                break
            going = await trio.to_thread.run_sync(search.step, time.monotonic())
            if job is not None:
                self.store.set_job(job, progress=json.dumps(search.summary(time.monotonic())))
            if not going:
                break
        if search.search.best is None:  # not even the first generation could be scored
            return {"prompt": "", "score": 0.0, "llm_calls": search.calls,
                    "cache_hits": search.hits, "generations": 0,
                    "stopped": search.search.stopped or "budget spent before any score"
                    }, partial, search
        out = search.summary(time.monotonic())
        if req.task == "sentiment":  # report on reviews the search never saw
            best = search.search.best[1]
            prompts = search.heldout_prompts(best) + search.heldout_prompts(BASELINE_SENTIMENT) \
                + search.prompts_of(BASELINE_SENTIMENT)
            await self._evaluate(search, prompts, trail, budget=False)
            out["held_out"] = {
                "reviews": len(search.held_out), "evolved": search.heldout_accuracy(best),
                "baseline": search.heldout_accuracy(BASELINE_SENTIMENT),
                "baseline_prompt": BASELINE_SENTIMENT,
                "baseline_train_accuracy": search.train_accuracy(BASELINE_SENTIMENT)}
            out["seconds"] = time.monotonic() - search.started
            out["llm_calls"], out["cache_hits"] = search.calls, search.hits  # held-out included
        out["evaluated_on_peers"], out["evaluated_here"] = search.remote_calls, search.local_calls
        return out, partial, search

    async def _evaluate(self, search: PromptSearch, prompts: list[str], trail: Trail, *,
                        budget: bool) -> None:
        """Outputs for ``prompts``: from the shared cache, else verified on peers, else here."""
        prompts = list(dict.fromkeys(prompts))
        by_key = {search.key(p): p for p in prompts}
        for key, output in self.store.cached_outputs(list(by_key)).items():
            if key not in search.outputs:
                search.outputs[key] = output
                search.hits += 1
                self.cache_hits += 1
                if self.joblog is not None:
                    by, pairs = self.joblog.provenance(key)
                    trail.add(by_key[key], by, pairs, hit=True)
        todo = [p for p in prompts if search.key(p) not in search.outputs]
        spent = (lambda: bool(search.out_of_budget(time.monotonic()))) if budget else (
            lambda: False)
        if todo and self.remote is not None and not spent():
            todo = await self._on_peers(search, todo, trail)
        for prompt in todo:
            if spent():
                break
            await self._local(search, prompt, trail)

    async def _local(self, search: PromptSearch, prompt: str, trail: Trail,
                     pairs: list[tuple[bytes, bytes]] | None = None) -> str:
        """The coordinator's own evaluation (``pairs``: the peers' answers it settles)."""
        output = await trio.to_thread.run_sync(self.backend.generate, prompt)
        search.deliver(prompt, output)
        search.local_calls += 1
        self.llm_calls["here"] += 1
        self._cache(search, prompt, output, COORDINATOR, pairs or [])
        trail.settle(prompt, pairs or [])
        return output

    def _cache(self, search: PromptSearch, prompt: str, output: str, by: str,
               pairs: list[tuple[bytes, bytes]]) -> None:
        key = search.key(prompt)
        self.store.cache_output(key, search.model_digest, output)
        if self.joblog is not None:
            self.joblog.remember(key, by, pairs)

    async def _on_peers(self, search: PromptSearch, prompts: list[str], trail: Trail
                        ) -> list[str]:
        """Evaluate on capable peers (verified by redundancy); the coordinator settles what
        they could not agree on. Returns the prompts left for local evaluation (all of them
        when too few capable peers are connected)."""
        assert self.remote is not None
        ver = await self.remote(prompts, self.backend.model_digest, self.params_json)
        if ver is None:
            return prompts
        for prompt, output in ver.accepted.items():
            search.deliver(prompt, output)
            search.remote_calls += 1
            self.llm_calls["peers"] += 1
            pairs = list(ver.proofs.get(prompt, {}).values())
            self._cache(search, prompt, output, PEERS, pairs)
            trail.add(prompt, PEERS, pairs)
        settled = {p: await self._local(search, p, trail, list(ver.proofs.get(p, {}).values()))
                   for p in ver.undecided(prompts)}
        if self.settle is not None:
            self.settle(ver, settled)
        return []
