"""Signer backed by the enclave's Odyn API (``POST /v1/eth/sign``; PROTOCOL §4.5).

Inside a Nova enclave the node's wallet key never leaves Odyn; this module asks Odyn to sign.
Every answer is checked: the signature must be 65 bytes and must recover (EIP-191) to the
wallet Odyn reported at connect time, so a misbehaving signer cannot silently produce a bad
handshake. Every failure (transport, timeout, status, JSON, signature) is raised as
``Unavailable(reason="signer")``.

HTTP clients are created lazily and reused (creating one costs ~20 ms); they ignore proxy
environment variables (the API is local). Close them with :meth:`OdynSigner.aclose` /
:meth:`OdynSigner.close`, or use the signer as an (async) context manager.
"""

from __future__ import annotations

import json
import math
import threading
from types import TracebackType
from typing import Any, Self

import httpx
import trio

from novakms.config import DEFAULT_ODYN_URL
from novakms.crypto.eth import normalize_wallet, recover_wallet
from novakms.errors import InvalidSignature, Unavailable
from novakms.net.httpbody import OneShotBody

__all__ = ["DEFAULT_ODYN_URL", "OdynSigner"]

"""Where the Odyn API listens inside a Nova enclave."""

ADDRESS_PATH = "/v1/eth/address"
SIGN_PATH = "/v1/eth/sign"
_REASON = "signer"
_MAX_RESPONSE_BYTES = 64 * 1024


def _unavailable(message: str) -> Unavailable:
    """The one error type of this module.

    Args:
        message: what went wrong (never secrets, never the response body).

    Returns:
        ``Unavailable(reason="signer")``.
    """
    return Unavailable(f"odyn signer: {message}", reason=_REASON)


def _check_timeout(timeout: float) -> float:
    """Validate a timeout in seconds.

    Args:
        timeout: seconds, finite and > 0.

    Returns:
        The timeout as a float.

    Raises:
        ValueError: not a positive finite number.
    """
    value = float(timeout)
    if not (math.isfinite(value) and value > 0):
        raise ValueError("timeout must be a positive finite number of seconds")
    return value


def _json_body(response: httpx.Response, what: str) -> dict[str, Any]:
    """Check the status and decode a JSON object body.

    Args:
        response: the HTTP response (already read).
        what: name of the call, for messages.

    Returns:
        The decoded JSON object.

    Raises:
        Unavailable: non-200 status, body too large, not JSON, or not an object.
    """
    if response.status_code != 200:
        raise _unavailable(f"{what} answered HTTP {response.status_code}")
    content = response.content
    if len(content) > _MAX_RESPONSE_BYTES:
        raise _unavailable(f"{what} answer too large")
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        raise _unavailable(f"{what} answer is not JSON") from None
    if not isinstance(body, dict):
        raise _unavailable(f"{what} answer is not a JSON object")
    return body


def _parse_address(body: dict[str, Any]) -> str:
    """Extract the wallet from a ``GET /v1/eth/address`` answer.

    Args:
        body: decoded JSON object.

    Returns:
        Lowercase ``"0x"`` + 40 hex digits.

    Raises:
        Unavailable: missing or malformed ``address``.
    """
    address = body.get("address")
    if not isinstance(address, str):
        raise _unavailable("address answer has no 'address' text")
    try:
        return normalize_wallet(address)
    except ValueError:
        raise _unavailable("address answer holds a malformed address") from None


def _sign_request(text: str) -> bytes:
    """The JSON body of a sign request.

    Args:
        text: the message to sign.

    Returns:
        UTF-8 JSON ``{"message": text, "include_attestation": false}``.

    Raises:
        Unavailable: the text cannot be encoded as UTF-8 (lone surrogates).
    """
    try:
        return json.dumps(
            {"message": text, "include_attestation": False}, ensure_ascii=False
        ).encode("utf-8")
    except (UnicodeEncodeError, TypeError):
        raise _unavailable("text to sign is not encodable as UTF-8") from None


