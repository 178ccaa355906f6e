"""The network node's streams and the peer-coordinator sessions, over real libp2p hosts.

py-libp2p 0.8.1 is not cancellation-safe: a trio cancellation in the middle of a stream
write (after Noise encrypted a message, before it was all sent) puts the connection's
cipher state out of step and kills every stream on that connection. The first test
cancels large requests at random points and then needs the same connection to work;
before ``peer.streams.guarded`` it failed with "Failed to create stream".
"""

from __future__ import annotations

import os
import random
import struct

import trio

from peer.node import NetworkNode
from peer.session import QUEUE, SessionClient, SessionDown, SessionHub
from peer.streams import StreamProtocolError
from protocol.wire.identity import Identity
from protocol.wire.messages import PROTO_SESSION, SubmitAck

from .netutil import wait_for


async def _slow(request: bytes, remote: str) -> bytes:
    await trio.sleep(60)
    return b"late"


async def _echo(request: bytes, remote: str) -> bytes:
    return request[:16]


async def test_cancelled_and_timed_out_requests_leave_the_connection_usable():
    a, b = NetworkNode(Identity.generate()), NetworkNode(Identity.generate())
    b.serve("/test/echo/1", _echo, max_request=8 << 20)
    b.serve("/test/slow/1", _slow, max_request=1024, timeout=120)
    rng = random.Random(3)
    async with a.running(), b.running():
        assert await a.connect(b.addrs[0])
        payload = os.urandom(3_000_000)  # several Noise messages: a cut lands mid-write
        cut = 0
        for _ in range(12):
            with trio.move_on_after(rng.uniform(0.0005, 0.02)) as scope:
                await a.request(b.peer_id, "/test/echo/1", payload, timeout=30)
            cut += scope.cancelled_caught
        assert cut >= 6  # most of them were really interrupted
        try:  # our own deadline: the handler never answers
            await a.request(b.peer_id, "/test/slow/1", b"x", timeout=0.5)
            raise AssertionError("a request past its deadline must fail")
        except StreamProtocolError as exc:
            assert "timed out" in str(exc)
        # the same connection still carries requests both ways
        assert await a.request(b.peer_id, "/test/echo/1", b"still here") == b"still here"
        assert a.is_connected(b.peer_id)


def _hub(node: NetworkNode, admitted: set[str], head: list[bytes],
         submitted: list[tuple[str, bytes]]) -> SessionHub:
    def on_open(peer: str) -> list[bytes] | None:
        return list(head) if peer in admitted else None

    def on_submit(envelope: bytes, peer: str) -> SubmitAck:
        submitted.append((peer, envelope))
        ok = envelope.startswith(b"good")
        return SubmitAck(accepted=ok, reason="" if ok else "bad: starts wrong")

    return SessionHub(node, on_open=on_open, on_submit=on_submit, max_submit=1 << 20)


async def test_session_pushes_in_order_acks_submits_and_refuses_strangers():
    hub_node = NetworkNode(Identity.generate())
    members = [NetworkNode(Identity.generate()) for _ in range(2)]
    stranger = NetworkNode(Identity.generate())
    submitted: list[tuple[str, bytes]] = []
    hub = _hub(hub_node, {m.peer_id for m in members}, [b"head-1", b"head-2"], submitted)
    got: dict[str, list[bytes]] = {n.peer_id: [] for n in (*members, stranger)}
    async with hub_node.running(), members[0].running(), members[1].running(), \
            stranger.running(), trio.open_nursery() as nursery:
        clients = {}
        for node in (*members, stranger):
            assert await node.connect(hub_node.addrs[0])
            clients[node.peer_id] = client = SessionClient(
                node, hub_node.peer_id, got[node.peer_id].append)
            nursery.start_soon(client.run)
        await wait_for(lambda: hub.peers() == {m.peer_id for m in members}, timeout=10)
        await wait_for(lambda: all(len(got[m.peer_id]) == 2 for m in members), timeout=10)
        assert hub.broadcast(b"to-all") == 2
        assert hub.push(members[1].peer_id, b"just-you")
        assert not hub.push(stranger.peer_id, b"nobody")
        await wait_for(lambda: got[members[1].peer_id][-1:] == [b"just-you"], timeout=10)
        assert got[members[0].peer_id] == [b"head-1", b"head-2", b"to-all"]
        assert got[members[1].peer_id] == [b"head-1", b"head-2", b"to-all", b"just-you"]

        first = clients[members[0].peer_id]
        assert (await first.submit(b"good one")).accepted
        refused = await first.submit(b"nope")
        assert not refused.accepted and refused.reason == "bad: starts wrong"
        assert submitted == [(members[0].peer_id, b"good one"), (members[0].peer_id, b"nope")]

        # the stranger's sessions are refused (reset as they open): it is never kept and
        # gets nothing
        await trio.sleep(1.0)
        assert stranger.peer_id not in hub.peers() and got[stranger.peer_id] == []
        try:
            await clients[stranger.peer_id].submit(b"good but unknown", timeout=2)
            raise AssertionError("a refused session must not carry submits")
        except SessionDown:
            pass
        assert all(p != stranger.peer_id for p, _ in submitted)
        nursery.cancel_scope.cancel()


