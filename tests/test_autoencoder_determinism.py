"""The seed's autoencoder and its training step are deterministic across processes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from protocol.learning import datasets, models

TASK = """
from protocol.learning import datasets, models
d = datasets.load()
idx = datasets.segment(len(d.train_y), 4, 1)
w, loss = models.train_autoencoder(models.autoencoder_initial(0), d.train_x[idx],
                                   lr=1e-3, weight_decay=1e-8, seed=7)
print(models.weights_digest(w).hex(), repr(loss))
"""


def test_autoencoder_shape_matches_the_seed():
    assert len(models.autoencoder_initial(0)) == 224_601


def test_segments_partition_the_training_set():
    parts = [datasets.segment(100, 3, k) for k in range(3)]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(100))
    assert np.array_equal(datasets.segment(10, 2, 0), [0, 2, 4, 6, 8])  # the seed's "even"


def test_two_processes_given_the_same_task_produce_the_same_weight_digest():
    outs = [subprocess.run([sys.executable, "-c", TASK], capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(2)]
    assert outs[0] == outs[1]
    digest, loss = outs[0]
    assert len(bytes.fromhex(digest)) == 32 and 0 < float(loss) < 1
    # and a different task (another segment) gives different weights
    d = datasets.load()
    idx = datasets.segment(len(d.train_y), 4, 2)
    w, _ = models.train_autoencoder(models.autoencoder_initial(0), d.train_x[idx], lr=1e-3,
                                    weight_decay=1e-8, seed=7)
    assert models.weights_digest(w).hex() != digest
    # training on a segment lowers the reconstruction loss on held-out images
    start = models.autoencoder_initial(0)
    assert models.reconstruction_loss(w, d.test_x) < models.reconstruction_loss(start, d.test_x)
