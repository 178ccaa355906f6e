"""Round modes: how one round of contributions is run, as sans-IO state machines.

May import :mod:`protocol.wire`, :mod:`protocol.crypto`, :mod:`protocol.learning` and
:mod:`protocol.policy`.
"""
