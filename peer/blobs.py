"""A content-addressed blob store: bytes by SHA-256, bounded in total size, served on
:data:`PROTO_BLOB` and fetched from peers by digest (checked on arrival)."""

from __future__ import annotations

import hashlib
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable

from protocol.wire.messages import PROTO_BLOB

from .streams import StreamProtocolError

log = logging.getLogger("hypergossip.node")
BLOB_MAX = 64 * 1024 * 1024


class BlobStore:
    """Content-addressed bytes by SHA-256, bounded in total size (oldest evicted)."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._blobs: OrderedDict[bytes, bytes] = OrderedDict()
        self._size = 0

    def put(self, data: bytes) -> bytes:
        digest = hashlib.sha256(data).digest()
        if digest not in self._blobs:
            self._blobs[digest] = data
            self._size += len(data)
            while self._size > self.max_bytes and len(self._blobs) > 1:
                _, old = self._blobs.popitem(last=False)
                self._size -= len(old)
        return digest

    def get(self, digest: bytes) -> bytes | None:
        return self._blobs.get(digest)

    async def serve(self, request: bytes, remote: str) -> bytes:
        """The blob stream protocol's handler: a 32-byte digest in, the bytes out."""
        if len(request) != 32:
            raise StreamProtocolError("blob request must be a 32-byte digest")
        data = self.get(request)
        if data is None:
            raise StreamProtocolError("blob not found")
        return data


async def fetch_blob(store: BlobStore, request: Callable[..., Awaitable[bytes]], digest: bytes,
                     peers: Iterable[str], max_size: int = BLOB_MAX) -> bytes:
    """A blob by digest from the first of ``peers`` that has it (asked in random order),
    hash-checked and kept in ``store``; ``request`` is the node's request function."""
    have = store.get(digest)
    if have is not None:
        return have
    candidates = list(dict.fromkeys(peers))
    random.shuffle(candidates)
    for peer in candidates:
        try:
            data = await request(peer, PROTO_BLOB, digest, max_response=max_size, timeout=60.0)
        except StreamProtocolError as exc:
            log.debug("blob %s from %s: %s", digest.hex()[:12], peer, exc)
            continue
        if hashlib.sha256(data).digest() != digest:
            log.warning("peer %s served a blob that does not match its digest", peer)
            continue
        store.put(data)
        return data
    raise StreamProtocolError(f"blob {digest.hex()[:12]} not available from any peer")
