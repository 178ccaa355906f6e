"""Local testnet: one coordinator and N peer daemons, each its own process, on 127.0.0.1.

Run through ``./scripts/testnet`` (which makes the venv). It generates each
peer's private data, starts ``python -m coordinator`` and ``python -m peer``
processes (logs under the run directory), follows the rounds over the
coordinator's HTTP API, prints each round as it is published, checks the
published means against the peers' true inputs, writes an optional JSON
summary, and stops every process with SIGINT (SIGKILL after a grace period).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coordinator.lies import LIES  # noqa: E402
from peer.attacks import ATTACKS, BY_WORKLOAD  # noqa: E402
from protocol import rounds  # noqa: E402
from protocol.learning.aggregators import (  # noqa: E402
    AGGREGATORS,
    PRE_AGGREGATORS,
    get_aggregator,
)
from protocol.learning.federated import ModelWorkload  # noqa: E402
from protocol.learning.registry import WorkloadNotFound, known, resolve  # noqa: E402
from protocol.wire.identity import Identity  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def min_peers(a: argparse.Namespace) -> int:
    """The coordinator's quorum: every peer, less those the run expects to lose (dropouts;
    liars whose inputs are refused, and under robust fedavg each liar's whole group)."""
    robust = a.model and not a.insecure and not a.replicated and \
        a.secure_protocol in ("auto", "robust")
    k = a.group_size or rounds.robust.group_size_for(a.tolerate or 0.2)
    if a.dropout:  # robust: a dropout takes its group with it (and the next round's)
        lost = math.ceil(a.dropout * a.peers) * (2 * k if robust else 1)
        return max(2, a.peers - lost - (0 if robust else 1))
    if a.attack == "outofrange":
        return a.peers - a.byzantine
    if a.workload == "fedavg" and a.byzantine:
        return max(2, a.peers - a.byzantine * (k + 1 if robust else 1))
    return a.peers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="./scripts/testnet",
        description="Start a coordinator and N peers on 127.0.0.1, run R rounds, print each "
        "round's published result and check it against the peers' true inputs. Every process "
        "logs to RUN_DIR/logs/.",
    )
    p.add_argument("--peers", type=int, default=4, help="number of peers (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds to run (default: %(default)s)")
    p.add_argument("--workload", default="stats", metavar="NAME|MODULE:CLASS",
                   help=f"what the rounds compute: one of {', '.join(known())}, or your own "
                   "package.module:Class, e.g. examples.wine:Wine (README: Bring your own "
                   "workload) (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="fedavg: Dirichlet alpha of the peers' non-IID shards (default: 0.5)")
    p.add_argument("--insecure", action="store_true",
                   help="contributions in the clear (plain sums) instead of secure aggregation")
    p.add_argument("--secure-protocol", default="auto", choices=("auto", *rounds.SECURE),
                   help="secure rounds' protocol: vss (range-proven inputs, stats), robust "
                   "(SecAgg+ per group, each group sum bound-checked, a robust aggregator "
                   "over the groups: fedavg), secagg (SecAgg+ over all, no checks); auto = "
                   "vss for stats, robust for fedavg, secagg otherwise (default: %(default)s)")
    p.add_argument("--tolerate", type=float, default=None, metavar="FRACTION",
                   help="robust rounds and clear fedavg: the fraction of peers that may lie "
                   "(sets the group size; default: the coordinator's, 0.2)")
    p.add_argument("--group-size", type=int, default=None, metavar="K",
                   help="robust rounds: peers per group (default: from --tolerate)")
    p.add_argument("--dropout", type=float, default=0.0, metavar="FRACTION",
                   help="this fraction of the peers vanishes from every round (a different "
                   "set each round), each at a random phase (default: 0)")
    p.add_argument("--dp-epsilon", type=float, default=0.0, metavar="E",
                   help="per-round differential privacy: peers add distributed Gaussian noise "
                   "(secure mode only; default: off)")
    p.add_argument("--phase-timeout", type=float, default=5.0,
                   help="seconds a secure phase waits for dropouts (default: %(default)s)")
    g = p.add_argument_group("learning (--workload fedavg, incremental) and attacks")
    g.add_argument("--replicated", action="store_true",
                   help="a model workload (fedavg, or yours): replicated rounds (--segments "
                   "tasks, each trained by --replicas peers, agreed by commit-reveal) "
                   "instead of federated averaging; its train() must be deterministic")
    g.add_argument("--segments", type=int, default=4,
                   help="training-set segments, one task each per round (default: 4)")
    g.add_argument("--replicas", type=int, default=3,
                   help="replicas per segment; 1 = no verification, results combined by "
                   "--aggregator (default: 3)")
    g.add_argument("--dispute", default="reexecute", choices=["reexecute", "replicas"],
                   help="how disagreements are settled (default: %(default)s)")
    g.add_argument("--aggregator", default=None, metavar="NAME",
                   help="combiner of incremental segment results (default: mean, or median "
                   "when r=1) and of clear fedavg updates (default: mean): " +
                   ", ".join(sorted(AGGREGATORS)) + ", after any of " +
                   ", ".join(sorted(PRE_AGGREGATORS)) + " joined by '+'")
    g.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default: the coordinator's, 0.1 as in the seed)")
    g.add_argument("--byzantine", type=int, default=0, metavar="B",
                   help="this many peers run --attack (default: 0)")
    g.add_argument("--attack", default=None, choices=ATTACKS, metavar="NAME",
                   help="what the Byzantine peers do (see peer/attacks.py)")
    g.add_argument("--data-dir", metavar="DIR",
                   help="real MNIST IDX files for fedavg/incremental (default: embedded digits)")
    g = p.add_argument_group("prompt search (--workload prompt)")
    g.add_argument("--target", default="simple, lively, strong",
                   help="the output a prompt should make the LLM produce (default: %(default)r)")
    g.add_argument("--task", default="target", choices=["target", "sentiment"],
                   help="target reproduction, or prompts for review sentiment (default: target)")
    g.add_argument("--backend", default="local", choices=["local", "openai", "echo"],
                   help="the peers' and coordinator's LLM (default: local = SmolLM2-135M)")
    g.add_argument("--llm-url", help="openai backend: base URL")
    g.add_argument("--llm-model", help="openai backend: model name")
    g.add_argument("--llm-max-tokens", type=int, default=None,
                   help="tokens per LLM call (default: 32 for target, 4 for sentiment)")
    g.add_argument("--fitness", default="vader=1",
                   help="weights of the fitness scorers vader, lexical, length, embedding "
                   "(default: %(default)s, the seed's)")
    g.add_argument("--population", type=int, default=8, help="GA population (default: 8)")
    g.add_argument("--generations", type=int, default=5, help="GA generations (default: 5)")
    g.add_argument("--redundancy", type=int, default=2,
                   help="peers evaluating each prompt (default: 2)")
    g.add_argument("--max-seconds", type=float, default=900.0,
                   help="time budget of the search (default: 900)")
    p.add_argument("--audit", action="store_true",
                   help="after the last round, audit the coordinator's signed round log "
                   "(hypergossip audit: every result re-derived that can be) and fail the "
                   "run if any round fails the audit")
    p.add_argument("--lie", default="", choices=LIES,
                   help="the coordinator lies (tests of --audit only: coordinator/lies.py)")
    p.add_argument("--keep-running", action="store_true",
                   help="keep running rounds until Ctrl-C instead of stopping after --rounds")
    p.add_argument("--json", type=Path, metavar="PATH", help="write a JSON summary of the rounds")
    p.add_argument("--port", type=int, default=0,
                   help="coordinator HTTP port (default: a free port)")
    p.add_argument("--round-timeout", type=float, default=30.0,
                   help="seconds a round may stay open (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="seed for the peers' generated data")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="keys, database and logs (default: .hypergossip/testnet-<time>)")
    p.add_argument("--log-level", default="INFO", help="daemons' log level (default: INFO)")
    args = p.parse_args(argv)
    if args.peers < 1 or args.rounds < 1:
        p.error("--peers and --rounds must be at least 1")
    if args.byzantine and not args.attack:
        p.error("--byzantine needs --attack NAME")
    if args.attack and args.attack not in BY_WORKLOAD.get(args.workload, ()):
        p.error(f"--attack {args.attack} does not apply to --workload {args.workload} (its "
                f"attacks: {', '.join(BY_WORKLOAD.get(args.workload, ())) or 'none'})")
    if args.attack == "outofrange" and args.insecure:
        p.error("--attack outofrange lies in secure stats rounds")
    if args.aggregator:
        try:
            get_aggregator(args.aggregator)
        except ValueError as exc:
            p.error(f"--aggregator: {exc}")
    if not 0 <= args.byzantine < args.peers:
        p.error("--byzantine must be in [0, --peers)")
    try:
        factory = resolve(args.workload)
    except WorkloadNotFound as exc:
        p.error(str(exc))
    # fedavg and users' models: peers hold part=I/N of the data, rounds publish metrics
    args.model = isinstance(factory, type) and issubclass(factory, ModelWorkload)
    if args.replicated and not args.model:
        p.error("--replicated takes a model workload (fedavg, or a ModelWorkload)")
    return args


class Testnet:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = args.run_dir or ROOT / ".hypergossip" / f"testnet-{stamp}"
        self.logs = self.run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.peer_ids: list[str] = []
        self.peer_addrs: list[str] = []
        self.byzantine: list[str] = []
        self.copies: dict[str, bool] = {}  # peer -> holds the final published model
        rng = random.Random(args.seed)
        self.data = [(round(rng.gauss(170, 10), 1), round(rng.gauss(70, 12), 1))
                     for _ in range(args.peers)]
        self.http_port = args.port or free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, env=env)
        self.procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}; log tail:\n{tail}")

    def start(self, client: httpx.Client) -> dict:
        a = self.args
        coord_port = free_port()
        cmd = ["-m", "coordinator", "--host", "127.0.0.1", "--port", str(self.http_port),
               "--listen", f"/ip4/127.0.0.1/tcp/{coord_port}", "--data-dir",
               str(self.run_dir / "coordinator"), "--workload", a.workload,
               "--min-peers", str(min_peers(a)),
               "--start-peers", str(a.peers), "--round-timeout", str(a.round_timeout),
               "--round-pause", "0.5", "--log-level", a.log_level,
               # all its peers enrol from this one address (the default allows 64 at once)
               "--enroll-burst", str(max(64, a.peers + 8)),
               "--phase-timeout", str(a.phase_timeout)]
        if a.insecure:
            cmd.append("--insecure")
        else:
            cmd += ["--secure-protocol", a.secure_protocol]
        if a.tolerate is not None:
            cmd += ["--tolerate", str(a.tolerate)]
        if a.group_size is not None:
            cmd += ["--group-size", str(a.group_size)]
        if a.model and a.aggregator:
            cmd += ["--aggregator", a.aggregator]
        if a.replicated:
            cmd.append("--replicated")
        if a.workload == "incremental" or a.replicated:
            cmd += ["--segments", str(a.segments), "--replicas", str(a.replicas),
                    "--dispute", a.dispute]
            if a.aggregator:
                cmd += ["--aggregator", a.aggregator]
            if a.lr is not None:
                cmd += ["--lr", str(a.lr)]
        if a.data_dir:
            cmd += ["--dataset-dir", a.data_dir]
        llm: list[str] = []
        if a.workload == "prompt":
            tokens = a.llm_max_tokens or (4 if a.task == "sentiment" else 32)
            llm = ["--llm-backend", a.backend, "--llm-max-tokens", str(tokens)]
            llm += ["--llm-url", a.llm_url] if a.llm_url else []
            llm += ["--llm-model", a.llm_model] if a.llm_model else []
            cmd += [*llm, "--redundancy", str(a.redundancy)]
        if a.dp_epsilon:
            cmd += ["--dp-epsilon", str(a.dp_epsilon)]
        if not a.keep_running:
            cmd += ["--rounds", str(a.rounds)]
        if a.audit:  # HTTP stays up after the last round for the audit to read the log
            cmd += ["--linger", "120"]
        if a.lie:
            cmd += ["--lie", a.lie]
        print(f"starting coordinator (HTTP {self.url}) ...", flush=True)
        self.spawn("coordinator", cmd)
        health = self.wait_health(client)
        boot = health["multiaddrs"][0]
        print(f"coordinator {health['peer_id']} at {boot}")
        print(f"starting {a.peers} peers ...", flush=True)
        ports = [free_port() for _ in range(a.peers)]
        addrs: list[str] = []
        rng = random.Random(a.seed)
        for i, (h, w) in enumerate(self.data):
            if a.workload == "stats":
                data = f"height={h},weight={w}"
            elif a.workload == "prompt":
                data = ""
            elif a.workload == "fedavg":
                data = f"part={i}/{a.peers},alpha={a.alpha},seed={a.seed or 0}"
                data += f",data_dir={a.data_dir}" if a.data_dir else ""
            elif a.model:  # a user's ModelWorkload: this peer's share of its data
                data = f"part={i}/{a.peers},seed={a.seed or 0}"
            else:
                data = f"data_dir={a.data_dir}" if a.data_dir else ""
            key = self.run_dir / f"peer-{i}.key"
            ident = Identity.load(key) if key.exists() else Identity.generate()
            ident.save(key)
            self.peer_ids.append(ident.peer_id)
            cmd = ["-m", "peer", "--key", str(key),
                   "--listen", f"/ip4/127.0.0.1/tcp/{ports[i]}", "--coordinator-url", self.url,
                   "--workload", a.workload, "--data", data,
                   "--log-level", a.log_level, "--dropout", str(a.dropout),
                   "--dropout-slot", f"{i}/{a.peers}"]
            cmd += llm
            if i >= a.peers - a.byzantine:
                cmd += ["--attack", a.attack, "--colluders", str(a.byzantine)]
                self.byzantine.append(ident.peer_id)
            for other in rng.sample(addrs, min(2, len(addrs))):
                cmd += ["--bootstrap", other]  # a few peer links so gossip has a mesh
            self.spawn(f"peer-{i}", cmd)
            addrs.append(f"/ip4/127.0.0.1/tcp/{ports[i]}/p2p/{ident.peer_id}")
        self.peer_addrs = addrs
        return health

    def wait_health(self, client: httpx.Client, timeout: float = 60.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.check_alive()
            try:
                return client.get(f"{self.url}/health").json()
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("coordinator did not answer /health in time")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.time() + 10
        for name, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop in time; killing it", file=sys.stderr)
                proc.kill()
                proc.wait()


def round_summary(view: dict) -> dict:
    out = {"round": view["round"], "status": view["status"], "accepted": view["accepted"],
           "rejected": view["rejected"], "seconds": view["seconds"],
           "state_digest": view["state_digest"]}
    out.update(view.get("result") or {})
    return out


def describe(row: dict, peers: int) -> str:
    of = len(row["segments"]) if "segments" in row else peers  # incremental: segments
    line = (f"round {row['round']:>3}  {row['status']:<9}  accepted {row['accepted']}/{of}  "
            f"rejected {row['rejected'] or '{}'}  {row['seconds'] or 0:.2f} s")
    if row.get("mean_height") is not None:
        line += (f"  mean height {row['mean_height']:.4f} cm  "
                 f"mean weight {row['mean_weight']:.4f} kg")
    if row.get("accuracy") is not None:
        line += f"  test accuracy {row['accuracy']:.4f}"
        if "segments" in row:  # a model workload's replicated round
            line += (f"  segments {row['count']}/{len(row['segments'])}  disputes "
                     f"{row.get('disputes', 0)}  model {row['model_digest'][:12]}")
    if row.get("loss") is not None:
        segs = row.get("segments", [])
        line += (f"  held-out loss {row['loss']:.6f}  segments {row['count']}/{len(segs)}"
                 f"  disputes {row.get('disputes', 0)}  model {row['model_digest'][:12]}")
    if sa := row.get("secure_aggregation"):
        if "committee" in sa:  # protocol.rounds.verified
            line += (f"  [VSS {sa['survivors']}/{sa['participants']} range-proven, committee "
                     f"{sa['committee']}, t={sa['threshold']}"
                     + (f", rejected {len(sa['rejected'])}" if sa["rejected"] else "")
                     + (f", disqualified {len(sa['disqualified'])}" if sa["disqualified"]
                        else "") + "]")
        elif "group_size" in sa:  # protocol.rounds.robust
            out = [g for g in sa["by_group"] if g["status"] != "ok"]
            line += (f"  [robust: {sa['groups_passed']}/{sa['groups']} groups of "
                     f"{sa['group_size']} passed, {sa['aggregator']}, f={sa.get('f', '-')}"
                     + "".join(f"; group {g['group']} {g['status']}" for g in out[:3])
                     + (" ..." if len(out) > 3 else "") + "]")
        else:
            line += f"  [SecAgg+ {sa['survivors']}/{sa['participants']}, t={sa['threshold']}]"
    if row.get("refused"):
        line += f"  refused {len(row['refused'])}"
    return line


def check_stats(rows: list[dict], data: dict[str, tuple[float, float]], *,
                secure: bool) -> bool:
    """Published means against the true inputs of the peers each round included: equal in
    the clear; within the fixed-point error bound under secure aggregation."""
    ok, worst, worst_bound, partial = True, 0.0, 0.0, 0
    for row in rows:
        if row["status"] != "published":
            print(f"round {row['round']} did not publish: {row.get('error')}")
            ok = False
            continue
        included = row["secure_aggregation"]["included"] if secure else list(data)
        partial += len(included) < len(data)
        values = [data[p] for p in included]
        n = len(values)
        true_h = math.fsum(h for h, _ in values) / n
        true_w = math.fsum(w for _, w in values) / n
        bound = row["secure_aggregation"]["quantization_error_bound"] / n if secure else 0.0
        if dp := row.get("dp"):  # noise: allow 4 standard deviations of the mean's noise
            bound += 4 * dp["sigma_of_sum"] / n
            print(f"round {row['round']}: DP epsilon {dp['epsilon']:.3f} (cumulative "
                  f"{dp['cumulative_epsilon']:.3f}) at delta {dp['delta']:g}; mean's noise "
                  f"std {dp['sigma_of_sum'] / n:.1f}; error height "
                  f"{row['mean_height'] - true_h:+.1f}, weight {row['mean_weight'] - true_w:+.1f}")
        err = max(abs(row["mean_height"] - true_h), abs(row["mean_weight"] - true_w))
        worst, worst_bound = max(worst, err), max(worst_bound, bound)
        if n != row["count"] or err > bound:
            print(f"MISMATCH in round {row['round']}: error {err:.3g} > bound {bound:.3g}")
            ok = False
    if ok:
        how = "are within the stated quantization bound of" if secure else "equal"
        if any(r.get("dp") for r in rows):
            how = "are within 4 noise standard deviations (accountant-calibrated) of"
        print(f"OK: in all {len(rows)} rounds ({partial} with dropouts) the published means "
              f"{how} the true means of the peers included" +
              (f" (secure aggregation: largest error {worst:.2g}, bound {worst_bound:.2g})"
               if secure else ""))
    return ok


def run_prompt_search(client: httpx.Client, net: Testnet, args: argparse.Namespace) -> int:
    """Wait for the evaluator peers, submit a job, follow it generation by generation, print
    the outcome and the evaluators' reputation. Returns the exit code."""
    try:
        start = time.monotonic()
        while True:
            net.check_alive()
            peers = client.get(f"{net.url}/peers").json()["peers"]
            if sum(p["connected"] for p in peers) >= args.peers:
                break
            if time.monotonic() - start > 600:
                raise RuntimeError("peers did not connect within 10 minutes")
            time.sleep(1.0)
        print(f"{args.peers} evaluator peers enrolled after {time.monotonic() - start:.0f} s "
              f"({args.backend} backend)")
        user = {"hypc_user": "testnet"}
        body = {"target_output": args.target, "task": args.task,
                "population": args.population, "generations": args.generations,
                "seed": args.seed or 0, "max_seconds": args.max_seconds, "patience": None,
                "fitness": {k: float(v) for k, v in
                            (kv.split("=", 1) for kv in args.fitness.split(",") if kv)}}
        cost = client.post(f"{net.url}/prompt/jobs?cost_only=1", json=body).json()
        print(f"estimated cost: {cost['estimated_llm_calls']} LLM calls "
              f"({cost['estimated_cost']:.4f} {cost['currency']})")
        job = client.post(f"{net.url}/prompt/jobs", json=body, headers=user).json()
        n, t0, seen = job["job_number"], time.monotonic(), 0
        print(f"job {n}: {args.task} search, population {args.population}, "
              f"{args.generations} generations")
        while True:
            net.check_alive()
            res = client.get(f"{net.url}/result", params={"job_number": n},
                             headers=user).json()
            best = (res.get("progress") or {}).get("best_per_generation", [])
            for g in range(seen, len(best)):
                prog = res["progress"]
                print(f"generation {g:>3}  best fitness {best[g]:.4f}  (LLM calls so far "
                      f"{prog['llm_calls']}, cache hits {prog['cache_hits']}, "
                      f"{time.monotonic() - t0:.0f} s)", flush=True)
            seen = len(best)
            if res["completed"]:
                break
            time.sleep(1.0)
        out = res["result"] or {}
        wall = time.monotonic() - t0
        if res["status"] != "done":
            print(f"job failed: {out.get('error')}")
            return 1
        print(f"\nbest prompt:  {out['prompt']!r}")
        if out.get("output") is not None:
            print(f"its output:   {out['output']!r}")
        print(f"best fitness {out['score']:.4f}; stopped: {out['stopped']}")
        if held := out.get("held_out"):
            print(f"held-out accuracy on {held['reviews']} reviews: evolved prompt "
                  f"{held['evolved']:.3f}, hand-written baseline {held['baseline']:.3f} "
                  f"({held['baseline_prompt']!r}; its training accuracy "
                  f"{held['baseline_train_accuracy']:.3f})")
        print(f"LLM calls {out['llm_calls']} ({out['evaluated_on_peers']} verified on peers, "
              f"{out['evaluated_here']} by the coordinator), cache hits {out['cache_hits']}, "
              f"phenotype cache hits {out['phenotype_cache_hits']}, wall time {wall:.1f} s")
        rep = client.get(f"{net.url}/reputation").json()
        for p in rep["peers"]:
            role = "FAKESCORE" if p["peer_id"] in net.byzantine else "honest"
            print(f"  {role:>9} {p['peer_id']}: reputation {p['score']:.2f}"
                  f"{'' if p['eligible'] else ' (no more tasks)'}")
        if args.json:
            args.json.write_text(json.dumps({"job": out, "wall_s": wall, "reputation": rep,
                                             "byzantine": net.byzantine}, indent=2))
        liar_ok = all(not p["eligible"] for p in rep["peers"] if p["peer_id"] in net.byzantine)
        audited = run_audit(net, args) if args.audit else True
        return 0 if liar_ok and audited else 1
    except (RuntimeError, httpx.HTTPError) as exc:
        print(f"testnet failed: {exc}", file=sys.stderr)
        return 1
    finally:
        net.stop()


def check_peer_models(net: Testnet, last: dict, timeout: float = 20.0) -> dict[str, bool]:
    """Ask every peer, over libp2p, for the final published model by its digest; a peer
    holds the coordinator's model if it serves bytes with exactly that SHA-256."""
    import hashlib

    import trio

    from peer.node import PROTO_BLOB, NetworkNode
    from peer.streams import StreamProtocolError

    digest = bytes.fromhex(last["model_digest"])
    out = dict.fromkeys(net.peer_ids, False)

    async def ask() -> None:
        node = NetworkNode(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"])
        async with node.running():
            with trio.move_on_after(timeout):
                while not all(out.values()):
                    for pid, addr in zip(net.peer_ids, net.peer_addrs, strict=True):
                        if out[pid] or not await node.connect(addr):
                            continue
                        try:
                            data = await node.request(pid, PROTO_BLOB, digest, timeout=10.0,
                                                      max_response=last["model_bytes"])
                        except StreamProtocolError:
                            continue
                        out[pid] = hashlib.sha256(data).digest() == digest
                    await trio.sleep(0.5)

    trio.run(ask)
    return out


def report_incremental(rows: list[dict], net: Testnet, args: argparse.Namespace) -> dict:
    """The per-round loss table and the checks of issue 4: loss falls, every peer holds the
    coordinator's model, and (under attack) attackers lose their reputation and their tasks
    and nothing only they vouched for was accepted."""
    ok = all(r["status"] == "published" for r in rows)
    bad = set(net.byzantine)
    from protocol.learning import datasets, models

    initial = models.reconstruction_loss(models.autoencoder_initial(0),
                                         datasets.load(args.data_dir).test_x)
    print(f"\nthe initial model's held-out loss: {initial:.6f}")
    print("round  held-out loss  segments used  disputes  tasks to attackers  "
          "attackers' results accepted")
    score: dict[str, float] = {}
    fallen_at: dict[str, int] = {}
    accepted_from_bad = 0
    tasks_after_fall = 0
    for r in rows:
        segs = r.get("segments", [])
        tasks = sum(len(bad & set(s["replicas"] + s["extra_replicas"])) for s in segs)
        tasks_after_fall += sum(1 for s in segs for p in s["replicas"] + s["extra_replicas"]
                                if p in fallen_at)
        from_bad = sum(1 for s in segs if s["used"] and bad & set(s["agree"]))
        accepted_from_bad += from_bad
        print(f"{r['round']:>5}  {r['loss']:>13.6f}  {r['count']:>7}/{len(segs):<5}  "
              f"{r.get('disputes', 0):>8}  {tasks:>18}  {from_bad:>27}")
        for p, v in r.get("reputation", {}).items():
            score[p] = v
            if v < 0.2 and p not in fallen_at:
                fallen_at[p] = r["round"]
    losses = [r["loss"] for r in rows]
    falling = all(b < a for a, b in zip(losses, losses[1:], strict=False))
    print(f"held-out loss {'falls every round' if falling else 'does NOT fall every round'}: "
          f"{losses[0]:.6f} -> {losses[-1]:.6f}")
    held = sum(net.copies.values())
    print(f"peers holding the coordinator's final model {rows[-1]['model_digest'][:16]}: "
          f"{held}/{len(net.copies)} (fetched from each peer by digest over libp2p)")
    ok = ok and held == len(net.copies)
    if bad and args.replicas > 1:
        print(f"attack {args.attack} by {len(bad)} peers:")
        for p in sorted(bad):
            print(f"  {p}: reputation {score.get(p, 0.5):.2f}, below threshold since round "
                  f"{fallen_at.get(p, '-')}")
        print(f"  tasks given to peers after they fell below the threshold: {tasks_after_fall}")
        print(f"  segments accepted with an attacker among those vouching: {accepted_from_bad}")
        ok = ok and all(p in fallen_at for p in bad) and tasks_after_fall == 0
        if args.attack in ("copy", "replay"):
            ok = ok and accepted_from_bad == 0
    return {"ok": ok, "initial_loss": initial, "losses": losses, "loss_falls_every_round": falling,
            "final_loss": losses[-1], "peers_holding_final_model": held,
            "byzantine": sorted(bad), "attack": args.attack,
            "attackers_fell_at": fallen_at, "tasks_after_fall": tasks_after_fall,
            "accepted_with_attacker": accepted_from_bad,
            "aggregator": rows[-1].get("aggregator"), "replicas": args.replicas}


def run_audit(net: Testnet, args: argparse.Namespace) -> bool:
    """``hypergossip audit`` against this testnet's coordinator; True when nothing failed."""
    from coordinator.audit import main as audit

    print(f"auditing the round log at {net.url} ...", flush=True)
    spec = [] if args.workload in known() else ["--workload", args.workload]
    if args.workload == "prompt":  # the job's record is its user's: the testnet's
        spec += ["--user", "testnet", "--llm", args.backend]
    return audit([net.url, *spec]) == 0


def follow_rounds(client: httpx.Client, net: Testnet, args: argparse.Namespace) -> list[dict]:
    """Poll the coordinator; a progress bar per round (messages accepted of those expected:
    one per peer in the clear, four per peer under secure aggregation), then its line."""
    per_peer = 1 if args.insecure else 4
    expected = args.peers * per_peer
    if args.workload == "incremental":  # a commit and a reveal from each peer with a task
        expected = 2 * min(args.peers, args.segments * args.replicas)
    console = Console()  # not a terminal: rich draws no bar, only the round lines
    rows: list[dict] = []
    next_round = 1
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[phase]}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        task = None
        while args.keep_running or next_round <= args.rounds:
            net.check_alive()
            try:
                resp = client.get(f"{net.url}/rounds/{next_round}")
            except httpx.HTTPError:
                time.sleep(0.3)
                continue
            view = resp.json() if resp.status_code == 200 else None
            if view is not None and task is None:
                task = progress.add_task(f"round {next_round}", total=expected,
                                         phase="")
            if view is None or view["status"] == "open":
                if view is not None and task is not None:
                    domains = [m["domain"] for m in view["messages"]]
                    phase = domains[-1].split("/")[-1] if domains else "announced"
                    progress.update(task, completed=len(domains), phase=phase)
                time.sleep(0.2)
                continue
            if task is not None:
                progress.remove_task(task)
                task = None
            row = round_summary(view)
            rows.append(row)
            progress.console.print(describe(row, args.peers), highlight=False, markup=False,
                                   soft_wrap=True)
            next_round += 1
    return rows


def report_outofrange(rows: list[dict], net: Testnet) -> bool:
    """Whether any round's sum included a peer that inflated its height by 10^6 cm."""
    bad, leaked = set(net.byzantine), 0
    for row in rows:
        sa = row.get("secure_aggregation") or {}
        inside = bad & set(sa.get("included", []))
        leaked += bool(inside)
        why = sorted({v for p, v in sa.get("rejected", {}).items() if p in bad})
        print(f"round {row['round']}: {len(inside)} of {len(bad)} inflating peers included"
              + (f"; refused: {'; '.join(why)}" if why else ""))
    print(f"inflated inputs reached the published sum in {leaked} of {len(rows)} rounds")
    return leaked == 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    net = Testnet(args)
    print(f"run directory: {net.run_dir} (logs in {net.logs})")
    rows: list[dict] = []
    ok = True
    audited = True
    try:
        with httpx.Client(timeout=5.0) as client:
            net.start(client)
            print(f"coordinator AIM: {net.url}  (try {net.url}/manifest.json, /model, /peers)")
            print("waiting for peers to enrol and rounds to run ...", flush=True)
            if args.workload == "prompt":
                return run_prompt_search(client, net, args)
            rows += follow_rounds(client, net, args)
            if args.workload == "incremental" and rows:
                net.copies = check_peer_models(net, rows[-1])
            if args.audit:
                audited = run_audit(net, args)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the testnet")
    except RuntimeError as exc:
        print(f"testnet failed: {exc}", file=sys.stderr)
        ok = False
    finally:
        net.stop()

    if args.workload == "stats" and rows:
        truth = dict(zip(net.peer_ids, net.data, strict=True))
        n = len(net.data)
        print(f"peers' true means: height {math.fsum(h for h, _ in net.data) / n:.4f} cm, "
              f"weight {math.fsum(w for _, w in net.data) / n:.4f} kg")
        ok = check_stats(rows, truth, secure=not args.insecure) and ok
        if args.attack == "outofrange":
            ok = report_outofrange(rows, net) and ok
    if args.model and rows:
        final = [r for r in rows if r.get("accuracy") is not None]
        if final:
            sa = final[-1].get("secure_aggregation", {})
            mode = ("robust secure aggregation" if "group_size" in sa else
                    "secure aggregation" if sa else
                    "replicated, agreed by commit-reveal" if "segments" in final[-1] else
                    "clear")
            print(f"final test accuracy {final[-1]['accuracy']:.4f} after round "
                  f"{final[-1]['round']} ({mode})")
        ok = ok and all(r["status"] == "published" for r in rows)
    extra: dict = {}
    if args.workload == "incremental" and rows:
        extra = report_incremental(rows, net, args)
        ok = ok and extra["ok"]
    if args.json:
        args.json.write_text(json.dumps({"rounds": rows, "peers": args.peers,
                                         "workload": args.workload, **extra}, indent=2))
        print(f"summary written to {args.json}")
    print(f"coordinator was at {net.url}; logs in {net.logs}")
    return 0 if ok and audited else 1


if __name__ == "__main__":
    sys.exit(main())
