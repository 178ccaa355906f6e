"""Secure aggregation after SecAgg+ (Bell, Bonawitz, Gascon, Lepoint, Raykova, CCS 2020).

Theory of operation
-------------------
The server learns the sum of the surviving clients' vectors and nothing
else about any one of them, as long as fewer than ``threshold`` of a
client's neighbours collude with it and the server follows the protocol;
up to ``degree - threshold`` of a client's neighbours may drop out at any
phase and the sum still decodes. A server that lies about who survived
(to collect both kinds of share for one client) is stopped by the
consistency check as long as fewer than ``2 * agreement - n`` of the ``n``
participants collude with it (Bonawitz et al. 2017, section 6): each honest
client signs one survivor list and reveals shares only when ``agreement``
participants signed that same list, so two lists would need
``2 * agreement`` signatures from ``n`` participants of whom only the
colluders sign both. The defaults make ``agreement`` all but the tolerated
dropouts (``(n - 1) - floor(0.3 n)``), so that against a lying server about
``0.4 n`` colluders are tolerated on every graph; checking it costs each
client ``agreement`` signature verifications.
This file holds both sides as sans-IO state machines: callers pass messages
in and send the messages that come out; nothing here knows about sockets,
clocks or which transport carried a message (signatures are checked before
a message reaches us, so the sender's peer id here is authenticated).

Construction (Bell et al. 2020, building on Bonawitz et al. 2017, with the
consistency-check round of the actively secure variant):

* Graph: participants are placed on a cycle in an order fixed by a public
  ``graph_seed`` (AES-CTR Fisher-Yates); each client's neighbours are the
  ``degree/2`` before and after it (a Harary graph). ``degree >= n-1`` gives
  the complete graph, i.e. the original SecAgg of Bonawitz et al. 2017.
* Keys: each client makes two X25519 key pairs, ``enc`` (to encrypt shares)
  and ``mask`` (pairwise mask agreement), and a 256-bit self-mask seed ``b``;
  it advertises the public keys and ``SHA-256(b)``. A round configured to
  re-plan (``SecAggConfig.replan``, the default for rounds the coordinator runs)
  then goes on with the participants that advertised as its members: the
  graph, threshold and agreement become those of the default rule over them
  (``SecAggConfig.restricted``), so a participant silent from the start costs
  nothing but the wait.
* Shares: ``b`` and the ``mask`` private key are Shamir-shared among the
  neighbours with threshold ``threshold`` and sent through the server
  encrypted with ChaCha20-Poly1305 under HKDF(X25519(enc keys)) keys bound to
  round, sender and recipient: the server only sees ciphertext.
* Masked input: ``y_u = encode(x_u) + PRG(b_u) + sum_v sign(u, v) PRG(s_uv)``
  in Z_{2^bits}, over neighbours v that shared keys, with
  ``s_uv = HKDF(X25519(mask_sk_u, mask_pk_v))``, sign +1 if u < v else -1.
  The PRG is AES-256-CTR keyed by the full 256-bit seed.
* Consistency check: the server names the survivors (those that sent masked
  inputs); each survivor signs ``(round, survivors)`` with its peer key (its
  peer id is its Ed25519 public key) and reveals nothing until it holds at
  least ``agreement`` valid survivor signatures over the very list it signed,
  so a server cannot tell two clients different survivor sets and collect
  both kinds of shares for one client.
* Unmasking: for each neighbour u, a survivor reveals its share of ``b_u``
  if u survived, or of ``mask_sk_u`` if u dropped after sharing -- never both
  (an honest client refuses). The server rebuilds each secret from any
  ``threshold`` consistent shares (checked against ``SHA-256(b)`` or the
  advertised public key, so a lying share is detected and its sender named),
  removes self masks of survivors and pairwise masks towards dropped
  clients, and decodes the fixed-point sum.

Phases (server)::

    KEYS    --close_keys()--> SHARES --close_shares()--> MASKED
    MASKED  --close_masked()--> CONSISTENCY --close_consistency()--> UNMASK
    UNMASK  --close_unmask()--> DONE

Each ``receive_*`` accepts a message only in its phase, only from a sender
allowed there, at most once; anything else raises :class:`SecAggRejected`
(a remote fault, with ``reason``). A phase closing with fewer than
``threshold`` senders raises :class:`SecAggAbort`. Calling methods out of
order is :class:`SecAggMisuse` (a local bug).

The package: :mod:`.messages` (the schemas and errors), :mod:`.config` (a round's
parameters, the graph, key derivation and masks), :mod:`.client`, :mod:`.server`.
"""

from __future__ import annotations

from .client import SecAggClient
from .config import (
    Masker,
    SecAggConfig,
    consistency_message,
    mask_sign,
    pairwise_seed,
    prg,
    seed_commitment,
)
from .messages import (
    MAX_COMBINATIONS,
    TAG,
    Advertised,
    AdvertiseKeys,
    ConsistencySignature,
    Inbox,
    Key32,
    KeyDirectory,
    MaskedInput,
    PeerId,
    SecAggAbort,
    SecAggMisuse,
    SecAggRejected,
    ShareBundle,
    SurvivorBits,
    SurvivorList,
    SurvivorSignatures,
    UnmaskRequest,
    UnmaskShares,
)
from .server import SecAggOutcome, SecAggPhase, SecAggServer

__all__ = [
    "Masker",
    "mask_sign",
    "pairwise_seed",
    "seed_commitment",
    "Advertised",
    "AdvertiseKeys",
    "ConsistencySignature",
    "Inbox",
    "Key32",
    "KeyDirectory",
    "MAX_COMBINATIONS",
    "MaskedInput",
    "PeerId",
    "SecAggAbort",
    "SecAggClient",
    "SecAggConfig",
    "SecAggMisuse",
    "SecAggOutcome",
    "SecAggPhase",
    "SecAggRejected",
    "SecAggServer",
    "ShareBundle",
    "SurvivorBits",
    "SurvivorList",
    "SurvivorSignatures",
    "TAG",
    "UnmaskRequest",
    "UnmaskShares",
    "consistency_message",
    "prg",
]
