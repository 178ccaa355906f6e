"""A lying coordinator, for tests of the audit (``--lie``): what it does, the round log
must show. Never on by default; the coordinator logs a warning at start when it is.

Each lie changes how the workload combines a clear round's contributions, so the round
log still records the signed inputs truthfully (that is what an auditor re-derives from)
while the published result is not theirs:

=============  ==============================================================
lie            the published result
=============  ==============================================================
drop           leaves one accepted contribution out (its sender was told
               "accepted")
drop-hidden    as drop, and the round's record leaves the message out too: the
               record then lists fewer than its signed result says were accepted,
               and the sender's signed receipt names the message (roundlog)
double         counts one accepted contribution twice
fake-result    the true aggregate with its first number changed (in secure
               rounds too: the decoded sum's result)
equivocate     (coordinator.roundlog) a second signed head per round, over a
               record with one accepted message fewer, pushed on the peers'
               sessions while gossip carries the true one
unfair-dispute replicated rounds: the coordinator's re-execution of a contested
               segment gives what a colluding replica claims (the trained
               weights plus one, as tests/test_workload_plugins.py's ``Lies``),
               so the colluder wins the dispute and the honest replica is
               penalized
fake-fitness   (coordinator.prompt_jobs) a prompt job's published best score
               raised by 0.125; its job-log record signs that result beside the
               outputs that give the true one
=============  ==============================================================
"""

from __future__ import annotations

import logging
import types
from collections.abc import Mapping
from typing import Any

from protocol.learning.workloads import Workload
from protocol.wire.messages import Strict

LIES = ("drop", "drop-hidden", "double", "fake-result", "equivocate", "unfair-dispute",
        "fake-fitness")
log = logging.getLogger("hypergossip.coordinator")


def lying(workload: Workload, lie: str) -> Workload:
    """``workload``, its ``aggregate`` replaced by the lie's (``lie`` "" changes nothing)."""
    if not lie:
        return workload
    if lie not in LIES:
        raise ValueError(f"unknown lie {lie!r} ({', '.join(LIES)})")
    log.warning("this coordinator LIES (%s): for tests of the audit only", lie)
    if lie in ("equivocate", "fake-fitness"):  # the round log's writer, the prompt jobs tell it
        return workload
    if lie == "unfair-dispute":
        honest_task = workload.train_task  # type: ignore[attr-defined]

        def train_task(self: Workload, *args: Any, **kw: Any) -> Any:
            return honest_task(*args, **kw) + 1.0

        workload.train_task = types.MethodType(train_task, workload)  # type: ignore[attr-defined]
        return workload
    honest = workload.aggregate

    def aggregate(self: Workload, contributions: Mapping[str, Strict]) -> dict[str, Any]:
        inputs = dict(contributions)
        first = min(inputs) if inputs else None
        if lie in ("drop", "drop-hidden") and first is not None and len(inputs) > 1:
            del inputs[first]
        elif lie == "double" and first is not None:
            inputs[first + "#again"] = inputs[first]
        result = honest(inputs)
        return _faked(result) if lie == "fake-result" else result

    honest_finalize = workload.finalize

    def finalize(self: Workload, total: Any, n: int) -> dict[str, Any]:
        return _faked(honest_finalize(total, n)) if lie == "fake-result" else \
            honest_finalize(total, n)

    workload.aggregate = types.MethodType(aggregate, workload)  # type: ignore[method-assign]
    workload.finalize = types.MethodType(finalize, workload)  # type: ignore[method-assign]
    return workload


def _faked(result: dict[str, Any]) -> dict[str, Any]:
    key = next((k for k, v in sorted(result.items()) if isinstance(v, float)), None)
    if key is not None:
        result[key] = result[key] * 1.01 + 1.0
    return result
