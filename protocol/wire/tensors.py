"""Tensor codec on safetensors, with limits checked before any tensor is built.

``decode`` parses the safetensors header itself (8-byte little-endian length,
then JSON) and refuses, before allocating anything: a header over the cap,
dtypes outside the allowed set, too many tensors, too many dimensions or
elements, offsets that overlap, leave gaps or run past the buffer. Only then
does it hand the bytes to safetensors. Never pickle: this is the only way
tensors enter or leave a process.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load as _st_load
from safetensors.numpy import save as _st_save

_DTYPE_SIZES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "I8": 1, "U8": 1, "I16": 2,
                "I32": 4, "I64": 8, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1}


class TensorCodecError(ValueError):
    """Tensor bytes were refused; the message says which limit."""

    reason = "bad_tensors"


@dataclass(frozen=True)
class TensorLimits:
    max_bytes: int = 64 * 1024 * 1024
    max_header_bytes: int = 1024 * 1024
    max_tensors: int = 1024
    max_dims: int = 8
    max_elements: int = 32 * 1024 * 1024
    dtypes: frozenset[str] = frozenset({"F32", "F64", "I64", "I32", "U8"})


DEFAULT_LIMITS = TensorLimits()


def encode(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """Serialize named arrays (C-contiguous copies are made where needed)."""
    arrays = {k: v if v.flags.c_contiguous else np.array(v, order="C")  # keeps 0-d shape
              for k, v in tensors.items()}
    return _st_save(arrays, metadata=metadata)


def check_header(data: bytes, limits: TensorLimits = DEFAULT_LIMITS) -> dict[str, dict]:
    """Validate the safetensors header against ``limits``; return its tensor entries."""
    if len(data) > limits.max_bytes:
        raise TensorCodecError(f"{len(data)} bytes exceeds limit {limits.max_bytes}")
    if len(data) < 8:
        raise TensorCodecError("truncated: no header length")
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > limits.max_header_bytes or 8 + hlen > len(data):
        raise TensorCodecError(f"header length {hlen} is too large for the buffer")
    try:
        header = json.loads(data[8 : 8 + hlen])
    except (ValueError, RecursionError) as exc:  # bad UTF-8 / JSON, absurd nesting
        raise TensorCodecError(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise TensorCodecError("header is not an object")
    header.pop("__metadata__", None)
    if len(header) > limits.max_tensors:
        raise TensorCodecError(f"{len(header)} tensors exceeds limit {limits.max_tensors}")
    body = len(data) - 8 - hlen
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise TensorCodecError(f"tensor {name!r}: malformed entry")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in limits.dtypes or dtype not in _DTYPE_SIZES:
            raise TensorCodecError(f"tensor {name!r}: dtype {dtype!r} not allowed")
        if (not isinstance(shape, list) or len(shape) > limits.max_dims
                or not all(isinstance(d, int) and d >= 0 for d in shape)):
            raise TensorCodecError(f"tensor {name!r}: bad shape {shape!r}")
        n = math.prod(shape)  # Python ints: no silent int64 wrap-around
        if n > limits.max_elements:
            raise TensorCodecError(f"tensor {name!r}: {n} elements exceeds limit")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets)):
            raise TensorCodecError(f"tensor {name!r}: bad offsets")
        start, end = offsets
        if not 0 <= start <= end <= body or end - start != n * _DTYPE_SIZES[dtype]:
            raise TensorCodecError(f"tensor {name!r}: offsets do not match shape and buffer")
        spans.append((start, end))
    spans.sort()
    pos = 0
    for start, end in spans:
        if start != pos:
            raise TensorCodecError("tensor data has gaps or overlaps")
        pos = end
    if pos != body:
        raise TensorCodecError("trailing bytes after tensor data")
    return header


def decode(data: bytes, limits: TensorLimits = DEFAULT_LIMITS) -> dict[str, np.ndarray]:
    """Validated inverse of :func:`encode`; raises :class:`TensorCodecError`."""
    check_header(data, limits)
    try:
        return _st_load(bytes(data))
    except Exception as exc:  # safetensors raises its own error type
        raise TensorCodecError(f"safetensors refused the data: {exc}") from exc
