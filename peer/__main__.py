"""``python -m peer``: run a hypergossip peer daemon."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import httpx
import trio

from protocol.learning.registry import WorkloadNotFound, get_workload, known
from protocol.policy.admission import MAX_TICKET_WIRE
from protocol.wire.identity import Identity, KeyFileError

from .attacks import ATTACKS, BY_WORKLOAD, Attack
from .behaviour import Behaviour, Flaky
from .daemon import PeerConfig, PeerDaemon, peer_id_of
from .llm import LocalBackend, make_backend
from .metrics import node_registry, serve_metrics
from .runtime import add_limit_args, limits_from_args, run_until_signal, setup_logging

log = logging.getLogger("hypergossip.peer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m peer",
        description="Run a hypergossip peer: join the libp2p gossip network through the "
        "bootstrap addresses, enrol with the coordinator by a signed message, keep one "
        "session stream open to it (it pushes rounds and notices; gossip and pulls cover "
        "for it), and take part in every round: private inputs under secure aggregation "
        "(stats: range-proven VSS, fedavg: SecAgg+), replicated training with commit-reveal "
        "(incremental), and, with --llm-backend, prompt-search evaluations. Logs each round "
        "it sees and what it sent.",
        epilog="Example: python -m peer --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW... "
        "--data height=172,weight=68",
    )
    p.add_argument("--key", type=Path, default=Path(".hypergossip/peer.key"),
                   help="Ed25519 key file (PKCS#8 PEM, mode 0600); generated if missing "
                   "(default: %(default)s)")
    p.add_argument("--listen", action="append", default=None, metavar="MULTIADDR",
                   help="libp2p listen address, repeatable (default: /ip4/0.0.0.0/tcp/0)")
    p.add_argument("--bootstrap", action="append", default=[], metavar="MULTIADDR",
                   help="peer to dial at start, with /p2p/<id>; repeatable. The first is taken "
                   "as the coordinator unless --coordinator is given")
    p.add_argument("--coordinator", metavar="PEER_ID",
                   help="the coordinator's peer id (signer of rounds and results)")
    p.add_argument("--coordinator-url", metavar="URL",
                   help="the coordinator's HTTP URL (e.g. http://127.0.0.1:4000): its /health "
                   "gives its peer id and multiaddrs, used as --coordinator and --bootstrap")
    p.add_argument("--workload", default="stats", metavar="NAME|MODULE:CLASS",
                   help=f"workload this peer serves: one of {', '.join(known())}, an installed "
                   "package's (entry points 'hypergossip.workloads'), or package.module:Class "
                   "(default: %(default)s)")
    p.add_argument("--data", default="",
                   help="this peer's private input; stats: height=CM,weight=KG; fedavg: "
                   "part=I/N[,alpha=A][,seed=S][,data_dir=DIR]; incremental: empty or "
                   "data_dir=DIR (the training set is public, cut into segments)")
    p.add_argument("--attack", choices=ATTACKS, default=None,
                   help="testing: behave as this kind of Byzantine peer; by workload: " +
                   "; ".join(f"{w}: {', '.join(a)}" for w, a in BY_WORKLOAD.items()) +
                   " (see peer/attacks.py and peer/fedavg_attacks.py)")
    p.add_argument("--llm-backend", choices=["echo", "local", "openai"], default=None,
                   help="evaluate prompt-search fitness calls for the coordinator with this "
                   "LLM: local = SmolLM2-135M-Instruct, shipped (default: no evaluations)")
    p.add_argument("--llm-url", help="openai backend: base URL, e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--llm-model", help="openai backend: model name")
    p.add_argument("--llm-max-tokens", type=int, default=32,
                   help="tokens generated per call, as the coordinator's (default: 32)")
    p.add_argument("--colluders", type=int, default=2,
                   help="testing: how many attackers the alie attack assumes (fedavg's alie "
                   "and ipm: the last this many shards are the liars'; default: 2)")
    p.add_argument("--pull-interval", type=float, default=2.0,
                   help="seconds between pulls of missed rounds while the session to the "
                   "coordinator is down (default: %(default)s)")
    p.add_argument("--receipts", metavar="PATH",
                   help="append the coordinator's signed receipts of this peer's accepted "
                   "messages to PATH (hex, one a line): 'hypergossip audit URL --receipts "
                   "PATH' proves each is in its round's signed record, or that it was left "
                   "out (default: kept in memory only)")
    p.add_argument("--equivocations", metavar="PATH",
                   help="append the two signed round-log heads of any round the coordinator "
                   "showed two histories of to PATH (hex, one a line; 'hypergossip audit URL "
                   "--heads PATH' names the lie); always logged as an error and gossiped")
    p.add_argument("--metrics-port", type=int, default=0, metavar="PORT",
                   help="serve this peer's Prometheus metrics (connections, contained "
                   "inputs, blob fetches, libp2p bytes) at http://HOST:PORT/metrics "
                   "(default: off)")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address for --metrics-port (default: %(default)s, this machine only)")
    p.add_argument("--dropout", type=float, default=0.0, metavar="P",
                   help="testing: in each round, with probability P, go silent at a random "
                   "phase (simulates a client vanishing mid-round; default: 0)")
    p.add_argument("--dropout-slot", metavar="I/N",
                   help="testing: this peer is slot I of N; then exactly floor(P*N) slots "
                   "drop out each round instead of each peer flipping a coin")
    p.add_argument("--ticket", type=Path, metavar="FILE",
                   help="an admission ticket from the coordinator's operator, for coordinators "
                   "that admit by ticket (python -m coordinator ticket)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default: INFO)")
    add_limit_args(p)
    args = p.parse_args(argv)
    if not args.data and args.workload not in ("incremental", "prompt"):
        p.error(f"--data is required for the {args.workload} workload")
    if args.attack and args.attack not in BY_WORKLOAD.get(args.workload, ()):
        p.error(f"--attack {args.attack} does not apply to the {args.workload} workload "
                f"(its attacks: {', '.join(BY_WORKLOAD.get(args.workload, ())) or 'none'})")
    if args.attack == "fakescore" and not args.llm_backend:
        p.error("--attack fakescore needs --llm-backend (it lies about evaluations)")
    if not args.bootstrap and not args.coordinator_url:
        p.error("give --coordinator-url, or at least one --bootstrap address (the "
                "coordinator's, from its /health)")
    for addr in args.bootstrap:
        try:
            peer_id_of(addr)
        except Exception as exc:
            p.error(f"--bootstrap {addr!r} is not a /ip4/.../tcp/.../p2p/<peer id> address: {exc}")
    return args


def from_health(url: str) -> tuple[str, list[str]]:
    """(peer id, multiaddrs) from a coordinator's ``GET /health``."""
    resp = httpx.get(url.rstrip("/") + "/health", timeout=10.0)
    resp.raise_for_status()
    body = resp.json()
    return str(body["peer_id"]), [str(a) for a in body["multiaddrs"]][:8]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        identity, created = Identity.load_or_create(args.key)
    except KeyFileError as exc:
        log.error("%s", exc)
        return 2
    if created:
        log.info("generated new key %s", args.key)
    try:
        workload = get_workload(args.workload)
    except WorkloadNotFound as exc:
        log.error("%s", exc)
        return 2
    try:
        data = workload.parse_data(args.data)
    except Exception as exc:  # a user's workload may raise anything: say so and stop
        log.error("bad --data for the %s workload: %s: %s", workload.name,
                  type(exc).__name__, exc)
        return 2
    evaluator = None
    if args.llm_backend:
        evaluator = make_backend(args.llm_backend, url=args.llm_url, model=args.llm_model,
                                 max_new_tokens=args.llm_max_tokens)
        if isinstance(evaluator, LocalBackend):
            log.info("loading the local LLM before enrolling ...")
            evaluator.load()
        log.info("evaluating prompts with %s (%s)", evaluator.name, evaluator.model_digest[:16])
    slot = None
    if args.dropout_slot:
        try:
            i, n = (int(v) for v in args.dropout_slot.split("/"))
            if not 0 <= i < n:
                raise ValueError
        except ValueError:
            log.error("--dropout-slot wants I/N with 0 <= I < N, got %r", args.dropout_slot)
            return 2
        slot = (i, n)
    bootstrap, coordinator_id = list(args.bootstrap), args.coordinator
    if args.coordinator_url:
        try:
            coordinator_id, addrs = from_health(args.coordinator_url)
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            log.error("cannot read %s/health: %s", args.coordinator_url, exc)
            return 2
        bootstrap = addrs + bootstrap
        log.info("coordinator %s at %s", coordinator_id, ", ".join(addrs))
    try:
        limits = limits_from_args(args)
        ticket = args.ticket.read_bytes()[:MAX_TICKET_WIRE + 1] if args.ticket else b""
    except (OSError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    if len(ticket) > MAX_TICKET_WIRE:
        log.error("--ticket %s is not a ticket (over %d bytes)", args.ticket, MAX_TICKET_WIRE)
        return 2
    config = PeerConfig(bootstrap=bootstrap, coordinator_id=coordinator_id,
                        listen=args.listen or ["/ip4/0.0.0.0/tcp/0"],
                        pull_interval=args.pull_interval, limits=limits, ticket=ticket)
    behaviour = (Attack(args.attack, colluders=args.colluders, workload=args.workload,
                        data=args.data) if args.attack else Behaviour())
    if args.dropout:  # a testing aid: vanish from this fraction of rounds
        behaviour = Flaky(behaviour, dropout=args.dropout, slot=slot)
    daemon = PeerDaemon(identity, workload, data, config, behaviour=behaviour,
                        evaluator=evaluator)
    daemon.participant.receipts_file = args.receipts
    daemon.follower.proofs_file = args.equivocations
    if args.attack:
        log.warning("this peer is BYZANTINE for testing: attack %s", args.attack)
    if args.metrics_port:
        async def with_metrics() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(serve_metrics, node_registry(daemon.node),
                                    args.metrics_host, args.metrics_port)
                log.info("metrics at http://%s:%d/metrics", args.metrics_host,
                         args.metrics_port)
                await daemon.run()
                nursery.cancel_scope.cancel()

        run_until_signal(with_metrics)
    else:
        run_until_signal(daemon.run)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
