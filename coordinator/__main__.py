"""``python -m coordinator``: run the hypergossip coordinator (libp2p peer + AIM HTTP server)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from peer.limits import COORDINATOR_LIMITS
from peer.runtime import add_limit_args, limits_from_args, run_until_signal, setup_logging
from protocol import rounds
from protocol.learning.aggregators import AGGREGATORS, PRE_AGGREGATORS, get_aggregator
from protocol.learning.federated import ModelWorkload
from protocol.learning.registry import WorkloadNotFound, known, resolve
from protocol.policy.admission import AdmissionConfig, issue_ticket
from protocol.wire.identity import (
    BadPeerId,
    Identity,
    KeyFileError,
    peer_id_from_public_key,
    public_key_from_peer_id,
)

from .lies import LIES
from .service import Coordinator, CoordinatorConfig

log = logging.getLogger("hypergossip.coordinator")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m coordinator",
        description="Run the hypergossip coordinator: a libp2p peer that admits peers, verifies "
        "every signed message, runs rounds (closing on quorum or timeout) and publishes results "
        "over gossip and over its AIM HTTP API (see GET /manifest.json). State is kept in "
        "SQLite; restarting on the same --db continues where it stopped.",
        epilog="Admission tickets for --ticket-key: python -m coordinator ticket --help",
    )
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", 4000)),
                   help="HTTP port (default: $PORT or 4000)")
    p.add_argument("--host", default="0.0.0.0", help="HTTP bind address (default: %(default)s)")
    p.add_argument("--listen", action="append", default=None, metavar="MULTIADDR",
                   help="libp2p listen address, repeatable (default: /ip4/0.0.0.0/tcp/4001)")
    p.add_argument("--data-dir", type=Path, default=Path(".hypergossip/coordinator"),
                   help="where the key and database live (default: %(default)s)")
    p.add_argument("--db", type=Path, help="SQLite file (default: DATA_DIR/coordinator.sqlite3)")
    p.add_argument("--key", type=Path, help="Ed25519 key file (default: DATA_DIR/coordinator.key)")
    p.add_argument("--allow", type=Path, metavar="FILE",
                   help="admit only the keys listed in FILE: one peer id or hex Ed25519 public "
                   "key per line, # comments; default: open admission")
    d = AdmissionConfig()
    g = p.add_argument_group("admission (who may enrol; README: Hostile networks)")
    g.add_argument("--ticket-key", metavar="PEER_ID",
                   help="admit only peers holding an admission ticket signed by this operator "
                   "key (peer id or hex public key; tickets: python -m coordinator ticket)")
    g.add_argument("--max-peers", type=int, default=d.max_peers, metavar="N",
                   help="admitted peers at most (default: %(default)s)")
    g.add_argument("--enroll-burst", type=int, default=d.per_source_burst, metavar="N",
                   help="new keys one source (IP address) may enrol at once (default: "
                   "%(default)s)")
    g.add_argument("--enroll-per-minute", type=float, default=d.per_source_rate * 60,
                   metavar="R", help="new keys a minute one source may enrol once its burst "
                   "is spent (default: %(default)g)")
    g.add_argument("--enroll-rate", type=float, default=d.total_rate, metavar="R",
                   help="new keys a second from all sources together (default: %(default)g, "
                   f"bursts of {d.total_burst})")
    g.add_argument("--peer-expiry-days", type=float, default=d.expire_after / 86400,
                   metavar="D", help="forget admitted peers unheard of for D days; they may "
                   "enrol again (default: %(default)g)")
    add_limit_args(p, COORDINATOR_LIMITS)
    p.add_argument("--workload", default="stats", metavar="NAME|MODULE:CLASS",
                   help=f"what rounds compute: one of {', '.join(known())}, a workload an "
                   "installed package declares (entry points 'hypergossip.workloads'), or "
                   "your own package.module:Class (a Workload or ModelWorkload subclass; "
                   "README: Bring your own workload) (default: %(default)s)")
    p.add_argument("--min-peers", type=int, default=2,
                   help="quorum: contributions needed to publish a round (default: %(default)s)")
    p.add_argument("--insecure", action="store_true",
                   help="peers send contributions in the clear (plain sums, for comparison); "
                   "default: secure aggregation, the coordinator learns only sums")
    p.add_argument("--secure-protocol", default="auto", choices=("auto", *rounds.SECURE),
                   help="secure rounds: vss = Pedersen VSS to a committee with every input "
                   "proven in range (stats); robust = SecAgg+ per group of k peers drawn from "
                   "the beacon, each group sum checked against the input bound, a robust "
                   "aggregator over the group means (fedavg); secagg = SecAgg+ over all "
                   "(any vector, no checks); auto = vss where the workload has input ranges, "
                   "robust where it has an L2 bound, else secagg (default: %(default)s)")
    p.add_argument("--tolerate", type=float, default=0.2, metavar="FRACTION",
                   help="robust rounds (and clear fedavg): the fraction of peers that may lie; "
                   "it sets the group size k = floor(1 / (2 FRACTION)) and the aggregator's "
                   "f (default: %(default)s, k = 2)")
    p.add_argument("--group-size", type=int, default=None, metavar="K",
                   help="robust rounds: peers per group (the coordinator learns each group's "
                   "sum; larger hides more and tolerates fewer liars: fewer than N / 2K); "
                   "default: from --tolerate")
    p.add_argument("--robust-aggregator", default="nnm+centered_clipping", type=aggregator_name,
                   metavar="NAME", help="robust rounds: the aggregator over the group means "
                   "(default: %(default)s)")
    p.add_argument("--vss-committee", type=int, default=16, metavar="C",
                   help="vss: committee size; its threshold survives 30 %% of it vanishing "
                   "(default: %(default)s)")
    p.add_argument("--dp-epsilon", type=float, default=0.0, metavar="E",
                   help="secure rounds: add distributed Gaussian noise so each round is "
                   "(E, --dp-delta)-differentially private; GET /model reports per-round and "
                   "cumulative epsilon (default: off)")
    p.add_argument("--dp-delta", type=float, default=1e-5, help="DP delta (default: 1e-5)")
    p.add_argument("--secagg-degree", type=int, default=None, metavar="K",
                   help="SecAgg+ graph degree (even, or n-1 for complete); default: complete "
                   "up to 101 peers, else 100. Smaller is cheaper and weaker")
    p.add_argument("--secagg-threshold", type=int, default=None, metavar="T",
                   help="shares needed to recover a peer's masks; default: survives 30 %% "
                   "dropout")
    p.add_argument("--secagg-agreement", type=int, default=None, metavar="A",
                   help="survivor signatures a peer needs before it reveals shares; a "
                   "coordinator that lies about who survived is stopped while fewer than "
                   "2A - n peers collude with it; default: all but 30 %% of the n peers")
    p.add_argument("--start-peers", type=int, default=0, metavar="N",
                   help="wait for N connected admitted peers before the first round "
                   "(default: --min-peers)")
    p.add_argument("--round-timeout", type=float, default=30.0,
                   help="seconds a clear round stays open at most (default: %(default)s)")
    p.add_argument("--phase-timeout", type=float, default=10.0,
                   help="seconds each secure-aggregation phase waits for slow peers before "
                   "treating them as dropouts (default: %(default)s)")
    p.add_argument("--round-pause", type=float, default=1.0,
                   help="seconds from a result to the next round (default: %(default)s)")
    p.add_argument("--legacy-epoch", type=float, default=10.0, metavar="S",
                   help="values posted over the seed's HTTP API (/post_data) while fewer "
                   "peers than a round needs are connected: an epoch of those values alone "
                   "(unprotected) closes S seconds after the first (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=0,
                   help="stop after this many rounds (default: 0 = run until stopped)")
    p.add_argument("--retain-rounds", type=int, default=10_000, metavar="N",
                   help="keep the last N rounds and their messages in the database, forget "
                   "older ones (GET /rounds shows those kept); 0 keeps all (default: "
                   "%(default)s)")
    p.add_argument("--linger", type=float, default=0.0, metavar="S",
                   help="after --rounds: keep serving HTTP (results, the round log) for S "
                   "seconds before exiting (default: %(default)s)")
    p.add_argument("--lie", default="", choices=("", *LIES), metavar="LIE",
                   help="FOR TESTS OF THE AUDIT ONLY: publish results that are not the "
                   f"inputs' ({', '.join(LIES)}; coordinator/lies.py)")
    p.add_argument("--log-keep", type=int, default=32, metavar="N",
                   help="serve the accepted envelopes of the last N rounds to auditors (a round "
                   "of 100 fedavg peers holds 20 MB of them); older rounds stay in the log by "
                   "digest but can no longer be re-derived (default: %(default)s)")
    p.add_argument("--log-retain", type=int, default=0, metavar="N",
                   help="keep the round log's last N records (GET /log; hypergossip audit); "
                   "0 keeps every record (default: %(default)s). The envelopes a record names "
                   "are served for the last --log-keep rounds")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default: INFO)")
    g = p.add_argument_group("replicated training (--workload incremental, or a model "
                             "workload with --replicated)")
    g.add_argument("--replicated", action="store_true",
                   help="a model workload (fedavg, or yours): train it by replicated rounds "
                   "instead of federated averaging: its public training set is cut into "
                   "--segments parts, each trained by --replicas peers from the published "
                   "model and accepted on a --quorum of equal commit-revealed digests; its "
                   "train() must be deterministic (incremental always runs this way)")
    g.add_argument("--segments", type=int, default=4,
                   help="training-set segments, each one task per round (default: 4)")
    g.add_argument("--replicas", type=int, default=3,
                   help="replicas per segment; 1 turns verification off and combines results "
                   "with --aggregator (default: 3)")
    g.add_argument("--quorum", type=int, default=None,
                   help="equal reveals that accept a segment (default: a majority of replicas)")
    g.add_argument("--dispute", default="reexecute", choices=["reexecute", "replicas"],
                   help="what settles a segment whose replicas disagree: the coordinator "
                   "re-executes it, or extra replicas are assigned (default: %(default)s)")
    g.add_argument("--aggregator", default=None, type=aggregator_name, metavar="NAME",
                   help="how accepted results are combined: incremental's segment results "
                   "(default: mean when verified by replicas, median with --replicas 1) and "
                   "clear fedavg's updates (default: mean). One of " +
                   ", ".join(sorted(AGGREGATORS)) + ", after any of " +
                   ", ".join(sorted(PRE_AGGREGATORS)) + " joined by '+' (nnm+trimmed_mean)")
    g.add_argument("--lr", type=float, default=0.1,
                   help="Adam learning rate (default: 0.1, the seed's; 1e-3 learns more)")
    g.add_argument("--weight-decay", type=float, default=1e-8,
                   help="Adam weight decay (default: 1e-8)")
    g.add_argument("--dataset-dir", metavar="DIR",
                   help="real MNIST IDX files (read by torchvision, never downloaded) for "
                   "fedavg and incremental; default: the embedded scikit-learn digits")
    g = p.add_argument_group("prompt search (POST /prompt, /prompt/jobs; --workload prompt)")
    g.add_argument("--llm-backend", default="echo", choices=["echo", "local", "openai", "none"],
                   help="the coordinator's own LLM, for jobs when no capable peers are "
                   "connected and to break ties: echo (output = prompt, the seed's), local "
                   "(SmolLM2-135M-Instruct, shipped), openai (--llm-url); none turns prompt "
                   "search off (default: %(default)s)")
    g.add_argument("--prompt-search", action="store_true",
                   help="serve prompt search (POST /prompt, /prompt/jobs) beside another "
                   "workload; --workload prompt always does, other coordinators do not")
    g.add_argument("--llm-url", help="openai backend: base URL, e.g. http://127.0.0.1:8080/v1")
    g.add_argument("--llm-model", help="openai backend: model name")
    g.add_argument("--llm-max-tokens", type=int, default=32,
                   help="tokens generated per call; evaluator peers must use the same "
                   "(default: 32)")
    g.add_argument("--redundancy", type=int, default=2,
                   help="peers that evaluate each prompt; outputs are accepted when they "
                   "agree (default: 2; 1 = no verification)")
    args = p.parse_args(argv)
    if args.dp_epsilon < 0 or not 0 < args.dp_delta < 1:
        p.error("--dp-epsilon must be >= 0 and --dp-delta in (0, 1)")
    if args.retain_rounds < 0 or args.log_retain < 0 or args.log_keep < 1:
        p.error("--retain-rounds, --log-retain must be >= 0 and --log-keep >= 1")
    if not 0 < args.tolerate < 0.5 or (args.group_size is not None and args.group_size < 2):
        p.error("--tolerate must be in (0, 0.5) and --group-size at least 2")
    if args.dp_epsilon and args.insecure:
        p.error("--dp-epsilon needs secure aggregation (its noise is added by the peers)")
    try:
        resolve(args.workload)
    except WorkloadNotFound as exc:
        p.error(str(exc))
    return args


def aggregator_name(text: str) -> str:
    """argparse type: an aggregator name (chains allowed), with the known ones on error."""
    try:
        get_aggregator(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def public_key_of(key: str) -> bytes:
    """A raw Ed25519 public key from a peer id or 64 hex digits; ValueError otherwise."""
    key = key.strip()
    if len(key) == 64 and all(c in "0123456789abcdefABCDEF" for c in key):
        return bytes.fromhex(key)
    try:
        return public_key_from_peer_id(key)
    except BadPeerId as exc:
        raise ValueError(f"--ticket-key: {exc}") from exc


def load_allow_list(path: Path) -> frozenset[str]:
    """Admitted keys, one per line: a peer id (12D3KooW...) or a 64-hex-digit Ed25519 public
    key; blank lines and # comments ignored. Returns peer ids; any bad line is an error."""
    ids = set()
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            if len(line) == 64 and all(c in "0123456789abcdefABCDEF" for c in line):
                ids.add(peer_id_from_public_key(bytes.fromhex(line)))
            else:
                public_key_from_peer_id(line)
                ids.add(line)
        except BadPeerId as exc:
            raise ValueError(f"{path}:{n}: {exc}") from exc
    return frozenset(ids)


