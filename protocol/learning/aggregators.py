"""Byzantine-robust aggregators: one small pure function each, found by name.

Every aggregator takes an ``(n, d)`` float array of n peers' vectors (updates
or weights) and returns one ``(d,)`` vector; parameters are keyword
arguments with defaults. :data:`AGGREGATORS` maps the names a round
configuration uses to the functions, so a test can run them all.

Pre-aggregators (:data:`PRE_AGGREGATORS`) take the same ``(n, d)`` array and
return another one that a robust rule then aggregates; the robust-learning
literature relies on them under heterogeneous data. A name chains them with
``+``: ``"arc+nnm+trimmed_mean"`` is adaptive clipping, then nearest-neighbour
mixing, then the trimmed mean (:func:`get_aggregator`).

``f`` is the number of Byzantine inputs an aggregator is asked to tolerate
(where it takes one); its guarantee holds when ``n`` is large enough for it
(see each docstring). Distances are taken between inputs centred on their
mean: inputs that share a large offset (weights near 1e6 that differ by 1e-3)
keep their digits.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

Aggregator = Callable[..., np.ndarray]
PreAggregator = Callable[..., np.ndarray]


def _check(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError("aggregators take an (n, d) array with n >= 1")
    if not np.all(np.isfinite(x)):
        raise ValueError("inputs must be finite")
    return x


def mean(x: np.ndarray) -> np.ndarray:
    """Plain average: no robustness (one input can move it anywhere)."""
    return _check(x).mean(axis=0)


def median(x: np.ndarray) -> np.ndarray:
    """Coordinate-wise median (Yin et al. 2018): with fewer than half the inputs arbitrary,
    each coordinate stays within the honest inputs' range."""
    return np.median(_check(x), axis=0)


def trimmed_mean(x: np.ndarray, f: int | None = None) -> np.ndarray:
    """Coordinate-wise mean after dropping the ``f`` largest and ``f`` smallest values
    (Yin et al. 2018); needs ``n > 2f``. Default ``f``: the most that leaves one value."""
    x = _check(x)
    n = x.shape[0]
    f = (n - 1) // 2 if f is None else f
    if not 0 <= 2 * f < n:
        raise ValueError(f"trimmed mean needs n > 2f (n={n}, f={f})")
    s = np.sort(x, axis=0)
    return s[f:n - f].mean(axis=0)


def _pairwise_sq(x: np.ndarray) -> np.ndarray:
    """Squared distances between rows, computed on the rows centred on their mean (the
    |a|^2 + |b|^2 - 2ab form cancels catastrophically on a shared offset)."""
    c = x - x.mean(axis=0)
    sq = np.sum(c * c, axis=1)
    d = sq[:, None] + sq[None, :] - 2 * c @ c.T
    return np.maximum(d, 0.0)


def _krum_scores(x: np.ndarray, f: int, neighbours: int | None = None) -> np.ndarray:
    n = x.shape[0]
    k = n - f - 2 if neighbours is None else neighbours  # neighbours counted per input
    if k < 1:
        raise ValueError(f"Krum needs n > f + 2 (n={n}, f={f})")
    d = _pairwise_sq(x)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, :k].sum(axis=1)


