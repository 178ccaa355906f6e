"""Message schemas: strict decoding and round trips."""

from __future__ import annotations

import hashlib
import math

import msgspec
import pytest

from protocol.wire.envelope import RejectedMessage
from protocol.wire.messages import (
    ANNOUNCE,
    CONTRIBUTION,
    ENROLL,
    RESULT,
    BlobRef,
    Enroll,
    PullRequest,
    PullResponse,
    RoundAnnounce,
    RoundResult,
    SchemaError,
    StatsContribution,
    SubmitAck,
    decode,
    encode,
)

DIGEST = hashlib.sha256(b"state").digest()

VALID: list[msgspec.Struct] = [
    Enroll(workloads=["stats"]),
    Enroll(workloads=["stats", "train"], addrs=["/ip4/127.0.0.1/tcp/4001"], agent="hg/0.1"),
    RoundAnnounce(round=3, workload="stats", deadline_ms=1_700_000_000_000, min_peers=2),
    RoundAnnounce(
        round=2**53, workload="stats", deadline_ms=0, min_peers=0,
        prev_state_digest=DIGEST, params=b"\x00" * 1024,
    ),
    StatsContribution(height=170.5, weight=65.0),
    StatsContribution(height=50.0, weight=300.0),  # inclusive bounds
    BlobRef(digest=DIGEST, size=2**32),
    RoundResult(
        round=1, workload="stats", status="published", accepted=2,
        rejected={"bad_signature": 1, "replay": 3}, state_digest=DIGEST,
        result=b'{"count":2}',
    ),
    RoundResult(
        round=1, workload="stats", status="published", accepted=0, rejected={},
        state_digest=DIGEST, blob=BlobRef(digest=DIGEST, size=10),
    ),
    SubmitAck(accepted=True),
    SubmitAck(accepted=False, reason="bad_signature: nope"),
    PullRequest(kind="head"),
    PullRequest(kind="result", round=12),
    PullResponse(),
    PullResponse(envelopes=[b"a", b"b" * 100]),
]


@pytest.mark.parametrize("msg", VALID, ids=lambda m: type(m).__name__)
def test_round_trip(msg: msgspec.Struct) -> None:
    data = encode(msg)
    back = decode(data, type(msg))
    assert back == msg
    assert type(back) is type(msg)
    assert encode(back) == data


def test_encoded_as_map_with_field_names() -> None:
    raw = msgspec.msgpack.decode(encode(StatsContribution(height=170.5, weight=65.0)))
    assert raw == {"height": 170.5, "weight": 65.0}


def test_defaults_fill_in() -> None:
    e = decode(msgspec.msgpack.encode({"workloads": ["stats"]}), Enroll)
    assert e.addrs == [] and e.agent == ""
    assert decode(msgspec.msgpack.encode({"kind": "head"}), PullRequest).round == 0


def test_int_accepted_for_float() -> None:
    c = decode(msgspec.msgpack.encode({"height": 170, "weight": 65}), StatsContribution)
    assert c.height == 170.0 and c.weight == 65.0


def test_domains_are_distinct() -> None:
    assert len({ENROLL, ANNOUNCE, CONTRIBUTION, RESULT}) == 4


def test_schema_error_is_rejected_message() -> None:
    assert issubclass(SchemaError, RejectedMessage)
    assert SchemaError.reason == "schema"


def _bad(data: dict | list | bytes, schema: type, field: str | None = None) -> SchemaError:
    wire = data if isinstance(data, bytes) else msgspec.msgpack.encode(data)
    with pytest.raises(SchemaError) as info:
        decode(wire, schema)
    assert type(info.value) is SchemaError
    assert info.value.reason == "schema"
    assert str(info.value).startswith(schema.__name__ + ":")
    if field is not None:
        assert f"$.{field}" in str(info.value)
    return info.value


# --- unknown fields -------------------------------------------------------------------------------


@pytest.mark.parametrize("msg", VALID, ids=lambda m: type(m).__name__)
def test_unknown_field_rejected(msg: msgspec.Struct) -> None:
    raw = msgspec.msgpack.decode(encode(msg))
    raw["surprise"] = 1
    err = _bad(raw, type(msg))
    assert "surprise" in str(err)


def test_unknown_field_rejected_in_nested_blobref() -> None:
    raw = msgspec.msgpack.decode(encode(VALID[8]))
    raw["blob"]["extra"] = True
    _bad(raw, RoundResult)


