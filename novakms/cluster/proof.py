"""Proof of the cluster secret on a peer channel (pure).

Before any ``sync.*`` operation each side of a ``peer`` channel proves it holds the same
master secret, without revealing it: an HMAC, under an internal key (PROTOCOL.md §9.2 label
``cluster-mac``), of the channel's transcript hash and the direction. The transcript hash binds
the proof to this one channel, so it cannot be replayed elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

from novakms.crypto.kdf import derive_internal_key

__all__ = ["PROOF_LABEL", "cluster_proof", "verify_cluster_proof"]

PROOF_LABEL = "cluster-mac"
Direction = Literal["c2s", "s2c"]


def cluster_proof(*, master_secret: bytes, transcript_hash: bytes, direction: Direction) -> bytes:
    """The 32-byte proof one side sends."""
    if len(transcript_hash) != 32:
        raise ValueError("the transcript hash must be 32 bytes")
    key = derive_internal_key(master_secret=master_secret, label=PROOF_LABEL)
    return hmac.new(
        key, b"novakms/1 peer-proof " + direction.encode() + transcript_hash, hashlib.sha256
    ).digest()


def verify_cluster_proof(
    *, master_secret: bytes, transcript_hash: bytes, direction: Direction, proof: object
) -> bool:
    """True when ``proof`` is the other side's valid proof (constant-time comparison)."""
    if not isinstance(proof, bytes) or len(proof) != 32 or len(transcript_hash) != 32:
        return False
    expected = cluster_proof(
        master_secret=master_secret, transcript_hash=transcript_hash, direction=direction
    )
    return hmac.compare_digest(expected, proof)
