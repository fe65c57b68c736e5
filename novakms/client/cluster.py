"""The trio cluster client: finds healthy KMS nodes by itself and fails over between them.

Built from the chain (:meth:`ClusterClient.from_chain`: the active KMS operators, each with its
registered address and wallet, so the wallet every node must prove comes from the chain) or from
a static list of ``(address, wallet)`` (:meth:`ClusterClient.from_nodes`). It keeps one
:class:`~novakms.client.aio.Client` connection per node it uses (dialed on first use, redialed
after a loss), probes every node (``health`` latency, ``status`` readiness) on entry and every
``probe_interval``, re-reads the membership every ``membership_interval``, and sends each call
to the best node, failing over and retrying what is safe to retry. The decisions — ranking,
what is retried, the backoff — are the pure :mod:`novakms.client.cluster_core`; its docstring
says exactly what is retried, and what a caller sees when a retried conditional write meets
its own first attempt.

Every op returns what the single-node :class:`~novakms.client.aio.Client` returns and raises
the errors of :mod:`novakms.errors`; :meth:`ClusterClient.last_call` tells which node answered
this task's latest call (and every attempt it took).

The prober and the membership reader run in a nursery that lives exactly as long as the
``async with`` block; they never raise into it (their failures only mark nodes down, or keep
the last membership read).

Example::

    async with ClusterClient.from_chain(rpc_url, kms_registry, nova_app_registry, signer) as kms:
        key = (await kms.derive("disk/encryption")).key
        print(kms.last_call().answered_by)
"""

from __future__ import annotations

import itertools
import random as _random
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from types import TracebackType
from typing import Any, TypeVar

import trio

from novakms.chain.members import read_async, read_kms_nodes
from novakms.chain.rpc import JsonRpcClient, normalize_address
from novakms.client.aio import Client
from novakms.client.cluster_core import (
    CallPlan,
    CallTrace,
    ClusterSettings,
    Member,
    NodeTable,
    NodeView,
    Safety,
    Verdict,
    is_answer,
    members,
    op_safety,
)
from novakms.client.results import (
    CertIssued,
    Ciphertext,
    DeleteResult,
    DeriveResult,
    Health,
    KeyAttestation,
    KVItem,
    KVPage,
    Nodes,
    Plaintext,
    PublicKey,
    PutResult,
    Signature,
    Status,
)
from novakms.crypto.signer import Signer
from novakms.errors import NovaKMSError, TransportError, UsageError
from novakms.log import get_logger
from novakms.net.dial import Dialer

__all__ = ["ClusterClient"]

T = TypeVar("T")

_LAST_CALL: ContextVar[tuple[int, CallTrace] | None] = ContextVar(
    "novakms_cluster_last_call", default=None
)
_TOKENS = itertools.count(1)


