"""Models and deterministic training steps, as flat float32 vectors at the edges.

Everything a peer and the coordinator must agree on about a model lives
here: architecture, parameter order (``state_dict`` order), the initial
weights (seeded), and the training step. Training is deterministic on CPU
for a given thread count (1 and 2 threads give different bytes): :func:`deterministic`
fixes one thread, deterministic algorithms and the seeds, so two peers
given the same task produce bit-identical weights.

Weights travel as safetensors (``protocol.wire.tensors``); no pickle on any path.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from ..wire import tensors

if TYPE_CHECKING:
    from torch import nn


def mlp(hidden: int = 64) -> nn.Module:
    """The fedavg classifier: 28x28 image -> 10 classes (torch: its initial weights; it is
    trained and evaluated by :func:`train` and :func:`accuracy`, in numpy)."""
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def deterministic(seed: int) -> None:
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)


def to_vector(model: nn.Module) -> np.ndarray:
    import torch

    return torch.cat([p.detach().reshape(-1) for p in model.state_dict().values()]).numpy().copy()


def load_vector(model: nn.Module, vector: np.ndarray) -> nn.Module:
    import torch

    state, offset = model.state_dict(), 0
    if vector.shape != (sum(v.numel() for v in state.values()),):
        raise ValueError(f"vector of shape {vector.shape} does not fit the model")
    new = {}
    for name, value in state.items():
        n = value.numel()
        new[name] = torch.from_numpy(np.array(vector[offset:offset + n], dtype=np.float32)
                                     ).reshape(value.shape)
        offset += n
    model.load_state_dict(new)
    return model


def initial_vector(seed: int = 0, hidden: int = 64) -> np.ndarray:
    """The classifier's initial weights in ``state_dict`` order, drawn as torch initialises
    ``nn.Linear`` (weight and bias uniform in +-1/sqrt(fan_in)) but from numpy's seeded
    generator: every peer makes the same bytes without importing torch (which would hold
    ~500 MB; peers keep this model from the start, ``Workload.starting_blobs``)."""
    rng = np.random.default_rng(seed)
    parts = []
    for fan_in, fan_out in ((784, hidden), (hidden, 10)):
        bound = 1.0 / np.sqrt(fan_in)
        parts.append(rng.uniform(-bound, bound, fan_out * fan_in))
        parts.append(rng.uniform(-bound, bound, fan_out))
    return np.concatenate(parts).astype(np.float32)


def encode_weights(vector: np.ndarray) -> bytes:
    return tensors.encode({"weights": np.asarray(vector, dtype=np.float32)})


def decode_weights(data: bytes, length: int) -> np.ndarray:
    limits = tensors.TensorLimits(max_bytes=4 * length + 4096, max_tensors=1,
                                  max_elements=length, dtypes=frozenset({"F32"}))
    arrays = tensors.decode(data, limits)
    w = arrays.get("weights")
    if w is None or w.shape != (length,):
        raise tensors.TensorCodecError(f"expected one 'weights' tensor of length {length}")
    return w


# --- the fedavg classifier, trained in numpy ------------------------------------------------------
# A fedavg peer trains a 50,890-parameter MLP on a few hundred images: numpy does that
# as fast as torch, and a peer that never imports torch holds ~500 MB less.
def _layers(vector: np.ndarray, hidden: int) -> list[np.ndarray]:
    """W1 (hidden x 784), b1, W2 (10 x hidden), b2: :func:`mlp`'s state_dict order."""
    shapes = [(hidden, 784), (hidden,), (10, hidden), (10,)]
    if vector.shape != (sum(int(np.prod(s)) for s in shapes),):
        raise ValueError(f"vector of shape {vector.shape} does not fit the model")
    out, offset = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(np.array(vector[offset:offset + n], dtype=np.float32).reshape(shape))
        offset += n
    return out


