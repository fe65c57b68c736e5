"""A blocking JSON-RPC client: ``eth_call`` for programs that do not run trio.

The blocking cluster client (:mod:`novakms.client.blocking_cluster`) reads the KMS membership
from the chain with it, so that a program using only blocking clients never loads trio. It is
the read-only subset of :class:`~novakms.chain.rpc.JsonRpcClient` over httpx's sync client,
with the same envelope checks and value parsers (:mod:`novakms.chain.jsonrpc`), the same bound
on the response size and one overall deadline per call (httpx's per-phase timeouts, and the
body read is abandoned once the deadline has passed).

Errors are those of the trio client: :class:`~novakms.errors.ChainUnavailable` (no usable
answer) and :class:`~novakms.errors.RpcError` (a JSON-RPC error object). Messages never name
the full URL (it may hold an API key).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from novakms.chain.jsonrpc import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    HEADERS,
    BlockId,
    block_param,
    check_response,
    check_timeout,
    decode_json,
    normalize_address,
    parse_data,
)
from novakms.errors import ChainUnavailable

__all__ = ["BlockingJsonRpc"]


class BlockingJsonRpc:
    """Ethereum JSON-RPC 2.0 over HTTP(S), blocking; one instance may be shared by threads.

    Args:
        url: the node's HTTP(S) endpoint.
        timeout: seconds allowed for each call, end to end.
        max_response_bytes: largest (decoded) response body accepted.

    Raises:
        ValueError: the URL is not http(s), or a bad timeout or size.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ValueError("the RPC URL is not a valid URL") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("the RPC URL must be http:// or https:// with a host")
        if isinstance(max_response_bytes, bool) or max_response_bytes < 1:
            raise ValueError("max_response_bytes must be >= 1")
        self._url = url
        port = f":{parsed.port}" if parsed.port is not None else ""
        self.endpoint = f"{parsed.scheme}://{parsed.host}{port}"
        self.timeout = check_timeout(timeout)
        self._max_response_bytes = int(max_response_bytes)
        self._ids = itertools.count(1)
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.timeout), trust_env=False, follow_redirects=False
        )

    def __repr__(self) -> str:
        return f"BlockingJsonRpc({self.endpoint!r}, timeout={self.timeout:g})"

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """One JSON-RPC call.

        Returns:
            The raw ``result`` value.

        Raises:
            ChainUnavailable: no usable answer (transport, timeout, status, size, envelope).
            RpcError: the node answered with an error object.
        """
        request_id = next(self._ids)
        payload = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
        content = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        deadline = time.monotonic() + self.timeout
        try:
            with self._client.stream(
                "POST", self._url, content=content, headers=HEADERS
            ) as response:
                body = self._read_body(response, what=method, deadline=deadline)
        except httpx.TimeoutException:
            raise ChainUnavailable(f"{method}: timed out after {self.timeout:g}s") from None
        except httpx.TransportError as exc:
            detail = str(exc)[:160] or "no detail"
            raise ChainUnavailable(f"{method}: {type(exc).__name__}: {detail}") from None
        except (httpx.HTTPError, httpx.StreamError, OSError) as exc:
            raise ChainUnavailable(f"{method}: {type(exc).__name__}") from None
        answer = decode_json(body, what=method)
        return check_response(answer, request_id=request_id, method=method)

    def _read_body(self, response: httpx.Response, *, what: str, deadline: float) -> bytes:
        if response.status_code != 200:
            raise ChainUnavailable(f"{what}: the node answered HTTP {response.status_code}")
        limit = self._max_response_bytes
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > limit:
                raise ChainUnavailable(f"{what}: answer larger than {limit} bytes")
            if time.monotonic() > deadline:  # a node trickling bytes
                raise ChainUnavailable(f"{what}: timed out after {self.timeout:g}s")
        return bytes(body)

    def eth_call(self, to: str, data: bytes, block: BlockId = "finalized") -> bytes:
        """``eth_call``: execute a call without a transaction; the returned bytes.

        Raises:
            RpcError: the call reverted or the node refused it.
            ChainUnavailable: no usable answer.
            ValueError: a bad argument.
        """
        request = {"to": normalize_address(to), "data": "0x" + bytes(data).hex()}
        result = self.call("eth_call", [request, block_param(block)])
        return parse_data(result, what="eth_call")
