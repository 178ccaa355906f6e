"""Round state machine, the Stats workload, canonical JSON and state digests."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from protocol.learning.registry import WORKLOADS, get_workload
from protocol.learning.workloads import Stats
from protocol.rounds.base import Duplicate, Outcome, RoundClosed, RoundMisuse
from protocol.rounds.clear import Phase, Round, stragglers
from protocol.wire.canonical import canonical_json, state_digest
from protocol.wire.envelope import RejectedMessage
from protocol.wire.messages import PullRequest, RoundAnnounce, SchemaError, StatsContribution

P1, P2, P3 = "peer-1", "peer-2", "peer-3"


def stats(h: float = 170.0, w: float = 65.0) -> StatsContribution:
    return StatsContribution(height=h, weight=w)


def make_round(min_peers: int = 2, deadline: float = 100.0) -> Round:
    return Round(number=5, workload=Stats(), deadline=deadline, min_peers=min_peers)


# --- Round ----------------------------------------------------------------------------------------


def test_offer_accepts() -> None:
    r = make_round()
    r.offer(P1, stats(160.5))
    assert r.phase is Phase.OPEN
    assert r.contributions == {P1: stats(160.5)}


def test_duplicate_offer() -> None:
    r = make_round()
    r.offer(P1, stats(160.5))
    with pytest.raises(Duplicate) as info:
        r.offer(P1, stats(170.0))
    assert info.value.reason == "duplicate"
    assert isinstance(info.value, RejectedMessage)
    assert r.contributions[P1] == stats(160.5)  # the first one stands


def test_round_closed_after_close() -> None:
    for min_peers in (0, 5):  # published and failed rounds both refuse offers
        r = make_round(min_peers=min_peers)
        r.close()
        with pytest.raises(RoundClosed) as info:
            r.offer(P1, stats())
        assert info.value.reason == "round_closed"
        assert isinstance(info.value, RejectedMessage)
        assert P1 not in r.contributions


def test_wrong_schema_is_misuse() -> None:
    r = make_round()
    with pytest.raises(RoundMisuse):
        r.offer(P1, PullRequest(kind="head"))
    assert not issubclass(RoundMisuse, RejectedMessage)


def test_ready_when_deadline_passed() -> None:
    r = make_round(min_peers=2, deadline=100.0)
    assert r.ready(99.999, {P1, P2}) is False
    assert r.ready(100.0, {P1, P2}) is True  # at the deadline
    assert r.ready(1e9, {P1, P2}) is True  # with nothing in


def test_ready_quorum_and_all_expected_in() -> None:
    r = make_round(min_peers=2)
    r.offer(P1, stats())
    assert r.ready(0.0, {P1}) is False  # all expected in, but below quorum
    r.offer(P2, stats())
    assert r.ready(0.0, {P1, P2}) is True


def test_not_ready_when_expected_peer_missing() -> None:
    r = make_round(min_peers=2)
    r.offer(P1, stats())
    r.offer(P2, stats())
    assert r.ready(0.0, {P1, P2, P3}) is False  # quorum met, P3 still missing
    r.offer(P3, stats())
    assert r.ready(0.0, {P1, P2, P3}) is True


def test_a_few_silent_peers_hold_a_quiet_round_for_one_quiet_spell_not_to_its_deadline(
) -> None:
    r = make_round(min_peers=2, deadline=1000.0)
    r.quiet = 10.0
    r.offer(P1, stats())
    assert r.ready(0.0, {P1, P2, P3}) is False  # below quorum: waits however quiet
    assert r.ready(50.0, {P1, P2, P3}) is False
    r.offer(P2, stats())
    assert r.ready(60.0, {P1, P2, P3}) is False  # an answer just came: the quiet spell starts
    assert r.ready(69.9, {P1, P2, P3}) is False
    assert r.ready(70.0, {P1, P2, P3}) is True  # P3 silent for a whole spell: let go
    # two of three missing is more than stragglers(3) = 1: only the deadline closes it
    s = make_round(min_peers=1, deadline=1000.0)
    s.quiet = 10.0
    s.offer(P1, stats())
    assert s.ready(0.0, {P1, P2, P3}) is False
    assert s.ready(500.0, {P1, P2, P3}) is False
    assert s.ready(1000.0, {P1, P2, P3}) is True
    assert [stragglers(n) for n in (1, 99, 100, 250, 1000)] == [1, 1, 1, 2, 10]


def test_ready_with_unexpected_contributors() -> None:
    r = make_round(min_peers=2)
    r.offer(P1, stats())
    r.offer(P3, stats())
    assert r.ready(0.0, {P1}) is True  # extras count toward quorum


def test_not_ready_after_close() -> None:
    r = make_round(min_peers=1)
    r.offer(P1, stats())
    r.close()
    assert r.ready(1e9, {P1}) is False


def test_close_below_quorum_fails() -> None:
    r = make_round(min_peers=3)
    r.offer(P1, stats())
    r.offer(P2, stats())
    out = r.close()
    assert isinstance(out, Outcome)
    assert out.status == "failed"
    assert out.accepted == 2
    assert "quorum not met: 2 < 3" in out.result["error"]
    assert r.phase is Phase.FAILED


def test_close_empty_round_fails() -> None:
    out = make_round(min_peers=1).close()
    assert out.status == "failed" and out.accepted == 0


def test_close_at_quorum_publishes_exact_aggregate() -> None:
    r = make_round(min_peers=2)
    r.offer(P1, stats(160.5, 60.0))
    r.offer(P2, stats(170.25, 70.5))
    out = r.close()
    assert r.phase is Phase.PUBLISHED
    assert out.status == "published"
    assert out.accepted == 2
    assert out.result == {
        "count": 2,
        "total_height": 330.75,
        "total_weight": 130.5,
        "mean_height": 165.375,
        "mean_weight": 65.25,
    }


def test_close_above_quorum_publishes() -> None:
    r = make_round(min_peers=1)
    for i, p in enumerate((P1, P2, P3)):
        r.offer(p, stats(150.0 + i, 60.0))
    out = r.close()
    assert out.status == "published" and out.accepted == 3
    assert out.result["mean_height"] == 151.0


@pytest.mark.parametrize("min_peers", [0, 1, 10])
def test_close_twice_is_misuse(min_peers: int) -> None:
    r = make_round(min_peers=min_peers)
    r.offer(P1, stats())
    r.close()
    with pytest.raises(RoundMisuse, match="closed twice"):
        r.close()


def test_count_rejection() -> None:
    r = make_round()
    r.count_rejection("replay")
    r.count_rejection("replay")
    r.count_rejection("bad_signature")
    assert r.rejected == {"replay": 2, "bad_signature": 1}


# --- Stats -----------------------------------------------------------------------------------


def test_aggregate_is_order_independent_and_exact() -> None:
    values = [0.1 + 50, 0.2 + 50, 0.3 + 50, 1e-13 + 50, 123.456, 249.999]
    a = {f"p{i}": stats(v) for i, v in enumerate(values)}
    b = {f"p{i}": stats(v) for i, v in reversed(list(enumerate(values)))}
    ra, rb = Stats().aggregate(a), Stats().aggregate(b)
    assert ra == rb
    assert ra["total_height"] == math.fsum(values)
    assert ra["count"] == len(values)


def test_aggregate_empty() -> None:
    assert Stats().aggregate({}) == {
        "count": 0, "total_height": 0.0, "total_weight": 0.0,
        "mean_height": None, "mean_weight": None,
    }


def test_aggregate_ignores_foreign_schemas() -> None:
    out = Stats().aggregate({P1: stats(160.0), P2: PullRequest(kind="head")})
    assert out["count"] == 1 and out["mean_height"] == 160.0


def test_parse_data() -> None:
    assert Stats().parse_data("height=170.5,weight=65") == StatsContribution(
        height=170.5, weight=65.0
    )
    assert Stats().parse_data(" weight = 65 , height=170.5") == StatsContribution(
        height=170.5, weight=65.0
    )


@pytest.mark.parametrize(
    "text",
    [
        "height=abc",
        "height=abc,weight=65",
        "height=10,weight=65",
        "height=170,weight=1000",
        "foo",
        "",
        "height=170.5",
        "height=170.5,weight=65,colour=1",
        "height=170.5;weight=65",
        "height=nan,weight=65",
        "height=inf,weight=65",
    ],
)
def test_parse_data_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        Stats().parse_data(text)


def test_parse_data_messages() -> None:
    with pytest.raises(ValueError, match="expected key=value"):
        Stats().parse_data("foo")
    with pytest.raises(ValueError, match="--data"):
        Stats().parse_data("height=10,weight=65")


def test_contribute() -> None:
    announce = RoundAnnounce(round=1, workload="stats", deadline_ms=0, min_peers=1)
    c = stats(170.0)
    assert Stats().contribute(announce, c) is c
    with pytest.raises(SchemaError):
        Stats().contribute(announce, {"height": 170.0, "weight": 65.0})


def test_get_workload() -> None:
    assert isinstance(get_workload("stats"), Stats)
    assert WORKLOADS["stats"] is Stats
    assert get_workload("stats") is not get_workload("stats")
    with pytest.raises(ValueError, match="unknown workload 'nope'"):
        get_workload("nope")


def test_check_accepts_valid_contribution() -> None:
    Stats().check(stats())  # no semantic checks beyond the schema


# --- canonical JSON -------------------------------------------------------------------------------


def test_canonical_json_sorted_no_spaces() -> None:
    obj = {"b": 1, "a": [1, 2.5, {"d": None, "c": True}], "é": "ü"}
    assert canonical_json(obj) == '{"a":[1,2.5,{"c":true,"d":null}],"b":1,"é":"ü"}'.encode()


def test_canonical_json_is_utf8_not_escaped() -> None:
    assert canonical_json({"k": "é"}) == b'{"k":"\xc3\xa9"}'


@pytest.mark.parametrize(
    "obj",
    [
        math.nan,
        {"x": math.nan},
        {"x": [1.0, math.inf]},
        [{"y": -math.inf}],
        ({"z": (math.nan,)},),
    ],
)
def test_canonical_json_rejects_non_finite(obj) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        canonical_json(obj)


def test_canonical_json_of_aggregate_round_trips() -> None:
    r = make_round(min_peers=1)
    r.offer(P1, stats(160.5))
    r.offer(P2, stats(170.25))
    out = r.close()
    assert json.loads(canonical_json(out.result)) == out.result


def test_state_digest_stable_under_dict_order() -> None:
    a = {"count": 2, "mean_height": 165.375, "nested": {"x": 1, "y": 2}}
    b = {"nested": {"y": 2, "x": 1}, "mean_height": 165.375, "count": 2}
    assert list(a) != list(b)
    assert state_digest(a) == state_digest(b)
    assert state_digest(a) == hashlib.sha256(canonical_json(a)).digest()
    assert len(state_digest(a)) == 32


def test_state_digest_differs_on_value_change() -> None:
    assert state_digest({"count": 2}) != state_digest({"count": 3})
    assert state_digest({"mean": 1.0}) != state_digest({"mean": 1.0000000000000002})
