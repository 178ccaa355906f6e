"""The attack catalogue: one async function per attack, grouped by the layer it
hits (TCP, multistream, yamux, meshsub, our topics and streams, HTTP) in :data:`LAYERS`.

See :mod:`peer.hostile`.
"""

from __future__ import annotations

import os
import random
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import httpx
import msgspec
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.utils import encode_varint_prefixed
from libp2p.utils.varint import encode_uvarint

from protocol.wire.envelope import Envelope, seal
from protocol.wire.identity import Identity
from protocol.wire.messages import (
    ANNOUNCE,
    CONTRIBUTION,
    ENROLL,
    PROTO_BLOB,
    PROTO_PULL,
    PROTO_SESSION,
    PROTO_SUBMIT,
    RESULT,
    TOPIC_ANNOUNCE,
    TOPIC_REPLICAS,
    TOPIC_RESULT,
    TOPIC_SUBMIT,
    Enroll,
    PullRequest,
    RoundAnnounce,
    StatsContribution,
    SubmitAck,
    decode,
    encode,
    enroll_round,
)

from .raw import (
    Hostile,
    Outcomes,
    Target,
    bad_key_rpc,
    dial,
    frame,
    read_some,
    reset_quietly,
    send_rpcs,
    signed_messages,
    tcp_probes,
    yamux_frame,
)


def _junk_envelopes(h: Hostile, r: int) -> list[tuple[str, bytes]]:
    """Envelopes a modified client can make, none of which may be accepted."""
    stranger = Identity.generate()
    good = encode(StatsContribution(height=170.0, weight=70.0))
    real = msgspec.msgpack.decode(seal(h.mallory, CONTRIBUTION, r, good), type=Envelope)
    forged = msgspec.structs.replace(real, sender=Identity.generate().public_key)
    flipped = msgspec.structs.replace(real, payload=b"x" + real.payload[1:])
    out = [
        ("forged", msgspec.msgpack.encode(forged)),
        ("tampered", msgspec.msgpack.encode(flipped)),
        ("stale", seal(h.mallory, CONTRIBUTION, max(0, r - 5), good)),
        ("future", seal(h.mallory, CONTRIBUTION, r + 5, good)),
        ("stranger", seal(stranger, CONTRIBUTION, r, good)),
        ("schema", seal(h.mallory, CONTRIBUTION, r, b"\x81\xa3bad\x01")),
        ("wrong_domain", seal(h.mallory, ANNOUNCE, r, good)),
        ("oversize", seal(h.mallory, CONTRIBUTION, r, os.urandom(9 << 20))),
        ("garbage", os.urandom(random.randint(1, 400))),
        ("out_of_range", seal(h.mallory, CONTRIBUTION, r, encode(
            StatsContribution(height=250.0, weight=300.0))[:-1] + b"\xff")),
    ]
    out += [("replay", w) for w in h.seen[-2:]]
    return out


# --- attacks by layer ---------------------------------------------------------------------------
async def tcp_noise(h: Hostile, t: Target) -> Outcomes:
    """Random bytes where a multistream header belongs, or nothing at all (slowloris)."""
    return await tcp_probes(t, lambda: os.urandom(random.choice([0, 1, 7, 300, 4096])))


async def tcp_huge_prefix(h: Hostile, t: Target) -> Outcomes:
    """GHSA-hmjq-g7pp-rw3x: a 2^31 length prefix before authentication, then a stream of
    bytes (0.8.1 buffered it all)."""
    return await tcp_probes(t, lambda: encode_uvarint(2**31) + b"A" * 65536)


async def tcp_bad_security(h: Hostile, t: Target) -> Outcomes:
    """A multistream header, then security protocols we do not speak (plaintext, which
    let anyone claim any peer id, among them), then garbage where Noise belongs."""
    proposals = [b"/multistream/1.0.0\n", b"/plaintext/2.0.0\n", b"/secio/1.0.0\n",
                 b"/noise\n"]
    data = b"".join(encode_uvarint(len(p)) + p for p in proposals)
    return await tcp_probes(t, lambda: data + os.urandom(512))


async def multistream_junk(h: Hostile, t: Target) -> Outcomes:
    """Stream protocol names nobody serves, oversize, or not UTF-8."""
    out: Outcomes = Counter()
    for proto in (f"/{os.urandom(8).hex()}/1.0.0", "/" + "x" * 2000, "/\udcff/bad"):
        try:
            with trio.fail_after(5):
                await h.stream(t, proto)
            out["accepted"] += 1
        except Exception:
            out["refused"] += 1
    return out