# --- wrong types ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "data", "field"),
    [
        (StatsContribution, {"height": "170", "weight": 65.0}, "height"),
        (StatsContribution, {"height": 170.0, "weight": None}, "weight"),
        (StatsContribution, {"height": True, "weight": 65.0}, "height"),
        (Enroll, {"workloads": "stats"}, "workloads"),
        (Enroll, {"workloads": [1]}, "workloads[0]"),
        (RoundAnnounce, {"round": 1.0, "workload": "s", "deadline_ms": 0, "min_peers": 1},
         "round"),
        (RoundAnnounce, {"round": "1", "workload": "s", "deadline_ms": 0, "min_peers": 1},
         "round"),
        (SubmitAck, {"accepted": 1}, "accepted"),
        (PullRequest, {"kind": b"head"}, "kind"),
        (PullResponse, {"envelopes": ["text, not bytes"]}, "envelopes[0]"),
        (BlobRef, {"digest": "x" * 32, "size": 1}, "digest"),
    ],
)
def test_wrong_type_rejected(schema: type, data: dict, field: str) -> None:
    _bad(data, schema, field)


def test_not_a_map_rejected() -> None:
    _bad([170.0, 65.0], StatsContribution)
    _bad(b"", StatsContribution)
    _bad(b"\xc1", StatsContribution)
    _bad(msgspec.msgpack.encode({"height": 170.0, "weight": 65.0}) + b"\x00", StatsContribution)


def test_missing_required_field_rejected() -> None:
    err = _bad({"height": 170.0}, StatsContribution)
    assert "weight" in str(err)


# --- ranges ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "weight", "field"),
    [
        (10.0, 65.0, "height"),
        (1000.0, 65.0, "height"),
        (49.999, 65.0, "height"),
        (250.001, 65.0, "height"),
        (170.0, 19.9, "weight"),
        (170.0, 300.5, "weight"),
        (-170.0, 65.0, "height"),
        (math.inf, 65.0, "height"),
        (170.0, -math.inf, "weight"),
        (math.nan, 65.0, "height"),
        (170.0, math.nan, "weight"),
    ],
)
def test_stats_out_of_range(height: float, weight: float, field: str) -> None:
    _bad({"height": height, "weight": weight}, StatsContribution, field)


def _announce(**changes) -> dict:
    base = {"round": 1, "workload": "stats", "deadline_ms": 0, "min_peers": 1}
    base.update(changes)
    return base


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"round": -1}, "round"),
        ({"round": 2**53 + 1}, "round"),
        ({"deadline_ms": -1}, "deadline_ms"),
        ({"min_peers": -1}, "min_peers"),
        ({"min_peers": 2**31 + 1}, "min_peers"),
        ({"workload": "w" * 65}, "workload"),
        ({"prev_state_digest": b"\x00" * 33}, "prev_state_digest"),
        ({"params": b"\x00" * (400 * 1024 + 1)}, "params"),
    ],
)
def test_announce_out_of_range(changes: dict, field: str) -> None:
    _bad(_announce(**changes), RoundAnnounce, field)


def test_negative_round_rejected_everywhere() -> None:
    _bad({"kind": "result", "round": -1}, PullRequest, "round")
    raw = msgspec.msgpack.decode(encode(VALID[7]))
    raw["round"] = -5
    _bad(raw, RoundResult, "round")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"state_digest": b"\x00" * 31}, "state_digest"),
        ({"state_digest": b"\x00" * 33}, "state_digest"),
        ({"accepted": -1}, "accepted"),
        ({"rejected": {"x": -1}}, "rejected"),
        ({"rejected": {f"r{i}": 1 for i in range(65)}}, "rejected"),
        ({"rejected": {"k" * 65: 1}}, "rejected"),
        ({"status": "s" * 65}, "status"),
        ({"result": b"x" * (400 * 1024 + 1)}, "result"),
        ({"blob": {"digest": DIGEST, "size": -1}}, "blob.size"),
        ({"blob": {"digest": DIGEST, "size": 2**32 + 1}}, "blob.size"),
        ({"blob": {"digest": b"\x00", "size": 1}}, "blob.digest"),
    ],
)
def test_result_out_of_range(changes: dict, field: str) -> None:
    raw = msgspec.msgpack.decode(encode(VALID[7]))
    raw.update(changes)
    _bad(raw, RoundResult, field)


def test_enroll_limits() -> None:
    _bad({"workloads": ["w"] * 9}, Enroll, "workloads")
    _bad({"workloads": ["w" * 65]}, Enroll, "workloads[0]")
    _bad({"workloads": [], "addrs": ["a" * 257]}, Enroll, "addrs[0]")
    _bad({"workloads": [], "agent": "a" * 65}, Enroll, "agent")
    assert decode(msgspec.msgpack.encode({"workloads": ["w"] * 8}), Enroll).workloads == ["w"] * 8


def test_pull_response_limits() -> None:
    _bad({"envelopes": [b""] * 17}, PullResponse, "envelopes")
    _bad({"reason": "r" * 513, "accepted": False}, SubmitAck, "reason")


def test_invalid_utf8_string_is_schema_error() -> None:
    _bad(b"\x81\xa4kind\xa1\xff", PullRequest)
