"""Which KMS nodes an app may dial, read from the registries (pure, sans-I/O).

An app that finds its nodes by itself (the cluster clients, :mod:`novakms.client.cluster`)
takes them from the chain, never from a user: the active KMS operators of KMSRegistry, each
with its instance's registered URL and TEE wallet, admitted by the same peer policy the nodes
apply to each other (:func:`novakms.auth.policy.authorize_peer`: instance ACTIVE and
zk-verified, app ACTIVE, version not revoked, the KMS app, an operator). The wallet each node
must prove in the handshake therefore comes from the chain too.

The read is a generator (the sans-I/O shape of h11): it yields each :class:`ChainRead` it needs
and is sent the decoded result, so the trio and the blocking clients share every decision and
differ only in how an ``eth_call`` is made (:func:`read_async`, :func:`read_sync`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from functools import partial
from typing import Any

from novakms.auth import policy
from novakms.auth.model import App, AppVersion, Instance, dialable_address
from novakms.chain import abi
from novakms.crypto.eth import normalize_wallet
from novakms.errors import ChainUnavailable, Forbidden, RpcError

__all__ = ["ChainRead", "KmsNode", "MembershipRead", "read_async", "read_kms_nodes", "read_sync"]


@dataclass(frozen=True, slots=True, kw_only=True)
class KmsNode:
    """A KMS node an app may use.

    Attributes:
        address: where to dial its KMS protocol (from the registered instance URL).
        wallet: the TEE wallet it must prove in the handshake (lowercase ``0x`` + 40 hex).
        instance_id: its registry instance id.
    """

    address: str
    wallet: str
    instance_id: int


@dataclass(frozen=True, slots=True)
class ChainRead:
    """One ``eth_call`` the membership read needs."""

    contract: abi.Contract
    to: str
    function: str
    args: tuple[Any, ...] = ()

    def calldata(self) -> bytes:
        """The call's data."""
        return self.contract.encode_call(self.function, *self.args)

    def decode(self, data: bytes) -> tuple[Any, ...]:
        """The decoded return values.

        Raises:
            ChainUnavailable: the data does not decode (a wrong contract or a garbage answer).
        """
        try:
            return self.contract.decode_result(self.function, data)
        except ValueError as exc:
            raise ChainUnavailable(str(exc)) from None


MembershipRead = Generator[ChainRead, tuple[Any, ...], list[KmsNode]]
"""The read: yields :class:`ChainRead`, is sent their decoded results, returns the nodes."""


def _record(convert: Callable[[Any], Any], struct: Any) -> Any:
    try:
        return convert(struct)
    except (ValueError, TypeError, IndexError) as exc:  # e.g. a status outside the enum
        raise ChainUnavailable(f"the registry returned an invalid record: {exc}") from None


def read_kms_nodes(*, nova_app_registry: str, kms_registry: str) -> MembershipRead:
    """The KMS nodes an app may dial, in wallet order.

    Operators that the peer policy refuses (a stopped instance, a revoked version, …) or whose
    instance URL has no dialable host and port are left out.

    Args:
        nova_app_registry: the NovaAppRegistry (proxy) address.
        kms_registry: the KMSRegistry address.

    Returns:
        The generator; its return value is the list of nodes.

    Raises:
        ChainUnavailable: a record does not decode.
    """
    nova, kms = abi.nova_app_registry(), abi.kms_registry()
    nova_address, kms_address = normalize_wallet(nova_app_registry), normalize_wallet(kms_registry)
    (operators,) = yield ChainRead(kms, kms_address, "getOperators")
    (kms_app_id,) = yield ChainRead(kms, kms_address, "kmsAppId")
    apps: dict[int, App | None] = {}
    versions: dict[tuple[int, int], AppVersion | None] = {}
    nodes = []
    for wallet in sorted({str(o).lower() for o in operators}):
        (struct,) = yield ChainRead(nova, nova_address, "getInstanceByWallet", (wallet,))
        instance: Instance | None = _record(abi.instance_from_tuple, struct)
        if instance is None:
            continue
        if instance.app_id not in apps:
            (struct,) = yield ChainRead(nova, nova_address, "getApp", (instance.app_id,))
            apps[instance.app_id] = _record(abi.app_from_tuple, struct)
        key = (instance.app_id, instance.version_id)
        if key not in versions:
            (struct,) = yield ChainRead(nova, nova_address, "getVersion", key)
            versions[key] = _record(partial(abi.version_from_tuple, key[0]), struct)
        try:
            policy.authorize_peer(
                wallet=wallet,
                instance=instance,
                app=apps[instance.app_id],
                version=versions[key],
                kms_app_id=int(kms_app_id) or None,
                is_operator=True,
            )
        except Forbidden:
            continue
        address = dialable_address(instance.instance_url)
        if address is not None:
            nodes.append(KmsNode(address=address, wallet=wallet, instance_id=instance.instance_id))
    return nodes


def _unavailable(read: ChainRead, exc: RpcError) -> ChainUnavailable:
    return ChainUnavailable(f"{read.contract.name}.{read.function} failed: {exc.message}")


def read_sync(read: MembershipRead, eth_call: Callable[[str, bytes], bytes]) -> list[KmsNode]:
    """Run the read with a blocking ``eth_call(to, data) -> bytes``.

    Raises:
        ChainUnavailable: the chain cannot be read (an ``RpcError`` is reported as one).
    """
    try:
        step = next(read)
        while True:
            try:
                data = eth_call(step.to, step.calldata())
            except RpcError as exc:
                raise _unavailable(step, exc) from None
            step = read.send(step.decode(data))
    except StopIteration as done:
        nodes: list[KmsNode] = done.value
        return nodes


async def read_async(
    read: MembershipRead, eth_call: Callable[[str, bytes], Awaitable[bytes]]
) -> list[KmsNode]:
    """Run the read with an async ``eth_call(to, data) -> bytes`` (errors as :func:`read_sync`)."""
    try:
        step = next(read)
        while True:
            try:
                data = await eth_call(step.to, step.calldata())
            except RpcError as exc:
                raise _unavailable(step, exc) from None
            step = read.send(step.decode(data))
    except StopIteration as done:
        nodes: list[KmsNode] = done.value
        return nodes