def _forward(layers: list[np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w1, b1, w2, b2 = layers
    h = np.maximum(x.reshape(len(x), -1) @ w1.T + b1, 0)
    return h, h @ w2.T + b2


def train(vector: np.ndarray, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float,
          batch: int = 16, seed: int = 0, hidden: int = 64) -> np.ndarray:
    """Local SGD from ``vector`` over (x, y), in order (no shuffle), mean cross-entropy per
    batch, as torch's SGD and CrossEntropyLoss do it: deterministic (nothing is random;
    ``seed`` is kept for the callers' records)."""
    layers = _layers(vector, hidden)
    w1, b1, w2, b2 = layers
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1)
    for _ in range(epochs):
        for i in range(0, len(y), batch):
            xb, yb = flat[i:i + batch], y[i:i + batch]
            h, z = _forward(layers, xb)
            z = z - z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(yb)), yb] -= 1.0
            dz = p / np.float32(len(yb))  # d(mean loss)/d logits
            dh = (dz @ w2) * (h > 0)
            w2 -= lr * (dz.T @ h)
            b2 -= lr * dz.sum(axis=0)
            w1 -= lr * (dh.T @ xb)
            b1 -= lr * dh.sum(axis=0)
    return np.concatenate([w.reshape(-1) for w in layers]).astype(np.float32)


def accuracy(vector: np.ndarray, x: np.ndarray, y: np.ndarray, hidden: int = 64) -> float:
    _, z = _forward(_layers(vector, hidden), np.asarray(x, dtype=np.float32))
    return float((z.argmax(1) == y).mean())


def clip_l2(delta: np.ndarray, bound: float) -> np.ndarray:
    norm = float(np.linalg.norm(delta))
    return delta if norm <= bound else delta * (bound / norm)


# --- the seed's challenge 2 autoencoder ------------------------------------------------------
def autoencoder() -> nn.Module:
    """The seed's MNIST autoencoder: 784-128-64-36-18-9 and back, ReLU between, Sigmoid last
    (224,601 parameters)."""
    from torch import nn

    sizes = [784, 128, 64, 36, 18, 9]

    def stack(dims: list[int], last: nn.Module | None) -> list[nn.Module]:
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims, dims[1:], strict=False)):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        if last is not None:
            layers.append(last)
        return layers

    return nn.Sequential(nn.Flatten(), *stack(sizes, None), *stack(sizes[::-1], nn.Sigmoid()))


@lru_cache(maxsize=1)
def autoencoder_size() -> int:
    """Parameters of :func:`autoencoder` (224,601), computed once."""
    return sum(p.numel() for p in autoencoder().parameters())


def autoencoder_initial(seed: int = 0) -> np.ndarray:
    deterministic(seed)
    return to_vector(autoencoder())


def train_autoencoder(vector: np.ndarray, x: np.ndarray, *, lr: float, weight_decay: float,
                      batch: int = 16, seed: int = 0) -> tuple[np.ndarray, float]:
    """One pass over ``x`` in order (no shuffle), Adam, MSE reconstruction loss, seeds and
    deterministic algorithms fixed, one thread: the same inputs give bit-identical weights
    in any process. Returns (new weights, mean training loss)."""
    import torch
    from torch import nn

    deterministic(seed)
    model = load_vector(autoencoder(), vector)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.MSELoss()
    xt = torch.from_numpy(np.array(x, dtype=np.float32)).reshape(len(x), -1)
    model.train()
    total, batches = 0.0, 0
    for i in range(0, len(xt), batch):
        opt.zero_grad()
        loss = loss_fn(model(xt[i:i + batch]), xt[i:i + batch])
        loss.backward()
        opt.step()
        total, batches = total + float(loss.detach()), batches + 1
    return to_vector(model), total / max(batches, 1)


def reconstruction_loss(vector: np.ndarray, x: np.ndarray) -> float:
    import torch
    from torch import nn

    model = load_vector(autoencoder(), vector)
    model.eval()
    xt = torch.from_numpy(np.array(x, dtype=np.float32)).reshape(len(x), -1)
    with torch.no_grad():
        return float(nn.functional.mse_loss(model(xt), xt))


def weights_digest(vector: np.ndarray) -> bytes:
    """SHA-256 of the weights' safetensors bytes: what replicas agree on."""
    return hashlib.sha256(encode_weights(vector)).digest()
