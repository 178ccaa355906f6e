"""The GA engine: reproducible, each phenotype scored once, stopping rules, operators."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.prompts import fitness, ga

WORDS = tuple(f"w{i}" for i in range(20))


def run(search: ga.GeneticSearch, score) -> ga.GeneticSearch:
    while True:
        for p in search.wanted():
            search.tell(p, score(p))
        if not search.advance():
            return search


def onemax(p: str) -> float:
    return len(p.split(", ")) if p else 0


def test_same_seed_same_run_and_every_phenotype_scored_once():
    calls: list[str] = []

    def score(p):
        calls.append(p)
        return onemax(p)

    a = run(ga.GeneticSearch(ga.BitSubset(WORDS), ga.GAConfig(generations=30, seed=3)), score)
    assert len(calls) == len(set(calls)) == a.evaluations
    assert a.evaluations + a.cache_hits == 30 * 100
    b = run(ga.GeneticSearch(ga.BitSubset(WORDS), ga.GAConfig(generations=30, seed=3)), onemax)
    assert a.history == b.history and a.best == b.best
    assert a.best[0] == 20  # onemax is solved


def test_stopping_rules():
    t = run(ga.GeneticSearch(ga.BitSubset(WORDS), ga.GAConfig(target=15, seed=1)), onemax)
    assert t.stopped == "target reached" and t.best[0] >= 15 and t.generation < 100
    flat = run(ga.GeneticSearch(ga.BitSubset(WORDS), ga.GAConfig(patience=3, seed=1)),
               lambda p: 1.0)
    assert flat.stopped.startswith("no improvement") and flat.generation == 4


def test_advance_refuses_an_unscored_generation():
    s = ga.GeneticSearch(ga.BitSubset(WORDS), ga.GAConfig(seed=0))
    with pytest.raises(ValueError, match="no fitness"):
        s.advance()


@given(st.integers(0, 2**32), st.integers(2, 12))
def test_phrase_sequence_operators_keep_genotypes_valid(seed, n):
    space = ga.PhraseSequence(tuple(f"p{i}" for i in range(n)), max_len=4)
    rng = random.Random(seed)
    a, b = space.random(rng), space.random(rng)
    for g in (*space.crossover(a, b, rng), space.mutate(a, rng), space.mutate(b, rng)):
        assert 1 <= len(g) <= 4 and len(set(g)) == len(g)
        assert all(0 <= k < n for k in g)
        assert space.phenotype(g)


def test_cache_key_binds_model_params_and_prompt():
    k = ga.cache_key("m1", {"max_tokens": 32}, "hello")
    assert k == ga.cache_key("m1", {"max_tokens": 32}, "hello")
    assert len({k, ga.cache_key("m2", {"max_tokens": 32}, "hello"),
                ga.cache_key("m1", {"max_tokens": 33}, "hello"),
                ga.cache_key("m1", {"max_tokens": 32}, "hello!")}) == 4


def test_fitness_scorers():
    t = "simple, lively, strong"
    assert fitness.vader_score(t, t) == 1.0
    assert fitness.vader_score("awful, dreadful, sad", t) < 0.5
    assert fitness.lexical_overlap(t, "Strong and simple") == pytest.approx(2 * 2 / 6)
    assert fitness.length_penalty("a b c", t) == 1.0 and fitness.length_penalty("", t) == 0.0
    assert fitness.cosine([1, 0], [1, 0]) == 1.0 and fitness.cosine([1, 0], [0, 1]) == 0.0
    mixed = fitness.combine({"vader": 1, "lexical": 1}, t, t)
    assert mixed == 1.0
    with pytest.raises(ValueError):
        fitness.combine({"embedding": 1}, t, t)