def _parse_signature(body: dict[str, Any], *, text: str, wallet: str) -> bytes:
    """Extract, normalise and verify the signature of a ``POST /v1/eth/sign`` answer.

    Args:
        body: decoded JSON object.
        text: the text that was to be signed.
        wallet: the wallet the signature must recover to.

    Returns:
        65 bytes ``r || s || v`` with ``v`` in {27, 28}.

    Raises:
        Unavailable: missing/malformed signature, or it does not recover to ``wallet``.
    """
    value = body.get("signature")
    if not isinstance(value, str) or len(value) != 132 or value[:2] not in ("0x", "0X"):
        raise _unavailable("sign answer has no '0x' + 130 hex digit 'signature'")
    digits = value[2:]
    if not digits.isascii() or not digits.isalnum():
        raise _unavailable("sign answer signature is not hex")
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        raise _unavailable("sign answer signature is not hex") from None
    v = raw[64]
    if v in (0, 1):
        v += 27
    if v not in (27, 28):
        raise _unavailable("sign answer signature has an invalid v")
    signature = raw[:64] + bytes((v,))
    try:
        recovered = recover_wallet(text=text, signature=signature)
    except InvalidSignature:
        raise _unavailable("sign answer signature is invalid") from None
    if recovered != wallet:
        raise _unavailable("sign answer signature does not recover to the signer's wallet")
    return signature


