"""Policies a coordinator applies to peers: admission (who may enrol, how fast), token
buckets and log limits (ratelimit), and attendance (silent participants sit out).

May import :mod:`protocol.wire` only.
"""
