"""Cryptography and privacy: the Ed25519 group (group), Shamir sharing (shamir),
fixed-point ring encodings (fixedpoint), range proofs (rangeproof), SecAgg+ (secagg),
verifiable secret sharing to a committee (vss), the key derivation and agreement both
protocols use (common), and differential-privacy calibration and accounting (dp).

May import :mod:`protocol.wire` only.
"""