class OdynSigner:
    """EIP-191 signer through the Odyn API; implements ``Signer`` and ``SyncSigner``.

    Args:
        base_url: Odyn API root, e.g. :data:`DEFAULT_ODYN_URL`.
        wallet: the wallet Odyn signs as (normally learnt with :meth:`connect`).
        timeout: seconds for each call (connect, read, write, and overall for async calls).

    Raises:
        ValueError: malformed wallet or timeout.
    """

    def __init__(self, *, base_url: str, wallet: str, timeout: float = 5.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._wallet = normalize_wallet(wallet)
        self._timeout = _check_timeout(timeout)
        self._client: httpx.AsyncClient | None = None
        self._sync_client: httpx.Client | None = None
        self._sync_lock = threading.Lock()

    @property
    def wallet(self) -> str:
        """The signing wallet, lowercase ``"0x"`` + 40 hex digits."""
        return self._wallet

    @property
    def base_url(self) -> str:
        """The Odyn API root."""
        return self._base_url

    def __repr__(self) -> str:
        return f"OdynSigner(base_url={self._base_url!r}, wallet={self._wallet!r})"

    # -- client management -------------------------------------------------------------

    @staticmethod
    def _new_async_client(timeout: float) -> httpx.AsyncClient:
        """A fresh async HTTP client (no proxies from the environment).

        Args:
            timeout: per-phase timeout in seconds.

        Returns:
            The client.
        """
        return httpx.AsyncClient(timeout=httpx.Timeout(timeout), trust_env=False)

    @staticmethod
    def _new_sync_client(timeout: float) -> httpx.Client:
        """A fresh blocking HTTP client (no proxies from the environment).

        Args:
            timeout: per-phase timeout in seconds.

        Returns:
            The client.
        """
        return httpx.Client(timeout=httpx.Timeout(timeout), trust_env=False)

    async def aclose(self) -> None:
        """Close the async HTTP client, if one was opened."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def close(self) -> None:
        """Close the blocking HTTP client, if one was opened."""
        with self._sync_lock:
            client, self._sync_client = self._sync_client, None
        if client is not None:
            client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- async ------------------------------------------------------------------------

    @staticmethod
    async def _async_request(
        client: httpx.AsyncClient,
        method: str,
        url: str,
        *,
        deadline: float,
        what: str,
        content: bytes | None = None,
    ) -> dict[str, Any]:
        """One async call with an overall deadline; returns the JSON object answer.

        Args:
            client: the HTTP client.
            method: ``"GET"`` or ``"POST"``.
            url: full URL.
            deadline: overall time limit in seconds (the client's per-phase timeouts apply
                too).
            what: name of the call, for messages.
            content: JSON request body, if any.

        Returns:
            The decoded JSON object.

        Raises:
            Unavailable: transport failure, timeout, bad status or body.
        """
        headers = {"accept": "application/json"}
        if content is not None:
            headers["content-type"] = "application/json"
        try:
            with trio.fail_after(deadline):
                request = client.build_request(method, url, headers=headers)
                if content is not None:
                    # Not content=…: httpx would wrap it in an async generator that a broken
                    # connection leaves suspended (a ResourceWarning under trio).
                    request.headers["content-length"] = str(len(content))
                    request.stream = OneShotBody(content)
                response = await client.send(request)
        except trio.TooSlowError:
            raise _unavailable(f"{what} timed out after {deadline:g}s") from None
        except httpx.TimeoutException:
            raise _unavailable(f"{what} timed out after {deadline:g}s") from None
        except httpx.HTTPError as exc:
            raise _unavailable(f"{what} failed: {type(exc).__name__}") from None
        except OSError as exc:
            raise _unavailable(f"{what} failed: {type(exc).__name__}") from None
        return _json_body(response, what)

    @classmethod
    async def connect(
        cls,
        base_url: str = DEFAULT_ODYN_URL,
        *,
        timeout: float = 5.0,
    ) -> Self:
        """Ask Odyn for its wallet (``GET /v1/eth/address``) and build a signer.

        Args:
            base_url: Odyn API root.
            timeout: seconds for this and every later call.

        Returns:
            The signer (call :meth:`aclose` when done).

        Raises:
            Unavailable: Odyn is unreachable or answered badly (``reason="signer"``).
            ValueError: malformed timeout.
        """
        seconds = _check_timeout(timeout)
        root = base_url.rstrip("/")
        async with cls._new_async_client(seconds) as client:
            body = await cls._async_request(
                client, "GET", root + ADDRESS_PATH, deadline=seconds, what="address"
            )
        return cls(base_url=root, wallet=_parse_address(body), timeout=seconds)

    async def sign_text(self, text: str) -> bytes:
        """EIP-191-sign ``text`` through Odyn and verify the answer.

        Args:
            text: the message.

        Returns:
            65 bytes ``r || s || v`` with ``v`` in {27, 28}, recovering to :attr:`wallet`.

        Raises:
            Unavailable: transport failure, timeout, bad answer, or a signature that does not
                recover to :attr:`wallet` (``reason="signer"``).
        """
        content = _sign_request(text)
        if self._client is None:
            self._client = self._new_async_client(self._timeout)
        body = await self._async_request(
            self._client,
            "POST",
            self._base_url + SIGN_PATH,
            deadline=self._timeout,
            what="sign",
            content=content,
        )
        return _parse_signature(body, text=text, wallet=self._wallet)

    # -- blocking ---------------------------------------------------------------------

    @staticmethod
    def _sync_request(
        client: httpx.Client,
        method: str,
        url: str,
        *,
        timeout: float,
        what: str,
        content: bytes | None = None,
    ) -> dict[str, Any]:
        """One blocking call; returns the JSON object answer.

        Args:
            client: the HTTP client (its timeouts apply per phase).
            method: ``"GET"`` or ``"POST"``.
            url: full URL.
            timeout: the configured timeout, for messages.
            what: name of the call, for messages.
            content: JSON request body, if any.

        Returns:
            The decoded JSON object.

        Raises:
            Unavailable: transport failure, timeout, bad status or body.
        """
        headers = {"accept": "application/json"}
        if content is not None:
            headers["content-type"] = "application/json"
        try:
            response = client.request(method, url, content=content, headers=headers)
        except httpx.TimeoutException:
            raise _unavailable(f"{what} timed out after {timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise _unavailable(f"{what} failed: {type(exc).__name__}") from None
        except OSError as exc:
            raise _unavailable(f"{what} failed: {type(exc).__name__}") from None
        return _json_body(response, what)

    @classmethod
    def connect_sync(cls, base_url: str = DEFAULT_ODYN_URL, *, timeout: float = 5.0) -> Self:
        """Blocking :meth:`connect`.

        Args:
            base_url: Odyn API root.
            timeout: seconds for this and every later call.

        Returns:
            The signer (call :meth:`close` when done).

        Raises:
            Unavailable: Odyn is unreachable or answered badly (``reason="signer"``).
            ValueError: malformed timeout.
        """
        seconds = _check_timeout(timeout)
        root = base_url.rstrip("/")
        with cls._new_sync_client(seconds) as client:
            body = cls._sync_request(
                client, "GET", root + ADDRESS_PATH, timeout=seconds, what="address"
            )
        return cls(base_url=root, wallet=_parse_address(body), timeout=seconds)

    def sign_text_sync(self, text: str) -> bytes:
        """Blocking :meth:`sign_text`.

        Args:
            text: the message.

        Returns:
            65 bytes ``r || s || v`` with ``v`` in {27, 28}, recovering to :attr:`wallet`.

        Raises:
            Unavailable: transport failure, timeout, bad answer, or a signature that does not
                recover to :attr:`wallet` (``reason="signer"``).
        """
        content = _sign_request(text)
        with self._sync_lock:
            if self._sync_client is None:
                self._sync_client = self._new_sync_client(self._timeout)
            client = self._sync_client
        body = self._sync_request(
            client,
            "POST",
            self._base_url + SIGN_PATH,
            timeout=self._timeout,
            what="sign",
            content=content,
        )
        return _parse_signature(body, text=text, wallet=self._wallet)
