"""Genetic prompt search: a seeded, sans-IO genetic algorithm with a fitness cache.

Theory of operation
-------------------
The engine never calls an LLM. It proposes phenotypes (prompt strings) and
is told their fitness; the caller decides where evaluations run (locally,
or spread over peers and verified). One generation:

1. :meth:`GeneticSearch.wanted` lists the population's phenotypes that are
   neither in the cache nor already scored (each phenotype at most once,
   however often it reappears);
2. the caller evaluates them and calls :meth:`GeneticSearch.tell`;
3. :meth:`GeneticSearch.advance` records the generation's best, checks the
   stopping rules (generation budget, target score, plateau) and breeds the
   next population: elitism, tournament selection, crossover, mutation.

Everything random comes from one ``random.Random(seed)``, so a run is
reproducible given the same fitness values. Genotype spaces are small
objects with ``random``, ``crossover``, ``mutate`` and ``phenotype``:

* :class:`BitSubset` -- the seed's genotype: one bit per word of a fixed
  vocabulary, the phenotype is the chosen words joined by ", ";
* :class:`PhraseSequence` -- ours: a variable-length sequence of phrase
  indices (instructions, styles, constraints) with cut-and-splice crossover
  and insert / delete / replace / swap mutation.

Fitness values are cached by content: :func:`cache_key` hashes the backend's
model digest, the generation parameters and the prompt, so two evaluators
with the same model agree on what "the same evaluation" is.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

G = TypeVar("G")


class Space(Protocol[G]):
    def random(self, rng: random.Random) -> G: ...

    def crossover(self, a: G, b: G, rng: random.Random) -> tuple[G, G]: ...

    def mutate(self, g: G, rng: random.Random) -> G: ...

    def phenotype(self, g: G) -> str: ...


@dataclass(frozen=True)
class BitSubset:
    """The seed's genotype: a bit per vocabulary word (one-point crossover, bit flips at
    rate ``1/len(words)`` by default, as in the seed's GA)."""

    words: tuple[str, ...]
    mutation_rate: float | None = None

    def random(self, rng: random.Random) -> tuple[int, ...]:
        return tuple(rng.randint(0, 1) for _ in self.words)

    def crossover(self, a, b, rng):
        cut = rng.randint(1, len(a) - 2) if len(a) > 2 else 1
        return a[:cut] + b[cut:], b[:cut] + a[cut:]

    def mutate(self, g, rng):
        rate = self.mutation_rate if self.mutation_rate is not None else 1 / len(self.words)
        return tuple(1 - bit if rng.random() < rate else bit for bit in g)

    def phenotype(self, g) -> str:
        return ", ".join(w for w, bit in zip(self.words, g, strict=True) if bit)


@dataclass(frozen=True)
class PhraseSequence:
    """Our genotype: 1..max_len indices into ``phrases``, no index twice. Crossover cuts
    each parent at its own point and splices (lengths vary); mutation inserts, deletes,
    replaces or swaps one phrase."""

    phrases: tuple[str, ...]
    max_len: int = 6
    joiner: str = " "

    def _dedupe(self, g: Sequence[int]) -> tuple[int, ...]:
        out = tuple(dict.fromkeys(g))[: self.max_len]
        return out or (g[0],) if g else out

    def random(self, rng: random.Random) -> tuple[int, ...]:
        n = rng.randint(1, min(self.max_len, len(self.phrases)))
        return tuple(rng.sample(range(len(self.phrases)), n))

    def crossover(self, a, b, rng):
        i, j = rng.randint(0, len(a)), rng.randint(0, len(b))
        c1, c2 = self._dedupe(a[:i] + b[j:]), self._dedupe(b[:j] + a[i:])
        return c1 or a, c2 or b

    def mutate(self, g, rng):
        g = list(g)
        op = rng.choice(("insert", "delete", "replace", "swap"))
        unused = [k for k in range(len(self.phrases)) if k not in g]
        if op == "insert" and len(g) < self.max_len and unused:
            g.insert(rng.randint(0, len(g)), rng.choice(unused))
        elif op == "delete" and len(g) > 1:
            del g[rng.randrange(len(g))]
        elif op == "swap" and len(g) > 1:
            i, j = rng.sample(range(len(g)), 2)
            g[i], g[j] = g[j], g[i]
        elif unused:
            g[rng.randrange(len(g))] = rng.choice(unused)
        return tuple(g)

    def phenotype(self, g) -> str:
        return self.joiner.join(self.phrases[k] for k in g)


