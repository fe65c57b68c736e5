"""The Ethereum JSON-RPC client: the only chain I/O of a KMS node.

Runs under **trio** (httpx reaches trio through anyio; ``AsyncWeb3`` is asyncio-only and is not
used). KMS nodes only *read* the chain: ``eth_call`` and ``eth_getLogs``, at the ``finalized``
block tag by default (DESIGN §3). Transactions are sent only by admin/dev tooling, in
:mod:`novakms.admin.tx`.

Every call is bounded twice: by httpx's per-phase timeouts (connect, read, write, pool) and by an
overall trio deadline, so a node that accepts the connection and then trickles bytes, or never
answers at all, still fails within ``timeout`` seconds. Response bodies are read incrementally
and abandoned past ``max_response_bytes``.

Errors (all :class:`ChainError`, wire code ``"unavailable"``):

* :class:`ChainUnavailable` — no usable answer: transport failure, timeout, HTTP status other
  than 200, a body that is not a JSON-RPC 2.0 response to *this* request (wrong ``id``), or a
  result of the wrong shape (e.g. a block number that is not a hex quantity);
* :class:`RpcError` — the node answered with a well-formed JSON-RPC error object; ``rpc_code``,
  ``message`` and ``data`` are kept, and for execution reverts (``eth_call``,
  ``eth_estimateGas``) :attr:`RpcError.revert_data` holds the raw revert bytes.

Error messages name the method, never the parameters or the request body, and never the full
endpoint URL (hosted RPC URLs often embed an API key); ``repr`` shows only scheme, host and port.
Results are validated strictly: quantities must be ``0x`` + 1..64 hex digits, data must be
``0x`` + an even number of hex digits, addresses and hashes must have their exact sizes, and
logs must come from the requested addresses, blocks and topics.

The envelope checks and the strict value parsers are pure and live in
:mod:`novakms.chain.jsonrpc` (re-exported here), shared with the blocking client of the cluster
client's chain reads (:mod:`novakms.chain.blocking_rpc`), which must not load trio. The error
classes live in :mod:`novakms.errors` with every other.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import httpx
import trio

from novakms.chain.jsonrpc import (
    BLOCK_TAGS,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    HEADERS,
    BlockId,
    block_param,
    check_response,
    check_timeout,
    decode_json,
    hash_text,
    normalize_address,
    parse_data,
    parse_quantity,
)
from novakms.errors import ChainUnavailable
from novakms.net.httpbody import OneShotBody

__all__ = [
    "BLOCK_TAGS",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "BlockId",
    "JsonRpcClient",
    "block_param",
    "normalize_address",
    "parse_data",
    "parse_quantity",
]


def _topic_param(topic: Any) -> str:
    """One topic filter value given by the caller: 32 bytes, or ``0x`` + 64 hex digits."""
    if isinstance(topic, bytes | bytearray):
        if len(topic) != 32:
            raise ValueError("a topic must be 32 bytes")
        return "0x" + bytes(topic).hex()
    if isinstance(topic, str) and re.fullmatch(r"0[xX][0-9a-fA-F]{64}", topic):
        return "0x" + topic[2:].lower()
    raise ValueError("a topic must be 32 bytes or '0x' + 64 hex digits")


def _topics_param(topics: Sequence[Any]) -> list[str | list[str] | None]:
    """The ``topics`` filter: up to 4 positions, each None, a topic, or a list of topics."""
    if len(topics) > 4:
        raise ValueError("at most 4 topic positions")
    out: list[str | list[str] | None] = []
    for position in topics:
        if position is None:
            out.append(None)
        elif isinstance(position, list | tuple):
            out.append([_topic_param(t) for t in position])
        else:
            out.append(_topic_param(position))
    return out


class JsonRpcClient:
    """Ethereum JSON-RPC 2.0 over HTTP(S), for trio.

    Safe for concurrent use by many tasks of one trio run (the HTTP connection pool is shared).
    The HTTP client is created on first use and must be closed with :meth:`aclose` (or use the
    client as an async context manager); it ignores proxy environment variables.

    Args:
        url: the node's HTTP(S) endpoint.
        timeout: seconds allowed for each call, end to end (also the per-phase httpx timeout).
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
        self._endpoint = f"{parsed.scheme}://{parsed.host}{port}"
        self._timeout = check_timeout(timeout)
        self._max_response_bytes = int(max_response_bytes)
        self._ids = itertools.count(1)
        self._client: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        """The endpoint URL as given (may contain credentials: do not log it)."""
        return self._url

    @property
    def endpoint(self) -> str:
        """Scheme, host and port of the endpoint (safe to log)."""
        return self._endpoint

    @property
    def timeout(self) -> float:
        """Seconds allowed for each call."""
        return self._timeout

    def __repr__(self) -> str:
        return f"JsonRpcClient({self._endpoint!r}, timeout={self._timeout:g})"

    # -- lifecycle ----------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        """The shared HTTP client, created on first use."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout), trust_env=False, follow_redirects=False
            )
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client (a later call opens a new one)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- transport ----------------------------------------------------------------------

    async def _post(self, payload: Any, *, what: str, timeout: float | None) -> Any:
        """POST one JSON-RPC payload and return the decoded JSON answer.

        Args:
            payload: the request object (or batch list).
            what: the method name(s), for messages.
            timeout: seconds for this call (default: the client's timeout).

        Returns:
            The decoded JSON value.

        Raises:
            ChainUnavailable: transport failure, timeout, status, oversize or non-JSON body.
            ValueError: the parameters are not JSON-serialisable.
        """
        seconds = self._timeout if timeout is None else check_timeout(timeout)
        try:
            content = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what}: parameters are not JSON-serialisable") from exc
        try:
            with trio.fail_after(seconds):
                client = self._http()
                request = client.build_request(
                    "POST",
                    self._url,
                    headers={**HEADERS, "content-length": str(len(content))},
                    timeout=httpx.Timeout(seconds),
                )
                request.stream = OneShotBody(content)
                response = await client.send(request, stream=True)
                try:
                    body = await self._read_body(response, what=what)
                finally:
                    await response.aclose()
        except trio.TooSlowError:
            raise ChainUnavailable(f"{what}: timed out after {seconds:g}s") from None
        except httpx.TimeoutException:
            raise ChainUnavailable(f"{what}: timed out after {seconds:g}s") from None
        except httpx.TransportError as exc:
            detail = str(exc)[:160] or "no detail"
            raise ChainUnavailable(f"{what}: {type(exc).__name__}: {detail}") from None
        except (httpx.HTTPError, httpx.StreamError, OSError) as exc:
            raise ChainUnavailable(f"{what}: {type(exc).__name__}") from None
        return decode_json(body, what=what)

    async def _read_body(self, response: httpx.Response, *, what: str) -> bytes:
        """Check the status and read the body, at most ``max_response_bytes`` of it.

        Raises:
            ChainUnavailable: status other than 200, or the body is too large.
        """
        if response.status_code != 200:
            raise ChainUnavailable(f"{what}: the node answered HTTP {response.status_code}")
        limit = self._max_response_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ChainUnavailable(f"{what}: answer larger than {limit} bytes")
        body = bytearray()
        too_large = False
        # Past the limit, stop by cancelling: Cancelled then rises from the socket read through
        # httpx's nested async generators, which all finish. Leaving the loop with break or
        # raise would abandon them unexhausted (trio warns about each one).
        with trio.CancelScope() as reading:
            async for chunk in response.aiter_bytes():
                if too_large:
                    continue
                if len(body) + len(chunk) > limit:
                    too_large = True
                    body.clear()
                    reading.cancel()
                else:
                    body += chunk
        if too_large:
            raise ChainUnavailable(f"{what}: answer larger than {limit} bytes")
        return bytes(body)

    async def call(
        self, method: str, params: Sequence[Any] = (), *, timeout: float | None = None
    ) -> Any:
        """One JSON-RPC call.

        Args:
            method: e.g. ``"eth_blockNumber"``.
            params: positional parameters (JSON-serialisable).
            timeout: seconds for this call (default: the client's timeout).

        Returns:
            The raw ``result`` value (any JSON value; the typed helpers validate it).

        Raises:
            ChainUnavailable: no usable answer.
            RpcError: the node answered with an error object.
        """
        request_id = next(self._ids)
        payload = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
        answer = await self._post(payload, what=method, timeout=timeout)
        return check_response(answer, request_id=request_id, method=method)

    async def batch(
        self, calls: Sequence[tuple[str, Sequence[Any]]], *, timeout: float | None = None
    ) -> list[Any]:
        """Several calls in one JSON-RPC batch request.

        Args:
            calls: ``(method, params)`` pairs.
            timeout: seconds for the whole batch (default: the client's timeout).

        Returns:
            The raw results, in the order of ``calls``.

        Raises:
            ChainUnavailable: no usable answer, or the answers do not match the requests one
                to one.
            RpcError: the first call (in ``calls`` order) that failed.
        """
        if not calls:
            return []
        ids = [next(self._ids) for _ in calls]
        payload = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)}
            for i, (m, p) in zip(ids, calls, strict=True)
        ]
        what = f"batch of {len(calls)} ({calls[0][0]}, ...)"
        answer = await self._post(payload, what=what, timeout=timeout)
        if isinstance(answer, dict):  # a single error object for the whole batch
            check_response({**answer, "id": ids[0]}, request_id=ids[0], method=what)
        if not isinstance(answer, list) or len(answer) != len(calls):
            raise ChainUnavailable(f"{what}: the answer is not a list of {len(calls)} responses")
        by_id: dict[int, Any] = {}
        for item in answer:
            item_id = item.get("id") if isinstance(item, dict) else None
            if not isinstance(item_id, int) or item_id not in ids or item_id in by_id:
                raise ChainUnavailable(f"{what}: the answers do not match the requests")
            by_id[item_id] = item
        return [
            check_response(by_id[i], request_id=i, method=m)
            for i, (m, _) in zip(ids, calls, strict=True)
        ]

    # -- typed helpers ------------------------------------------------------------------

    async def chain_id(self) -> int:
        """``eth_chainId``."""
        return parse_quantity(await self.call("eth_chainId"), what="eth_chainId")

    async def block_number(self) -> int:
        """``eth_blockNumber``: the latest block number."""
        return parse_quantity(await self.call("eth_blockNumber"), what="eth_blockNumber")

    async def get_block(
        self, block: BlockId = "finalized", *, full_transactions: bool = False
    ) -> dict[str, Any] | None:
        """``eth_getBlockByNumber``.

        Args:
            block: a tag (``"finalized"``, ``"latest"``, …) or a block number.
            full_transactions: include transaction objects instead of hashes.

        Returns:
            The block object as received (hex strings), or None when the node has no such
            block. ``number``, ``hash``, ``parentHash`` and ``timestamp`` are checked (except
            for ``"pending"``, whose number and hash may be null), and a numbered request must
            answer that number.

        Raises:
            ChainUnavailable: no usable answer or a malformed block.
            RpcError: the node answered with an error object.
            ValueError: a bad ``block`` argument.
        """
        param = block_param(block)
        what = "eth_getBlockByNumber"
        result = await self.call(what, [param, bool(full_transactions)])
        if result is None:
            return None
        if not isinstance(result, dict):
            raise ChainUnavailable(f"{what}: the block is not an object")
        parse_quantity(result.get("timestamp"), what=f"{what} timestamp")
        parse_data(result.get("parentHash"), what=f"{what} parentHash", size=32)
        if param == "pending":
            return result
        number = parse_quantity(result.get("number"), what=f"{what} number")
        parse_data(result.get("hash"), what=f"{what} hash", size=32)
        if param.startswith("0x") and number != int(param, 16):
            raise ChainUnavailable(f"{what}: asked for block {int(param, 16)}, got {number}")
        return result

    async def get_code(self, address: str, block: BlockId = "finalized") -> bytes:
        """``eth_getCode``: the contract code at ``address`` (``b""`` for none)."""
        result = await self.call("eth_getCode", [normalize_address(address), block_param(block)])
        return parse_data(result, what="eth_getCode")

    async def get_balance(self, address: str, block: BlockId = "finalized") -> int:
        """``eth_getBalance`` in wei."""
        result = await self.call("eth_getBalance", [normalize_address(address), block_param(block)])
        return parse_quantity(result, what="eth_getBalance")

    async def eth_call(
        self,
        to: str,
        data: bytes,
        block: BlockId = "finalized",
        *,
        sender: str | None = None,
        value: int = 0,
        gas: int | None = None,
    ) -> bytes:
        """``eth_call``: execute a call without a transaction.

        Args:
            to: the contract address.
            data: calldata.
            block: the block whose state is used (default ``"finalized"``).
            sender: ``from`` address, if it matters to the callee.
            value: wei sent with the call.
            gas: gas limit, if any.

        Returns:
            The returned bytes.

        Raises:
            RpcError: the call reverted (:attr:`RpcError.revert_data` holds the revert bytes)
                or the node refused it.
            ChainUnavailable: no usable answer.
            ValueError: a bad argument.
        """
        request: dict[str, str] = {"to": normalize_address(to), "data": "0x" + bytes(data).hex()}
        if sender is not None:
            request["from"] = normalize_address(sender)
        if value:
            request["value"] = hex(value)
        if gas is not None:
            request["gas"] = hex(gas)
        result = await self.call("eth_call", [request, block_param(block)])
        return parse_data(result, what="eth_call")

    async def get_logs(
        self,
        address: str | Sequence[str],
        from_block: BlockId,
        to_block: BlockId,
        topics: Sequence[Any] | None = None,
    ) -> list[dict[str, Any]]:
        """``eth_getLogs`` over an inclusive block range.

        Args:
            address: one contract address or several.
            from_block: first block (number or tag).
            to_block: last block (number or tag), inclusive.
            topics: topic filter by position: None (any), a topic (32 bytes or hex) or a list
                of alternatives.

        Returns:
            The log objects as received (hex strings), each checked: ``address`` is one of
            the requested ones, ``topics`` match the filter, ``data`` is hex, ``blockNumber``
            (inside the range when it is numeric), ``blockHash``, ``transactionHash``,
            ``transactionIndex`` and ``logIndex`` are well formed and ``removed`` is not true.

        Raises:
            ChainUnavailable: no usable answer or a malformed log.
            RpcError: the node refused the query (e.g. range too large).
            ValueError: a bad argument.
        """
        addresses = (
            [normalize_address(address)]
            if isinstance(address, str)
            else [normalize_address(a) for a in address]
        )
        if not addresses:
            raise ValueError("at least one address is required")
        start, end = block_param(from_block), block_param(to_block)
        low = int(start, 16) if start.startswith("0x") else None
        high = int(end, 16) if end.startswith("0x") else None
        if low is not None and high is not None and low > high:
            raise ValueError("from_block must be <= to_block")
        query: dict[str, Any] = {
            "address": addresses[0] if len(addresses) == 1 else addresses,
            "fromBlock": start,
            "toBlock": end,
        }
        topic_filter = _topics_param(topics) if topics is not None else []
        if topic_filter:
            query["topics"] = topic_filter
        what = "eth_getLogs"
        result = await self.call(what, [query])
        if not isinstance(result, list):
            raise ChainUnavailable(f"{what}: the answer is not a list")
        wanted = set(addresses)
        for log in result:
            self._check_log(log, wanted, low, high, topic_filter)
        return result

    @staticmethod
    def _check_log(
        log: Any,
        addresses: set[str],
        low: int | None,
        high: int | None,
        topic_filter: list[str | list[str] | None],
    ) -> None:
        """Validate one ``eth_getLogs`` entry against the query (see :meth:`get_logs`)."""
        what = "eth_getLogs"
        if not isinstance(log, dict):
            raise ChainUnavailable(f"{what}: a log is not an object")
        origin = "0x" + parse_data(log.get("address"), what=f"{what} address", size=20).hex()
        if origin not in addresses:
            raise ChainUnavailable(f"{what}: a log from an address that was not asked for")
        topics = log.get("topics")
        if not isinstance(topics, list) or len(topics) > 4:
            raise ChainUnavailable(f"{what}: malformed topics")
        seen = [hash_text(t, what=f"{what} topic") for t in topics]
        for position, expected in enumerate(topic_filter):
            if expected is None:
                continue
            allowed = [expected] if isinstance(expected, str) else expected
            if position >= len(seen) or seen[position] not in allowed:
                raise ChainUnavailable(f"{what}: a log that does not match the topic filter")
        parse_data(log.get("data"), what=f"{what} data")
        number = parse_quantity(log.get("blockNumber"), what=f"{what} blockNumber")
        if (low is not None and number < low) or (high is not None and number > high):
            raise ChainUnavailable(f"{what}: a log from block {number}, outside the range")
        parse_data(log.get("blockHash"), what=f"{what} blockHash", size=32)
        parse_data(log.get("transactionHash"), what=f"{what} transactionHash", size=32)
        parse_quantity(log.get("transactionIndex"), what=f"{what} transactionIndex")
        parse_quantity(log.get("logIndex"), what=f"{what} logIndex")
        if log.get("removed", False) is not False:
            raise ChainUnavailable(f"{what}: a removed (reorged) log")
