"""Sending transactions: admin and development tooling only.

**KMS nodes never send transactions**; they only read the chain through
:class:`novakms.chain.rpc.JsonRpcClient`. This module is for the admin CLI and the development
chain (deploying the registries, registering demo apps, test setup).

:class:`TxSender` signs locally with eth-account and sends raw transactions: nonce from
``eth_getTransactionCount(..., "pending")`` once, then tracked locally (re-read after a failed
send); EIP-1559 fees from ``eth_feeHistory`` (falling back to a legacy ``eth_gasPrice``
transaction when the node reports no base fee); gas from ``eth_estimateGas`` plus 20 % unless
given. A call (calldata for an address) is sent only when ``eth_getCode`` finds a contract
there: a call to an empty address would "succeed" doing nothing, so it raises
:class:`~novakms.errors.BadRequest` and nothing is sent. A transaction that reverts raises
:class:`TransactionFailed` carrying the revert data: from ``eth_estimateGas`` before sending,
or, for a mined transaction with status 0, by replaying it as ``eth_call`` on the state it ran
on; its message names the error when a packaged contract ABI declares it.

The private key is kept only in memory, only for signing: it never appears in ``repr``, error
messages or logs.
"""

from __future__ import annotations

import statistics
from typing import Any

import trio
from eth_account import Account

from novakms.chain import abi
from novakms.chain.rpc import JsonRpcClient, normalize_address, parse_data, parse_quantity
from novakms.errors import (
    BadRequest,
    ChainError,
    ChainUnavailable,
    RpcError,
    TransactionFailed,
    TransactionTimeout,
)

__all__ = ["TxSender", "decode_revert_reason"]

_GAS_MARGIN_NUM, _GAS_MARGIN_DEN = 6, 5  # +20 %
_FEE_HISTORY_BLOCKS = 5


def decode_revert_reason(data: bytes) -> str | None:
    """A human-readable reason from revert data (by :func:`novakms.chain.abi.decode_revert`).

    Args:
        data: the revert bytes.

    Returns:
        The ``Error(string)`` text, ``"panic 0x.."`` for ``Panic(uint256)``, ``Name(arg, …)``
        for a packaged contract's custom error (``InvalidStatusTransition(0, 0)``), ``"custom
        error 0x<selector>"`` for other selectors or arguments that do not decode, or None for
        data shorter than a selector.
    """
    if len(data) < 4:
        return None
    decoded = abi.decode_revert(data)
    if decoded is None:
        return f"custom error 0x{bytes(data[:4]).hex()}"
    if decoded.name == "Error" and not decoded.is_custom:
        return str(decoded.args[0])
    if decoded.name == "Panic" and not decoded.is_custom:
        return f"panic 0x{int(decoded.args[0]):02x}"
    return str(decoded)


def _describe(reason: str | None) -> str:
    return reason if reason is not None else "no reason given"


