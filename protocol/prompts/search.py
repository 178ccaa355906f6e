"""Prompt-search tasks: what a genotype means, which LLM calls a phenotype costs, its fitness.

A :class:`PromptSearch` wraps :class:`protocol.prompts.ga.GeneticSearch` for one job
and stays sans-IO: it says which LLM calls it still needs
(:meth:`PromptSearch.calls_needed`, each a full prompt string), is given their
outputs (:meth:`PromptSearch.deliver`), and turns outputs into fitness. Calls
are cached by content (:func:`protocol.prompts.ga.cache_key`: model digest,
generation parameters, prompt), so no call is ever made twice, across
generations or jobs.

Two tasks:

* ``target`` -- reproduce a target output. The genotype is a sequence of
  phrases (instructions, the seed's 20 random adjectives, the target's own
  words); the phenotype is the prompt; one call per phenotype; fitness is a
  weighted mix of protocol.prompts.fitness scorers (the seed's VADER by default).
* ``sentiment`` -- classify short product reviews (protocol/prompts/data/reviews.jsonl,
  200 reviews we wrote). The genotype is a sequence of instruction phrases;
  the phenotype is the instruction; a call per training review; fitness is
  the accuracy on the training split; the held-out split is for reporting.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import fitness, ga

MAX_TARGET_CHARS = 500

INSTRUCTIONS = (
    "Reply with only three words.", "Answer with a short list of adjectives.",
    "Use commas between the words.", "Say exactly:", "Repeat after me:",
    "Describe it in a few words:", "Be cheerful.", "Be brief.", "No explanations.",
    "Write in lower case.", "A person who is", "A day that is", "Words like",
    "Give me synonyms of", "Complete the list:", "Three adjectives for a good friend:",
)

SENTIMENT_PHRASES = (
    "Classify the sentiment of this product review.", "Is this review positive or negative?",
    "Read the customer review carefully.", "Answer with one word: positive or negative.",
    "Focus on whether the customer is happy with the product.",
    "Ignore complaints about shipping.", "Mixed reviews count by their final verdict.",
    "You are an expert at sentiment analysis.", "Think about the overall tone.",
    "Negations like 'not bad' are positive.", "Reply in lower case.",
    "If the product failed, the review is negative.",
)
BASELINE_SENTIMENT = "Is this review positive or negative? Answer with one word."


def seed_adjectives(seed: int, n: int = 20) -> tuple[str, ...]:
    """The seed's vocabulary: n random adjectives (wonderwords, seeded)."""
    from wonderwords import RandomWord

    return tuple(RandomWord(rng=random.Random(seed)).random_words(
        n, include_categories=["adjective"]))