def parse_ticket_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m coordinator ticket",
        description="Issue an admission ticket: the operator's key signs that PEER may enrol "
        "until it expires. Run coordinators with --ticket-key <the operator's peer id> (this "
        "command prints it) and give each peer its ticket with --ticket FILE. A ticket names "
        "one key and is not secret.")
    p.add_argument("--key", type=Path, required=True,
                   help="the operator's Ed25519 key file (created if missing, mode 0600)")
    p.add_argument("--peer", required=True, metavar="PEER_ID", help="the peer it admits")
    p.add_argument("--days", type=float, default=30.0, help="valid for (default: 30)")
    p.add_argument("--note", default="", help="free text kept in the ticket (max 128)")
    p.add_argument("--out", type=Path, help="file to write (default: PEER_ID.ticket)")
    return p.parse_args(argv)


def issue(argv: list[str]) -> int:
    args = parse_ticket_args(argv)
    try:
        public_key_from_peer_id(args.peer)
        operator, created = Identity.load_or_create(args.key)
    except (BadPeerId, KeyFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    expires = int(time.time() + args.days * 86400)
    out = args.out or Path(f"{args.peer}.ticket")
    out.write_bytes(issue_ticket(operator, args.peer, expires, args.note[:128]))
    print(f"{'created operator key ' + str(args.key) + '; ' if created else ''}ticket for "
          f"{args.peer} valid until {time.strftime('%Y-%m-%d %H:%M', time.gmtime(expires))} "
          f"UTC written to {out}; run coordinators with --ticket-key {operator.peer_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ticket"]:
        return issue(argv[1:])
    args = parse_args(argv)
    setup_logging(args.log_level)
    allow = None
    if args.allow:
        try:
            allow = load_allow_list(args.allow)
        except (OSError, ValueError) as exc:
            log.error("--allow: %s", exc)
            return 2
        log.info("admission restricted to %d listed peers", len(allow))
    try:
        ticket_key = None if args.ticket_key is None else public_key_of(args.ticket_key)
        limits = limits_from_args(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if args.max_peers < 1 or args.enroll_burst < 1 or args.enroll_rate <= 0 or \
            args.enroll_per_minute < 0 or args.peer_expiry_days <= 0:
        log.error("admission limits must be positive")
        return 2
    admission = AdmissionConfig(
        ticket_key=ticket_key, max_peers=args.max_peers, per_source_burst=args.enroll_burst,
        per_source_rate=args.enroll_per_minute / 60, total_rate=args.enroll_rate,
        expire_after=args.peer_expiry_days * 86400)
    if ticket_key is not None:
        log.info("admission by ticket: operator %s", peer_id_from_public_key(ticket_key))
    options: dict = {}
    if args.workload == "incremental":
        options = dict(segments=args.segments, replicas=args.replicas, quorum=args.quorum,
                       dispute=args.dispute, aggregator=args.aggregator, lr=args.lr,
                       weight_decay=args.weight_decay, data_dir=args.dataset_dir)
    elif args.workload == "fedavg":
        options = dict(data_dir=args.dataset_dir, aggregator=args.aggregator or "mean",
                       tolerance=args.tolerate)
    elif isinstance(factory := resolve(args.workload), type) and \
            issubclass(factory, ModelWorkload):  # a user's model: the same aggregation flags
        options = dict(aggregator=args.aggregator or "mean", tolerance=args.tolerate)
    if args.replicated and "tolerance" in options:  # a model workload
        options.update(replicas=args.replicas, segments=args.segments, quorum=args.quorum,
                       dispute=args.dispute)
    elif args.replicated:
        log.error("--replicated takes a model workload (fedavg, or a ModelWorkload); "
                  "%s is not one", args.workload)
        return 2
    config = CoordinatorConfig(
        data_dir=args.data_dir, db=args.db, key=args.key, http_host=args.host, port=args.port,
        listen=args.listen or ["/ip4/0.0.0.0/tcp/4001"], allow=allow, admission=admission,
        limits=limits, min_peers=args.min_peers,
        round_timeout=args.round_timeout, round_pause=args.round_pause, max_rounds=args.rounds,
        legacy_epoch=args.legacy_epoch,
        retain_rounds=args.retain_rounds, log_retain=args.log_retain, linger=args.linger,
        lie=args.lie, log_keep=args.log_keep,
        workload=args.workload, secure=not args.insecure, phase_timeout=args.phase_timeout,
        start_peers=args.start_peers, dp_epsilon=args.dp_epsilon, dp_delta=args.dp_delta,
        secagg_degree=args.secagg_degree, secagg_threshold=args.secagg_threshold,
        secagg_agreement=args.secagg_agreement,
        secure_protocol=args.secure_protocol, vss_committee=args.vss_committee,
        robust_tolerance=args.tolerate, group_size=args.group_size,
        robust_aggregator=args.robust_aggregator,
        workload_options=options,
        llm_backend=None if args.llm_backend == "none" else args.llm_backend,
        prompt_search=args.prompt_search,
        llm_url=args.llm_url, llm_model=args.llm_model, redundancy=args.redundancy,
        llm_max_tokens=args.llm_max_tokens)
    try:
        coordinator = Coordinator(config)
    except (KeyFileError, ValueError) as exc:
        log.error("%s", exc)
        return 2

    run_until_signal(coordinator.run, on_signal=coordinator.stop)
    coordinator.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
