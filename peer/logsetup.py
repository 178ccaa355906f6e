"""Logging set-up shared by the daemons' command lines."""

from __future__ import annotations

import logging


def setup_logging(level: str = "INFO", name: str = "") -> None:
    prefix = f"{name} " if name else ""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s.%(msecs)03d {prefix}%(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # py-libp2p logs routine connection churn at WARNING/ERROR; keep ours readable
    for noisy in ("libp2p", "multiaddr", "hypercorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.ERROR, logging.getLogger().level))
