"""Flower's SecAgg+ (SecAggPlusWorkflow + secaggplus_mod), measured for scripts/bench/secagg.py.

This file imports nothing from hypergossip: it runs in whatever Python has ``flwr``
(``flwr[simulation]==1.42.*``), usually a separate virtual environment, because Flower's
pins would move packages our venv depends on. ``secagg.py`` starts it as a subprocess and
reads one JSON document from its stdout; progress goes to stderr.

Two modes, both with Flower's own code paths and the settings of Flower's
``flower-secure-aggregation`` example (``num_shares=3``, ``reconstruction_threshold=2``):

``sansio``
    Flower's ``SecAggPlusWorkflow`` driven against an in-process ``Grid`` that hands each
    message straight to a ``ClientApp`` (``secaggplus_mod`` + a ``NumPyClient`` returning a
    fixed float32 vector) for that node: no transport, one thread (each message and reply
    makes a protobuf round trip outside all timings, as a transport would copy it). CPU is
    ``time.thread_time`` in a round after a small warm-up round: per client, the time inside
    ``secaggplus_mod`` minus the wrapped client's ``fit`` ("protocol" CPU, like our sans-IO
    numbers) and the whole ``ClientApp`` call; the server is the workflow's time minus the
    client calls. Upload per client is the protobuf size of every reply's ``RecordDict``
    (``serde.recorddict_to_proto``).
``simulation``
    ``flwr.simulation.run_simulation`` (Ray backend) with ``--rounds`` rounds; per round the
    wall time of ``SecAggPlusWorkflow.__call__``, the CPU time of the thread running it, and
    the CPU time of the whole driver process during it (ServerApp, in-memory SuperLink and
    simulation engine threads; the Ray worker processes running the clients are not in it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from typing import Any

import numpy as np

MARKER = "FLOWER_BENCH_JSON "  # prefixes the result line on stdout (Flower may print too)


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] flower: {msg}", file=sys.stderr, flush=True)


def client_vector(node_index: int, m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, node_index])
    return rng.uniform(-1.0, 1.0, m).astype(np.float32)


def make_client_app(vectors: dict[int, np.ndarray], timings: dict[int, dict[str, float]]):
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod

    class VectorClient(NumPyClient):
        def __init__(self, node_id: int):
            self.node_id = node_id

        def fit(self, parameters, config):
            t0 = time.thread_time()
            out = [vectors[self.node_id]]
            timings[self.node_id]["fit"] += time.thread_time() - t0
            return out, 1, {}

    def client_fn(context):
        return VectorClient(context.node_id).to_client()

    def timed_secaggplus_mod(msg, ctxt, call_next):
        nid = msg.metadata.dst_node_id
        inner = 0.0

        def timed_next(m, c):
            nonlocal inner
            t0 = time.thread_time()
            try:
                return call_next(m, c)
            finally:
                inner += time.thread_time() - t0

        t0 = time.thread_time()
        reply = secaggplus_mod(msg, ctxt, timed_next)
        timings[nid]["mod"] += time.thread_time() - t0 - inner
        return reply

    return ClientApp(client_fn=client_fn, mods=[timed_secaggplus_mod])


def run_sansio(n: int, m: int, seed: int, clip: float) -> dict[str, Any]:
    import flwr
    from flwr.app import ConfigRecord, Context, RecordDict
    from flwr.common import ndarrays_to_parameters, serde
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey
    from flwr.serverapp.grid import Grid
    from flwr.supercore.task_identity import TaskIdentity

    # what a SuperLink would have set for the ServerApp's process
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    node_ids = list(range(1001, 1001 + n))
    vectors = {nid: client_vector(i, m, seed) for i, nid in enumerate(node_ids)}
    timings = {nid: {"mod": 0.0, "fit": 0.0, "app": 0.0} for nid in node_ids}
    upload = {nid: 0 for nid in node_ids}
    download = {nid: 0 for nid in node_ids}
    app = make_client_app(vectors, timings)
    contexts = {nid: Context(run_id=1, node_id=nid, node_config={}, state=RecordDict(),
                             run_config={}) for nid in node_ids}

    class DirectGrid(Grid):
        """Every message goes straight to its node's ClientApp, in this thread."""

        def __init__(self) -> None:
            self._run = None  # the workflow never asks for run details

        def set_run(self, run) -> None:
            self._run = run

        @property
        def run(self):
            return self._run

        def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
            from flwr.app import Message
            return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

        def get_node_ids(self):
            return list(node_ids)

        def push_messages(self, messages):
            raise NotImplementedError

        def pull_messages(self, message_ids):
            raise NotImplementedError

        def send_and_receive(self, messages, *, timeout=None):
            replies = []
            for msg in messages:
                msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
                nid = msg.metadata.dst_node_id
                # a transport would hand each node its own copy (the workflow shares one
                # RecordDict between nodes, and the mod pops from it): a protobuf round trip,
                # outside all timings, like the reply's below
                wire = serde.message_to_proto(msg)
                download[nid] += wire.ByteSize()
                msg = serde.message_from_proto(wire)
                t0 = time.thread_time()
                reply = app(msg, contexts[nid])
                timings[nid]["app"] += time.thread_time() - t0
                wire = serde.message_to_proto(reply)
                if reply.has_content():
                    upload[nid] += serde.recorddict_to_proto(reply.content).ByteSize()
                replies.append(serde.message_from_proto(wire))
            return replies

    grid = DirectGrid()
    manager = SimpleClientManager()
    for nid in node_ids:
        manager.register(GridClientProxy(node_id=nid, grid=grid, run_id=1))
    initial = ndarrays_to_parameters([np.zeros(m, dtype=np.float32)])
    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                      min_available_clients=n, initial_parameters=initial)
    base = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    ctx = LegacyContext(context=base, config=ServerConfig(num_rounds=1), strategy=strategy,
                        client_manager=manager)
    ctx.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        initial, keep_input=True)
    ctx.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    workflow = SecAggPlusWorkflow(num_shares=3, reconstruction_threshold=2, max_weight=1.0,
                                  clipping_range=clip)
    progress(f"sans-IO N={n} M={m}: running SecAggPlusWorkflow on an in-process grid")
    t0, w0 = time.thread_time(), time.perf_counter()
    workflow(grid, ctx)
    total_cpu, wall = time.thread_time() - t0, time.perf_counter() - w0
    app_cpu = sum(t["app"] for t in timings.values())

    got = compat.arrayrecord_to_parameters(ctx.state.array_records[MAIN_PARAMS_RECORD],
                                           keep_input=True)
    from flwr.common import parameters_to_ndarrays
    mean = parameters_to_ndarrays(got)[0].astype(np.float64)
    expect = np.mean([np.clip(v.astype(np.float64), -clip, clip) for v in vectors.values()],
                     axis=0)
    err = float(np.max(np.abs(mean - expect)))
    step = 2 * clip / 4194304  # one quantization step of the default quantization_range
    return {
        "mode": "sansio", "flwr": flwr.__version__, "clients": n, "vector_len": m,
        "num_shares": 3, "reconstruction_threshold": 2, "clipping_range": clip,
        "server_cpu_s": total_cpu - app_cpu, "wall_s": wall,
        "client_protocol_cpu_s": [timings[nid]["mod"] for nid in node_ids],
        "client_app_cpu_s": [timings[nid]["app"] for nid in node_ids],
        "upload_bytes": [upload[nid] for nid in node_ids],
        "download_bytes": [download[nid] for nid in node_ids],
        "plain_bytes": 4 * m,
        "max_abs_error_of_mean": err, "quantization_step": step,
        # stochastic rounding: each client's value is off by less than one step
        "correct": bool(err <= 1.01 * step + 1e-9),
    }