@lru_cache(maxsize=1)
def reviews() -> tuple[dict[str, Any], ...]:
    path = Path(__file__).parent / "data" / "reviews.jsonl"
    rows = tuple(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    if any(r["label"] not in ("positive", "negative") for r in rows):
        raise ValueError(f"{path}: labels must be positive or negative")
    return rows


def review_split(train_size: int = 24, seed: int = 0
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training reviews for fitness, held-out reviews for reporting), balanced, seeded."""
    rows = list(reviews())
    random.Random(seed).shuffle(rows)
    pos = [r for r in rows if r["label"] == "positive"]
    neg = [r for r in rows if r["label"] == "negative"]
    half = train_size // 2
    train = pos[:half] + neg[:half]
    held = pos[half:] + neg[half:]
    return train, held


def classification_prompt(instruction: str, review: str) -> str:
    return f"{instruction}\nReview: {review}\nAnswer (positive or negative):"


def parse_label(output: str) -> str | None:
    text = output.lower()
    p, n = text.find("positive"), text.find("negative")
    if p < 0 and n < 0:
        return None
    if n < 0 or (0 <= p < n):
        return "positive"
    return "negative"


def accuracy(outputs: list[str], labels: list[str]) -> float:
    return sum(parse_label(o) == y for o, y in zip(outputs, labels, strict=True)) / len(labels)


@dataclass
class Budget:
    max_calls: int = 2000
    max_seconds: float = 40.0


@dataclass
class PromptSearch:
    """One job's GA over prompts. ``model_digest`` and ``gen_params`` identify the backend
    whose outputs are cached under :func:`protocol.prompts.ga.cache_key`."""

    task: str
    target: str
    model_digest: str
    gen_params: dict[str, Any]
    config: ga.GAConfig
    budget: Budget = field(default_factory=Budget)
    weights: dict[str, float] = field(default_factory=lambda: {"vader": 1.0})
    outputs: dict[str, str] = field(default_factory=dict)  # cache key -> output
    embed: Callable[[str], list[float]] | None = None
    calls: int = 0  # LLM calls made for this job (cache misses)
    hits: int = 0  # calls answered from the cache
    remote_calls: int = 0  # of ``calls``: evaluated on peers (verified)
    local_calls: int = 0  # of ``calls``: evaluated by the caller itself
    started: float = 0.0  # the caller's clock (seconds) when the job started

    def __post_init__(self) -> None:
        if self.task == "target":
            if not self.target or len(self.target) > MAX_TARGET_CHARS:
                raise ValueError(f"target_output must be 1..{MAX_TARGET_CHARS} characters")
            words = tuple(dict.fromkeys(fitness.words(self.target)))[:12]
            vocab = INSTRUCTIONS + seed_adjectives(self.config.seed) + words
            space: ga.Space = ga.PhraseSequence(tuple(dict.fromkeys(vocab)), max_len=6)
            self._target_vec = self.embed(self.target) if self._uses_embedding() else None
        elif self.task == "sentiment":
            space = ga.PhraseSequence(SENTIMENT_PHRASES, max_len=4)
            self.train, self.held_out = review_split(seed=self.config.seed)
        else:
            raise ValueError("task must be 'target' or 'sentiment'")
        self.search = ga.GeneticSearch(space, self.config)

    def _uses_embedding(self) -> bool:
        return self.weights.get("embedding", 0) > 0

    def key(self, prompt: str) -> str:
        return ga.cache_key(self.model_digest, self.gen_params, prompt)

    def prompts_of(self, phenotype: str) -> list[str]:
        if self.task == "target":
            return [phenotype]
        return [classification_prompt(phenotype, r["text"]) for r in self.train]

    def calls_needed(self) -> list[str]:
        """LLM prompts this generation still needs (uncached, deduplicated)."""
        out: dict[str, None] = {}
        for pheno in self.search.wanted():
            for prompt in self.prompts_of(pheno):
                if self.key(prompt) not in self.outputs:
                    out[prompt] = None
        return list(out)

    def deliver(self, prompt: str, output: str) -> None:
        k = self.key(prompt)
        if k not in self.outputs:
            self.outputs[k] = output
            self.calls += 1

    def cached(self, prompt: str, output: str) -> None:
        """An output found in a shared cache (another job, an earlier run)."""
        k = self.key(prompt)
        if k not in self.outputs:
            self.outputs[k] = output
            self.hits += 1

    def fitness_of(self, phenotype: str) -> float:
        outs = [self.outputs[self.key(p)] for p in self.prompts_of(phenotype)]
        if self.task == "sentiment":
            return accuracy(outs, [r["label"] for r in self.train])
        cos = None
        if self._uses_embedding():
            assert self.embed is not None and self._target_vec is not None
            cos = fitness.cosine(self.embed(outs[0]), self._target_vec)
        return fitness.combine(self.weights, outs[0], self.target, cos)

    def out_of_budget(self, now: float) -> str:
        if self.calls >= self.budget.max_calls:
            return f"call budget ({self.budget.max_calls}) spent"
        if now - self.started >= self.budget.max_seconds:
            return f"time budget ({self.budget.max_seconds:g} s) spent"
        return ""

    def step(self, now: float) -> bool:
        """Score this generation (all its calls delivered) and breed the next; False when
        the search is over (``now`` is checked against the time budget)."""
        for pheno in self.search.wanted():
            self.search.tell(pheno, self.fitness_of(pheno))
        going = self.search.advance()
        if going and (why := self.out_of_budget(now)):
            self.search.stopped = why
            return False
        return going

    def settle_partial(self) -> None:
        """The budget ran out mid-generation: let the best fully evaluated phenotype of it
        stand beside the best of the finished generations."""
        done = [p for p in dict.fromkeys(map(self.search.space.phenotype,
                                             self.search.population))
                if all(self.key(q) in self.outputs for q in self.prompts_of(p))]
        for pheno in done:
            score = self.fitness_of(pheno)
            if self.search.best is None or score > self.search.best[0]:
                self.search.best = (score, pheno)

    def heldout_prompts(self, instruction: str) -> list[str]:
        return [classification_prompt(instruction, r["text"]) for r in self.held_out]

    def heldout_accuracy(self, instruction: str) -> float:
        """Sentiment: accuracy of ``instruction`` on the held-out reviews (all their outputs
        must have been delivered)."""
        outs = [self.outputs[self.key(p)] for p in self.heldout_prompts(instruction)]
        return accuracy(outs, [r["label"] for r in self.held_out])

    def train_accuracy(self, instruction: str) -> float:
        outs = [self.outputs[self.key(p)] for p in self.prompts_of(instruction)]
        return accuracy(outs, [r["label"] for r in self.train])

    def best_output(self) -> str:
        assert self.search.best is not None
        return self.outputs[self.key(self.prompts_of(self.search.best[1])[0])]

    def summary(self, now: float) -> dict[str, Any]:
        best = self.search.best
        return {"prompt": best[1] if best else "", "score": best[0] if best else 0.0,
                "output": self.best_output() if best and self.task == "target" else None,
                "task": self.task, "llm_calls": self.calls, "cache_hits": self.hits,
                "phenotype_evaluations": self.search.evaluations,
                "phenotype_cache_hits": self.search.cache_hits,
                "generations": self.search.generation, "stopped": self.search.stopped,
                "best_per_generation": [h["best"] for h in self.search.history],
                "seconds": now - self.started, "model_digest": self.model_digest}
