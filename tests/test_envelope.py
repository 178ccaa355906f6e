"""Signed envelopes: seal/open, every rejection's type and reason, the Verifier's state."""

from __future__ import annotations

import hashlib

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol.wire.envelope import (
    DEFAULT_MAX_WIRE,
    NONCE_LEN,
    SIGNING_PREFIX,
    VERSION,
    BadSignature,
    DigestMismatch,
    Envelope,
    FutureRound,
    Malformed,
    Oversize,
    RejectedMessage,
    Replay,
    StaleRound,
    Verifier,
    WrongDomain,
    open_envelope,
    peek,
    seal,
    signing_bytes,
)
from protocol.wire.identity import Identity

A = Identity(b"\xaa" * 32)
B = Identity(b"\xbb" * 32)
DOMAIN = "contribution"
PAYLOAD = b"the payload bytes \x00\x01\x02 that we sign"


def _fields(wire: bytes) -> list:
    return msgspec.msgpack.decode(wire)


def _env(wire: bytes) -> Envelope:
    return msgspec.msgpack.decode(wire, type=Envelope)


def _encode(env: Envelope) -> bytes:
    return msgspec.msgpack.encode(env)


def _resign(env: Envelope, signer: Identity, **changes) -> bytes:
    """Re-encode ``env`` with ``changes``, signed (validly) by ``signer`` over the new header."""
    env = msgspec.structs.replace(env, **changes)
    sig = signer.sign(env.signing_bytes())
    return _encode(msgspec.structs.replace(env, signature=sig))


