"""The hypergossip coordinator: a peer with duties (verify, run rounds, publish) and an AIM.

``service`` wires its collaborators, one duty each: ``intake`` (every envelope peers
send), ``rounds`` (the round driver, any mode of :mod:`protocol.rounds`), ``outbox``
(what it sends and serves again), ``publisher`` (results and state), ``legacy`` (values
posted in the clear), ``evaluations`` (prompt evaluations on peers), ``meter`` (where
benchmarks measure), ``metrics`` (``/metrics``); ``store`` is SQLite, ``aim``/``api``
the AIM HTTP server, ``dashboard`` the page at ``/``, ``prompt_jobs`` the prompt-search
jobs; ``cli`` is the ``hypergossip`` command and ``status`` its ``status``.

May import :mod:`protocol` and :mod:`peer` (it runs peer's network node).
"""
