"""A content-addressed blob store: bytes by SHA-256, bounded in total size, served on
:data:`PROTO_BLOB` and fetched from peers by digest (checked on arrival).

Distribution that does not all come from the coordinator
--------------------------------------------------------
A published model is fetched by every peer at the next announcement, all at once. Were
each to fetch it from the coordinator, its upload per round would grow as N times the
model. Instead:

- the coordinator's store is a *seed* (``seed_copies``): of a large blob it serves that
  many copies to whoever asks first, and then answers "busy" to requests that do not say
  they are a last resort, pointing them at their neighbours;
- a peer's first attempt asks its neighbours (three at random: at eight, 500 peers
  opening 4,000 streams at once kept the loops so busy that stream negotiations timed
  out after 10 s) and the coordinator together; the next ones ask only the neighbours
  (the coordinator would say "busy"), backing off between attempts (0.25 s doubling
  to 4 s, jittered); from attempt ``LAST_RESORT_AT`` on it asks the neighbours, then
  the coordinator with the last-resort flag, which the coordinator always serves;
- a node asked for a blob it is fetching itself holds the request until its fetch ends
  (at most ``COMING_WAIT`` seconds) instead of saying "not found". So the blob spreads
  at the speed of transfers, from the seed's first copies out along the neighbours
  waiting on them, not at the pace of back-offs (with "not found" answers, 1,000 peers
  with about five connections each ran through their attempts before the holders had
  multiplied, and 70 % of them took a last-resort copy from the coordinator). The
  serving node's deadline covers the hold and then, afresh, the transfer (a hold cut at
  the 10-s stream deadline, or a reply left no time to be written after a long one, is a
  "not found" for a blob that was on its way);
- a node does not hold a request from a peer it is itself asking for that blob: the
  two would wait on each other. Without this rule two fetching peers that asked each
  other held each other's requests for ``COMING_WAIT`` at every attempt (20 s each time,
  80 s and more before the last resort: past a 30-s phase deadline in a 6-peer test
  under CI load); it answers "not found" at once instead. Longer circles (A waits on B,
  B on C, C on A) are not detected: each hold still ends at ``COMING_WAIT``. A rule
  that broke every circle (wait-die: hold only requests from peers ranked above us
  for that blob) refused half the holds and cost the spread dearly: fedavg at N=500
  uploaded 11.7 models a round instead of 6.7, the mean fetch took 35.7 s, not 24.8;
- fetches of one digest inside a node are coalesced (the second waits for the first).

Requests are the 32-byte digest, optionally followed by one flags byte
(``LAST_RESORT``); anything else is refused.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable

import trio

from protocol.wire.messages import PROTO_BLOB

from .limits import REPLY_RATE, STREAM_TIMEOUT
from .streams import StreamProtocolError

log = logging.getLogger("hypergossip.node")
BLOB_MAX = 64 * 1024 * 1024
BLOB_REQUEST_MAX = 33  # digest + flags
LAST_RESORT = 0x01  # flags: the requester asked its neighbours; a seed serves it anyway
SEED_LARGE = 64 * 1024  # smaller blobs are served to everyone: not worth a detour
FETCH_ATTEMPTS = 7  # a peer's attempts at a blob it needs (back-offs add up to ~12 s)
LAST_RESORT_AT = 4  # attempt (0-based) from which a request to the seed is a last resort
FIRST_BACKOFF = 0.25  # s before the second attempt; doubling, jittered by +-50 %
MAX_BACKOFF = 4.0  # s, the longest back-off
NEIGHBOURS_AT_ONCE = 3  # neighbours asked together in one attempt
COMING_WAIT = 20.0  # s a request is held for a blob its server is fetching itself
BUSY = "blob busy: fetch it from peers"


class BlobStore:
    """Content-addressed bytes by SHA-256, bounded in total size (oldest evicted).

    ``seed_copies``: None for a peer (serve whoever asks); a number for the coordinator
    (see the module's docstring)."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024, seed_copies: int | None = None):
        self.max_bytes, self.seed_copies = max_bytes, seed_copies
        self._blobs: OrderedDict[bytes, bytes] = OrderedDict()
        self._size = 0
        self.served: Counter[bytes] = Counter()  # copies served, by digest (kept blobs only)
        self.busy = 0  # requests answered "busy" (counted)
        self.not_found = 0  # requests for a blob we neither held nor were fetching
        self.last_resort = 0  # copies served to last-resort requests past seed_copies
        self._inflight: dict[bytes, trio.Event] = {}  # our fetches now, set when each ends
        self.held = 0  # requests held for a blob we were fetching (counted)
        self.held_empty = 0  # of those, holds that ended without the blob
        self.not_held = 0  # requests for a blob we were fetching, from a peer we were asking
        self._asking: Counter[tuple[bytes, str]] = Counter()  # (digest, peer) we ask now
        # our fetches that ended, by where the blob came from ("neighbour", "neighbour or
        # seed", "last resort", "failed"), and their summed and longest duration
        self.fetched: Counter[str] = Counter()
        self.fetch_seconds = self.fetch_longest = 0.0
        # our asks, by whom and how each ended ("seed: busy", "neighbour: not found", ...)
        self.asks: Counter[str] = Counter()

    @property
    def size(self) -> int:
        """Bytes of blobs held now."""
        return self._size

    def put(self, data: bytes) -> bytes:
        digest = hashlib.sha256(data).digest()
        if digest not in self._blobs:
            self._blobs[digest] = data
            self._size += len(data)
            while self._size > self.max_bytes and len(self._blobs) > 1:
                old_digest, old = self._blobs.popitem(last=False)
                self._size -= len(old)
                self.served.pop(old_digest, None)
        return digest

    def get(self, digest: bytes) -> bytes | None:
        return self._blobs.get(digest)

    async def serve(self, request: bytes, remote: str) -> bytes:
        """The blob stream protocol's handler: a 32-byte digest (and a flags byte) in, the
        bytes out."""
        if len(request) not in (32, 33):
            raise StreamProtocolError("blob request must be a 32-byte digest and a flags byte")
        digest, flags = request[:32], request[32] if len(request) == 33 else 0
        data = self.get(digest)
        if data is None and (coming := self._inflight.get(digest)) is not None:
            if not self._asking[digest, remote]:  # no circle of two
                self.held += 1
                with trio.move_on_after(COMING_WAIT):
                    await coming.wait()
                data = self.get(digest)
                self.held_empty += data is None
            else:
                self.not_held += 1
        if data is None:
            self.not_found += 1
            raise StreamProtocolError("blob not found")
        if self.seed_copies is not None and len(data) > SEED_LARGE and \
                self.served[digest] >= self.seed_copies:
            if not flags & LAST_RESORT:
                self.busy += 1
                raise StreamProtocolError(BUSY)
            self.last_resort += 1
        self.served[digest] += 1
        return data


async def fetch_blob(store: BlobStore, request: Callable[..., Awaitable[bytes]], digest: bytes,
                     peers: Iterable[str], max_size: int = BLOB_MAX, *, seed: str | None = None,
                     attempts: int = 1) -> bytes:
    """A blob by digest, hash-checked and kept in ``store``: from ``peers`` (asked in random
    order), then from ``seed`` (the coordinator), up to ``attempts`` times with back-off;
    the last attempt (and every one from ``LAST_RESORT_AT``) asks the seed as a last
    resort. ``request`` is the node's request function."""
    have = store.get(digest)
    if have is not None:
        return have
    if (other := store._inflight.get(digest)) is not None:  # coalesce with our own fetch
        await other.wait()
        if (have := store.get(digest)) is not None:
            return have
    done = store._inflight[digest] = trio.Event()
    began, source = trio.current_time(), "failed"
    try:
        data, source = await _fetch(store, request, digest, peers, max_size, seed, attempts)
        return data
    finally:
        if store._inflight.get(digest) is done:
            del store._inflight[digest]
        done.set()
        took = trio.current_time() - began
        store.fetched[source] += 1
        store.fetch_seconds += took
        store.fetch_longest = max(store.fetch_longest, took)


async def _fetch(store: BlobStore, request: Callable[..., Awaitable[bytes]], digest: bytes,
                 peers: Iterable[str], max_size: int, seed: str | None,
                 attempts: int) -> tuple[bytes, str]:
    neighbours = [p for p in dict.fromkeys(peers) if p != seed]
    # a neighbour may hold our request while it fetches the blob itself (COMING_WAIT)
    timeout = COMING_WAIT + STREAM_TIMEOUT + max_size / REPLY_RATE
    began = trio.current_time()
    for attempt in range(max(1, attempts)):
        if attempt:
            await trio.sleep(min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (attempt - 1))
                             * random.uniform(0.5, 1.5))
        with_seed = seed if attempt == 0 and attempts > 1 else None  # not a last resort
        if (data := await _ask_all(store, request, neighbours, digest, max_size,
                                   timeout, with_seed, seed)) is not None:
            log.debug("blob %s from a neighbour%s, attempt %d, after %.2f s",
                      digest.hex()[:12], " or the seed" if with_seed else "", attempt,
                      trio.current_time() - began)
            return data, "neighbour or seed" if with_seed else "neighbour"
        # between the first attempt and the last resort the seed is not asked: it would
        # only say "busy" (its copies went to the first askers), at a stream's cost to it
        last = attempt >= min(LAST_RESORT_AT, attempts - 1)
        if seed is not None and with_seed is None and last:
            data = await _ask(store, request, seed, digest + bytes([LAST_RESORT]),
                              max_size, 60.0, digest, who="last resort")
            if data is not None:
                log.debug("blob %s from the seed (last resort), attempt %d, after %.2f s",
                          digest.hex()[:12], attempt, trio.current_time() - began)
                return data, "last resort"
    raise StreamProtocolError(f"blob {digest.hex()[:12]} not available from any peer")


