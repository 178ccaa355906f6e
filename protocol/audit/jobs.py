"""The job log: one record per finished prompt-search job, hash-chained and signed.

Theory of operation
-------------------
A prompt job runs outside rounds, yet its result rests on LLM outputs the coordinator
says peers agreed on. After each job the coordinator writes a :class:`JobRecord`: the
job's request, the backend it searched with (model digest, generation parameters), the
redundancy it asked for, every output the search used with where it came from, the
evaluations behind each output exactly as signed (the coordinator's
:class:`~protocol.prompts.evaluation.EvalTask` naming the prompts, the peer's
:class:`~protocol.prompts.evaluation.EvalResult` answering them), whether the search
settled a generation cut short by its budget, and the published result. Records chain
by ``prev`` like the round log's (:mod:`.log`) and the coordinator signs a
:class:`JobHead` per record (envelope domain :data:`JOB_HEAD`).

What an auditor checks from a record alone (:func:`check_evidence`, :func:`replay`):

* every output said to come from peers rests on at least ``redundancy`` agreeing signed
  evaluations from distinct peers, a strict majority of those listed, each answering a
  task the coordinator signed for the same model and parameters;
* outputs the coordinator evaluated itself (too few capable peers, or peers that
  disagreed) are re-run by the auditor when it has a backend with the same model digest
  (generation is deterministic), else the job is "not checkable";
* the genetic search replayed from the request's seed over these outputs gives the
  published best prompt, score and history: no fitness value the coordinator made up.

Records carry user data (the target output): they are served to the job's user only;
heads are public, so anyone can check the chain.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from ..prompts import ga
from ..prompts.evaluation import EVAL_RESULT, EVAL_TASK, EvalResult, EvalTask
from ..prompts.search import Budget, PromptSearch
from ..wire.envelope import RejectedMessage, open_envelope
from ..wire.messages import Count, Digest, Short, Strict
from ..wire.messages import decode as decode_schema
from .log import BadRecord, PeerId, Wire, open_signed

JOB_HEAD = "log/job"  # envelope domain of a coordinator's signed JobHead
JOB_PREFIX = b"hypergossip/v1/job-record\x00"
MAX_JOB_RECORD = 16 * 1024 * 1024
MAX_OUTPUTS = 200_000
PEERS, COORDINATOR, UNKNOWN = "peers", "coordinator", "unknown"  # Output.by
Text = Annotated[str, Meta(max_length=8000)]


class Output(Strict, array_like=True):
    """An LLM output the search used: ``evals`` index pairs (task, result) into the
    record's ``wires``; ``hit``: taken from the coordinator's cache, not counted as a call."""

    prompt: Text
    output: Text
    by: Short  # PEERS, COORDINATOR (its own evaluation) or UNKNOWN (cached before the log)
    hit: bool
    evals: Annotated[list[tuple[Count, Count]], Meta(max_length=64)]


class JobRecord(Strict):
    entry: Count
    prev: Digest
    job: Count  # the queued job's number; 0 for a synchronous POST /prompt
    user: Annotated[str, Meta(max_length=128)]
    request: Annotated[bytes, Meta(max_length=64 * 1024)]  # the job's PromptRequest, JSON
    model_digest: Annotated[str, Meta(max_length=160)]
    gen_params: Annotated[str, Meta(max_length=1024)]
    redundancy: Count
    partial: bool  # the search ended mid-generation and settled what it had
    outputs: Annotated[list[Output], Meta(max_length=MAX_OUTPUTS)]
    wires: list[Wire]  # signed EvalTask / EvalResult envelopes, each once
    result: Annotated[bytes, Meta(max_length=4 * 1024 * 1024)]  # the published result, JSON
    truncated: bool = False  # over MAX_JOB_RECORD with its outputs: they were left out


class JobHead(Strict):
    entry: Count
    record: Digest
    prev: Digest
    job: Count


def job_hash(record_bytes: bytes) -> bytes:
    return hashlib.sha256(JOB_PREFIX + record_bytes).digest()


def build_job(rec: JobRecord) -> tuple[bytes, JobHead]:
    """The record's bytes and the head to sign; a record over :data:`MAX_JOB_RECORD` keeps
    its result but not its outputs (``truncated``: the auditor cannot re-derive it)."""
    data = msgspec.msgpack.encode(rec)
    if len(data) > MAX_JOB_RECORD or len(rec.outputs) > MAX_OUTPUTS:
        rec = msgspec.structs.replace(rec, outputs=[], wires=[], truncated=True)
        data = msgspec.msgpack.encode(rec)
    return data, JobHead(entry=rec.entry, record=job_hash(data), prev=rec.prev, job=rec.job)


def open_job_head(wire: bytes, coordinator: str) -> JobHead:
    return open_signed(wire, JOB_HEAD, JobHead, coordinator, number="entry")[1]


def check_job(record_bytes: bytes, head: JobHead) -> JobRecord:
    """``record_bytes`` against its signed head (hash, entry, chain link)."""
    if len(record_bytes) > MAX_JOB_RECORD + 1024:
        raise BadRecord(f"job record of {len(record_bytes)} bytes, over {MAX_JOB_RECORD}")
    try:
        rec = decode_schema(record_bytes, JobRecord)
    except RejectedMessage as exc:
        raise BadRecord(f"not a job record: {exc}") from exc
    if job_hash(record_bytes) != head.record or rec.entry != head.entry or \
            rec.prev != head.prev or rec.job != head.job:
        raise BadRecord(f"job entry {head.entry}: the record does not hash to its signed head")
    return rec


class Evals:
    """The record's signed evaluations, opened once: (peer, prompt) -> output per pair."""

    def __init__(self, rec: JobRecord, coordinator: str):
        self.rec, self.coordinator = rec, coordinator
        self._pairs: dict[tuple[int, int], tuple[str, list[str], list[str]] | str] = {}

    def pair(self, t: int, r: int) -> tuple[str, list[str], list[str]] | str:
        """(peer, prompts, outputs) of a signed task and its signed answer, or what is wrong."""
        if (t, r) not in self._pairs:
            self._pairs[t, r] = self._open(t, r)
        return self._pairs[t, r]

    def _open(self, t: int, r: int) -> tuple[str, list[str], list[str]] | str:
        wires = self.rec.wires
        if not (t < len(wires) and r < len(wires)):
            return "an evaluation index outside the record"
        try:
            tenv = open_envelope(wires[t], domains=(EVAL_TASK,))
            task = decode_schema(tenv.payload, EvalTask)
            renv = open_envelope(wires[r], domains=(EVAL_RESULT,))
            res = decode_schema(renv.payload, EvalResult)
        except RejectedMessage as exc:
            return f"an evaluation that does not open: {exc}"
        if tenv.sender_id != self.coordinator:
            return "a task not signed by the coordinator"
        if not (tenv.round == task.batch == renv.round == res.batch):
            return "an answer to another batch than its task"
        if task.model_digest != self.rec.model_digest or task.gen_params != self.rec.gen_params:
            return "a task for another model or other parameters than the job's"
        if len(res.outputs) != len(task.prompts) or renv.sender_id == self.coordinator:
            return "an answer that does not fit its task"
        return renv.sender_id, task.prompts, res.outputs


