"""Canonical JSON for published results: sorted keys, no spaces, finite numbers only.

The digest of these bytes is a round's ``state_digest``: two parties that
agree on a result agree on its digest, whatever language or dict order.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any


def _check_finite(obj: Any) -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError("non-finite number in a result")
    if isinstance(obj, dict):
        for v in obj.values():
            _check_finite(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _check_finite(v)


def canonical_json(obj: Any) -> bytes:
    _check_finite(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def state_digest(obj: Any) -> bytes:
    return hashlib.sha256(canonical_json(obj)).digest()
