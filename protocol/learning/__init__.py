"""Learning tasks: workloads (what a peer computes and how results combine; ``federated``
is a user's model, ``registry`` finds any workload by name, entry point or
``module:Class``), models, datasets, and the robust aggregators.

May import :mod:`protocol.wire` and :mod:`protocol.crypto`; never :mod:`protocol.rounds`
(round modes are built on workloads, not the other way round).
"""
