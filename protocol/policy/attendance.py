"""Attendance: a peer asked to take part in a round that sends nothing is benched.

Anyone can enrol and then stay silent, and a round waits for its silent
participants until its first phase times out. Each silent round therefore
benches the peer, for more rounds each time it happens again in a row:

=================================  =========================================
event                              effect
=================================  =========================================
asked, sent nothing accepted       strikes += 1; benched for the next
                                   ``2 ** (strikes - 1)`` rounds (at most
                                   ``max_bench``)
asked, sent something accepted     strikes = 0
benched                            not asked (clear rounds do not wait for it)
bench over                         asked again: one more try
=================================  =========================================

So a key that never takes part costs the network one phase timeout per
doubling of the rounds run (about ``log2(rounds)`` timeouts in all), not one
per round, and an honest peer that was briefly away is back after a round or
two. (A silent member no longer stops a secure round at all: its first phase
leaves it out, see :mod:`protocol.rounds.secure`; this is about not waiting.)
Pure bookkeeping: the coordinator says who was asked and who answered.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_BENCH = 64  # rounds
MAX_TRACKED = 100_000


class Attendance:
    def __init__(self, max_bench: int = MAX_BENCH):
        self.max_bench = max_bench
        self.strikes: dict[str, int] = {}
        self.until: dict[str, int] = {}  # peer -> first round it is asked again

    def record(self, round: int, asked: Iterable[str], answered: Iterable[str]) -> list[str]:
        """Round ``round`` asked ``asked``; ``answered`` sent something it accepted. Returns
        the peers benched by it."""
        answered = set(answered)
        benched = []
        for peer in sorted(set(asked)):
            if peer in answered:
                self.strikes.pop(peer, None)
                self.until.pop(peer, None)
                continue
            strikes = self.strikes.get(peer, 0) + 1
            self.strikes[peer] = strikes
            self.until[peer] = round + 1 + min(self.max_bench, 2 ** (strikes - 1))
            benched.append(peer)
        if len(self.strikes) > MAX_TRACKED:  # forget the longest-silent first
            for peer in sorted(self.until, key=self.until.get)[:len(self.strikes) // 2]:
                self.strikes.pop(peer, None)
                self.until.pop(peer, None)
        return benched

    def benched(self, round: int) -> set[str]:
        """Peers not to be asked in round ``round``."""
        return {p for p, until in self.until.items() if round < until}