async def test_a_peer_that_stops_reading_is_dropped_and_resyncs_on_reconnect():
    hub_node, peer = NetworkNode(Identity.generate()), NetworkNode(Identity.generate())
    hub = _hub(hub_node, {peer.peer_id}, [b"head"], [])
    async with hub_node.running(), peer.running():
        assert await peer.connect(hub_node.addrs[0])
        silent = await peer.open_stream(hub_node.peer_id, PROTO_SESSION)  # never read
        await wait_for(lambda: hub.peers() == {peer.peer_id}, timeout=10)
        pushed = 0
        while peer.peer_id in hub.peers() and pushed < 50 * QUEUE:
            hub.push(peer.peer_id, os.urandom(64 * 1024))
            pushed += 1
            await trio.sleep(0)
        assert peer.peer_id not in hub.peers(), "a peer that never reads must be dropped"
        await silent.reset()
        got: list[bytes] = []
        client = SessionClient(peer, hub_node.peer_id, got.append)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            await wait_for(lambda: got == [b"head"], timeout=10)  # current again at once
            nursery.cancel_scope.cancel()


async def test_yamux_credit_comes_back_in_halves_and_bulk_still_flows(monkeypatch):
    """py-libp2p's yamux sent a WINDOW_UPDATE after nearly every read (three extra frames
    for a small submit and its ack); ``peer.node`` credits only once half the window is
    consumed, as go-yamux does. A slow reader of 3 MB through the default window still gets
    it all: credit comes back as it drains."""
    from libp2p.stream_muxer.yamux import yamux

    updates = []
    send_window_update = yamux.YamuxStream.send_window_update

    async def counted(self, increment, skip_lock=False):
        updates.append(increment)
        await send_window_update(self, increment, skip_lock)

    monkeypatch.setattr(yamux.YamuxStream, "send_window_update", counted)
    hub_node, peer = NetworkNode(Identity.generate()), NetworkNode(Identity.generate())
    _hub(hub_node, {peer.peer_id}, [], [])
    received = bytearray()

    async def slow_sink(stream, remote: str) -> None:
        while len(received) < 3_000_000:
            received.extend(await stream.read(4096))
            await trio.sleep(0)

    hub_node.serve_stream("/test/sink/1", slow_sink)
    async with hub_node.running(), peer.running(), trio.open_nursery() as nursery:
        assert await peer.connect(hub_node.addrs[0])
        client = SessionClient(peer, hub_node.peer_id, lambda envelope: None)
        nursery.start_soon(client.run)
        await wait_for(lambda: client.up, timeout=10)
        await client.submit(b"good warm-up")
        before = len(updates)
        for i in range(100):
            assert (await client.submit(b"good %d" % i)).accepted
        assert len(updates) - before <= 2, f"{len(updates) - before} window updates for " \
            "100 small submits and their acks"

        stream = await peer.open_stream(hub_node.peer_id, "/test/sink/1")
        payload = os.urandom(3_000_000)
        with trio.fail_after(60):
            await stream.write(payload)
            await wait_for(lambda: len(received) == len(payload), timeout=60)
        assert bytes(received) == payload
        nursery.cancel_scope.cancel()


async def test_a_broadcast_while_a_session_opens_reaches_it():
    """The hub computes a session's head, then registers the session. A broadcast between the
    two (a round announced while a peer connects) once reached neither, and the peer, its
    session up, never pulled: it missed the round (3 of 100 peers in the secagg bench)."""
    hub_node, peer = NetworkNode(Identity.generate()), NetworkNode(Identity.generate())
    opening = trio.Event()

    def on_open(remote: str) -> list[bytes]:
        opening.set()
        return [b"head"]

    hub = SessionHub(hub_node, on_open=on_open, max_submit=1024,
                     on_submit=lambda envelope, remote: SubmitAck(accepted=True))
    got: list[bytes] = []

    async def announce_as_it_opens() -> None:
        await opening.wait()  # runs at the hub's first checkpoint after on_open
        hub.broadcast(b"round announced")

    async with hub_node.running(), peer.running(), trio.open_nursery() as nursery:
        nursery.start_soon(announce_as_it_opens)
        assert await peer.connect(hub_node.addrs[0])
        nursery.start_soon(SessionClient(peer, hub_node.peer_id, got.append).run)
        await wait_for(lambda: len(got) >= 2, timeout=10)
        assert got == [b"head", b"round announced"]
        nursery.cancel_scope.cancel()


