"""Redundant evaluation: plans spread the load; outputs need agreeing peers; liars lose."""

from __future__ import annotations

from protocol.prompts import evaluation as ev
from protocol.prompts import search as prompts


def test_plan_gives_each_prompt_distinct_peers_evenly():
    work = ev.plan([f"p{i}" for i in range(6)], ["a", "b", "c"], redundancy=2)
    assert sorted(len(v) for v in work.values()) == [4, 4, 4]
    for i in range(6):
        holders = [peer for peer, ps in work.items() if f"p{i}" in ps]
        assert len(holders) == 2 == len(set(holders))
    again = ev.plan(["p0"], ["a", "b", "c"], redundancy=1, already={"p0": {"a", "b"}})
    assert again == {"c": ["p0"]}


def test_agreement_accepts_and_a_third_answer_breaks_a_tie():
    v = ev.Verification(redundancy=2)
    v.record("a", "x", "out")
    assert v.undecided(["x"]) == ["x"]  # one answer is never enough
    v.record("liar", "x", "fake")
    assert v.undecided(["x"]) == ["x"]  # a tie
    v.record("b", "x", "out")
    assert v.accepted == {"x": "out"}
    assert v.losers == [("liar", "x")] and {p for p, _ in v.winners} == {"a", "b"}


def test_two_liars_agreeing_are_still_only_two_of_three():
    v = ev.Verification(redundancy=2)
    v.record("l1", "x", "fake")
    v.record("l2", "x", "fake")
    assert v.accepted == {"x": "fake"}  # redundancy assumes at most one liar per prompt
    w = ev.Verification(redundancy=2)
    w.record("l1", "y", "fake")
    w.record("a", "y", "out")
    w.settle("y", "out")  # the coordinator's own evaluation decides
    assert w.accepted == {"y": "out"} and w.losers == [("l1", "y")]


def test_labels_parse_and_reviews_split_cleanly():
    assert prompts.parse_label("Positive.") == "positive"
    assert prompts.parse_label("negative, not positive") == "negative"
    assert prompts.parse_label("no idea") is None
    train, held = prompts.review_split()
    assert len(train) == 24 and len(held) == 176
    assert {r["id"] for r in train}.isdisjoint({r["id"] for r in held})
    assert sum(r["label"] == "positive" for r in train) == 12


def _plan_by_sorting(prompts, peers, redundancy, already):
    """The rule plan() implements, spelled out: per prompt, sort the peers by load."""
    load = dict.fromkeys(peers, 0)
    out = {p: [] for p in peers}
    for prompt in prompts:
        done = already.get(prompt, set())
        for p in sorted((p for p in peers if p not in done), key=lambda p: (load[p], p))[
                :redundancy]:
            out[p].append(prompt)
            load[p] += 1
    return {p: ps for p, ps in out.items() if ps}


def test_plan_matches_the_least_loaded_rule_with_answers_already_in():
    import random

    rng = random.Random(7)
    for _ in range(50):
        peers = [f"peer{rng.randrange(1000):03d}" for _ in range(rng.randint(1, 12))]
        peers = list(dict.fromkeys(peers))
        prompts = [f"p{i}" for i in range(rng.randint(0, 30))]
        already = {p: set(rng.sample(peers, rng.randint(0, len(peers)))) for p in prompts
                   if rng.random() < 0.5}
        r = rng.randint(1, 3)
        assert ev.plan(prompts, peers, r, already) == _plan_by_sorting(prompts, peers, r,
                                                                       already)