def _flip(wire: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(wire)
    out[index] ^= mask
    return bytes(out)


# --- round trip ---------------------------------------------------------------------------------


def test_seal_open_round_trip() -> None:
    wire = seal(A, DOMAIN, 7, PAYLOAD)
    env = open_envelope(wire, domains={DOMAIN})
    assert env.version == VERSION
    assert env.domain == DOMAIN
    assert env.sender == A.public_key
    assert env.sender_id == A.peer_id
    assert env.round == 7
    assert len(env.nonce) == NONCE_LEN
    assert env.payload == PAYLOAD
    assert env.payload_digest == hashlib.sha256(PAYLOAD).digest()
    assert len(env.signature) == 64


def test_wire_is_a_fixed_eight_field_array() -> None:
    wire = seal(A, DOMAIN, 1, b"x")
    fields = _fields(wire)
    assert len(fields) == 8
    assert fields[0] == VERSION and fields[1] == DOMAIN and fields[3] == 1


def test_open_without_domain_filter_and_empty_payload() -> None:
    env = open_envelope(seal(A, "result", 0, b""))
    assert env.payload == b"" and env.round == 0


def test_seal_uses_fresh_nonces() -> None:
    n1 = _env(seal(A, DOMAIN, 1, PAYLOAD)).nonce
    n2 = _env(seal(A, DOMAIN, 1, PAYLOAD)).nonce
    assert n1 != n2


def test_signature_covers_prefix_and_domain() -> None:
    env = _env(seal(A, DOMAIN, 3, PAYLOAD))
    sb = env.signing_bytes()
    assert sb.startswith(SIGNING_PREFIX + DOMAIN.encode() + b"\x00")
    assert sb == signing_bytes(
        env.version, env.domain, env.sender, env.round, env.nonce, env.payload_digest
    )


def test_wire_digest_is_sha256_of_wire() -> None:
    wire = seal(A, DOMAIN, 3, PAYLOAD)
    assert _env(wire).wire_digest() == hashlib.sha256(wire).digest()


@pytest.mark.parametrize("rnd", [-1, 2**53 + 1])
def test_seal_refuses_round_out_of_range(rnd: int) -> None:
    with pytest.raises(ValueError, match="round"):
        seal(A, DOMAIN, rnd, PAYLOAD)


@pytest.mark.parametrize("domain", ["", "con\x00tribution"])
def test_seal_refuses_bad_domain(domain: str) -> None:
    with pytest.raises(ValueError, match="domain"):
        seal(A, domain, 1, PAYLOAD)


# --- stateless rejections -----------------------------------------------------------------------


def _reject(exc_type: type[RejectedMessage], reason: str, wire: bytes, **kw) -> None:
    with pytest.raises(exc_type) as info:
        open_envelope(wire, **kw)
    assert type(info.value) is exc_type
    assert info.value.reason == reason


def test_reasons_are_distinct() -> None:
    reasons = [
        Malformed.reason, Oversize.reason, WrongDomain.reason, DigestMismatch.reason,
        BadSignature.reason, StaleRound.reason, FutureRound.reason, Replay.reason,
    ]
    assert len(set(reasons)) == len(reasons)
    assert RejectedMessage.reason not in reasons


def test_oversize_refused_before_decoding() -> None:
    wire = seal(A, DOMAIN, 1, b"x" * 1000)
    _reject(Oversize, "oversize", wire, max_wire=len(wire) - 1)
    # exactly at the limit is fine
    assert open_envelope(wire, max_wire=len(wire)).payload == b"x" * 1000
    # garbage over the limit is Oversize, not Malformed: size is checked first
    _reject(Oversize, "oversize", b"\xff" * (DEFAULT_MAX_WIRE + 1))


@pytest.mark.parametrize(
    "garbage", [b"", b"\x00", b"\xff\xff\xff", b"not msgpack at all", b"\x93\x01\x02"]
)
def test_malformed_garbage(garbage: bytes) -> None:
    _reject(Malformed, "malformed", garbage)


def test_malformed_trailing_bytes() -> None:
    _reject(Malformed, "malformed", seal(A, DOMAIN, 1, PAYLOAD) + b"\x00")


def test_malformed_too_few_fields() -> None:
    fields = _fields(seal(A, DOMAIN, 1, PAYLOAD))
    _reject(Malformed, "malformed", msgspec.msgpack.encode(fields[:7]))


def test_malformed_too_many_fields() -> None:
    fields = _fields(seal(A, DOMAIN, 1, PAYLOAD))
    _reject(Malformed, "malformed", msgspec.msgpack.encode(fields + [b"extra"]))


def test_malformed_map_instead_of_array() -> None:
    env = _env(seal(A, DOMAIN, 1, PAYLOAD))
    as_map = {f: getattr(env, f) for f in env.__struct_fields__}
    _reject(Malformed, "malformed", msgspec.msgpack.encode(as_map))


@pytest.mark.parametrize("nonce_len", [0, 15, 17, 32])
def test_malformed_wrong_nonce_length(nonce_len: int) -> None:
    # validly signed over the odd nonce: the structure check itself must refuse it
    env = _env(seal(A, DOMAIN, 1, PAYLOAD))
    _reject(Malformed, "malformed", _resign(env, A, nonce=b"\x01" * nonce_len))


@pytest.mark.parametrize(
    "change",
    [
        {"sender": b"\x00" * 31},
        {"payload_digest": b"\x00" * 31},
        {"signature": b"\x00" * 63},
        {"signature": b"\x00" * 65},
        {"round": -1},
        {"round": 2**53 + 1},
        {"domain": "d" * 65},
        {"version": 2},
        {"version": 0},
    ],
)
def test_malformed_field_lengths_and_ranges(change: dict) -> None:
    env = _env(seal(A, DOMAIN, 1, PAYLOAD))
    _reject(Malformed, "malformed", _encode(msgspec.structs.replace(env, **change)))


def test_malformed_wrong_types() -> None:
    fields = _fields(seal(A, DOMAIN, 1, PAYLOAD))
    for i, bad in [(0, "1"), (1, b"contribution"), (2, "k" * 32), (3, 1.0), (3, True)]:
        mutated = list(fields)
        mutated[i] = bad
        _reject(Malformed, "malformed", msgspec.msgpack.encode(mutated))


def test_wrong_domain() -> None:
    wire = seal(A, DOMAIN, 1, PAYLOAD)
    _reject(WrongDomain, "wrong_domain", wire, domains={"enroll", "result"})
    _reject(WrongDomain, "wrong_domain", wire, domains=set())
    assert open_envelope(wire, domains={"enroll", DOMAIN}).domain == DOMAIN


def _payload_offset(wire: bytes) -> int:
    """Where the payload's bytes sit inside the wire (located, then checked unique)."""
    idx = wire.find(PAYLOAD)
    assert idx > 0 and wire.find(PAYLOAD, idx + 1) == -1
    return idx


def test_digest_mismatch_on_flipped_payload_byte() -> None:
    wire = seal(A, DOMAIN, 1, PAYLOAD)
    i = _payload_offset(wire)
    for k in (0, len(PAYLOAD) // 2, len(PAYLOAD) - 1):
        bad = _flip(wire, i + k)
        assert _env(bad).payload != PAYLOAD  # still decodes: only the digest check catches it
        _reject(DigestMismatch, "digest_mismatch", bad)


def test_digest_mismatch_on_replaced_payload() -> None:
    env = _env(seal(A, DOMAIN, 1, PAYLOAD))
    _reject(DigestMismatch, "digest_mismatch", _encode(msgspec.structs.replace(env, payload=b"z")))


def test_bad_signature_when_signed_by_someone_else() -> None:
    # claims A as sender, signed by B over exactly the header A would have signed
    env = _env(seal(A, DOMAIN, 1, PAYLOAD))
    forged = Envelope(
        env.version, env.domain, A.public_key, env.round, env.nonce, env.payload_digest,
        env.payload, B.sign(env.signing_bytes()),
    )
    _reject(BadSignature, "bad_signature", msgspec.msgpack.encode(forged))


def test_bad_signature_on_flipped_signature_byte() -> None:
    wire = seal(A, DOMAIN, 1, PAYLOAD)
    sig = _env(wire).signature
    i = wire.rfind(sig)
    assert i == len(wire) - 64
    for k in (0, 31, 32, 63):
        for mask in (0x01, 0x80):
            _reject(BadSignature, "bad_signature", _flip(wire, i + k, mask))


def test_bad_signature_on_swapped_sender() -> None:
    env = _env(seal(A, DOMAIN, 1, PAYLOAD))
    swapped = _encode(msgspec.structs.replace(env, sender=B.public_key))
    _reject(BadSignature, "bad_signature", swapped)


@pytest.mark.parametrize(
    "change", [{"round": 2}, {"nonce": b"\x00" * 16}, {"domain": "enroll"}]
)
def test_bad_signature_on_changed_header_field(change: dict) -> None:
    env = _env(seal(A, DOMAIN, 1, PAYLOAD))
    _reject(BadSignature, "bad_signature", _encode(msgspec.structs.replace(env, **change)))


def test_bad_signature_on_changed_payload_and_digest() -> None:
    # replacing payload and its digest together keeps the digest check happy; the signature fails
    env = _env(seal(A, DOMAIN, 1, PAYLOAD))
    other = b"other payload"
    changed = msgspec.structs.replace(
        env, payload=other, payload_digest=hashlib.sha256(other).digest()
    )
    _reject(BadSignature, "bad_signature", _encode(changed))


def test_domain_separation() -> None:
    wire = seal(A, "contribution", 4, PAYLOAD)
    env = _env(wire)
    moved = msgspec.msgpack.encode(msgspec.structs.replace(env, domain="enroll"))
    assert _env(moved).signature == env.signature
    _reject(BadSignature, "bad_signature", moved, domains={"enroll"})
    # ...and the genuine one verifies under its own domain only
    assert open_envelope(wire, domains={"contribution"}).domain == "contribution"
    _reject(WrongDomain, "wrong_domain", wire, domains={"enroll"})


def test_signing_bytes_differ_by_domain() -> None:
    args = (VERSION, A.public_key, 1, b"\x00" * 16, b"\x00" * 32)
    a = signing_bytes(args[0], "contribution", *args[1:])
    b = signing_bytes(args[0], "enroll", *args[1:])
    assert a != b


def test_rejection_order_domain_before_digest_before_signature() -> None:
    env = _env(seal(A, DOMAIN, 1, PAYLOAD))
    broken = _encode(msgspec.structs.replace(env, payload=b"zz", signature=b"\x00" * 64))
    _reject(WrongDomain, "wrong_domain", broken, domains={"enroll"})
    _reject(DigestMismatch, "digest_mismatch", broken, domains={DOMAIN})


WIRE_LEN = len(seal(A, DOMAIN, 5, PAYLOAD))  # every field has a fixed size here
# regression: invalid UTF-8 (e.g. wire[2] ^ 1 lengthens the domain string) once escaped as
# UnicodeDecodeError instead of a RejectedMessage


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, WIRE_LEN - 1), mask=st.integers(1, 255))
@example(index=2, mask=0x01)
def test_any_single_byte_flip_is_rejected(index: int, mask: int) -> None:
    wire = seal(A, DOMAIN, 5, PAYLOAD)
    assert len(wire) == WIRE_LEN
    with pytest.raises(RejectedMessage):
        open_envelope(_flip(wire, index, mask))


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, WIRE_LEN - 1), mask=st.integers(1, 255))
def test_any_single_byte_flip_is_never_accepted(index: int, mask: int) -> None:
    # weaker companion of the test above that holds today: nothing flipped is ever accepted
    wire = seal(A, DOMAIN, 5, PAYLOAD)
    with pytest.raises((RejectedMessage, UnicodeDecodeError)):
        open_envelope(_flip(wire, index, mask))


