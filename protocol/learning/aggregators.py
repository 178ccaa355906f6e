"""Byzantine-robust aggregators: one small pure function each, found by name.

Every aggregator takes an ``(n, d)`` float array of n peers' vectors (updates
or weights) and returns one ``(d,)`` vector; parameters are keyword
arguments with defaults. :data:`AGGREGATORS` maps the names a round
configuration uses to the functions, so a test can run them all.

``f`` is the number of Byzantine inputs an aggregator is asked to tolerate
(where it takes one); its guarantee holds when ``n`` is large enough for it
(see each docstring).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Aggregator = Callable[..., np.ndarray]


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
    sq = np.sum(x * x, axis=1)
    d = sq[:, None] + sq[None, :] - 2 * x @ x.T
    return np.maximum(d, 0.0)


def _krum_scores(x: np.ndarray, f: int) -> np.ndarray:
    n = x.shape[0]
    k = n - f - 2  # neighbours counted per input
    if k < 1:
        raise ValueError(f"Krum needs n > f + 2 (n={n}, f={f})")
    d = _pairwise_sq(x)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, :k].sum(axis=1)


def krum(x: np.ndarray, f: int | None = None) -> np.ndarray:
    """The input closest to its ``n - f - 2`` nearest others (Blanchard et al. 2017);
    tolerates ``f`` Byzantine inputs when ``n > 2f + 2``."""
    x = _check(x)
    f = max(0, (x.shape[0] - 3) // 2) if f is None else f
    return x[int(np.argmin(_krum_scores(x, f)))].copy()


def multi_krum(x: np.ndarray, f: int | None = None, m: int | None = None) -> np.ndarray:
    """Average of the ``m`` best-scored inputs by Krum's score (El Mhamdi et al. 2018);
    default ``m = n - f``."""
    x = _check(x)
    n = x.shape[0]
    f = max(0, (n - 3) // 2) if f is None else f
    m = n - f if m is None else m
    if not 1 <= m <= n:
        raise ValueError("multi-Krum needs 1 <= m <= n")
    best = np.argsort(_krum_scores(x, f), kind="stable")[:m]
    return x[best].mean(axis=0)


def geometric_median(x: np.ndarray, iters: int = 200, eps: float = 1e-8) -> np.ndarray:
    """The point minimising the sum of Euclidean distances (Weiszfeld's algorithm, as in
    Pillutla et al. 2022's RFA); breakdown point 1/2."""
    x = _check(x)
    z = np.median(x, axis=0)
    for _ in range(iters):
        dist = np.linalg.norm(x - z, axis=1)
        w = 1.0 / np.maximum(dist, eps)
        nz = (w * x.T).sum(axis=1) / w.sum()
        if np.linalg.norm(nz - z) <= eps * max(1.0, np.linalg.norm(z)):
            return nz
        z = nz
    return z


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
    try:
        return AGGREGATORS[name]
    except KeyError:
        raise ValueError(f"unknown aggregator {name!r}; known: {sorted(AGGREGATORS)}") from None
