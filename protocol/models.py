"""Models and deterministic training steps, as flat float32 vectors at the edges.

Everything a peer and the coordinator must agree on about a model lives
here: architecture, parameter order (``state_dict`` order), the initial
weights (seeded), and the training step. Training is deterministic on CPU
for a given thread count (shared/NOTES-stack.md): :func:`deterministic`
fixes one thread, deterministic algorithms and the seeds, so two peers
given the same task produce bit-identical weights.

Weights travel as safetensors (``protocol.tensors``); no pickle on any path.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import tensors


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