def test_every_single_byte_flip_is_never_accepted() -> None:
    wire = seal(A, DOMAIN, 5, PAYLOAD)
    assert len(wire) == WIRE_LEN
    for index in range(len(wire)):
        for mask in (0x01, 0x02, 0x80, 0xFF):
            with pytest.raises((RejectedMessage, UnicodeDecodeError)):
                open_envelope(_flip(wire, index, mask))


def test_flips_outside_the_domain_string_raise_rejected_message() -> None:
    # the UTF-8 bug needs a str; every flip that leaves the domain's bytes alone is clean
    wire = seal(A, DOMAIN, 5, PAYLOAD)
    start = wire.index(DOMAIN.encode()) - 1  # the fixstr marker
    end = start + 1 + len(DOMAIN)
    for index in [i for i in range(len(wire)) if not start <= i < end]:
        for mask in (0x01, 0x80, 0xFF):
            with pytest.raises(RejectedMessage):
                open_envelope(_flip(wire, index, mask))


def test_invalid_utf8_domain_is_malformed() -> None:
    fields = _fields(seal(A, DOMAIN, 5, PAYLOAD))
    wire = msgspec.msgpack.encode(fields)
    marker = b"\xac" + DOMAIN.encode()
    assert marker in wire
    bad = wire.replace(marker, b"\xac" + b"\xff" * len(DOMAIN))
    _reject(Malformed, "malformed", bad)