def _krum_default(n: int, f: int | None) -> tuple[int, int | None]:
    """``f`` and the neighbour count: the default ``f`` is the most Krum tolerates; with
    one or two inputs it tolerates none and counts the one other input (ties: the first)."""
    if f is not None:
        return f, None
    return max(0, (n - 3) // 2), (1 if n == 2 else None)


def krum(x: np.ndarray, f: int | None = None) -> np.ndarray:
    """The input closest to its ``n - f - 2`` nearest others (Blanchard et al. 2017);
    tolerates ``f`` Byzantine inputs when ``n > 2f + 2``. With the default ``f``, one or
    two inputs are no error (one: itself; two: the first, as both score the same)."""
    x = _check(x)
    if x.shape[0] == 1:
        return x[0].copy()
    f, k = _krum_default(x.shape[0], f)
    return x[int(np.argmin(_krum_scores(x, f, k)))].copy()


def multi_krum(x: np.ndarray, f: int | None = None, m: int | None = None) -> np.ndarray:
    """Average of the ``m`` best-scored inputs by Krum's score (El Mhamdi et al. 2018);
    default ``m = n - f`` (with one or two inputs and the default ``f``: their mean)."""
    x = _check(x)
    n = x.shape[0]
    f, k = _krum_default(n, f)
    m = n - f if m is None else m
    if not 1 <= m <= n:
        raise ValueError("multi-Krum needs 1 <= m <= n")
    if m == n:
        return x.mean(axis=0)
    best = np.argsort(_krum_scores(x, f, k), kind="stable")[:m]
    return x[best].mean(axis=0)


def geometric_median(x: np.ndarray, iters: int = 200, eps: float = 1e-8) -> np.ndarray:
    """The point minimising the sum of Euclidean distances (Weiszfeld's algorithm, as in
    Pillutla et al. 2022's RFA); breakdown point 1/2."""
    x = _check(x)
    origin = np.median(x, axis=0)
    c = x - origin  # the iteration at the inputs' own scale, not their offset's
    scale = float(np.linalg.norm(c, axis=1).mean())
    if scale == 0.0:
        return origin
    z = np.zeros(x.shape[1])
    for _ in range(iters):
        dist = np.linalg.norm(c - z, axis=1)
        w = 1.0 / np.maximum(dist, eps * scale)
        nz = (w * c.T).sum(axis=1) / w.sum()
        if np.linalg.norm(nz - z) <= eps * scale:  # relative to the inputs' spread
            return origin + nz
        z = nz
    return origin + z


def centered_clipping(x: np.ndarray, center: np.ndarray | None = None, tau: float | None = None,
                      iters: int = 3) -> np.ndarray:
    """Karimireddy et al. 2021: start from ``center`` (the previous aggregate, else the
    median) and move it by the mean of the inputs' offsets, each clipped to norm ``tau``
    (default: the median offset norm), a few times."""
    x = _check(x)
    v = np.median(x, axis=0) if center is None else np.asarray(center, dtype=np.float64)
    for _ in range(iters):
        diff = x - v
        norms = np.linalg.norm(diff, axis=1)
        t = float(np.median(norms)) if tau is None else tau
        scale = np.minimum(1.0, t / np.maximum(norms, 1e-12))
        v = v + (diff * scale[:, None]).mean(axis=0)
    return v


# --- pre-aggregators: (n, d) -> (n', d) ------------------------------------------------------

def nnm(x: np.ndarray, f: int | None = None) -> np.ndarray:
    """Nearest-neighbour mixing (Allouah et al. 2023, "Fixing by Mixing"): each input is
    replaced by the mean of its ``n - f`` nearest inputs (itself included), which shrinks
    the honest inputs' spread before the robust rule. Default ``f``: ``(n - 1) // 2``."""
    x = _check(x)
    n = x.shape[0]
    f = (n - 1) // 2 if f is None else f
    if not 0 <= f < n:
        raise ValueError(f"nnm needs 0 <= f < n (n={n}, f={f})")
    d = _pairwise_sq(x)
    near = np.argsort(d, axis=1, kind="stable")[:, :n - f]  # each row's own distance is 0
    mix = np.zeros((n, n))
    np.put_along_axis(mix, near, 1.0 / (n - f), axis=1)
    return mix @ x  # one matrix product, not an (n, n - f, d) gather


def bucketing(x: np.ndarray, s: int = 2, seed: int = 0) -> np.ndarray:
    """Bucketing (Karimireddy et al. 2022): the inputs shuffled (by ``seed``: a round
    uses its public beacon, so anyone can recompute it) into buckets of ``s`` and each
    bucket averaged; the robust rule then sees ``ceil(n / s)`` less heterogeneous inputs,
    at most ``f`` of them touched by the ``f`` Byzantine ones."""
    x = _check(x)
    if s < 1:
        raise ValueError("bucketing needs s >= 1")
    order = np.random.default_rng(seed).permutation(x.shape[0])
    return np.stack([x[order[i:i + s]].mean(axis=0) for i in range(0, len(order), s)])


def arc(x: np.ndarray, f: int | None = None) -> np.ndarray:
    """Adaptive robust clipping (Allouah et al. 2024): the ``k = floor(2 (f / n) (n - f))``
    largest inputs are clipped to the norm of the largest of the others, so that a few
    huge inputs cannot dominate what follows. Default ``f``: ``(n - 1) // 2``."""
    x = _check(x)
    n = x.shape[0]
    f = (n - 1) // 2 if f is None else f
    if not 0 <= f < n:
        raise ValueError(f"arc needs 0 <= f < n (n={n}, f={f})")
    k = int(2 * f * (n - f) / n)
    if k == 0:
        return x.copy()
    norms = np.linalg.norm(x, axis=1)
    tau = float(np.sort(norms)[n - k - 1])
    scale = np.minimum(1.0, tau / np.maximum(norms, 1e-300))
    return x * scale[:, None]


PRE_AGGREGATORS: dict[str, PreAggregator] = {"nnm": nnm, "bucketing": bucketing, "arc": arc}


AGGREGATORS: dict[str, Aggregator] = {
    "mean": mean,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "multi_krum": multi_krum,
    "geometric_median": geometric_median,
    "centered_clipping": centered_clipping,
}


def get_aggregator(name: str) -> Aggregator:
    """The aggregator ``name``: a rule of :data:`AGGREGATORS`, after any pre-aggregators of
    :data:`PRE_AGGREGATORS` chained before it with ``+`` (``"nnm+krum"``). Keyword
    arguments go to every stage that takes them (``f`` to all that tolerate ``f``)."""
    *pre, last = name.split("+")
    if last not in AGGREGATORS or any(p not in PRE_AGGREGATORS for p in pre):
        raise ValueError(f"unknown aggregator {name!r}; known: {sorted(AGGREGATORS)}, "
                         f"after pre-aggregators {sorted(PRE_AGGREGATORS)} joined by '+'")
    if not pre:
        return AGGREGATORS[last]
    stages = [PRE_AGGREGATORS[p] for p in pre] + [AGGREGATORS[last]]

    def chained(x: np.ndarray, **kwargs: object) -> np.ndarray:
        for stage in stages:
            x = stage(x, **_taken(stage, kwargs))
        return x

    chained.__name__ = name
    return chained


def tolerable(liars: int, n: int) -> int:
    """The ``f`` to ask of an aggregator over ``n`` inputs when up to ``liars`` of them may
    be Byzantine: that many, at most what ``n`` inputs can outvote."""
    return max(0, min(liars, (n - 1) // 2))


def combine(name: str, x: np.ndarray, **kwargs: object) -> np.ndarray:
    """Aggregate ``x`` with ``name`` (chains allowed), each stage given the ``kwargs`` it
    takes: ``combine("mean", x, f=2)`` is the mean, whatever ``f`` says."""
    fn = get_aggregator(name)
    return fn(x, **kwargs) if "+" in name else fn(x, **_taken(fn, kwargs))


def _taken(fn: Callable[..., np.ndarray], kwargs: dict[str, object]) -> dict[str, object]:
    params = inspect.signature(fn).parameters
    return {k: v for k, v in kwargs.items() if k in params}
