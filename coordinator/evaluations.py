"""Prompt evaluations on peers: each prompt evaluated by ``redundancy`` of them.

An output is accepted only when a majority of at least ``redundancy`` capable peers
agree (a third peer breaks a tie); the undecided ones the coordinator evaluates
itself, and the evaluators' reputation moves by who agreed with the accepted outputs.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

import trio

from peer.node import NetworkNode
from peer.streams import StreamProtocolError
from protocol.policy.replication import Reputation
from protocol.prompts import evaluation
from protocol.wire.envelope import RejectedMessage, open_envelope, seal
from protocol.wire.identity import Identity
from protocol.wire.messages import EvaluatorInfo, decode, encode

from .store import Store

log = logging.getLogger("hypergossip.coordinator")
BATCH = 8  # prompts per evaluation request
EVAL_TIMEOUT = 600.0


class RemoteEvaluations:
    def __init__(self, identity: Identity, node: NetworkNode, store: Store,
                 reputation: Reputation, evaluators: dict[str, EvaluatorInfo],
                 live_peers: Callable[[], set[str]], redundancy: int,
                 save_reputation: Callable[[], None]):
        self.identity, self.node, self.store, self.reputation = identity, node, store, reputation
        self.evaluators, self.live_peers, self.redundancy = evaluators, live_peers, redundancy
        self.save_reputation = save_reputation
        self._batches = 0

    async def evaluate_remotely(self, prompts: list[str], model_digest: str,
                                gen_params: str) -> evaluation.Verification | None:
        """Evaluate ``prompts`` on capable peers, each by ``redundancy`` of them, accepting
        an output only when a majority of at least ``redundancy`` agree (a third peer breaks
        a tie). Returns the verification (``accepted`` outputs; ``undecided`` prompts the
        caller evaluates itself and passes to :meth:`settle_evaluations`), or None when too
        few capable peers are connected."""
        def capable() -> list[str]:
            live = self.live_peers()
            return sorted(p for p, info in self.evaluators.items()
                          if p in live and info.model_digest == model_digest
                          and info.gen_params == gen_params
                          and self.reputation.score(p) >= self.reputation.threshold)

        need = self.redundancy
        if len(capable()) < need:
            return None
        ver = evaluation.Verification(redundancy=need)
        for attempt in range(3):
            todo = ver.undecided(prompts)
            if not todo:
                break
            asked = {p: ver.asked(p) for p in todo}
            # asked again each attempt: evaluators that went away since are not replanned
            work = evaluation.plan(todo, capable(), need if attempt == 0 else 1, already=asked)
            if not work:
                break
            async with trio.open_nursery() as nursery:
                for peer, items in work.items():
                    for i in range(0, len(items), BATCH):
                        nursery.start_soon(self._eval_batch, peer, items[i:i + BATCH],
                                           model_digest, gen_params, ver)
        return ver

    def settle_evaluations(self, ver: evaluation.Verification, settled: dict[str, str]) -> None:
        """The caller evaluated the undecided prompts itself: decide them, then move the
        evaluators' reputation by who agreed with the accepted outputs."""
        for prompt, output in settled.items():
            ver.settle(prompt, output)
        number = self.store.last_round()
        for peer, prompt in ver.losers:
            tag = hashlib.sha256(prompt.encode()).hexdigest()[:12]
            self.reputation.penalize(number, peer, f"prompt {tag}: its evaluation was outvoted")
        for peer in sorted({p for p, _ in ver.winners}):
            self.reputation.reward_for(number, peer, "prompt evaluations: agreed")
        self.save_reputation()

    async def _eval_batch(self, peer: str, prompts: list[str], model_digest: str,
                          gen_params: str, ver: evaluation.Verification) -> None:
        self._batches += 1
        batch = self._batches
        task = evaluation.EvalTask(batch=batch, model_digest=model_digest,
                                   gen_params=gen_params, prompts=prompts)
        wire = seal(self.identity, evaluation.EVAL_TASK, batch, encode(task))
        try:
            raw = await self.node.request(peer, evaluation.PROTO_EVAL, wire,
                                          max_response=2 * 1024 * 1024, timeout=EVAL_TIMEOUT)
            env = open_envelope(raw, domains={evaluation.EVAL_RESULT},
                                max_wire=2 * 1024 * 1024)
            res = decode(env.payload, evaluation.EvalResult)
            if env.sender_id != peer or res.batch != batch or env.round != batch:
                raise RejectedMessage("result not signed by the peer asked, or another batch")
            if len(res.outputs) != len(prompts):
                raise RejectedMessage(f"{len(res.outputs)} outputs for {len(prompts)} prompts")
        except (StreamProtocolError, RejectedMessage) as exc:
            reason = getattr(exc, "reason", "unreachable")
            self.store.count_rejection(peer, f"eval_{reason}")
            log.warning("evaluation batch %d on %s failed: %s", batch, peer, exc)
            return
        for prompt, output in zip(prompts, res.outputs, strict=True):
            ver.record(peer, prompt, output, proof=(wire, raw))