def test_peek_none_for_invalid_utf8() -> None:
    assert peek(b"\x98\x01\xa1\xff") is None


# --- peek -----------------------------------------------------------------------------------------


def test_peek_decodes_without_verifying() -> None:
    wire = seal(A, DOMAIN, 9, PAYLOAD)
    env = peek(wire)
    assert env is not None and env.round == 9 and env.payload == PAYLOAD
    # peek does not check signatures: a tampered payload still peeks
    tampered = _flip(wire, _payload_offset(wire))
    assert peek(tampered) is not None


@pytest.mark.parametrize("garbage", [b"", b"\xc1", b"garbage", b"\x93\x01\x02\x03"])
def test_peek_none_for_garbage(garbage: bytes) -> None:
    assert peek(garbage) is None


def test_peek_none_for_oversize() -> None:
    wire = seal(A, DOMAIN, 1, PAYLOAD)
    assert peek(wire, max_wire=len(wire) - 1) is None
    assert peek(wire, max_wire=len(wire)) is not None


# --- Verifier -------------------------------------------------------------------------------------


def _verify(v: Verifier, wire: bytes, lo: int = 0, hi: int = 100, domains=(DOMAIN,)) -> Envelope:
    return v.verify(wire, domains=set(domains), min_round=lo, max_round=hi)


def _vreject(exc_type, reason, v: Verifier, wire: bytes, **kw) -> None:
    with pytest.raises(exc_type) as info:
        _verify(v, wire, **kw)
    assert type(info.value) is exc_type
    assert info.value.reason == reason


def test_verifier_accepts_in_window() -> None:
    v = Verifier()
    for r in (3, 4, 5):
        assert _verify(v, seal(A, DOMAIN, r, PAYLOAD), lo=3, hi=5).round == r


def test_verifier_stale_round() -> None:
    _vreject(StaleRound, "stale_round", Verifier(), seal(A, DOMAIN, 2, PAYLOAD), lo=3, hi=5)