async def _ask_all(store: BlobStore, request: Callable[..., Awaitable[bytes]],
                   peers: list[str], digest: bytes, max_size: int,
                   timeout: float, seed: str | None = None, seed_id: str | None = None
                   ) -> bytes | None:
    """Ask ``peers`` at once (at most NEIGHBOURS_AT_ONCE of them, at random), and ``seed``
    too if given (without the last-resort flag); the first that serves the blob wins and
    the other requests are cancelled."""
    found: list[bytes] = []
    async with trio.open_nursery() as nursery:
        async def ask(peer: str) -> None:
            who = "seed" if peer == seed_id else "neighbour"
            data = await _ask(store, request, peer, digest, max_size, timeout, who=who)
            if data is not None and not found:
                found.append(data)
                nursery.cancel_scope.cancel()

        for peer in random.sample(peers, min(len(peers), NEIGHBOURS_AT_ONCE)):
            nursery.start_soon(ask, peer)
        if seed is not None:
            nursery.start_soon(ask, seed)
    return found[0] if found else None


async def _ask(store: BlobStore, request: Callable[..., Awaitable[bytes]], peer: str,
               wire: bytes, max_size: int, timeout: float,
               digest: bytes | None = None, who: str = "neighbour") -> bytes | None:
    digest = digest or wire
    store._asking[digest, peer] += 1  # while this ask is out, ``peer``'s is not held
    try:
        data = await request(peer, PROTO_BLOB, wire, max_response=max_size, timeout=timeout)
    except StreamProtocolError as exc:
        log.debug("blob %s from %s: %s", digest.hex()[:12], peer, exc)
        store.asks[f"{who}: {_why(str(exc))}"] += 1
        return None
    except trio.Cancelled:
        store.asks[f"{who}: cancelled (another answered)"] += 1
        raise
    finally:
        store._asking[digest, peer] -= 1
        if store._asking[digest, peer] <= 0:
            del store._asking[digest, peer]
    store.asks[f"{who}: served"] += 1
    if hashlib.sha256(data).digest() != digest:
        log.warning("peer %s served a blob that does not match its digest", peer)
        return None
    store.put(data)
    return data


def _why(error: str) -> str:
    """An ask's failure in a few words, for counting (peer ids and numbers left out)."""
    for key in (BUSY, "blob not found", "no stream", "timed out", "took over",
                "not supported", "handshake", "reset", "closed", "refused", "limit",
                "StreamEOF"):
        if key in error:
            return key
    return error.split(":")[-1].strip()[:40] or "error"
