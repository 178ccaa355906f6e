"""Fitness evaluations spread over peers and verified by redundancy (sans-IO).

The coordinator sends a signed :class:`EvalTask` (a batch of prompts, the
model digest and generation parameters) to a capable peer over a stream;
the peer answers a signed :class:`EvalResult` with one output per prompt.
Generation is deterministic (greedy decoding, one thread), so honest peers
with the same model digest return the same output for a prompt.

:class:`Verification` decides each prompt: ``redundancy`` peers (default 2)
evaluate it; when their output hashes agree the output is accepted; when
they disagree the prompt needs one more evaluator (another peer, or the
coordinator itself) and the output a strict majority vouches for wins. Only
accepted outputs are ever scored, so no fitness value rests on one peer's
word. Peers whose output lost a vote are reported for a reputation penalty.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated

from msgspec import Meta

from ..wire.messages import EvaluatorInfo, Strict

__all__ = ["EvaluatorInfo", "EvalTask", "EvalResult", "Verification", "plan"]

EVAL_TASK = "eval/task"  # coordinator -> peer
EVAL_RESULT = "eval/result"  # peer -> coordinator
PROTO_EVAL = "/hypergossip/eval/1.0.0"
MAX_BATCH = 32
Text = Annotated[str, Meta(max_length=4000)]


class EvalTask(Strict):
    batch: Annotated[int, Meta(ge=0, le=2**53)]
    model_digest: Annotated[str, Meta(max_length=160)]
    gen_params: Annotated[str, Meta(max_length=1024)]
    prompts: Annotated[list[Text], Meta(min_length=1, max_length=MAX_BATCH)]


class EvalResult(Strict):
    batch: Annotated[int, Meta(ge=0, le=2**53)]
    outputs: Annotated[list[Text], Meta(max_length=MAX_BATCH)]


def output_hash(output: str) -> bytes:
    return hashlib.sha256(output.encode()).digest()


def plan(prompts: list[str], peers: list[str], redundancy: int = 2,
         already: dict[str, set[str]] | None = None) -> dict[str, list[str]]:
    """Peer -> prompts: each prompt to ``redundancy`` distinct peers (fewer if fewer peers),
    skipping peers that already answered it, spreading the load evenly: each prompt goes to
    the least-loaded peers (ties by peer id). A heap of (load, peer): O(P log N) for P
    prompts over N peers (sorting the peers per prompt took minutes at P = N = 10,000)."""
    heap = [(0, p) for p in sorted(set(peers))]
    out: dict[str, list[str]] = {}
    for prompt in prompts:
        done = (already or {}).get(prompt, set())
        taken, passed = [], []
        while heap and len(taken) < redundancy:
            entry = heapq.heappop(heap)
            (passed if entry[1] in done else taken).append(entry)
        for load, p in taken:
            out.setdefault(p, []).append(prompt)
            heapq.heappush(heap, (load + 1, p))
        for entry in passed:
            heapq.heappush(heap, entry)
    return {p: out[p] for p in dict.fromkeys(peers) if p in out}


@dataclass
class Verification:
    """Answers per prompt until each is decided."""

    redundancy: int = 2
    answers: dict[str, dict[str, str]] = field(default_factory=dict)  # prompt -> peer -> out
    accepted: dict[str, str] = field(default_factory=dict)  # prompt -> output
    losers: list[tuple[str, str]] = field(default_factory=list)  # (peer, prompt)
    winners: list[tuple[str, str]] = field(default_factory=list)
    # prompt -> peer -> (signed task, signed answer): what the job log shows for the output
    proofs: dict[str, dict[str, tuple[bytes, bytes]]] = field(default_factory=dict)

    def record(self, peer: str, prompt: str, output: str,
               proof: tuple[bytes, bytes] | None = None) -> None:
        if prompt in self.accepted:
            return
        self.answers.setdefault(prompt, {})[peer] = output
        if proof is not None:
            self.proofs.setdefault(prompt, {})[peer] = proof
        self._decide(prompt)

    def _decide(self, prompt: str) -> None:
        answers = self.answers[prompt]
        counts = Counter(output_hash(o) for o in answers.values())
        top, n = counts.most_common(1)[0]
        if n >= self.redundancy and 2 * n > len(answers):
            output = next(o for o in answers.values() if output_hash(o) == top)
            self.accepted[prompt] = output
            for peer, o in answers.items():
                (self.winners if output_hash(o) == top else self.losers).append((peer, prompt))

    def settle(self, prompt: str, output: str) -> None:
        """A trusted evaluation (the coordinator's own) decides the prompt."""
        self.accepted[prompt] = output
        for peer, o in self.answers.get(prompt, {}).items():
            (self.winners if o == output else self.losers).append((peer, prompt))

    def undecided(self, prompts: list[str]) -> list[str]:
        return [p for p in prompts if p not in self.accepted]

    def asked(self, prompt: str) -> set[str]:
        return set(self.answers.get(prompt, {}))