def test_verifier_future_round() -> None:
    _vreject(FutureRound, "future_round", Verifier(), seal(A, DOMAIN, 6, PAYLOAD), lo=3, hi=5)


def test_verifier_runs_stateless_checks() -> None:
    v = Verifier(max_wire=300)
    _vreject(Oversize, "oversize", v, seal(A, DOMAIN, 1, b"x" * 300))
    _vreject(WrongDomain, "wrong_domain", v, seal(A, "enroll", 1, b""))
    _vreject(Malformed, "malformed", v, b"junk")


def test_verifier_replay() -> None:
    v = Verifier()
    wire = seal(A, DOMAIN, 4, PAYLOAD)
    _verify(v, wire)
    _vreject(Replay, "replay", v, wire)
    # a fresh seal of the same payload has a new nonce and is fine
    _verify(v, seal(A, DOMAIN, 4, PAYLOAD))


def test_verifier_replay_separate_verifiers_do_not_share_state() -> None:
    wire = seal(A, DOMAIN, 4, PAYLOAD)
    _verify(Verifier(), wire)
    _verify(Verifier(), wire)


def test_rejected_message_does_not_burn_nonce_on_stale_or_future() -> None:
    v = Verifier()
    wire = seal(A, DOMAIN, 10, PAYLOAD)
    _vreject(FutureRound, "future_round", v, wire, lo=0, hi=9)
    assert _verify(v, wire, lo=0, hi=10).round == 10


def test_forgery_does_not_burn_nonce() -> None:
    v = Verifier()
    genuine = seal(A, DOMAIN, 4, PAYLOAD)
    env = _env(genuine)
    forged = _encode(msgspec.structs.replace(env, signature=B.sign(env.signing_bytes())))
    assert _env(forged).nonce == env.nonce
    _vreject(BadSignature, "bad_signature", v, forged)
    assert _verify(v, genuine).nonce == env.nonce
    _vreject(Replay, "replay", v, genuine)


def test_tampered_payload_does_not_burn_nonce() -> None:
    v = Verifier()
    genuine = seal(A, DOMAIN, 4, PAYLOAD)
    _vreject(DigestMismatch, "digest_mismatch", v, _flip(genuine, _payload_offset(genuine)))
    _verify(v, genuine)


def test_other_senders_valid_message_with_copied_nonce_does_not_burn_it() -> None:
    v = Verifier()
    genuine = seal(A, DOMAIN, 4, PAYLOAD)
    env = _env(genuine)
    # B signs its own message (as itself, validly) reusing A's nonce
    attacker = _resign(env, B, sender=B.public_key)
    assert _verify(v, attacker).sender == B.public_key
    assert _verify(v, genuine).sender == A.public_key


def test_remember_marks_nonce_seen() -> None:
    v = Verifier()
    wire = seal(A, DOMAIN, 4, PAYLOAD)
    v.remember(4, A.public_key, _env(wire).nonce)
    _vreject(Replay, "replay", v, wire)


def test_forget_before_drops_old_rounds_only() -> None:
    v = Verifier()
    w3 = seal(A, DOMAIN, 3, PAYLOAD)
    w5 = seal(A, DOMAIN, 5, PAYLOAD)
    _verify(v, w3)
    _verify(v, w5)
    v.forget_before(4)
    _verify(v, w3)  # forgotten: accepted again (callers keep min_round above it)
    _vreject(Replay, "replay", v, w5)


def test_window_advance_forgets_and_old_stays_stale() -> None:
    v = Verifier()
    w3 = seal(A, DOMAIN, 3, PAYLOAD)
    _verify(v, w3, lo=3, hi=3)
    _verify(v, seal(A, DOMAIN, 4, PAYLOAD), lo=4, hi=4)
    _vreject(StaleRound, "stale_round", v, w3, lo=4, hi=4)


def test_verifier_caps_nonces_per_round() -> None:
    v = Verifier(max_nonces_per_round=2)
    _verify(v, seal(A, DOMAIN, 1, b"1"))
    _verify(v, seal(A, DOMAIN, 1, b"2"))
    _vreject(Oversize, "oversize", v, seal(A, DOMAIN, 1, b"3"))
    _verify(v, seal(A, DOMAIN, 2, b"4"))  # the cap is per round
