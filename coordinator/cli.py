"""``hypergossip``: one command with the ecosystem's usual subcommands.

``hypergossip coordinator ...`` is ``python -m coordinator ...``, ``hypergossip peer ...``
is ``python -m peer ...``, ``hypergossip testnet ...`` is ``./scripts/testnet ...`` (from
a source checkout, where the launcher lives), ``hypergossip status URL`` prints a
running coordinator's state (:mod:`coordinator.status`) and ``hypergossip audit URL``
checks its round log (:mod:`coordinator.audit`). Each subcommand has its own
``--help``. It lives in the coordinator package because the coordinator may import the
peer (the layout's rule), not the other way round.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable
from pathlib import Path

USAGE = """usage: hypergossip COMMAND [ARGS ...]

commands:
  coordinator   run a coordinator: libp2p peer, AIM HTTP server, rounds (python -m coordinator)
  peer          run a peer daemon that joins a coordinator's network (python -m peer)
  testnet       a local testnet on 127.0.0.1: a coordinator and N peers (./scripts/testnet)
  status URL    print a running coordinator's round, peers and last results
  audit URL     check a coordinator's signed round log and re-derive its results

'hypergossip COMMAND --help' explains each one."""


def _coordinator(argv: list[str]) -> int:
    from coordinator.__main__ import main
    return main(argv)


def _peer(argv: list[str]) -> int:
    from peer.__main__ import main
    return main(argv)


def _status(argv: list[str]) -> int:
    from coordinator.status import main
    return main(argv)


def _audit(argv: list[str]) -> int:
    from coordinator.audit import main
    return main(argv)


def _testnet(argv: list[str]) -> int:
    script = Path(__file__).resolve().parents[1] / "scripts" / "testnet.py"
    if not script.is_file():
        print("hypergossip testnet: the launcher ships with the source checkout "
              f"(scripts/testnet.py, not found at {script})", file=sys.stderr)
        return 2
    sys.argv = [str(script), *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "coordinator": _coordinator, "peer": _peer, "testnet": _testnet, "status": _status,
    "audit": _audit}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"hypergossip: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return command(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
