"""Fitness of an LLM output against a target: small pure functions, combinable by weight.

Each scorer maps ``(output, target)`` to a float where larger is better and
1.0 (or 0.0 for distances turned into penalties) is a perfect match:

* :func:`vader_score` -- the seed's: the L1 distance between the VADER
  (neg, neu, pos) scores of output and target (each triple sums to 1, so the
  distance is in [0, 2]), as ``1 - distance / 2``;
* :func:`lexical_overlap` -- F1 of the two texts' lower-cased word sets;
* :func:`length_penalty` -- 1 when the output's word count equals the
  target's, falling linearly with the relative difference (never below 0);
* :func:`cosine` -- cosine similarity of two embedding vectors (the caller
  embeds with all-MiniLM-L6-v2; see peer/llm.py).

:func:`combine` takes ``{"vader": 1.0, "lexical": 0.5, ...}`` weights and
returns the weighted mean of the chosen scorers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

_WORD = re.compile(r"[a-z0-9']+")


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@lru_cache(maxsize=65536)
def vader_vector(text: str) -> tuple[float, float, float]:
    s = _vader().polarity_scores(text)
    return (s["neg"], s["neu"], s["pos"])


def vader_distance(output: str, target: str) -> float:
    """The seed's fitness (minimised): L1 distance of the VADER neg/neu/pos scores."""
    a, b = vader_vector(output), vader_vector(target)
    return sum(abs(x - y) for x, y in zip(a, b, strict=True))


def vader_score(output: str, target: str) -> float:
    return 1.0 - vader_distance(output, target) / 2.0


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def lexical_overlap(output: str, target: str) -> float:
    a, b = set(words(output)), set(words(target))
    if not a or not b:
        return 0.0
    common = len(a & b)
    return 2 * common / (len(a) + len(b))


def length_penalty(output: str, target: str) -> float:
    n, m = len(words(output)), max(1, len(words(target)))
    return max(0.0, 1.0 - abs(n - m) / m)


def cosine(u: Sequence[float], v: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(u, v, strict=True))
    nu, nv = math.sqrt(sum(x * x for x in u)), math.sqrt(sum(y * y for y in v))
    return dot / (nu * nv) if nu and nv else 0.0


TEXT_SCORERS: dict[str, Callable[[str, str], float]] = {
    "vader": vader_score, "lexical": lexical_overlap, "length": length_penalty}


def combine(weights: Mapping[str, float], output: str, target: str,
            embedding_cosine: float | None = None) -> float:
    """Weighted mean of the named scorers; ``embedding`` needs ``embedding_cosine``."""
    total, norm = 0.0, 0.0
    for name, w in weights.items():
        if w <= 0:
            continue
        if name == "embedding":
            if embedding_cosine is None:
                raise ValueError("the embedding scorer needs the output's cosine to the target")
            value = embedding_cosine
        elif name in TEXT_SCORERS:
            value = TEXT_SCORERS[name](output, target)
        else:
            raise ValueError(f"unknown scorer {name!r}; known: "
                             f"{sorted([*TEXT_SCORERS, 'embedding'])}")
        total, norm = total + w * value, norm + w
    if not norm:
        raise ValueError("no scorer has a positive weight")
    return total / norm