class _Dial:
    """A dial in progress: the callers that need the same node wait for its outcome."""

    __slots__ = ("client", "done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.client: Client | None = None
        self.error: NovaKMSError | None = None


class _Node:
    """The connection to one member (at most one) and the calls in flight on it."""

    __slots__ = ("client", "dial", "inflight", "member")

    def __init__(self, member: Member) -> None:
        self.member = member
        self.client: Client | None = None
        self.dial: _Dial | None = None
        self.inflight = 0


class ClusterClient:
    """A client of a KMS cluster (trio). Create with :meth:`from_chain` or :meth:`from_nodes`,
    then use as an async context manager.

    Args:
        nodes: the initial members (a static list; empty when ``membership`` reads them).
        signer: the app's wallet signer; None calls anonymously (``health``, ``status``,
            ``nodes``, ``cert.ca`` only).
        settings: timing and bounds.
        membership: reads the current members (from the chain); None keeps ``nodes``.
        random: a float in [0, 1) (load spreading, backoff jitter); tests pass a seeded one.
        dial: opens streams instead of the network (tests), as in ``Client.connect``.
        on_close: awaited last when the client closes (the chain reader's HTTP client).
    """

    def __init__(
        self,
        nodes: Iterable[Member | tuple[str, str]] = (),
        *,
        signer: Signer | None,
        settings: ClusterSettings | None = None,
        membership: Callable[[], Awaitable[list[Member]]] | None = None,
        random: Callable[[], float] | None = None,
        dial: Dialer | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings or ClusterSettings()
        self._signer = signer
        self._membership = membership
        self._random = random or _random.Random().random  # noqa: S311  (load spreading, jitter)
        self._dial = dial
        self._on_close = on_close
        start = members(nodes)
        self._table = NodeTable(start, self.settings.table)
        self._nodes = {m.address: _Node(m) for m in start}
        self._retired: list[_Node] = []
        self._token = next(_TOKENS)
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None
        self._closing = False
        self._log = get_logger("novakms.client.cluster")
        self.membership_error: str | None = None  # the last failed membership read, if any

    @classmethod
    def from_chain(
        cls,
        rpc_url: str,
        kms_registry: str,
        nova_app_registry: str,
        signer: Signer | None,
        *,
        block_tag: str = "finalized",
        rpc_timeout: float = 5.0,
        settings: ClusterSettings | None = None,
        random: Callable[[], float] | None = None,
    ) -> ClusterClient:
        """A client of the KMS nodes the registries list (see :mod:`novakms.chain.members`).

        Args:
            rpc_url: the chain's JSON-RPC endpoint.
            kms_registry: the KMSRegistry address.
            nova_app_registry: the NovaAppRegistry (proxy) address.
            signer: the app's wallet signer.
            block_tag: the block the registries are read at (``finalized``, as the nodes do).
            rpc_timeout: seconds for each chain read.

        Raises:
            ValueError: a registry address or the RPC URL is malformed.
        """
        kms_address, nova_address = (
            normalize_address(kms_registry),
            normalize_address(nova_app_registry),
        )
        rpc = JsonRpcClient(rpc_url, timeout=rpc_timeout)

        async def eth_call(to: str, data: bytes) -> bytes:
            return await rpc.eth_call(to, data, block_tag)

        async def membership() -> list[Member]:
            read = read_kms_nodes(nova_app_registry=nova_address, kms_registry=kms_address)
            return [Member(n.address, n.wallet) for n in await read_async(read, eth_call)]

        return cls(
            signer=signer,
            settings=settings,
            membership=membership,
            random=random,
            on_close=rpc.aclose,
        )

    @classmethod
    def from_nodes(
        cls,
        nodes: Iterable[tuple[str, str]],
        signer: Signer | None,
        *,
        settings: ClusterSettings | None = None,
        random: Callable[[], float] | None = None,
    ) -> ClusterClient:
        """A client of a static list of ``(address, wallet)`` (never re-read)."""
        return cls(nodes, signer=signer, settings=settings, random=random)

    # -- lifetime ------------------------------------------------------------------------

    async def __aenter__(self) -> ClusterClient:
        """Read the membership (from the chain), probe every node, start the background loops.

        Raises:
            ChainUnavailable: the first membership read failed.
        """
        if self._nursery is not None:
            raise UsageError("a ClusterClient is entered once")
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        try:
            if self._membership is not None:
                await self.refresh_members()
            await self.probe()
            self._nursery.start_soon(self._probe_loop)
            if self._membership is not None:
                self._nursery.start_soon(self._membership_loop)
        except BaseException as exc:
            await self._shutdown(exc)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._shutdown(exc)

    async def _shutdown(self, exc: BaseException | None) -> None:
        # The body's exception is not handed to the nursery: it propagates as it was raised,
        # never wrapped in an ExceptionGroup with the (cancelled) background loops.
        assert self._nursery is not None
        self._closing = True
        self._nursery.cancel_scope.cancel()
        try:
            await self._nursery_cm.__aexit__(None, None, None)
        finally:
            with trio.CancelScope(shield=True):
                for node in [*self._nodes.values(), *self._retired]:
                    if node.client is not None:
                        await node.client.aclose()
                self._retired.clear()
                if self._on_close is not None:
                    await self._on_close()

    # -- what the client knows ------------------------------------------------------------

    def view(self) -> tuple[NodeView, ...]:
        """Every member and what is known of it (readiness, latency, down, calls in flight)."""
        return self._table.view(trio.current_time())

    def last_call(self) -> CallTrace | None:
        """How this task's latest call on this client went (None before its first).

        ``last_call().answered_by`` is the node whose answer the call returned (or raised);
        ``attempts`` lists every attempt with its error. Kept per trio task (a context
        variable), so concurrent tasks each see their own.
        """
        value = _LAST_CALL.get()
        return value[1] if value is not None and value[0] == self._token else None

    # -- membership and probes ------------------------------------------------------------

    async def refresh_members(self) -> None:
        """Read the membership now (a static client keeps its list).

        Raises:
            ChainUnavailable: the chain could not be read (the membership is kept).
        """
        if self._membership is None:
            return
        found = await self._membership()
        added, removed = self._table.set_members(found)
        for member in removed:
            node = self._nodes.pop(member.address)
            self._retired.append(node)
            self._log.info("node_left", node=member.address, wallet=member.wallet)
        for member in added:
            self._nodes[member.address] = _Node(member)
            self._log.info("node_joined", node=member.address, wallet=member.wallet)
        self._close_retired()
        if added:
            async with trio.open_nursery() as nursery:
                for member in added:
                    nursery.start_soon(self._probe_one, member.address)

    async def probe(self) -> None:
        """Probe every node now, concurrently (each probe bounded by ``attempt_timeout`` per
        step: dial, ``health``, ``status``)."""
        async with trio.open_nursery() as nursery:
            for address in list(self._nodes):
                nursery.start_soon(self._probe_one, address)

    async def _probe_one(self, address: str) -> None:
        try:
            client = await self._connected(address)
            started = trio.current_time()
            await client.health()
            latency = trio.current_time() - started
            status = await client.status()
        except NovaKMSError as exc:
            self._table.failed(address, trio.current_time())
            self._log.debug("probe_failed", node=address, code=exc.code, error=exc.message)
            return
        self._table.probed(address, latency=latency, ready=status.ready and not status.syncing)

    async def _probe_loop(self) -> None:
        while True:
            await trio.sleep(self.settings.probe_interval)
            try:
                await self.probe()
            except Exception:  # a bug: keep the client alive, say so
                self._log.exception("probe_crashed")

    async def _membership_loop(self) -> None:
        while True:
            await trio.sleep(self.settings.membership_interval)
            try:
                await self.refresh_members()
                self.membership_error = None
            except NovaKMSError as exc:
                if self.membership_error != exc.message:
                    self._log.warning("membership_read_failed", error=exc.message)
                self.membership_error = exc.message
            except Exception:
                self._log.exception("membership_crashed")

    # -- connections ----------------------------------------------------------------------

    async def _connected(self, address: str) -> Client:
        """The node's connection, dialed now if there is none (one dial at a time per node)."""
        node = self._nodes.get(address)
        if node is None:
            raise TransportError(f"{address} is no longer a member")
        if node.client is not None and node.client.usable:
            return node.client
        dial = node.dial
        if dial is not None:
            await dial.done.wait()
            if dial.error is not None:
                raise dial.error.fresh()
            if dial.client is None:
                raise TransportError(f"the dial to {address} was abandoned")
            return dial.client
        dial = node.dial = _Dial()
        try:
            dial.client = await Client.connect(
                address,
                signer=self._signer,
                expect_wallet=node.member.wallet,
                timeout=self.settings.attempt_timeout,
                dial=self._dial,
            )
        except NovaKMSError as exc:
            dial.error = exc
            raise
        finally:
            node.dial = None
            dial.done.set()
        old, node.client = node.client, dial.client
        if old is not None:
            self._close_soon(old)
        return dial.client

    def _close_soon(self, client: Client) -> None:
        if self._closing or self._nursery is None:
            return  # closed by the shutdown, which closes every connection
        self._nursery.start_soon(client.aclose)

    def _close_retired(self) -> None:
        for node in [n for n in self._retired if n.inflight == 0]:
            self._retired.remove(node)
            if node.client is not None:
                self._close_soon(node.client)

    # -- one call -------------------------------------------------------------------------

    def _note(self, address: str, verdict: Verdict) -> None:
        now = trio.current_time()
        if verdict.node == "down":
            self._table.failed(address, now)
        elif verdict.node == "not_ready":
            self._table.not_ready(address, now)

    async def _call(self, op: str, safety: Safety, fn: Callable[[Client], Awaitable[T]]) -> T:
        plan = CallPlan(op=op, safety=safety, policy=self.settings.retry, start=trio.current_time())
        try:
            while True:
                now = trio.current_time()
                step = plan.next(self._table.ranked(now, self._random), now, self._random)
                if step is None:
                    raise plan.error()
                if step.delay > 0:
                    await trio.sleep(step.delay)
                address = step.node
                try:
                    client = await self._connected(address)
                except NovaKMSError as exc:
                    verdict = plan.failed(address, exc, sent=False, answered=False)
                    self._note(address, verdict)
                    if verdict.retry:
                        continue
                    raise plan.error() from None
                node = self._nodes.get(address)
                if node is not None:
                    node.inflight += 1
                self._table.started(address)
                try:
                    result = await fn(client)
                except NovaKMSError as exc:
                    answered = is_answer(exc, connection_usable=client.usable)
                    verdict = plan.failed(address, exc, sent=True, answered=answered)
                    self._note(address, verdict)
                    if verdict.retry:
                        continue
                    raise plan.error() from None
                finally:
                    self._table.finished(address)
                    if node is not None:
                        node.inflight -= 1
                    self._close_retired()
                plan.succeeded(address)
                self._table.succeeded(address)
                return result
        finally:
            _LAST_CALL.set((self._token, plan.trace()))

    # -- the operations (each returns what the single-node Client returns) ---------------

    async def health(self) -> Health:
        """``health`` of the node that answers (``last_call().answered_by``)."""
        return await self._call("health", "safe", lambda c: c.health())

    async def status(self) -> Status:
        """``status`` of the node that answers."""
        return await self._call("status", "safe", lambda c: c.status())

    async def nodes(self) -> Nodes:
        """``nodes`` as the answering node sees them."""
        return await self._call("nodes", "safe", lambda c: c.nodes())

    async def derive(
        self, path: str, *, context: str | None = None, length: int | None = None
    ) -> DeriveResult:
        """``derive`` (retried on another node when one fails: every node derives the same)."""
        return await self._call(
            "derive", "safe", lambda c: c.derive(path, context=context, length=length)
        )

    async def kv_get(self, key: str) -> KVItem:
        """``kv.get`` (retried elsewhere on failure)."""
        return await self._call("kv.get", "safe", lambda c: c.kv_get(key))

    async def kv_put(
        self,
        key: str,
        value: bytes,
        *,
        ttl_ms: int | None = None,
        if_version: str | None = None,
        acks: int | None = None,
    ) -> PutResult:
        """``kv.put``. With ``if_version`` it is retried like a read (a ``conflict`` after a
        lost answer has ``details["outcome"] == "unknown"``); without, it is never sent twice."""
        return await self._call(
            "kv.put",
            op_safety("kv.put", if_version=if_version),
            lambda c: c.kv_put(key, value, ttl_ms=ttl_ms, if_version=if_version, acks=acks),
        )

    async def kv_delete(self, key: str, *, if_version: str | None = None) -> DeleteResult:
        """``kv.delete`` (retried only with ``if_version``, as :meth:`kv_put`)."""
        return await self._call(
            "kv.delete",
            op_safety("kv.delete", if_version=if_version),
            lambda c: c.kv_delete(key, if_version=if_version),
        )

    async def kv_list(
        self, *, prefix: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> KVPage:
        """``kv.list`` (a cursor of one node is valid on every node: it is the last key)."""
        return await self._call(
            "kv.list", "safe", lambda c: c.kv_list(prefix=prefix, limit=limit, cursor=cursor)
        )

    async def keys_public(self, name: str, alg: str) -> PublicKey:
        """``keys.public`` (every node has the same keys)."""
        return await self._call("keys.public", "safe", lambda c: c.keys_public(name, alg))

    async def keys_attest(self, name: str, alg: str) -> KeyAttestation:
        """``keys.attest`` (retried elsewhere: only the signing node differs)."""
        return await self._call("keys.attest", "safe", lambda c: c.keys_attest(name, alg))

    async def sign(
        self,
        name: str,
        alg: str,
        *,
        digest: bytes | None = None,
        eip191: bytes | str | None = None,
        eip712: tuple[bytes, bytes] | None = None,
        message: bytes | None = None,
        der: bool = False,
    ) -> Signature:
        """``sign`` (retried elsewhere: every node signs with the same key)."""
        return await self._call(
            "sign",
            "safe",
            lambda c: c.sign(
                name, alg, digest=digest, eip191=eip191, eip712=eip712, message=message, der=der
            ),
        )

    async def encrypt(self, name: str, plaintext: bytes, *, aad: bytes | None = None) -> Ciphertext:
        """``encrypt`` (retried elsewhere: nothing is stored)."""
        return await self._call("encrypt", "safe", lambda c: c.encrypt(name, plaintext, aad=aad))

    async def decrypt(self, ciphertext: bytes, *, aad: bytes | None = None) -> Plaintext:
        """``decrypt`` (any node opens what any node sealed)."""
        return await self._call("decrypt", "safe", lambda c: c.decrypt(ciphertext, aad=aad))

    async def cert_ca(self, app_id: int) -> str:
        """``cert.ca`` (every node serves the same certificate)."""
        return await self._call("cert.ca", "safe", lambda c: c.cert_ca(app_id))

    async def cert_sign(self, csr: str | bytes, *, days: int | None = None) -> CertIssued:
        """``cert.sign`` (never sent twice: a lost answer is raised)."""
        return await self._call("cert.sign", "unsafe", lambda c: c.cert_sign(csr, days=days))