def cache_key(model_digest: str, gen_params: dict[str, Any], prompt: str) -> str:
    """Content address of one evaluation: the same model, parameters and prompt give the
    same output (generation is deterministic), hence the same fitness."""
    blob = json.dumps({"model": model_digest, "params": gen_params, "prompt": prompt},
                      sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(b"hypergossip/ga/v1\x00" + blob).hexdigest()


@dataclass
class GAConfig:
    population: int = 100
    generations: int = 100
    tournament: int = 3
    crossover_rate: float = 0.9
    elite: int = 0  # the seed's GA keeps no elite; ours defaults to 2 (see search())
    target: float | None = None  # stop once the best fitness reaches this
    patience: int | None = None  # stop after this many generations without improvement
    seed: int = 0


@dataclass
class GeneticSearch(Generic[G]):
    """Maximises fitness. Drive it with ``wanted`` / ``tell`` / ``advance``."""

    space: Space[G]
    config: GAConfig
    cache: dict[str, float] = field(default_factory=dict)  # phenotype -> fitness
    generation: int = 0
    best: tuple[float, str] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: int = 0  # fitness values told (cache misses)
    lookups: int = 0  # phenotype fitness needs, cached or not
    stopped: str = ""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed)
        self.population: list[G] = [self.space.random(self.rng)
                                    for _ in range(self.config.population)]
        self._since_improved = 0

    def wanted(self) -> list[str]:
        """Phenotypes of this generation that still need a fitness value (no duplicates)."""
        return list(dict.fromkeys(p for p in map(self.space.phenotype, self.population)
                                  if p not in self.cache))

    def tell(self, phenotype: str, fitness: float) -> None:
        if phenotype not in self.cache:
            self.evaluations += 1
        self.cache[phenotype] = float(fitness)

    @property
    def cache_hits(self) -> int:
        return self.lookups - self.evaluations

    def advance(self) -> bool:
        """Close this generation (every phenotype must be scored) and breed the next.
        Returns False once a stopping rule fired (``stopped`` says which)."""
        if self.stopped:
            return False
        phenos = [self.space.phenotype(g) for g in self.population]
        missing = [p for p in phenos if p not in self.cache]
        if missing:
            raise ValueError(f"{len(missing)} phenotypes of generation {self.generation} "
                             "have no fitness yet")
        self.lookups += len(phenos)
        scores = [self.cache[p] for p in phenos]
        i = max(range(len(scores)), key=scores.__getitem__)
        improved = self.best is None or scores[i] > self.best[0]
        if improved:
            self.best = (scores[i], phenos[i])
        self._since_improved = 0 if improved else self._since_improved + 1
        assert self.best is not None
        self.history.append({"generation": self.generation, "best": self.best[0],
                             "generation_best": scores[i], "evaluations": self.evaluations,
                             "cache_hits": self.cache_hits})
        c = self.config
        self.generation += 1
        if c.target is not None and self.best[0] >= c.target:
            self.stopped = "target reached"
        elif c.patience is not None and self._since_improved >= c.patience:
            self.stopped = f"no improvement in {c.patience} generations"
        elif self.generation >= c.generations:
            self.stopped = "generation budget spent"
        if self.stopped:
            return False
        self.population = self._breed(scores)
        return True

    def _breed(self, scores: list[float]) -> list[G]:
        c, pop = self.config, self.population
        order = sorted(range(len(pop)), key=lambda k: -scores[k])
        children: list[G] = [pop[k] for k in order[: c.elite]]

        def select() -> G:
            picks = [self.rng.randrange(len(pop)) for _ in range(c.tournament)]
            return pop[max(picks, key=scores.__getitem__)]

        parents = [select() for _ in range(len(pop))]
        for a, b in zip(parents[0::2], parents[1::2], strict=False):
            if self.rng.random() < c.crossover_rate:
                a, b = self.space.crossover(a, b, self.rng)
            for child in (a, b):
                if len(children) < len(pop):
                    children.append(self.space.mutate(child, self.rng))
        while len(children) < len(pop):
            children.append(self.space.mutate(select(), self.rng))
        return children
