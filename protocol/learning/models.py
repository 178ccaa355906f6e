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

import numpy as np
import torch
from torch import nn

from ..wire import tensors


def mlp(hidden: int = 64) -> nn.Module:
    """The fedavg classifier: 28x28 image -> 10 classes."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def deterministic(seed: int) -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)


def to_vector(model: nn.Module) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in model.state_dict().values()]).numpy().copy()


def load_vector(model: nn.Module, vector: np.ndarray) -> nn.Module:
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
    deterministic(seed)
    return to_vector(mlp(hidden))


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


def train(vector: np.ndarray, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float,
          batch: int = 16, seed: int = 0, hidden: int = 64) -> np.ndarray:
    """Local SGD from ``vector`` over (x, y), in order (no shuffle), deterministically."""
    deterministic(seed)
    model = load_vector(mlp(hidden), vector)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        for i in range(0, len(yt), batch):
            opt.zero_grad()
            loss_fn(model(xt[i:i + batch]), yt[i:i + batch]).backward()
            opt.step()
    return to_vector(model)


def accuracy(vector: np.ndarray, x: np.ndarray, y: np.ndarray, hidden: int = 64) -> float:
    model = load_vector(mlp(hidden), vector)
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    return float((pred == y).mean())


def clip_l2(delta: np.ndarray, bound: float) -> np.ndarray:
    norm = float(np.linalg.norm(delta))
    return delta if norm <= bound else delta * (bound / norm)


# --- the seed's challenge 2 autoencoder ------------------------------------------------------
def autoencoder() -> nn.Module:
    """The seed's MNIST autoencoder: 784-128-64-36-18-9 and back, ReLU between, Sigmoid last
    (224,601 parameters)."""
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
    deterministic(seed)
    model = load_vector(autoencoder(), vector)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.MSELoss()
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(len(x), -1)
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
    model = load_vector(autoencoder(), vector)
    model.eval()
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(len(x), -1)
    with torch.no_grad():
        return float(nn.functional.mse_loss(model(xt), xt))


def weights_digest(vector: np.ndarray) -> bytes:
    """SHA-256 of the weights' safetensors bytes: what replicas agree on."""
    return hashlib.sha256(encode_weights(vector)).digest()
