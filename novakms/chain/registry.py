"""Typed, read-only views of NovaAppRegistry and KMSRegistry over JSON-RPC.

KMS nodes never send transactions: this module only uses ``eth_call`` and ``eth_getLogs``, at
the configured block tag (``finalized`` by default).
"""

from __future__ import annotations

from typing import Any

from novakms.auth.cache import ChainEvent, guardians_from_event
from novakms.auth.guardians import GuardianSet, guardian_set
from novakms.auth.model import App, AppVersion, Instance
from novakms.chain import abi
from novakms.chain.rpc import JsonRpcClient
from novakms.crypto.eth import normalize_wallet
from novakms.errors import ChainUnavailable, GuardianSetError, RpcError

__all__ = ["RegistryReader"]

_MAX_LOG_RANGE = 2_000  # blocks per eth_getLogs request (providers cap the range)
_GUARDIAN_EVENTS = ("GuardiansSet", "GuardiansCleared")


class RegistryReader:
    """Reads the two registries.

    Args:
        rpc: the JSON-RPC client.
        nova_app_registry: NovaAppRegistry (proxy) address.
        kms_registry: KMSRegistry address.
        block_tag: ``finalized`` (default), ``safe`` or ``latest`` (development chains).
    """

    def __init__(
        self,
        rpc: JsonRpcClient,
        *,
        nova_app_registry: str,
        kms_registry: str,
        block_tag: str = "finalized",
    ) -> None:
        self.rpc = rpc
        self.nova_address = normalize_wallet(nova_app_registry)
        self.kms_address = normalize_wallet(kms_registry)
        self.block_tag = block_tag
        self._nova = abi.nova_app_registry()
        self._kms = abi.kms_registry()

    async def _call(
        self, contract: abi.Contract, address: str, function: str, *args: Any
    ) -> tuple[Any, ...]:
        try:
            data = await self.rpc.eth_call(
                address, contract.encode_call(function, *args), self.block_tag
            )
        except RpcError as exc:
            raise ChainUnavailable(f"{contract.name}.{function} failed: {exc.message}") from None
        try:
            return contract.decode_result(function, data)
        except ValueError as exc:
            raise ChainUnavailable(str(exc)) from None

    async def instance_by_wallet(self, wallet: str) -> Instance | None:
        """The wallet's instance, or None when the registry has none."""
        (struct,) = await self._call(self._nova, self.nova_address, "getInstanceByWallet", wallet)
        instance: Instance | None = self._records(abi.instance_from_tuple, struct)
        return instance

    async def app(self, app_id: int) -> App | None:
        """An app, or None when it does not exist."""
        (struct,) = await self._call(self._nova, self.nova_address, "getApp", app_id)
        app: App | None = self._records(abi.app_from_tuple, struct)
        return app

    async def version(self, app_id: int, version_id: int) -> AppVersion | None:
        """A version, or None when it does not exist."""
        (struct,) = await self._call(
            self._nova, self.nova_address, "getVersion", app_id, version_id
        )
        version: AppVersion | None = self._records(
            lambda t: abi.version_from_tuple(app_id, t), struct
        )
        return version

    @staticmethod
    def _records(convert: Any, struct: Any) -> Any:
        try:
            return convert(struct)
        except (ValueError, TypeError, IndexError) as exc:  # e.g. a status outside the enum
            raise ChainUnavailable(f"the registry returned an invalid record: {exc}") from None

    async def operators(self) -> list[str]:
        """KMSRegistry.getOperators(), lowercased."""
        (operators,) = await self._call(self._kms, self.kms_address, "getOperators")
        return [str(o).lower() for o in operators]

    async def kms_app_id(self) -> int:
        """KMSRegistry.kmsAppId() (0 when unset)."""
        (value,) = await self._call(self._kms, self.kms_address, "kmsAppId")
        return int(value)

    async def master_secret_hash(self) -> bytes | None:
        """The owner's pin of keccak256(master secret), or None when unset."""
        (value,) = await self._call(self._kms, self.kms_address, "masterSecretHash")
        return None if bytes(value) == bytes(32) else bytes(value)

    async def guardians(self) -> GuardianSet:
        """KMSRegistry.guardians(): the guardian set and its version (empty, version 0: none).

        Raises:
            ChainUnavailable: the chain cannot be read, or the answer is not a valid set (it
                breaks a rule the contract enforces: a wrong contract or a garbage answer).
        """
        wallets, enc_keys, threshold, version = await self._call(
            self._kms, self.kms_address, "guardians"
        )
        try:
            return guardian_set(
                wallets=wallets, enc_keys=enc_keys, threshold=threshold, version=version
            )
        except GuardianSetError as exc:
            raise ChainUnavailable(f"KMSRegistry returned an invalid guardian set: {exc}") from None

    async def head(self) -> tuple[int, int, int]:
        """(block number at the configured tag, its unix timestamp, the latest block number)."""
        block = await self.rpc.get_block(self.block_tag)
        latest = await self.rpc.block_number()
        if block is None:
            raise ChainUnavailable(f"the node has no {self.block_tag!r} block")
        try:
            return int(str(block["number"]), 16), int(str(block["timestamp"]), 16), latest
        except (KeyError, ValueError):
            raise ChainUnavailable("malformed block") from None

    async def events(self, from_block: int, to_block: int) -> list[ChainEvent]:
        """Registry events in ``[from_block, to_block]``, in chain order."""
        found: list[ChainEvent] = []
        start = from_block
        while start <= to_block:
            end = min(to_block, start + _MAX_LOG_RANGE - 1)
            logs = await self.rpc.get_logs([self.nova_address, self.kms_address], start, end)
            for log in logs:
                contract = (
                    self._kms
                    if str(log.get("address", "")).lower() == self.kms_address
                    else self._nova
                )
                try:
                    event = contract.decode_log(log)
                    if event is not None and event.name in _GUARDIAN_EVENTS:
                        guardians_from_event(event)  # refuse a malformed set here, typed
                except (ValueError, KeyError) as exc:
                    raise ChainUnavailable(f"undecodable registry log: {exc}") from None
                if event is not None:
                    found.append(event)
            start = end + 1
        found.sort(key=lambda e: (e.block, e.log_index))
        return found
