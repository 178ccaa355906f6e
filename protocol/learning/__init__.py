"""Learning tasks: workloads (what a peer computes and how results combine), models,
datasets, and the robust aggregators.

May import :mod:`protocol.wire` and :mod:`protocol.crypto`; never :mod:`protocol.rounds`
(round modes are built on workloads, not the other way round).
"""
