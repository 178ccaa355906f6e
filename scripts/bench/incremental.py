"""Benchmark: protocol overhead of incremental learning per round (issue 4).

Overhead = a round's wall time on the testnet (coordinator and peers as separate
processes over real libp2p on 127.0.0.1: announce, model fetch by digest,
training, commit, reveal, weight fetch, aggregation, held-out loss, publish)
divided by bare torch training of the same segments, one after the other, in
one process. Bare training is timed twice: with one thread (the task's
deterministic setting) and with torch's default thread count.

Data: with tiny segments the fixed per-round cost dominates any ratio, so by
default the bench runs on an MNIST-sized set (60,000 + 10,000 28x28 images)
generated from the embedded digits (random shifts and noise) and written as
real IDX files that torchvision's MNIST class reads; ``--data-dir`` takes real
MNIST instead.

    .venv/bin/python scripts/bench/incremental.py [--segments 10 --peers 10 --rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
# 2 OpenMP threads spin-waiting on a busy 2-core box run 30x slower (NOTES-stack.md)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from protocol.learning import datasets, models  # noqa: E402
from protocol.learning.incremental import task_seed  # noqa: E402


def make_mnist_like(root: Path, n_train: int = 60_000, n_test: int = 10_000,
                    seed: int = 0) -> Path:
    """MNIST-sized IDX files from the digits: each image shifted by up to 3 px and noised."""
    raw = root / "MNIST" / "raw"
    if (raw / "t10k-labels-idx1-ubyte").exists():
        return root
    raw.mkdir(parents=True, exist_ok=True)
    d = datasets.load_digits28()
    x = np.concatenate([d.train_x, d.test_x])
    y = np.concatenate([d.train_y, d.test_y])
    rng = np.random.default_rng(seed)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        pick = rng.integers(0, len(y), n)
        imgs = np.empty((n, 28, 28), dtype=np.float32)
        for i, j in enumerate(pick):
            dx, dy = rng.integers(-3, 4, 2)
            imgs[i] = np.roll(np.roll(x[j], dx, axis=1), dy, axis=0)
        imgs = np.clip(imgs + rng.normal(0, 0.05, imgs.shape), 0, 1)
        return (imgs * 255).round().astype(np.uint8), y[pick].astype(np.uint8)

    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs, labels = sample(n)
        datasets.write_idx(raw / f"{prefix}-images-idx3-ubyte", imgs)
        datasets.write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def bare_training(data_dir: Path, segments: int, threads: int | None) -> float:
    """Seconds to train every segment once from the initial weights, in this process."""
    import torch

    ds = datasets.load(data_dir)
    start = models.autoencoder_initial(0)
    t0 = time.perf_counter()
    for k in range(segments):
        idx = datasets.segment(len(ds.train_y), segments, k)
        if threads is None:  # the task itself: deterministic, one thread
            models.train_autoencoder(start, ds.train_x[idx], lr=0.1, weight_decay=1e-8,
                                     seed=task_seed(1, k))
            continue
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
        model = models.load_vector(models.autoencoder(), start)
        opt = torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=1e-8)
        xt = torch.from_numpy(ds.train_x[idx]).reshape(len(idx), -1)
        for i in range(0, len(xt), 16):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(xt[i:i + 16]), xt[i:i + 16]).backward()
            opt.step()
    return time.perf_counter() - t0


def network_rounds(data_dir: Path, args: argparse.Namespace, replicas: int) -> list[dict]:
    out = Path(f"/tmp/hg-bench-incremental-r{replicas}.json")
    cmd = [sys.executable, str(ROOT / "scripts" / "testnet.py"), "--workload", "incremental",
           "--peers", str(args.peers), "--segments", str(args.segments), "--replicas",
           str(replicas), "--rounds", str(args.rounds), "--data-dir", str(data_dir),
           "--phase-timeout", "60", "--json", str(out)]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads(out.read_text())["rounds"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--segments", type=int, default=10)
    p.add_argument("--peers", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 3])
    p.add_argument("--data-dir", type=Path, default=None,
                   help="real MNIST (default: generate an MNIST-sized set under "
                   ".hypergossip/bench-mnist-like)")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args()
    data_dir = args.data_dir or make_mnist_like(ROOT / ".hypergossip" / "bench-mnist-like")
    ds = datasets.load(data_dir)
    print(f"data: {len(ds.train_y)} training images in {args.segments} segments of "
          f"~{len(ds.train_y) // args.segments}; {args.peers} peers; 2-core machine", flush=True)
    bare1 = min(bare_training(data_dir, args.segments, None) for _ in range(2))
    bare_default = min(bare_training(data_dir, args.segments, 2) for _ in range(2))
    print(f"bare torch, {args.segments} segments in one process: {bare1:.2f} s with 1 thread "
          f"(the task's setting), {bare_default:.2f} s with 2 threads", flush=True)
    figures = {"segments": args.segments, "peers": args.peers, "train_images": len(ds.train_y),
               "bare_1_thread_s": bare1, "bare_2_threads_s": bare_default, "runs": {}}
    rows = []
    for r in args.replicas:
        rounds = network_rounds(data_dir, args, r)
        secs = [x["seconds"] for x in rounds if x["status"] == "published"]
        med = statistics.median(secs)
        figures["runs"][r] = {"round_seconds": secs, "median_s": med,
                              "ratio_vs_1_thread": med / bare1,
                              "ratio_vs_2_threads": med / bare_default,
                              "losses": [x["loss"] for x in rounds]}
        rows.append((r, secs, med))
    print("\nreplicas  round wall times (s)      median   / bare 1 thread   / bare 2 threads"
          "   goal (r=1)")
    for r, secs, med in rows:
        goal = ("<= 1.1: " + ("met" if med / bare1 <= 1.1 else "NOT met")) if r == 1 else ""
        print(f"{r:>8}  {', '.join(f'{s:.2f}' for s in secs):<24}  {med:>6.2f}  "
              f"{med / bare1:>15.2f}  {med / bare_default:>15.2f}   {goal}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
