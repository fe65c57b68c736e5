"""The ``Signer`` interface (EIP-191 text signatures) and the local, key-file based signer.

In production the enclave signs through its Odyn API (:class:`novakms.net.odyn.OdynSigner`);
in development and tests a :class:`LocalSigner` holds a secp256k1 key in memory. Both satisfy
:class:`Signer` (async) and :class:`SyncSigner` (blocking).

This module is pure apart from :meth:`LocalSigner.from_file`, which reads one file.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

from coincurve import PrivateKey

from novakms.crypto import eth

__all__ = ["LocalSigner", "Signer", "SyncSigner"]

_MAX_KEY_FILE_SIZE = 4096


@runtime_checkable
class Signer(Protocol):
    """Something that EIP-191-signs texts as one wallet (PROTOCOL §4.5)."""

    @property
    def wallet(self) -> str:
        """The signing wallet, lowercase ``"0x"`` + 40 hex digits."""
        ...

    async def sign_text(self, text: str) -> bytes:
        """Sign ``text``.

        Args:
            text: the message.

        Returns:
            65 bytes ``r || s || v`` with ``v`` in {27, 28}, recovering to :attr:`wallet`.
        """
        ...


@runtime_checkable
class SyncSigner(Protocol):
    """Blocking variant of :class:`Signer` (CLI tools, threads)."""

    @property
    def wallet(self) -> str:
        """The signing wallet, lowercase ``"0x"`` + 40 hex digits."""
        ...

    def sign_text_sync(self, text: str) -> bytes:
        """Sign ``text``, blocking.

        Args:
            text: the message.

        Returns:
            65 bytes ``r || s || v`` with ``v`` in {27, 28}, recovering to :attr:`wallet`.
        """
        ...


class LocalSigner:
    """A signer holding a secp256k1 private key in memory (development, tests).

    Its ``repr``/``str`` show only the wallet.

    Args:
        private_key: 32-byte secp256k1 scalar in ``1 .. n-1``.

    Raises:
        ValueError: the key is invalid (the message does not contain it).
    """

    __slots__ = ("__key", "_wallet")

    def __init__(self, private_key: bytes) -> None:
        self.__key: PrivateKey = eth._private_key(private_key)
        self._wallet = eth.wallet_from_private_key(private_key)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LocalSigner:
        """Load a signer from a key file holding ``0x`` + 64 hex digits (whitespace allowed).

        Args:
            path: the key file.

        Returns:
            The signer.

        Raises:
            OSError: the file cannot be read.
            ValueError: the content is not a valid key; the message names the path and never
                contains the content.
        """
        shown = os.fsdecode(path)
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_KEY_FILE_SIZE + 1)
        if len(raw) > _MAX_KEY_FILE_SIZE:
            raise ValueError(f"{shown}: not a private key file (too large)")
        try:
            key = eth.parse_private_key(raw.decode("ascii"))
        except ValueError:  # includes UnicodeDecodeError, whose text would show a byte
            raise ValueError(
                f"{shown}: not a valid private key file (expected '0x' + 64 hex digits, "
                "a secp256k1 scalar in 1..n-1)"
            ) from None
        return cls(key)

    @property
    def wallet(self) -> str:
        """The signing wallet, lowercase ``"0x"`` + 40 hex digits."""
        return self._wallet

    def sign_text_sync(self, text: str) -> bytes:
        """EIP-191-sign ``text`` (deterministic, RFC 6979).

        Args:
            text: the message.

        Returns:
            65 bytes ``r || s || v`` with ``v`` in {27, 28}.

        Raises:
            UnicodeEncodeError: the text is not encodable as UTF-8.
        """
        return eth._sign_digest(self.__key, eth.eip191_digest(text))

    async def sign_text(self, text: str) -> bytes:
        """EIP-191-sign ``text``; CPU-only and fast (~tens of µs), so it does not yield.

        Args:
            text: the message.

        Returns:
            65 bytes ``r || s || v`` with ``v`` in {27, 28}.

        Raises:
            UnicodeEncodeError: the text is not encodable as UTF-8.
        """
        return self.sign_text_sync(text)

    def __repr__(self) -> str:
        return f"LocalSigner(wallet={self._wallet!r})"

    def __reduce__(self) -> str | tuple[object, ...]:
        """Refuse pickling/copying, which would serialise the private key.

        Raises:
            TypeError: always.
        """
        raise TypeError("LocalSigner holds a private key and cannot be pickled or copied")