def check_evidence(rec: JobRecord, coordinator: str) -> list[str]:
    """What does not hold in the record's evidence (empty when every output said to come
    from peers rests on enough agreeing signed evaluations)."""
    evals, problems = Evals(rec, coordinator), []
    need = max(rec.redundancy, 1)
    for out in rec.outputs:
        answers: dict[PeerId, str] = {}
        for t, r in out.evals:
            got = evals.pair(t, r)
            if isinstance(got, str):
                problems.append(f"{out.prompt[:40]!r}: {got}")
                continue
            peer, prompts, outputs = got
            if out.prompt not in prompts:
                problems.append(f"{out.prompt[:40]!r}: an evaluation of other prompts")
                continue
            answers[peer] = outputs[prompts.index(out.prompt)]
        if out.by != PEERS:
            continue
        agree = Counter(answers.values())
        n = agree.get(out.output, 0)
        if n < need or 2 * n <= len(answers):
            problems.append(f"{out.prompt[:40]!r}: its output rests on {n} agreeing signed "
                            f"evaluation(s) of {len(answers)} (redundancy {rec.redundancy})")
    return problems


def replay(rec: JobRecord, embed: Callable[[str], list[float]] | None = None
           ) -> tuple[dict[str, Any], str]:
    """The search re-run from the request over the record's outputs: (what it gives, '' or
    why it could not be re-run). Compare with :func:`compare`."""
    req = json.loads(rec.request)
    weights = dict(req.get("fitness") or {}) or {"vader": 1.0}
    if weights.get("embedding") and embed is None:
        return {}, "its fitness uses the embedding scorer, which is not available here"
    config = ga.GAConfig(population=req["population"], generations=req["generations"],
                         seed=req["seed"], elite=2, patience=req.get("patience"))
    search = PromptSearch(req.get("task", "target"), req.get("target_output", ""),
                          rec.model_digest, json.loads(rec.gen_params), config,
                          Budget(req["max_calls"], math.inf), weights, embed=embed)
    outs = {o.prompt: o for o in rec.outputs}
    published = json.loads(rec.result)
    gens = published.get("generations", 0)
    while True:
        needed = search.calls_needed()
        if any(p not in outs for p in needed) or (rec.partial and
                                                  search.search.generation >= gens):
            for p in needed:  # what the job had of the cut generation
                if p in outs:
                    _deliver(search, outs[p])
            search.settle_partial()
            break
        for p in needed:
            _deliver(search, outs[p])
        if not search.step(0.0):
            break
        if search.search.generation >= gens and "budget" in (published.get("stopped") or ""):
            break  # stopped by its time budget: what the clock did, the generations tell
    best = search.search.best
    out = {"prompt": best[1] if best else "", "score": best[0] if best else 0.0,
           "best_per_generation": [h["best"] for h in search.search.history],
           "generations": search.search.generation}
    if "held_out" in published and best is not None:  # sentiment: reviews never searched on
        baseline = published["held_out"].get("baseline_prompt", "")
        prompts = search.heldout_prompts(best[1]) + search.heldout_prompts(baseline) + \
            search.prompts_of(baseline)
        if any(p not in outs for p in prompts):
            return out, "its held-out evaluations are not all in the record"
        for p in prompts:
            _deliver(search, outs[p])
        out["held_out"] = dict(published["held_out"], evolved=search.heldout_accuracy(best[1]),
                               baseline=search.heldout_accuracy(baseline),
                               baseline_train_accuracy=search.train_accuracy(baseline))
    return out, ""


def _deliver(search: PromptSearch, out: Output) -> None:
    (search.cached if out.hit else search.deliver)(out.prompt, out.output)


def compare(replayed: dict[str, Any], published: dict[str, Any]) -> str:
    """'' when the published result is what the replay gives, else what differs."""
    for key in ("prompt", "score", "best_per_generation", "generations", "held_out"):
        if key in published and published[key] != replayed.get(key):
            return f"{key} published {published[key]!r}, its signed outputs give " \
                f"{replayed.get(key)!r}"
    return ""
