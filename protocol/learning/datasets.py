"""Datasets without downloads: real MNIST when a user has the IDX files, digits otherwise.

* :func:`load` with ``data_dir`` reads real MNIST through torchvision's
  ``MNIST(root, download=False)``: the four uncompressed IDX files in
  ``<data_dir>/MNIST/raw/``. It never downloads.
* Without ``data_dir`` it returns the embedded default: scikit-learn's
  ``load_digits`` (1,797 real 8x8 handwritten digits shipped in the
  package), upsampled bilinearly to 28x28 so models see MNIST's shape,
  split into train/test by a fixed seed.
* :func:`write_idx` writes arrays in the real IDX format (used by tests to
  exercise the MNIST loader on generated files).

Images are float32 in [0, 1], shape (n, 28, 28); labels int64.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLIT_SEED = 20231104  # fixed: every peer and the coordinator cut the same test split
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Dataset:
    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def _bilinear_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of bilinear resampling along one axis (half-pixel
    centres, as torch's ``interpolate(..., align_corners=False)``)."""
    src = (np.float64(np.float32(n_in / n_out)) * (np.arange(n_out) + 0.5) - 0.5)
    src = np.maximum(src.astype(np.float32), np.float32(0))
    i0 = src.astype(np.int64)
    return i0, np.minimum(i0 + 1, n_in - 1), (src - i0.astype(np.float32)).astype(np.float32)


def _upsample(images8: np.ndarray, size: int = 28) -> np.ndarray:
    """8x8 images of 0..16 to ``size`` x ``size`` in [0, 1], bilinear, in numpy (within
    3e-7 of torch's ``interpolate``; a peer need not import torch to load its data)."""
    x = images8.astype(np.float32) / np.float32(16.0)
    h0, h1, hl = _bilinear_axis(x.shape[1], size)
    w0, w1, wl = _bilinear_axis(x.shape[2], size)
    hl, wl = hl[None, :, None], wl[None, None, :]
    top = x[:, h0][:, :, w0] * (1 - wl) + x[:, h0][:, :, w1] * wl
    bottom = x[:, h1][:, :, w0] * (1 - wl) + x[:, h1][:, :, w1] * wl
    return np.clip(top * (1 - hl) + bottom * hl, 0, 1).astype(np.float32)


def _digits8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits, read from the CSV its package ships (importing
    scikit-learn itself costs ~100 MB of memory); scikit-learn's loader where it moved."""
    spec = importlib.util.find_spec("sklearn")
    path = Path((spec.submodule_search_locations or [""])[0]) / "datasets/data/digits.csv.gz" \
        if spec else None
    if path is not None and path.is_file():
        with gzip.open(path, "rt") as f:
            raw = np.loadtxt(f, delimiter=",")
        return raw[:, :-1].reshape(-1, 8, 8), raw[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target.astype(np.int64)


@functools.cache
def load_digits28() -> Dataset:
    """The embedded default, made once a process (a process holding many peers, a bench
    or a test, asks for it once a peer: 35-50 ms each) and read-only, since it is shared."""
    images, y = _digits8()
    x = _upsample(images)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    n_test = int(len(y) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits28", *map(_read_only, (x[train], y[train], x[test], y[test])))


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def load_mnist(data_dir: str | Path) -> Dataset:
    from torchvision.datasets import MNIST

    root = Path(data_dir)
    try:
        train = MNIST(str(root), train=True, download=False)
        test = MNIST(str(root), train=False, download=False)
    except RuntimeError as exc:
        raise FileNotFoundError(
            f"no MNIST IDX files under {root}/MNIST/raw/ (need train-images-idx3-ubyte, "
            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, "
            f"uncompressed): {exc}") from exc

    def arrays(ds) -> tuple[np.ndarray, np.ndarray]:
        return (ds.data.numpy().astype(np.float32) / 255.0, ds.targets.numpy().astype(np.int64))

    (trx, try_), (tex, tey) = arrays(train), arrays(test)
    return Dataset("mnist", trx, try_, tex, tey)


def load(data_dir: str | Path | None = None) -> Dataset:
    return load_mnist(data_dir) if data_dir else load_digits28()


def dirichlet_partition(labels: np.ndarray, parts: int, alpha: float, seed: int = 0
                        ) -> list[np.ndarray]:
    """Non-IID split: for each class, shares for the ``parts`` drawn from Dirichlet(alpha)
    (Hsu et al. 2019). Small alpha: each part sees few classes. Every part gets at least
    one example; the result is a deterministic function of the arguments."""
    if parts < 1 or alpha <= 0:
        raise ValueError("need parts >= 1 and alpha > 0")
    rng = np.random.default_rng(seed)
    buckets: list[list[int]] = [[] for _ in range(parts)]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        shares = rng.dirichlet(np.full(parts, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for b, chunk in zip(buckets, np.split(idx, cuts), strict=True):
            b.extend(chunk.tolist())
    for b in buckets:  # no empty part: borrow from the largest
        if not b:
            donor = max(range(parts), key=lambda j: len(buckets[j]))
            b.append(buckets[donor].pop())
    return [np.array(sorted(b), dtype=np.int64) for b in buckets]


_SPLITS_KEPT = 4
_splits: dict[tuple, list[np.ndarray]] = {}  # (labels' digest, parts, alpha, seed) -> split


def dirichlet_part(labels: np.ndarray, parts: int, alpha: float, seed: int, part: int
                   ) -> np.ndarray:
    """Part ``part`` of :func:`dirichlet_partition`'s split (read-only). The split is made
    once a process for the same labels and arguments: a process that holds many peers (a
    bench worker's ~500 at N=1000, a test's) asks it for every part, and each split of
    the embedded digits into 1,000 parts costs 30 ms."""
    key = (hashlib.sha256(labels.tobytes()).digest(), parts, alpha, seed)  # (C order)
    if (split := _splits.get(key)) is None:
        split = _splits[key] = [_read_only(p) for p in dirichlet_partition(labels, parts,
                                                                           alpha, seed)]
        while len(_splits) > _SPLITS_KEPT:
            del _splits[next(iter(_splits))]
    return split[part]


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write uint8 images (n, rows, cols) or labels (n,) as an uncompressed IDX file."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    magic = {1: 2049, 3: 2051}[a.ndim]
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in a.shape))
        f.write(a.tobytes())


def segment(n: int, segments: int, k: int) -> np.ndarray:
    """Indices of segment ``k`` of ``segments`` over ``n`` training examples: every
    ``segments``-th example from ``k`` (the seed's even/odd split is ``segments=2``)."""
    if not 0 <= k < segments <= n:
        raise ValueError(f"segment {k} of {segments} over {n} examples")
    return np.arange(k, n, segments)
