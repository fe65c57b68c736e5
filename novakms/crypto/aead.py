"""Values sealed at rest: AES-256-GCM under an app's internal data key.

The associated data binds the app id and the key name, so a sealed value moved to another key
or another app's namespace fails to open. Nonces are random 96-bit values drawn by the caller's
injected RNG (a value is sealed once per write; 2^32 writes per key stay far below the GCM
random-nonce bound for a per-app key).
"""

from __future__ import annotations

import functools
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from novakms.crypto.kdf import derive_internal_key
from novakms.errors import SealError

__all__ = ["NONCE_SIZE", "SEAL_OVERHEAD", "data_key", "open_value", "seal_value"]

NONCE_SIZE = 12
TAG_SIZE = 16
SEAL_OVERHEAD = NONCE_SIZE + TAG_SIZE
_AAD_LABEL = b"novakms/1 kv-value"
DATA_KEY_LABEL = "kv-data-key"


def data_key(*, master_secret: bytes, app_id: int) -> bytes:
    """The app's internal data key (PROTOCOL.md §9.2, label ``kv-data-key``; never derivable
    through the app-facing ``derive`` operation)."""
    return derive_internal_key(master_secret=master_secret, label=DATA_KEY_LABEL, fields=[app_id])


_AAD_HEAD = struct.pack(">I", len(_AAD_LABEL)) + _AAD_LABEL
#: Ciphers by data key: an AESGCM object's key setup costs more than sealing a small value.
_CIPHERS: dict[bytes, AESGCM] = {}
_CIPHERS_SIZE = 1024


@functools.lru_cache(maxsize=4096)  # pure; the same keys are read again and again
def _aad(app_id: int, name: str) -> bytes:
    """``u32be(len) || part`` for the label, the decimal app id and the UTF-8 key name."""
    app = str(app_id).encode()
    raw = name.encode("utf-8")
    return _AAD_HEAD + len(app).to_bytes(4, "big") + app + len(raw).to_bytes(4, "big") + raw


def _cipher(key: bytes) -> AESGCM:
    """The AES-256-GCM cipher of ``key``, kept for the most recent keys (a bounded memo)."""
    cipher = _CIPHERS.get(key)
    if cipher is None:
        cipher = AESGCM(key)  # raises for a key that is not 16, 24 or 32 bytes
        if len(_CIPHERS) >= _CIPHERS_SIZE:
            del _CIPHERS[next(iter(_CIPHERS))]
        _CIPHERS[bytes(key)] = cipher
    return cipher


def seal_value(*, key: bytes, app_id: int, name: str, value: bytes, nonce: bytes) -> bytes:
    """Seal ``value``: returns nonce ‖ ciphertext ‖ tag.

    Raises:
        ValueError: the nonce is not 12 bytes or the key not 32.
    """
    if len(nonce) != NONCE_SIZE:
        raise ValueError("nonce must be 12 bytes")
    return nonce + _cipher(key).encrypt(nonce, value, _aad(app_id, name))


def open_value(*, key: bytes, app_id: int, name: str, sealed: bytes) -> bytes:
    """Open a value sealed by :func:`seal_value` for exactly this app id and key name.

    Raises:
        SealError: anything but a genuine value for this app and name.
    """
    if len(sealed) < SEAL_OVERHEAD:
        raise SealError("sealed value is truncated")
    try:
        return _cipher(key).decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], _aad(app_id, name))
    except InvalidTag:
        raise SealError("sealed value does not open under this app and key") from None