class TxSender:
    """Signs and sends transactions from one key, tracking its nonce.

    Safe for concurrent use from several tasks: nonce allocation and submission are serialised,
    waiting for receipts is not.

    Args:
        rpc: the JSON-RPC client.
        private_key: the 32-byte secp256k1 key of the sending account.
        chain_id: the chain id to sign for (default: ask the node once).
        receipt_timeout: seconds to wait for a receipt.
        poll_interval: seconds between receipt polls.

    Raises:
        ValueError: an invalid private key.
    """

    def __init__(
        self,
        rpc: JsonRpcClient,
        private_key: bytes,
        *,
        chain_id: int | None = None,
        receipt_timeout: float = 60.0,
        poll_interval: float = 0.05,
    ) -> None:
        try:
            account = Account.from_key(bytes(private_key))
        except Exception:
            raise ValueError("invalid private key") from None
        self.rpc = rpc
        self._account = account
        self._address = str(account.address).lower()
        self._chain_id = chain_id
        self._receipt_timeout = float(receipt_timeout)
        self._poll_interval = float(poll_interval)
        self._nonce: int | None = None
        self._lock = trio.Lock()

    @property
    def address(self) -> str:
        """The sending account, lowercase ``0x`` + 40 hex digits."""
        return self._address

    def __repr__(self) -> str:
        return f"TxSender(address={self._address!r})"

    def reset_nonce(self) -> None:
        """Forget the tracked nonce; the next send asks the node again."""
        self._nonce = None

    # -- pieces ---------------------------------------------------------------------------

    async def _get_chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = await self.rpc.chain_id()
        return self._chain_id

    async def _next_nonce(self) -> int:
        if self._nonce is None:
            result = await self.rpc.call("eth_getTransactionCount", [self._address, "pending"])
            self._nonce = parse_quantity(result, what="eth_getTransactionCount")
        return self._nonce

    async def _fees(self) -> dict[str, int]:
        """EIP-1559 fee fields, or a legacy ``gasPrice`` when the node has no base fee."""
        history: Any = None
        try:
            history = await self.rpc.call(
                "eth_feeHistory", [hex(_FEE_HISTORY_BLOCKS), "latest", [50]]
            )
        except RpcError:
            history = None
        base_fees = history.get("baseFeePerGas") if isinstance(history, dict) else None
        if isinstance(base_fees, list) and base_fees and base_fees[-1] is not None:
            base = parse_quantity(base_fees[-1], what="eth_feeHistory baseFeePerGas")
            tips: list[int] = []
            rewards = history.get("reward")
            if isinstance(rewards, list):
                for row in rewards:
                    if isinstance(row, list) and row:
                        tips.append(parse_quantity(row[0], what="eth_feeHistory reward"))
            tip = int(statistics.median(tips)) if tips else 0
            return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}
        price = parse_quantity(await self.rpc.call("eth_gasPrice"), what="eth_gasPrice")
        return {"gasPrice": price}

    def _call_object(self, to: str | None, data: bytes, value: int) -> dict[str, str]:
        request = {"from": self._address, "data": "0x" + data.hex(), "value": hex(value)}
        if to is not None:
            request["to"] = to
        return request

    async def _estimate_gas(self, to: str | None, data: bytes, value: int) -> int:
        try:
            result = await self.rpc.call("eth_estimateGas", [self._call_object(to, data, value)])
        except RpcError as exc:
            if exc.revert_data is None:
                raise
            reason = decode_revert_reason(exc.revert_data)
            raise TransactionFailed(
                f"the transaction would revert: {_describe(reason)}",
                revert_data=exc.revert_data,
                reason=reason,
            ) from None
        gas = parse_quantity(result, what="eth_estimateGas")
        return gas * _GAS_MARGIN_NUM // _GAS_MARGIN_DEN

    async def _wait_receipt(self, tx_hash: str) -> dict[str, Any]:
        """Poll for the receipt; transient chain errors are retried until the timeout."""
        last_error: ChainUnavailable | None = None
        with trio.move_on_after(self._receipt_timeout):
            while True:
                try:
                    receipt = await self.rpc.call("eth_getTransactionReceipt", [tx_hash])
                except ChainUnavailable as exc:
                    last_error = exc
                    receipt = None
                if receipt is not None:
                    return self._check_receipt(receipt, tx_hash)
                await trio.sleep(self._poll_interval)
        detail = f" (last error: {last_error.message})" if last_error is not None else ""
        raise TransactionTimeout(
            f"transaction {tx_hash} has no receipt after {self._receipt_timeout:g}s{detail}",
            tx_hash=tx_hash,
        )

    @staticmethod
    def _check_receipt(receipt: Any, tx_hash: str) -> dict[str, Any]:
        what = "eth_getTransactionReceipt"
        if not isinstance(receipt, dict):
            raise ChainUnavailable(f"{what}: the receipt is not an object")
        got = parse_data(receipt.get("transactionHash"), what=f"{what} transactionHash", size=32)
        if "0x" + got.hex() != tx_hash:
            raise ChainUnavailable(f"{what}: the receipt is for another transaction")
        status = parse_quantity(receipt.get("status"), what=f"{what} status")
        if status not in (0, 1):
            raise ChainUnavailable(f"{what}: unknown status {status}")
        parse_quantity(receipt.get("blockNumber"), what=f"{what} blockNumber")
        parse_quantity(receipt.get("gasUsed"), what=f"{what} gasUsed")
        created = receipt.get("contractAddress")
        if created is not None:
            parse_data(created, what=f"{what} contractAddress", size=20)
        if not isinstance(receipt.get("logs"), list):
            raise ChainUnavailable(f"{what}: malformed logs")
        return receipt

    async def _replay_revert(
        self, to: str | None, data: bytes, value: int, gas: int, block: int
    ) -> bytes | None:
        """Re-run a failed transaction as ``eth_call`` to learn its revert data.

        The replay runs on the state *before* the transaction's block (``block - 1``): exact
        when the transaction was first in its block, as under anvil's automine.
        """
        request = self._call_object(to, data, value)
        request["gas"] = hex(gas)
        try:
            await self.rpc.call("eth_call", [request, hex(max(block - 1, 0))])
        except RpcError as exc:
            return exc.revert_data
        except ChainUnavailable:
            return None
        return None

    # -- public ---------------------------------------------------------------------------

    async def send(
        self, to: str | None, data: bytes, *, value: int = 0, gas: int | None = None
    ) -> dict[str, Any]:
        """Sign, send and wait for one transaction.

        Args:
            to: the recipient, or None to create a contract.
            data: calldata (or creation code).
            value: wei to send.
            gas: gas limit; None estimates it (+20 %).

        Returns:
            The receipt (status 1), as received.

        Raises:
            BadRequest: calldata for an address without code (nothing is sent).
            TransactionFailed: it reverted (mined with status 0, or estimation reverted).
            TransactionTimeout: no receipt within the timeout.
            RpcError: the node refused it (e.g. insufficient funds, nonce too low).
            ChainUnavailable: no usable answer from the node.
            ValueError: a bad argument.
        """
        recipient = normalize_address(to) if to is not None else None
        payload = bytes(data)
        if value < 0:
            raise ValueError("value must be >= 0")
        # A plain transfer (no calldata) may go to an account; a call needs a contract.
        if recipient is not None and payload and not await self.rpc.get_code(recipient, "latest"):
            raise BadRequest(f"no contract at {recipient}: nothing was sent", address=recipient)
        async with self._lock:
            chain_id = await self._get_chain_id()
            nonce = await self._next_nonce()
            fees = await self._fees()
            gas_limit = (
                gas if gas is not None else await self._estimate_gas(recipient, payload, value)
            )
            tx: dict[str, Any] = {
                "chainId": chain_id,
                "nonce": nonce,
                "value": value,
                "data": payload,
                "gas": gas_limit,
                **fees,
            }
            if "maxFeePerGas" in fees:
                tx["type"] = 2
            if recipient is not None:
                tx["to"] = bytes.fromhex(recipient[2:])
            signed = Account.sign_transaction(tx, self._account.key)
            raw = bytes(signed.raw_transaction)
            local_hash = "0x" + bytes(signed.hash).hex()
            try:
                result = await self.rpc.call("eth_sendRawTransaction", ["0x" + raw.hex()])
            except ChainError:
                self._nonce = None  # unknown whether it was accepted: ask the node next time
                raise
            self._nonce = nonce + 1
        tx_hash = "0x" + parse_data(result, what="eth_sendRawTransaction", size=32).hex()
        if tx_hash != local_hash:
            raise ChainUnavailable("eth_sendRawTransaction answered another transaction hash")
        receipt = await self._wait_receipt(tx_hash)
        if parse_quantity(receipt["status"], what="status") == 1:
            return receipt
        block = parse_quantity(receipt["blockNumber"], what="blockNumber")
        revert_data = await self._replay_revert(recipient, payload, value, gas_limit, block)
        reason = decode_revert_reason(revert_data) if revert_data is not None else None
        raise TransactionFailed(
            f"transaction {tx_hash} reverted in block {block}: {_describe(reason)}",
            tx_hash=tx_hash,
            receipt=receipt,
            revert_data=revert_data,
            reason=reason,
        )

    async def deploy(self, bytecode: bytes, constructor_args: bytes = b"") -> str:
        """Deploy a contract.

        Args:
            bytecode: creation code.
            constructor_args: ABI-encoded constructor arguments, appended to the code.

        Returns:
            The new contract's address, lowercase.

        Raises:
            TransactionFailed: the creation reverted.
            ChainUnavailable: no contract address in the receipt, or no code at it.
            (and as :meth:`send`)
        """
        receipt = await self.send(None, bytes(bytecode) + bytes(constructor_args))
        created = receipt.get("contractAddress")
        if created is None:
            raise ChainUnavailable("the creation receipt has no contractAddress")
        address = "0x" + parse_data(created, what="contractAddress", size=20).hex()
        block = parse_quantity(receipt["blockNumber"], what="blockNumber")
        if not await self.rpc.get_code(address, block):
            raise ChainUnavailable(f"no code at the created address {address}")
        return address
