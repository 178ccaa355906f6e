"""Bring your own model: softmax regression on scikit-learn's wine data, federated.

The whole workload is the four methods below; hypergossip does the networking,
signatures, secure aggregation and publishing. Run it on a local testnet from the
repository root, in the clear or under secure aggregation (robust, the default for
models)::

    ./scripts/testnet --workload examples.wine:Wine --peers 4 --rounds 5 --insecure
    ./scripts/testnet --workload examples.wine:Wine --peers 4 --rounds 5

or give ``--workload examples.wine:Wine`` to ``python -m coordinator`` and to each
``python -m peer`` (with ``--data part=I/N``, this peer's share of the training set).

The data (178 wines, 13 chemical measurements, 3 cultivars) ships inside scikit-learn:
nothing is downloaded. Every peer and the coordinator split it the same way (a fixed
seed): 70 % for training, shared out among the peers, 30 % held out for the
coordinator's evaluation; features are standardized with the training split's mean
and deviation, which are public facts of a public data set.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from protocol.learning.federated import ModelWorkload

FEATURES, CLASSES = 13, 3


@lru_cache(maxsize=1)
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_wine

    data = load_wine()
    order = np.random.default_rng(0).permutation(len(data.target))
    cut = int(0.7 * len(order))
    train, test = order[:cut], order[cut:]
    mean, std = data.data[train].mean(0), data.data[train].std(0) + 1e-9
    x = (data.data - mean) / std
    return x[train], data.target[train], x[test], data.target[test]


def _logits(params: np.ndarray, x: np.ndarray) -> np.ndarray:
    w = params[:FEATURES * CLASSES].reshape(FEATURES, CLASSES)
    return x @ w + params[FEATURES * CLASSES:]


class Wine(ModelWorkload):
    """Which of three cultivars a wine comes from, by softmax regression (42 weights)."""

    name = "wine"
    epochs = 20  # full-batch gradient steps per round on a peer's share
    lr = 0.5
    clip_norm = 5.0  # the L2 bound of one peer's update

    def initial_parameters(self) -> np.ndarray:
        return np.zeros(FEATURES * CLASSES + CLASSES, dtype=np.float32)

    def load_data(self, part: int, parts: int, seed: int) -> Any:
        x, y, _, _ = _split()
        mine = np.random.default_rng(seed).permutation(len(y))[part::parts]
        return x[mine], y[mine]

    def train(self, params: np.ndarray, data: Any, *, epochs: int, lr: float,
              seed: int) -> np.ndarray:
        x, y = data
        p = params.astype(np.float64)
        onehot = np.eye(CLASSES)[y]
        for _ in range(epochs):
            z = _logits(p, x)
            prob = np.exp(z - z.max(1, keepdims=True))
            prob /= prob.sum(1, keepdims=True)
            g = (prob - onehot) / len(y)
            grad = np.concatenate([(x.T @ g).ravel(), g.sum(0)])
            p -= lr * grad
        return p.astype(np.float32)

    def evaluate(self, params: np.ndarray) -> dict[str, float]:
        _, _, x, y = _split()
        z = _logits(params.astype(np.float64), x)
        return {"accuracy": float(np.mean(z.argmax(1) == y))}
