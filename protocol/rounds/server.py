"""What the two secure modes share: a round run by a sans-IO aggregation server.

:class:`ServerRound` is the coordinator's side of SecAgg+ (:mod:`.secure`) and of the
committee vss (:mod:`.verified`): messages go to the server in their phase, a phase
closes on its deadline or when nobody connected is still owed, and closing it sends
the notice the server made. :func:`finalize` turns the decoded sum into the published
result (with its DP report); :func:`noised_input` is a peer's bounded, noised input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..crypto import dp
from ..wire.messages import Strict, decode
from .base import Leave, Notice, Outcome, RoundLogic, RoundMisuse, WrongPhase

if TYPE_CHECKING:
    from ..learning.workloads import Workload


class ServerRound(RoundLogic):
    """The coordinator's side of a round run by a sans-IO server (SecAgg+ here, vss in
    protocol.rounds.verified): messages go to the server in their phase, a phase closes on
    its deadline or when nobody connected is still owed, and closing it sends the notice
    the server's ``close_*`` made. Subclasses say which server, how each phase's message
    is received and closed, and what the result reports."""

    phases: tuple[str, ...]
    domain: dict[str, str]
    schema: dict[str, type[Strict]]
    aborted: type[Exception]  # the server's "cannot finish safely"
    what: str  # in the failed outcome's error

    def __init__(self, number: int, workload: Workload, params: Any, *, min_peers: int,
                 phase_timeout: float, now: float):
        self.number, self.workload, self.params = number, workload, params
        self.announced, self.server = self.start(number, params)
        self.min_peers, self.phase_timeout = min_peers, phase_timeout
        self.phase = self.phases[0]
        self.deadline = now + phase_timeout
        self.rejected: dict[str, int] = {}

    def start(self, number: int, params: Any) -> tuple[Any, Any]:
        """The round's configuration as announced, and its server."""
        raise NotImplementedError

    @property
    def cfg(self) -> Any:
        """The configuration the server runs now: the announced one, or, once the first
        phase re-planned the round over the participants that answered it, that one."""
        return self.server.cfg

    def receivers(self) -> dict[str, Callable[[str, Any], None]]:
        raise NotImplementedError

    def waiting_for(self) -> set[str]:
        """Who still owes a message in this phase."""
        raise NotImplementedError

    def close(self, phase: str) -> Notice:
        """Close ``phase`` (not the last) on the server: the next phase's notice."""
        raise NotImplementedError

    def finish(self) -> tuple[np.ndarray, list[str], dict[str, Any]]:
        """Close the last phase: the decoded sum, whose inputs it holds, and the
        ``secure_aggregation`` report."""
        raise NotImplementedError

    def domains(self) -> frozenset[str]:
        return frozenset(self.domain.values())

    def offer_message(self, sender: str, domain: str, payload: bytes) -> None:
        if domain != self.domain.get(self.phase):
            raise WrongPhase(f"{domain} arrived during phase {self.phase}")
        self.receivers()[self.phase](sender, decode(payload, self.schema[self.phase]))

    def ready(self, now: float, live: set[str]) -> bool:
        return now >= self.deadline or not (self.waiting_for() & live)

    def advance(self, now: float) -> Notice | Outcome:
        self.deadline = now + self.phase_timeout
        if self.phase not in self.phases:
            raise RoundMisuse(f"advance after the round ended ({self.phase})")
        try:
            if self.phase != self.phases[-1]:
                notice = self.close(self.phase)
                self.phase = notice.phase
                return notice
            total, included, report = self.finish()
        except self.aborted as exc:
            self.phase = "failed"
            return Outcome("failed", 0, {"error": f"{self.what} aborted: {exc}"})
        self.phase = "done"
        result = finalize(self.workload, self.params, total, len(included), self.min_peers)
        if isinstance(result, Outcome):
            return result
        result["secure_aggregation"] = report
        return Outcome("published", len(included), result)


def finalize(workload: Workload, params: Any, total: np.ndarray, n: int,
             min_peers: int) -> dict[str, Any] | Outcome:
    """A secure round's published result from the decoded sum of ``n`` inputs (with its
    DP report when ``params`` added noise), or the failed outcome below the quorum."""
    if n < min_peers:
        return Outcome("failed", n, {"error": f"quorum not met: {n} < {min_peers}"})
    result = workload.finalize(total, n)
    if params.dp_sigma:
        result["dp"] = dp.report(params.dp_sigma, params.dp_split, workload.sensitivity(),
                                 params.dp_delta, params.dp_epsilon, n)
    return result


def noised_input(workload: Workload, vector: np.ndarray, params: Any
                 ) -> np.ndarray:
    """A peer's bounded input plus, with DP on, its share of the Gaussian noise."""
    x = workload.bound(vector)
    if params.dp_sigma:
        std = params.dp_sigma / params.dp_split**0.5
        x = x + np.random.default_rng().normal(0.0, std, x.shape)  # OS-seeded
    return x


def leaving(aborted: type[Exception], step: Callable[[], Any]) -> Any:
    """Run a peer's protocol step; its protocol's abort becomes :class:`Leave`."""
    try:
        return step()
    except aborted as exc:
        raise Leave(str(exc)) from exc
