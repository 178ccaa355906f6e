"""Differential privacy for secure sums: distributed Gaussian noise and its accounting.

Mechanism: every participant clips its vector to the workload's bounded set
(so one person's record moves the sum by at most the L2 ``sensitivity``),
then adds Gaussian noise of standard deviation ``sigma / sqrt(k)``, where
``k`` is the round's quorum. Secure aggregation reveals only the sum, which
carries noise of variance ``sigma^2 * m / k >= sigma^2`` when ``m >= k``
peers survive (a round with fewer survivors fails). This is the Gaussian
mechanism with noise multiplier ``z = sigma / sensitivity`` on the sum
(Dwork and Roth 2014; distributed as in Kairouz et al. 2021, "The
distributed discrete Gaussian", with continuous noise before fixed-point
encoding). Participation itself is not hidden: the coordinator sees who
took part; DP protects the values.

Accounting uses Google's ``dp_accounting`` RDP accountant: epsilon at a
given delta for one round, and for ``r`` rounds over the same data
(composition).
"""

from __future__ import annotations

import math
from functools import lru_cache


def _accountant():
    from dp_accounting import GaussianDpEvent, rdp  # imported lazily: 0.7 s

    return GaussianDpEvent, rdp.RdpAccountant


@lru_cache(maxsize=1024)
def epsilon(noise_multiplier: float, delta: float, rounds: int = 1) -> float:
    """Epsilon of ``rounds`` Gaussian releases with this noise multiplier, at ``delta``."""
    if noise_multiplier <= 0:
        return math.inf
    event_type, accountant_type = _accountant()
    acc = accountant_type()
    acc.compose(event_type(noise_multiplier=noise_multiplier), rounds)
    return float(acc.get_epsilon(delta))


@lru_cache(maxsize=256)
def noise_multiplier_for(target_epsilon: float, delta: float) -> float:
    """Smallest noise multiplier (to 0.1 %) whose single release has epsilon <= target."""
    if target_epsilon <= 0:
        raise ValueError("epsilon must be positive")
    lo, hi = 0.05, 1.0
    while epsilon(hi, delta) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e6:
            raise ValueError("target epsilon is unreachable")
    while hi - lo > 1e-3 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if epsilon(mid, delta) > target_epsilon else (lo, mid)
    return hi


def calibrate(target_epsilon: float, delta: float, sensitivity: float,
              min_peers: int) -> tuple[float, int]:
    """(sigma of the sum's noise, k): each of at least ``k = min_peers`` peers adds noise of
    std ``sigma / sqrt(k)`` so that one round is (target_epsilon, delta)-DP."""
    return noise_multiplier_for(target_epsilon, delta) * sensitivity, max(1, min_peers)


def report(sigma: float, split: int, sensitivity: float, delta: float, target_epsilon: float,
           n: int) -> dict:
    """The ``dp`` entry of a published result of ``n`` noised inputs."""
    return {"mechanism": "distributed Gaussian",
            "epsilon": epsilon(sigma / sensitivity, delta), "delta": delta,
            "sigma_of_sum": sigma * (n / split) ** 0.5, "noise_multiplier": sigma / sensitivity,
            "sensitivity": sensitivity, "target_epsilon": target_epsilon}