async def test_signed_peer_records_are_checked_once_per_sender_and_bad_ones_refused(
        monkeypatch):
    """py-libp2p's pubsub signs and verifies a peer record in every RPC (0.2 + 0.18 ms
    each); ``peer.libp2p_patches`` verifies a sender's exact record bytes once. Gossip still flows,
    the verifier runs once per sender however many RPCs arrive, and a record with a flipped
    bit, or one presented by another peer, is refused as before."""
    from libp2p.peer.id import ID
    from libp2p.pubsub import pubsub as pubsub_module
    from libp2p.pubsub.pb import rpc_pb2

    import peer.libp2p_patches as patches

    checked = []
    real = patches._maybe_consume_signed_record

    def counted(msg, host, peer_id):
        checked.append(peer_id)
        return real(msg, host, peer_id)

    monkeypatch.setattr(patches, "_maybe_consume_signed_record", counted)
    a, b = NetworkNode(Identity.generate()), NetworkNode(Identity.generate())
    got: dict[str, set[bytes]] = {a.peer_id: set(), b.peer_id: set()}

    def keeper(node: NetworkNode):
        async def keep(data: bytes, origin: str) -> None:
            if origin != node.peer_id:  # a node's handler sees its own messages too
                got[node.peer_id].add(data)
        return keep

    async with a.running(), b.running():
        await a.subscribe("t", keeper(a))
        await b.subscribe("t", keeper(b))
        assert await b.connect(a.addrs[0])
        await wait_for(lambda: a.mesh_sizes().get("t") and b.mesh_sizes().get("t"), timeout=20)
        for i in range(30):
            await a.publish("t", b"m%d" % i)
            await b.publish("t", b"n%d" % i)
        await wait_for(lambda: len(got[a.peer_id]) == len(got[b.peer_id]) == 30, timeout=20)
        a_id, b_id = ID.from_base58(a.peer_id), ID.from_base58(b.peer_id)
        assert checked.count(a_id) == 1 and checked.count(b_id) == 1, checked

        record, _ = pubsub_module.env_to_send_in_RPC(a.host)
        rpc = rpc_pb2.RPC(senderRecord=record)
        assert pubsub_module.maybe_consume_signed_record(rpc, b.host, a_id)
        flipped = rpc_pb2.RPC(senderRecord=record[:-1] + bytes([record[-1] ^ 1]))
        assert not pubsub_module.maybe_consume_signed_record(flipped, b.host, a_id)
        third = NetworkNode(Identity.generate())
        assert not pubsub_module.maybe_consume_signed_record(
            rpc, b.host, ID.from_base58(third.peer_id))  # a's record, shown by another


def test_every_libp2p_patch_still_applies_to_the_installed_libp2p():
    """Each change peer.libp2p_patches makes names a py-libp2p attribute it replaces; after
    install() every one must hold our code. A py-libp2p that renamed or moved one of them
    (an upgrade) fails here instead of dropping a fix silently."""
    import peer.libp2p_patches as patches

    patches.install()
    assert patches.not_applied() == []


async def _drip(stream, remote: str) -> None:
    """A frame announced at 1 MB and sent a few bytes at a time, for as long as it lasts."""
    await stream.write(struct.pack(">I", 1 << 20))
    while True:
        await stream.write(b"x" * 64)
        await trio.sleep(0.0005)


async def test_a_request_timing_out_while_data_arrives_ends_and_leaves_no_reader_behind():
    # At a request's deadline its stream is reset while the remote is still writing: the
    # reader wakes to data in the middle of the reset, sees the stream not yet closed and
    # waits again, on an event py-libp2p then drops without setting. That reader waited for
    # ever (a coordinator's blob fetch hung in about one test run in three); now yamux's
    # events wake their waiters when dropped, and guarded I/O is cut RESET_GRACE after.
    a, b = NetworkNode(Identity.generate()), NetworkNode(Identity.generate())
    b.serve_stream("/test/drip/1", _drip)
    b.serve("/test/echo/1", _echo, max_request=1024)
    rng = random.Random(5)
    async with a.running(), b.running():
        assert await a.connect(b.addrs[0])
        errors = []
        for _ in range(40):
            try:
                await a.request(b.peer_id, "/test/drip/1", b"go", timeout=rng.uniform(0.02, 0.2))
            except StreamProtocolError as exc:
                errors.append(str(exc))
        assert len(errors) == 40 and all("timed out" in e for e in errors), errors
        # each read ended with its reset, none had to be cut after streams.RESET_GRACE
        assert not [e for e in errors if "outlived" in e], errors
        assert await a.request(b.peer_id, "/test/echo/1", b"still here") == b"still here"


async def test_a_service_may_run_more_than_a_thousand_tasks_at_once():
    # py-libp2p's services raised TooManyChildrenException (and stopped) on their 1,001st
    # task at once: a coordinator's pubsub, a task per joining peer, died as 1,000 joined.
    from libp2p.tools.anyio_service import Service, background_trio_service

    from peer import libp2p_patches

    libp2p_patches.install()
    release, running = trio.Event(), []

    class Many(Service):
        async def run(self) -> None:
            async def one() -> None:
                running.append(1)
                await release.wait()

            for _ in range(1500):
                self.manager.run_task(one)
            await release.wait()

    async with background_trio_service(Many()) as manager:
        await wait_for(lambda: len(running) == 1500)
        assert manager.is_running
        release.set()