def run_simulation(n: int, m: int, seed: int, clip: float, rounds: int,
                   cpus_per_client: float) -> dict[str, Any]:
    import flwr
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.simulation import run_simulation as flwr_run_simulation

    per_round: list[dict[str, float]] = []

    class TimedSecAggPlusWorkflow(SecAggPlusWorkflow):
        def __call__(self, grid, context) -> None:
            t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
            super().__call__(grid, context)
            per_round.append({"wall_s": time.perf_counter() - w0,
                              "server_thread_cpu_s": time.thread_time() - t0,
                              # every thread of this process: ServerApp, in-memory SuperLink,
                              # simulation engine; not the Ray worker processes
                              "server_process_cpu_s": time.process_time() - p0})
            progress(f"simulation N={n}: round {len(per_round)} took "
                     f"{per_round[-1]['wall_s']:.2f} s")

    server_app = ServerApp()

    @server_app.main()
    def main(grid, context) -> None:
        initial = ndarrays_to_parameters([np.zeros(m, dtype=np.float32)])
        strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n,
                          min_available_clients=n, initial_parameters=initial)
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds),
                               strategy=strategy)
        workflow = DefaultWorkflow(fit_workflow=TimedSecAggPlusWorkflow(
            num_shares=3, reconstruction_threshold=2, max_weight=1.0, clipping_range=clip))
        workflow(grid, legacy)

    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod

    class VectorClient(NumPyClient):
        def __init__(self, index: int):
            self.vector = client_vector(index, m, seed)

        def fit(self, parameters, config):
            return [self.vector], 1, {}

    def client_fn(context):
        return VectorClient(int(context.node_config.get("partition-id", 0))).to_client()

    client_app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    backend = {"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
               "init_args": {"include_dashboard": False, "log_to_driver": False}}
    progress(f"simulation N={n} M={m}: {rounds} rounds on Ray, "
             f"{cpus_per_client:g} CPU per client, {os.cpu_count()} CPUs")
    w0 = time.perf_counter()
    flwr_run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n,
                        backend_config=backend)
    return {"mode": "simulation", "flwr": flwr.__version__, "clients": n, "vector_len": m,
            "num_shares": 3, "reconstruction_threshold": 2, "rounds": per_round,
            "total_wall_s": time.perf_counter() - w0, "cpus_per_client": cpus_per_client}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["sansio", "simulation"])
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--size", type=int, default=100_000, help="vector length M")
    p.add_argument("--rounds", type=int, default=3, help="simulation rounds (first = warm-up)")
    p.add_argument("--cpus-per-client", type=float, default=1.0,
                   help="Ray resources per simulated client (default 1)")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    if args.mode == "sansio":
        # a small warm-up round first: imports and first-call costs are not the protocol's
        run_sansio(3, min(args.size, 1000), args.seed, args.clip)
        out = run_sansio(args.clients, args.size, args.seed, args.clip)
    else:
        out = run_simulation(args.clients, args.size, args.seed, args.clip, args.rounds,
                             args.cpus_per_client)
    sys.stdout.write(MARKER + json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