async def multistream_oversize(h: Hostile, t: Target) -> Outcomes:
    """A 2^31 multistream length prefix on an authenticated stream."""
    try:
        peer = await dial(h.host, t.addr)
        conn = h.host.get_network().connections[peer][0]
        muxed = await conn.muxed_conn.open_stream()
        await muxed.write(encode_uvarint(2**31) + b"B" * 4096)
        with trio.move_on_after(3):
            while await muxed.read(1024):  # the node's own header, then it hangs up
                pass
            return Counter({"closed": 1})
        await muxed.reset()
        return Counter({"open": 1})
    except Exception:
        return Counter({"closed": 1})


async def _yamux_raw(h: Hostile, t: Target, frames: bytes) -> str:
    """Write raw yamux frames under the attacker's own muxer; the connection survives them
    (``alive``) or the node closes it (``closed``)."""
    try:
        peer = await dial(h.host, t.addr)
        conn = h.host.get_network().connections[peer][0]
        await conn.muxed_conn.secured_conn.write(frames)
        await trio.sleep(0.2)
        with trio.fail_after(3):
            await h.host.new_stream(peer, [TProtocol(PROTO_PULL)])
        return "alive"
    except Exception:
        return "closed"
    finally:  # a fresh connection for the next attack
        try:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await h.host.disconnect(ID.from_base58(t.peer_id))
        except Exception:
            pass


async def yamux_over_window(h: Hostile, t: Target) -> Outcomes:
    """A new stream whose first DATA frames carry 512 KiB against a 256 KiB window."""
    sid = random.randrange(1 << 20, 1 << 30) | 1
    chunk = os.urandom(65536 - 12)
    frames = yamux_frame(0, 1, sid, len(chunk), chunk)
    frames += b"".join(yamux_frame(0, 0, sid, len(chunk), chunk) for _ in range(8))
    return Counter({await _yamux_raw(h, t, frames): 1})


async def yamux_bad_frames(h: Hostile, t: Target) -> Outcomes:
    """A frame of an unknown version or type, DATA for streams that do not exist, a
    window update that overflows, a ping flood, a go-away."""
    sid = random.randrange(1 << 20, 1 << 30) | 1
    choice = random.choice([
        yamux_frame(0, 0, 0, 0, version=7),
        yamux_frame(9, 0, sid, 0),
        yamux_frame(0, 0, sid + 2, 16, b"\x00" * 16),
        yamux_frame(1, 1, sid, 0xFFFFFFFF) + yamux_frame(1, 0, sid, 0xFFFFFFFF),
        b"".join(yamux_frame(2, 1, 0, i) for i in range(200)),
        yamux_frame(3, 0, 0, 2),
        yamux_frame(0, 0, sid, 1 << 30),  # announces more than MAX_WINDOW_SIZE
    ])
    return Counter({await _yamux_raw(h, t, choice): 1})


async def yamux_stream_flood(h: Hostile, t: Target) -> Outcomes:
    """200 streams opened at once (SYN only) on one connection: beyond the node's limit
    they are reset."""
    base = random.randrange(1 << 20, 1 << 29) | 1
    syns = b"".join(yamux_frame(1, 1, base + 2 * i, 0) for i in range(200))
    return Counter({await _yamux_raw(h, t, syns): 200})


