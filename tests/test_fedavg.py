"""Datasets without downloads, the deterministic model step, and fedavg over the network."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import trio

from peer.attacks import Attack
from peer.daemon import PeerDaemon
from protocol.learning import datasets, models
from protocol.learning.federated import FedAvg
from protocol.learning.registry import get_workload
from protocol.wire.identity import Identity
from protocol.wire.messages import PlainVector, SchemaError

from .netutil import start_coordinator, wait_for


def test_embedded_digits_are_28x28_and_split_the_same_way_everywhere():
    a, b = datasets.load(), datasets.load()
    assert a.train_x.shape[1:] == (28, 28) and a.train_x.dtype == np.float32
    assert 0.0 <= a.train_x.min() and a.train_x.max() <= 1.0
    assert len(a.train_y) + len(a.test_y) == 1797
    assert np.array_equal(a.test_y, b.test_y) and np.array_equal(a.test_x, b.test_x)


def test_dirichlet_partition_is_a_deterministic_non_iid_cover():
    y = datasets.load().train_y
    parts = datasets.dirichlet_partition(y, 10, 0.3, seed=4)
    again = datasets.dirichlet_partition(y, 10, 0.3, seed=4)
    assert all(np.array_equal(p, q) for p, q in zip(parts, again, strict=True))
    joined = np.sort(np.concatenate(parts))
    assert np.array_equal(joined, np.arange(len(y)))  # every example exactly once
    assert all(len(p) for p in parts)
    # non-IID: some part is dominated by few classes
    top_share = max(np.bincount(y[p], minlength=10).max() / len(p) for p in parts)
    assert top_share > 0.4


def test_the_shared_dataset_and_split_are_read_only_and_match_a_fresh_split():
    d = datasets.load()
    assert d is datasets.load()  # made once a process...
    with pytest.raises(ValueError):
        d.train_x[0, 0, 0] = 1.0  # ...so nobody may change it for the others
    fresh = datasets.dirichlet_partition(d.train_y, 7, 0.5, seed=3)
    for i, part in enumerate(fresh):
        got = datasets.dirichlet_part(d.train_y, 7, 0.5, 3, i)
        assert np.array_equal(got, part) and not got.flags.writeable
    other = datasets.dirichlet_part(d.train_y[::-1].copy(), 7, 0.5, 3, 0)  # other labels
    assert np.array_equal(other, datasets.dirichlet_partition(d.train_y[::-1], 7, 0.5, 3)[0])


def test_real_mnist_loader_reads_idx_files(tmp_path):
    d = datasets.load()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    img = (d.train_x[:50] * 255).astype(np.uint8)
    datasets.write_idx(raw / "train-images-idx3-ubyte", img)
    datasets.write_idx(raw / "train-labels-idx1-ubyte", d.train_y[:50])
    datasets.write_idx(raw / "t10k-images-idx3-ubyte", img[:10])
    datasets.write_idx(raw / "t10k-labels-idx1-ubyte", d.train_y[:10])
    m = datasets.load(tmp_path)
    assert m.name == "mnist" and m.train_x.shape == (50, 28, 28)
    assert np.array_equal(m.train_y, d.train_y[:50])
    assert np.allclose(m.train_x, img / 255.0)


def test_mnist_loader_never_downloads(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST/raw"):
        datasets.load(tmp_path)


def test_training_is_bit_identical_for_the_same_task():
    d = datasets.load()
    w = models.initial_vector(0)
    a = models.train(w, d.train_x[:200], d.train_y[:200], epochs=2, lr=0.1, seed=3)
    b = models.train(w, d.train_x[:200], d.train_y[:200], epochs=2, lr=0.1, seed=3)
    assert hashlib.sha256(a.tobytes()).digest() == hashlib.sha256(b.tobytes()).digest()
    assert not np.array_equal(a, w)


def test_numpy_training_matches_torchs_sgd_and_a_peer_needs_no_torch():
    import subprocess
    import sys

    import torch

    from protocol.learning.federated import MLP_PARAMETERS

    d = datasets.load()
    w = models.initial_vector(0)
    assert len(w) == MLP_PARAMETERS
    # the numpy-drawn initial weights have torch's nn.Linear init distribution
    bound = 1 / np.sqrt(784)
    first = w[:784 * 64]
    assert np.abs(first).max() <= bound and abs(float(first.std()) - bound / np.sqrt(3)) < 1e-3
    x, y = d.train_x[:300], d.train_y[:300]
    ours = models.train(w, x, y, epochs=3, lr=0.1)
    net = models.load_vector(models.mlp(), w)  # the same SGD in torch
    opt, loss = torch.optim.SGD(net.parameters(), lr=0.1), torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x.copy()), torch.from_numpy(y.copy())  # (shared: read-only)
    for _ in range(3):
        for i in range(0, len(y), 16):
            opt.zero_grad()
            loss(net(xt[i:i + 16]), yt[i:i + 16]).backward()
            opt.step()
    theirs = models.to_vector(net)
    assert np.linalg.norm(theirs - w) > 1.0  # it really trained
    assert np.abs(ours - theirs).max() < 1e-5
    # a fedavg peer makes the initial model, loads its shard, trains and builds its update
    # without importing torch
    code = ("import sys; from protocol.learning.registry import get_workload; "
            "w = get_workload('fedavg'); s = w.parse_data('part=3/10'); w.starting_blobs(); "
            "from protocol.learning import models; import numpy as np; "
            "v = models.train(np.zeros(w.vector_len(), np.float32), s.x, s.y, epochs=1, lr=0.1); "
            "print('torch' in sys.modules, len(v))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", str(MLP_PARAMETERS)]


def test_weights_travel_as_checked_safetensors():
    w = models.initial_vector(1)
    blob = models.encode_weights(w)
    assert np.array_equal(models.decode_weights(blob, len(w)), w)
    with pytest.raises(ValueError):
        models.decode_weights(blob, len(w) + 1)


def test_fedavg_refuses_out_of_bound_clear_updates():
    fa = FedAvg()
    n = fa.vector_len()
    ok = PlainVector(vector=np.full(n, 1e-4, "<f4").tobytes())
    fa.check(ok)
    for bad in (np.full(n, 1.0, "<f4"), np.full(n, np.nan, "<f4"), np.zeros(n - 1, "<f4")):
        with pytest.raises(SchemaError):
            fa.check(PlainVector(vector=bad.tobytes()))


async def run_fedavg(data_dir, secure: bool, rounds: int = 3, peers: int = 5,
                     liars: dict[int, str] | None = None, **coord) -> list[dict]:
    """``rounds`` fedavg rounds with ``peers`` in-process peers over libp2p; ``liars``:
    peer index -> its attack (peer/fedavg_attacks.py)."""
    async with trio.open_nursery() as nursery:
        # the quorum: every peer without liars; with them, a round publishes what passed
        coord.setdefault("min_peers", 2 if liars else peers)
        coord_ = await start_coordinator(nursery, data_dir, workload="fedavg", secure=secure,
                                         start_peers=peers, max_rounds=rounds,
                                         phase_timeout=30, **coord)
        boot = coord_.node.addrs[0]
        daemons = []
        for i in range(peers):
            w = get_workload("fedavg")
            spec = f"part={i}/{peers},alpha=0.5"
            attack = (liars or {}).get(i)
            behaviour = (Attack(attack, colluders=len(liars), workload="fedavg", data=spec)
                         if attack else None)
            d = PeerDaemon(Identity.generate(), w, w.parse_data(spec), bootstrap=[boot],
                           behaviour=behaviour)
            await nursery.start(d.run)
            daemons.append(d)
        await wait_for(lambda: coord_.rounds_run >= rounds, timeout=120)
        nursery.cancel_scope.cancel()
    # round 1's model is the initial one, which every peer made itself: nobody served it
    initial = hashlib.sha256(get_workload("fedavg").state_blob()).digest()
    assert coord_.node.blobs.served[initial] == 0
    assert all(d.node.blobs.served[initial] == 0 for d in daemons)
    results = [json.loads(coord_.store.round_row(r)["result"]) for r in range(1, rounds + 1)]
    # every peer fetched each round's model by digest: the blob it holds matches
    final = coord_.workload.state_blob()
    assert results[-1]["model_digest"] == hashlib.sha256(final).hexdigest()
    return results


async def test_fedavg_secure_matches_clear_and_learns(tmp_path):
    secure = await run_fedavg(tmp_path / "s", secure=True, secure_protocol="secagg")
    clear = await run_fedavg(tmp_path / "c", secure=False)
    acc_s = [r["accuracy"] for r in secure]
    acc_c = [r["accuracy"] for r in clear]
    assert acc_s[-1] > acc_s[0] and acc_s[-1] > 0.8
    assert abs(acc_s[-1] - acc_c[-1]) <= 0.005
    assert all(r["count"] == 5 for r in secure + clear)
    assert "secure_aggregation" in secure[0] and "secure_aggregation" not in clear[0]


@pytest.mark.parametrize("attack", ["ring", "signflip"])
async def test_fedavg_robust_by_default_leaves_an_out_of_bound_liar_out(tmp_path, attack):
    """Issue 15, must-show 2, over libp2p: secure fedavg is robust by default; a liar that
    writes raw ring values (or sends an unclipped -10x update) makes its group's sum
    exceed what k honest inputs can sum to, so that group is left out every round and the
    model learns from the others (under the plain secure sum the same liar takes the
    model to chance level: test_robust_round)."""
    rounds = await run_fedavg(tmp_path, secure=True, peers=6, liars={5: attack})
    for r in rounds:
        sa = r["secure_aggregation"]
        assert sa["group_size"] == 2 and sa["groups"] == 3
        bad = [g for g in sa["by_group"] if g["status"] != "ok"]
        assert [g["status"] for g in bad] == ["over_bound"], sa["by_group"]
        assert r["count"] == 4 and len(sa["included"]) == 4
    assert rounds[-1]["accuracy"] > rounds[0]["accuracy"] and rounds[-1]["accuracy"] > 0.6
