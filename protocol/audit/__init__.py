"""Auditing a coordinator: the signed, hash-chained round log (``log``), Merkle inclusion
proofs over a round's accepted messages (``merkle``), and re-deriving published results
from public data alone (``derive``).

May import every other protocol package; none of them imports this one.
"""