async def meshsub_rpcs(h: Hostile, t: Target) -> Outcomes:
    """Meshsub RPCs py-libp2p must survive: the bad-key message of finding 1, garbage, an
    oversize frame, a subscription flood, control floods (IHAVE, IWANT, GRAFT, PRUNE with
    junk peer records and a huge back-off), messages with bad signatures or claiming the
    coordinator's id. The messages go on a topic the target reads (a message on any other
    is dropped unread); the control messages on any topic."""
    topic = random.choice([TOPIC_SUBMIT, TOPIC_ANNOUNCE, TOPIC_RESULT, TOPIC_REPLICAS])
    read = random.choice([TOPIC_SUBMIT] if t.coordinator else [TOPIC_ANNOUNCE, TOPIC_RESULT])
    coord = ID.from_base58(h.coordinator_id).to_bytes()
    ctrl = rpc_pb2.ControlMessage(
        ihave=[rpc_pb2.ControlIHave(topicID=topic, messageIDs=[os.urandom(20)
                                                                for _ in range(500)])],
        iwant=[rpc_pb2.ControlIWant(messageIDs=[os.urandom(20) for _ in range(500)])],
        graft=[rpc_pb2.ControlGraft(topicID=f"t{i}") for i in range(50)],
        prune=[rpc_pb2.ControlPrune(topicID=topic, backoff=2**63, peers=[
            rpc_pb2.PeerInfo(peerID=os.urandom(38), signedPeerRecord=os.urandom(100))])])
    rpcs = [
        bad_key_rpc(read),
        os.urandom(300),
        rpc_pb2.RPC(subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid=f"junk{i}")
                                   for i in range(6000)]).SerializeToString(),
        rpc_pb2.RPC(control=ctrl).SerializeToString(),
        rpc_pb2.RPC(publish=[rpc_pb2.Message(from_id=coord, data=os.urandom(64),
                                             seqno=os.urandom(8), topicIDs=[read],
                                             signature=os.urandom(64))]).SerializeToString(),
    ]
    out: Outcomes = Counter()
    try:
        stream = await send_rpcs(h.host, t.addr, rpcs)
        await stream.write(encode_uvarint(2 << 20) + b"C" * 1024)  # an oversize RPC frame
        out["sent"] += len(rpcs) + 1
        await reset_quietly(stream)
    except Exception:
        out["closed"] += len(rpcs) + 1
    return out


OPEN_ATTEMPTS = 5


async def topic_junk(h: Hostile, t: Target) -> Outcomes:
    """Validly signed gossip (by the attacker's libp2p key) whose payloads are junk or forged
    envelopes, on every topic: the node's validators refuse them, and they count against
    the attacker's score; then a flood of 400 such messages in one burst."""
    out: Outcomes = Counter()
    payloads = [w for _, w in _junk_envelopes(h, h.round_hint) if len(w) < 400_000]
    forged_announce = seal(h.mallory, ANNOUNCE, h.round_hint + 1, encode(RoundAnnounce(
        round=h.round_hint + 1, workload="stats", deadline_ms=0, min_peers=1)))
    forged_result = seal(h.mallory, RESULT, h.round_hint, os.urandom(64))
    batches = ((TOPIC_SUBMIT, payloads), (TOPIC_ANNOUNCE, [forged_announce]),
               (TOPIC_RESULT, [forged_result]), (TOPIC_REPLICAS, payloads[:3]),
               (TOPIC_SUBMIT, [os.urandom(32) for _ in range(400)]))
    for _ in range(OPEN_ATTEMPTS):
        # a stream refused at the start (an earlier layer's streams still count against this
        # attacker's inbound limit there) is that limit working, not this attack: try again
        try:
            stream = await send_rpcs(h.host, t.addr, [signed_messages(h.host, *batches[0])])
        except Exception:
            out["refused"] += 1
            await trio.sleep(1.0)
            continue
        try:
            out["sent"] += len(batches[0][1])
            for topic, batch in batches[1:]:
                await stream.write(encode_varint_prefixed(signed_messages(h.host, topic, batch)))
                out["sent"] += len(batch)
            # a half-close, not a reset: the node reads everything before the end of the
            # stream, where a reset throws away what it has not read yet (under CI load the
            # flood, written last, was sometimes never read at all)
            await stream.close()
        except Exception:
            out["closed"] += 1
        break
    return out


async def submit_junk(h: Hostile, t: Target) -> Outcomes:
    """Every kind of bad envelope on the coordinator's submit protocol; and frames over the
    limit, cut short, or not envelopes at all."""
    out: Outcomes = Counter()
    for _, wire in _junk_envelopes(h, h.round_hint):
        out[await h.exchange(t, PROTO_SUBMIT, frame(wire))] += 1
    out[await h.exchange(t, PROTO_SUBMIT, struct.pack(">I", 64 << 20) + b"x" * 100)] += 1
    return out


async def session_junk(h: Hostile, t: Target) -> Outcomes:
    """Sessions: a stranger's (refused), malformed frames, submits of junk envelopes."""
    from peer.session import Submit  # a session's frames, as a modified client writes them

    out: Outcomes = Counter()
    wires = [w for _, w in _junk_envelopes(h, h.round_hint) if len(w) < 1 << 20]
    data = frame(os.urandom(50)) + b"".join(frame(encode(Submit(i, w)))
                                            for i, w in enumerate(wires))
    try:
        with trio.fail_after(5):
            stream = await h.stream(t, PROTO_SESSION)
            await stream.write(data)
            with trio.move_on_after(1):
                while await stream.read(65536):
                    pass
            await reset_quietly(stream)
        out["closed"] += 1 + len(wires)
    except Exception:
        out["reset"] += 1 + len(wires)
    return out


