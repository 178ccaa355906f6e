"""Tensor codec: round trips and every limit, checked before safetensors sees the bytes."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save as st_save

from protocol.wire.tensors import (
    DEFAULT_LIMITS,
    TensorCodecError,
    TensorLimits,
    check_header,
    decode,
    encode,
)


def raw(header: dict, body: bytes = b"", *, hlen: int | None = None) -> bytes:
    """Hand-built safetensors bytes: 8-byte LE header length, JSON header, body."""
    hb = json.dumps(header).encode()
    return struct.pack("<Q", len(hb) if hlen is None else hlen) + hb + body


def entry(dtype: str, shape: list, start: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


def refused(data: bytes, match: str, limits: TensorLimits = DEFAULT_LIMITS) -> None:
    with pytest.raises(TensorCodecError, match=match) as info:
        decode(data, limits)
    assert info.value.reason == "bad_tensors"


# --- round trips ----------------------------------------------------------------------------------


def test_round_trip_float32() -> None:
    rng = np.random.default_rng(0)
    tensors = {
        "w": rng.standard_normal((3, 4)).astype(np.float32),
        "b": rng.standard_normal(4).astype(np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    out = decode(encode(tensors))
    assert set(out) == set(tensors)
    for k, v in tensors.items():
        assert out[k].dtype == np.float32
        assert out[k].shape == v.shape
        np.testing.assert_array_equal(out[k], v)


def test_round_trip_other_allowed_dtypes() -> None:
    tensors = {
        "f64": np.arange(5, dtype=np.float64) / 3,
        "i64": np.arange(-3, 3, dtype=np.int64),
        "i32": np.arange(7, dtype=np.int32).reshape(7, 1),
        "u8": np.arange(256, dtype=np.uint8),
    }
    out = decode(encode(tensors))
    for k, v in tensors.items():
        assert out[k].dtype == v.dtype
        np.testing.assert_array_equal(out[k], v)


def test_round_trip_scalar_keeps_shape() -> None:
    out = decode(encode({"scalar": np.array(1.5, dtype=np.float32)}))
    assert out["scalar"].shape == ()
    assert out["scalar"] == np.float32(1.5)


def test_scalar_from_safetensors_decodes_as_scalar() -> None:
    # decode itself handles 0-d tensors: shape [] is one element
    out = decode(st_save({"scalar": np.array(1.5, dtype=np.float32)}))
    assert out["scalar"].shape == () and out["scalar"] == np.float32(1.5)


def test_encode_makes_non_contiguous_arrays_contiguous() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4).T
    assert not a.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(decode(encode({"t": a}))["t"], a)


def test_round_trip_with_metadata() -> None:
    data = encode({"x": np.ones(2, np.float32)}, metadata={"round": "3"})
    hlen = struct.unpack("<Q", data[:8])[0]
    assert json.loads(data[8 : 8 + hlen])["__metadata__"] == {"round": "3"}
    assert set(decode(data)) == {"x"}


def test_check_header_returns_entries() -> None:
    header = check_header(encode({"x": np.ones((2, 3), np.float32)}))
    assert header == {"x": entry("F32", [2, 3], 0, 24)}


def test_hand_built_valid_file_decodes() -> None:
    body = np.arange(3, dtype="<f4").tobytes() + np.arange(2, dtype="<i8").tobytes()
    data = raw({"a": entry("F32", [3], 0, 12), "b": entry("I64", [2], 12, 28)}, body)
    out = decode(data)
    np.testing.assert_array_equal(out["a"], [0, 1, 2])
    np.testing.assert_array_equal(out["b"], [0, 1])


# --- refusals -------------------------------------------------------------------------------------


def test_over_max_bytes() -> None:
    data = encode({"x": np.zeros(100, np.float32)})
    refused(data, "exceeds limit", TensorLimits(max_bytes=len(data) - 1))
    assert "x" in decode(data, TensorLimits(max_bytes=len(data)))


@pytest.mark.parametrize("data", [b"", b"\x00" * 7])
def test_truncated_header_length(data: bytes) -> None:
    refused(data, "truncated")


def test_header_length_past_buffer() -> None:
    good = encode({"x": np.zeros(2, np.float32)})
    refused(struct.pack("<Q", len(good)) + good[8:], "too large for the buffer")
    refused(struct.pack("<Q", 2**64 - 1) + good[8:], "too large for the buffer")


def test_header_length_over_header_cap() -> None:
    data = encode({"x": np.zeros(2, np.float32)})
    refused(data, "too large", TensorLimits(max_header_bytes=10))


@pytest.mark.parametrize("header", [b"not json at all", b"\xff\xfe\x00garbage", b"{\"a\": "])
def test_header_not_json(header: bytes) -> None:
    refused(struct.pack("<Q", len(header)) + header, "not JSON")


@pytest.mark.parametrize("header", [b"[]", b"1", b"\"str\"", b"null"])
def test_header_not_object(header: bytes) -> None:
    refused(struct.pack("<Q", len(header)) + header, "not an object")


def test_disallowed_dtype_f16() -> None:
    data = st_save({"x": np.zeros(4, np.float16)})
    refused(data, "dtype 'F16' not allowed")
    # the same bytes pass when the caller allows F16
    out = decode(data, TensorLimits(dtypes=frozenset({"F16"})))
    assert out["x"].dtype == np.float16


@pytest.mark.parametrize("dtype", ["BOOL", "I8", "U64", "F8_E4M3", "complex", ""])
def test_other_disallowed_dtypes(dtype: str) -> None:
    refused(raw({"x": entry(dtype, [1], 0, 1)}, b"\x00"), "not allowed")


def test_too_many_dims() -> None:
    data = encode({"x": np.zeros((1,) * 9, np.float32)})
    refused(data, "bad shape")
    ok = encode({"x": np.zeros((1,) * 8, np.float32)})
    assert decode(ok)["x"].shape == (1,) * 8
    refused(ok, "bad shape", TensorLimits(max_dims=7))


@pytest.mark.parametrize("shape", [[-1], [1.0], ["2"], None, 3])
def test_bad_shape_values(shape) -> None:
    refused(raw({"x": entry("F32", shape, 0, 4)}, b"\x00" * 4), "bad shape")


def test_too_many_elements() -> None:
    limits = TensorLimits(max_elements=10)
    refused(encode({"x": np.zeros(11, np.float32)}), "elements exceeds limit", limits)
    refused(encode({"x": np.zeros((4, 3), np.float32)}), "elements exceeds limit", limits)
    assert decode(encode({"x": np.zeros(10, np.float32)}), limits)["x"].size == 10


def test_too_many_tensors() -> None:
    data = encode({f"t{i}": np.zeros(1, np.float32) for i in range(4)})
    refused(data, "tensors exceeds limit", TensorLimits(max_tensors=3))
    assert len(decode(data, TensorLimits(max_tensors=4))) == 4


def test_metadata_does_not_count_as_tensor() -> None:
    data = encode({"x": np.zeros(1, np.float32)}, metadata={"k": "v"})
    assert set(decode(data, TensorLimits(max_tensors=1))) == {"x"}


@pytest.mark.parametrize(
    "info",
    [
        "not a dict",
        {"dtype": "F32", "shape": [1]},
        {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1},
    ],
)
def test_malformed_entry(info) -> None:
    refused(raw({"x": info}, b"\x00" * 4), "malformed entry")


@pytest.mark.parametrize("offsets", [[0], [0, 4, 8], "0,4", [0.0, 4.0], None])
def test_bad_offsets(offsets) -> None:
    refused(raw({"x": {"dtype": "F32", "shape": [1], "data_offsets": offsets}}, b"\x00" * 4),
            "bad offsets")


@pytest.mark.parametrize(
    ("shape", "start", "end", "body"),
    [
        ([2], 0, 4, 8),  # span shorter than shape needs
        ([1], 0, 8, 8),  # span longer than shape needs
        ([2], 4, 0, 8),  # reversed
        ([2], -8, 0, 8),  # negative
        ([2], 0, 8, 4),  # past the buffer
        ([2], 8, 16, 8),  # entirely past the buffer
    ],
)
def test_offsets_do_not_match_shape(shape, start, end, body) -> None:
    refused(raw({"x": entry("F32", shape, start, end)}, b"\x00" * body),
            "offsets do not match shape and buffer")


def test_gap_between_tensors() -> None:
    data = raw({"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)}, b"\x00" * 12)
    refused(data, "gaps or overlaps")


def test_gap_at_start() -> None:
    refused(raw({"a": entry("F32", [1], 4, 8)}, b"\x00" * 8), "gaps or overlaps")


def test_overlapping_tensors() -> None:
    data = raw({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}, b"\x00" * 12)
    refused(data, "gaps or overlaps")


def test_aliased_tensors() -> None:
    data = raw({"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 0, 4)}, b"\x00" * 4)
    refused(data, "gaps or overlaps")


def test_trailing_bytes() -> None:
    good = encode({"x": np.zeros(2, np.float32)})
    refused(good + b"\x00", "trailing bytes")
    refused(raw({}, b"\x00"), "trailing bytes")


def test_empty_header_and_body_is_empty_dict() -> None:
    assert decode(raw({})) == {}


def test_codec_error_is_value_error() -> None:
    assert issubclass(TensorCodecError, ValueError)


# --- bugs: non-TensorCodecError escapes -----------------------------------------------------------


@pytest.mark.parametrize("dtype", [[], {"a": 1}])
def test_unhashable_dtype_is_codec_error(dtype) -> None:
    refused(raw({"x": entry(dtype, [1], 0, 4)}, b"\x00" * 4), "not allowed")


def test_huge_dimension_is_codec_error() -> None:
    refused(raw({"x": entry("F32", [2**64], 0, 4)}, b"\x00" * 4), "elements exceeds limit")


def test_dimension_2_63_refused_as_too_many_elements() -> None:
    refused(raw({"x": entry("F32", [2**63], 0, 4)}, b"\x00" * 4), "elements exceeds limit")


def test_element_count_overflow_refused_by_check_header() -> None:
    with pytest.raises(TensorCodecError, match="elements exceeds limit"):
        check_header(raw({"x": entry("F32", [2**32, 2**32], 0, 0)}))


def test_element_count_overflow_still_refused_by_decode() -> None:
    with pytest.raises(TensorCodecError):
        decode(raw({"x": entry("F32", [2**32, 2**32], 0, 0)}))


def test_deeply_nested_header_is_codec_error() -> None:
    header = b"[" * 100_000
    refused(struct.pack("<Q", len(header)) + header, "not JSON")


# --- fuzz -----------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_only_raise_codec_error(data: bytes) -> None:
    try:
        out = decode(data)
    except TensorCodecError:
        return
    assert isinstance(out, dict)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=st.binary(max_size=120), body=st.binary(max_size=64))
def test_random_header_with_valid_length_only_raises_codec_error(header, body) -> None:
    # a correct length prefix gets random bytes past the first check
    try:
        out = decode(struct.pack("<Q", len(header)) + header + body)
    except TensorCodecError:
        return
    assert isinstance(out, dict)


_json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 40), st.sampled_from(["F32", "I64", "U8", "x"])
)
_small_json = st.recursive(
    _json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    entries=st.dictionaries(
        st.sampled_from(["a", "b", "c"]),
        st.fixed_dictionaries({
            "dtype": st.sampled_from(["F32", "I64", "U8", "F16", "BOOL"]),
            "shape": st.lists(st.one_of(st.integers(-1, 5), _json_scalar), max_size=3),
            "data_offsets": st.one_of(st.lists(st.integers(-4, 40), min_size=2, max_size=2),
                                      _small_json),
        }),
        max_size=3,
    ),
    body=st.binary(max_size=40),
)
def test_structured_headers_only_raise_codec_error(entries: dict, body: bytes) -> None:
    try:
        out = decode(raw(entries, body))
    except TensorCodecError:
        return
    assert set(out) == set(entries)
