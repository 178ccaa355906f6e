"""Issue 5, must-show 1: the seed's GA against ours on the seed's own problem.

The seed's challenge 3: a genotype of 20 bits selects a subset of 20 random
adjectives (wonderwords); the phenotype (the chosen words, comma-joined) is
"the LLM output" (echo backend); fitness is the VADER sentiment similarity to
the target. The seed's GA (population 100, 100 generations, tournament of 3,
one-point crossover at 0.9, bit-flip mutation at 1/20, no elitism) scores all
10,000 phenotypes it visits. Ours runs the same operators with a fitness
cache (each phenotype scored at most once) and elitism 2, stopping when it
reaches the score the seed's run ended with; we count its cache misses.

    .venv/bin/python scripts/bench/ga_baseline.py [--seeds 5] [--target TEXT]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from protocol.prompts import fitness, ga  # noqa: E402


def vocabulary(seed: int) -> tuple[str, ...]:
    from wonderwords import RandomWord

    rw = RandomWord(rng=random.Random(seed))
    return tuple(rw.random_words(20, include_categories=["adjective"]))


def seed_procedure(space: ga.BitSubset, target: str, seed: int) -> tuple[float, int, str]:
    """The seed's loop: every member of every generation is scored (no cache)."""
    search = ga.GeneticSearch(space, ga.GAConfig(seed=seed, elite=0))
    scored = 0
    while True:
        for g in search.population:
            p = space.phenotype(g)
            search.cache[p] = fitness.vader_score(p, target)  # recomputed every time
            scored += 1
        if not search.advance():
            break
    assert search.best is not None
    return search.best[0], scored, search.best[1]


def ours(space: ga.BitSubset, target: str, seed: int, goal: float) -> ga.GeneticSearch:
    search = ga.GeneticSearch(space, ga.GAConfig(seed=seed, elite=2, target=goal))
    while True:
        for p in search.wanted():
            search.tell(p, fitness.vader_score(p, target))
        if not search.advance():
            return search


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--target", default="simple, lively, strong")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    rows = []
    print(f"target {args.target!r}; echo backend; VADER fitness (1 - distance/2)")
    print(f"{'seed':>4}  {'seed GA best':>12}  {'its evals':>9}  {'ours: misses':>12}  "
          f"{'hits':>6}  {'gens':>4}  {'ratio':>6}  best phenotype")
    for s in range(args.seeds):
        space = ga.BitSubset(vocabulary(s))
        best, scored, pheno = seed_procedure(space, args.target, s)
        o = ours(space, args.target, s, best)
        assert o.best is not None
        reached = o.best[0] >= best
        ratio = o.evaluations / scored
        rows.append({"seed": s, "seed_best": best, "seed_evaluations": scored,
                     "ours_reached": reached, "ours_evaluations": o.evaluations,
                     "ours_cache_hits": o.cache_hits, "ours_generations": o.generation,
                     "ratio": ratio, "best_phenotype": o.best[1]})
        print(f"{s:>4}  {best:>12.4f}  {scored:>9}  {o.evaluations:>12}  {o.cache_hits:>6}  "
              f"{o.generation:>4}  {ratio:>6.3f}  {o.best[1]!r}"
              + ("" if reached else "  (NOT reached)"))
    worst = max(r["ratio"] for r in rows)
    ok = all(r["ours_reached"] for r in rows) and worst <= 0.2
    print(f"worst ratio {worst:.3f} (goal <= 0.2): {'met' if ok else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