async def pull_and_blob_junk(h: Hostile, t: Target) -> Outcomes:
    """Pull requests that are junk, ask for others' personal messages or absurd rounds;
    blob requests of the wrong length or for digests nobody has."""
    out: Outcomes = Counter()
    for req in (os.urandom(40), encode(PullRequest(kind="personal", round=h.round_hint,
                                                   tag="masked")),
                encode(PullRequest(kind="announce", round=2**53)),
                encode(PullRequest(kind="nonsense")), b"\x00" * 2000):
        out[await h.exchange(t, PROTO_PULL, frame(req))] += 1
    for req in (os.urandom(31), os.urandom(32), b""):
        out[await h.exchange(t, PROTO_BLOB, frame(req))] += 1
    return out


async def http_junk(h: Hostile, t: Target) -> Outcomes:
    """HTTP: junk paths and methods, bad parameters, bodies that are too large, not JSON or
    on a GET, header floods, and a prompt search a stats coordinator does not serve."""
    assert h.http is not None and t.http is not None
    out: Outcomes = Counter()
    requests = [
        ("GET", "/" + os.urandom(6).hex(), None, None),
        ("GET", "/rounds/" + "9" * 300, None, None),
        ("GET", "/rounds?limit=-5", None, None),
        ("GET", "/peers?limit=100000", None, None),
        ("DELETE", "/model", None, None),
        ("POST", "/post_data/1", b"{not json", None),
        ("POST", "/post_data/1", b"{" + b" " * 70000 + b"}", None),
        ("POST", "/post_data/1", b'{"height": 1e9, "weight": -5}', None),
        ("GET", "/peers", b"x" * 60000, None),
        ("GET", "/health", None, {f"x-junk-{i}": "y" * 100 for i in range(200)}),
        ("POST", "/prompt", b'{"target_output": "x", "fitness": {"embedding": 1}}', None),
    ]
    for method, path, body, headers in requests:
        try:
            r = await h.http.request(method, t.http + path, content=body, headers=headers)
            out[f"{r.status_code // 100}xx" if r.status_code != 200 else "200"] += 1
        except httpx.HTTPError:
            out["closed"] += 1
    return out


async def http_slow(h: Hostile, t: Target) -> Outcomes:
    """A body cut short, and a request whose answer is never read."""
    assert t.http is not None
    host, port = t.http.removeprefix("http://").split(":")
    out: Outcomes = Counter()
    for data in (b"POST /post_data/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{",
                 b"GET /peers?limit=1000 HTTP/1.1\r\nHost: x\r\n\r\n"):
        try:
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(data)
            await stream.aclose()
            out["sent"] += 1
        except OSError:
            out["refused"] += 1
    return out


Attack = Callable[[Hostile, Target], Awaitable[Outcomes]]
LAYERS: dict[str, list[tuple[Attack, bool]]] = {  # (attack, also aimed at a peer)
    "tcp (before the handshake)": [(tcp_noise, True), (tcp_huge_prefix, True),
                                   (tcp_bad_security, True)],
    "multistream": [(multistream_junk, True), (multistream_oversize, True)],
    "yamux": [(yamux_over_window, True), (yamux_bad_frames, True),
              (yamux_stream_flood, False)],
    "meshsub RPCs": [(meshsub_rpcs, True)],
    "gossip topics": [(topic_junk, True)],
    "stream protocols": [(submit_junk, False), (session_junk, False),
                         (pull_and_blob_junk, True)],
    "HTTP": [(http_junk, False), (http_slow, False)],
}


async def enroll(h: Hostile, coordinator: Target) -> bool:
    """Admit ``mallory`` (it attacks from inside as well as outside)."""
    wire = seal(h.mallory, ENROLL, enroll_round(time.time()), encode(Enroll(workloads=["stats"])))
    peer = await dial(h.host, coordinator.addr)
    stream = await h.host.new_stream(peer, [TProtocol(PROTO_SUBMIT)])
    await stream.write(frame(wire))
    head = await read_some(stream, 4)
    body = await read_some(stream, struct.unpack(">I", head)[0]) if head else None
    await reset_quietly(stream)
    return body is not None and decode(body, SubmitAck).accepted
