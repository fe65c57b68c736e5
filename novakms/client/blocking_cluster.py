"""The blocking cluster client: :mod:`novakms.client.cluster` for programs that do not run trio.

The same decisions (:mod:`novakms.client.cluster_core`) over
:class:`~novakms.client.blocking.BlockingClient` connections, and the chain read over a
blocking JSON-RPC client (:mod:`novakms.chain.blocking_rpc`): importing it loads no trio.
There is no background thread: the membership and the probes are renewed at the start of a
call once ``membership_interval`` / ``probe_interval`` have passed (that call pays for it:
at most ``attempt_timeout`` per step of each node's probe). One instance may be shared by
threads: each node's connection serialises its calls, and calls spread over the nodes.

Example::

    with BlockingClusterClient.from_chain(rpc_url, kms_registry, nova_app_registry,
                                          LocalSigner.from_file("app.key")) as kms:
        key = kms.derive("disk/encryption").key
        print(kms.last_call().answered_by)
"""

from __future__ import annotations

import itertools
import random as _random
import threading
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from types import TracebackType
from typing import TypeVar

from novakms.chain.blocking_rpc import BlockingJsonRpc
from novakms.chain.jsonrpc import normalize_address
from novakms.chain.members import read_kms_nodes, read_sync
from novakms.client.blocking import BlockingClient
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
from novakms.crypto.signer import SyncSigner
from novakms.errors import NovaKMSError, TransportError
from novakms.log import get_logger

__all__ = ["BlockingClusterClient"]

T = TypeVar("T")

_LAST_CALL: ContextVar[tuple[int, CallTrace] | None] = ContextVar(
    "novakms_blocking_cluster_last_call", default=None
)
_TOKENS = itertools.count(1)


class _Node:
    """The connection to one member (at most one, dialed under ``lock``)."""

    __slots__ = ("client", "inflight", "lock", "member")

    def __init__(self, member: Member) -> None:
        self.member = member
        self.client: BlockingClient | None = None
        self.lock = threading.Lock()
        self.inflight = 0  # under the client's lock


class BlockingClusterClient:
    """A blocking client of a KMS cluster. Create with :meth:`from_chain` or
    :meth:`from_nodes`; use as a context manager (arguments as ``ClusterClient``)."""

    def __init__(
        self,
        nodes: Iterable[Member | tuple[str, str]] = (),
        *,
        signer: SyncSigner | None,
        settings: ClusterSettings | None = None,
        membership: Callable[[], list[Member]] | None = None,
        random: Callable[[], float] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings or ClusterSettings()
        self._signer = signer
        self._membership = membership
        self._random = random or _random.Random().random  # noqa: S311  (load spreading, jitter)
        self._on_close = on_close
        start = members(nodes)
        self._lock = threading.Lock()  # the table and the node map
        self._maintaining = threading.Lock()
        self._table = NodeTable(start, self.settings.table)
        self._nodes = {m.address: _Node(m) for m in start}
        self._retired: list[_Node] = []  # left the membership; closed once idle
        self._token = next(_TOKENS)
        self._next_probe = 0.0
        self._next_membership = 0.0
        self._log = get_logger("novakms.client.cluster")
        self.membership_error: str | None = None

    @classmethod
    def from_chain(
        cls,
        rpc_url: str,
        kms_registry: str,
        nova_app_registry: str,
        signer: SyncSigner | None,
        *,
        block_tag: str = "finalized",
        rpc_timeout: float = 5.0,
        settings: ClusterSettings | None = None,
        random: Callable[[], float] | None = None,
    ) -> BlockingClusterClient:
        """A client of the KMS nodes the registries list (as ``ClusterClient.from_chain``).

        Raises:
            ValueError: a registry address or the RPC URL is malformed.
        """
        kms_address = normalize_address(kms_registry)
        nova_address = normalize_address(nova_app_registry)
        rpc = BlockingJsonRpc(rpc_url, timeout=rpc_timeout)

        def membership() -> list[Member]:
            read = read_kms_nodes(nova_app_registry=nova_address, kms_registry=kms_address)
            nodes = read_sync(read, lambda to, data: rpc.eth_call(to, data, block_tag))
            return [Member(n.address, n.wallet) for n in nodes]

        return cls(
            signer=signer,
            settings=settings,
            membership=membership,
            random=random,
            on_close=rpc.close,
        )

    @classmethod
    def from_nodes(
        cls,
        nodes: Iterable[tuple[str, str]],
        signer: SyncSigner | None,
        *,
        settings: ClusterSettings | None = None,
        random: Callable[[], float] | None = None,
    ) -> BlockingClusterClient:
        """A client of a static list of ``(address, wallet)`` (never re-read)."""
        return cls(nodes, signer=signer, settings=settings, random=random)

    # -- lifetime ------------------------------------------------------------------------

    def __enter__(self) -> BlockingClusterClient:
        """Read the membership (from the chain) and probe every node.

        Raises:
            ChainUnavailable: the first membership read failed.
        """
        try:
            self.refresh_members()
            self.probe()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection (and the chain reader)."""
        with self._lock:
            nodes = [*self._nodes.values(), *self._retired]
            self._retired.clear()
        for node in nodes:
            if node.client is not None:
                node.client.close()
        if self._on_close is not None:
            self._on_close()

    # -- what the client knows ------------------------------------------------------------

    def view(self) -> tuple[NodeView, ...]:
        """Every member and what is known of it."""
        with self._lock:
            return self._table.view(time.monotonic())

    def last_call(self) -> CallTrace | None:
        """How this thread's latest call on this client went (as ``ClusterClient.last_call``)."""
        value = _LAST_CALL.get()
        return value[1] if value is not None and value[0] == self._token else None

    # -- membership and probes ------------------------------------------------------------

    def refresh_members(self) -> None:
        """Read the membership now (a static client keeps its list).

        Raises:
            ChainUnavailable: the chain could not be read (the membership is kept).
        """
        if self._membership is None:
            return
        found = self._membership()
        self._next_membership = time.monotonic() + self.settings.membership_interval
        with self._lock:
            added, removed = self._table.set_members(found)
            for member in removed:
                self._retired.append(self._nodes.pop(member.address))
            for member in added:
                self._nodes[member.address] = _Node(member)
        for member in removed:
            self._log.info("node_left", node=member.address, wallet=member.wallet)
        self._close_retired()
        for member in added:
            self._log.info("node_joined", node=member.address, wallet=member.wallet)
            self._probe_one(member.address)

    def probe(self) -> None:
        """Probe every node now, one after the other."""
        self._next_probe = time.monotonic() + self.settings.probe_interval
        with self._lock:
            addresses = list(self._nodes)
        for address in addresses:
            self._probe_one(address)

    def _probe_one(self, address: str) -> None:
        try:
            client = self._connected(address)
            started = time.monotonic()
            client.health()
            latency = time.monotonic() - started
            status = client.status()
        except NovaKMSError as exc:
            with self._lock:
                self._table.failed(address, time.monotonic())
            self._log.debug("probe_failed", node=address, code=exc.code, error=exc.message)
            return
        with self._lock:
            self._table.probed(address, latency=latency, ready=status.ready and not status.syncing)

    def _maintain(self) -> None:
        """Renew the membership and the probes when they are due (one thread does it)."""
        now = time.monotonic()
        due_members = self._membership is not None and now >= self._next_membership
        if not (due_members or now >= self._next_probe):
            return
        if not self._maintaining.acquire(blocking=False):
            return
        try:
            if due_members:
                try:
                    self.refresh_members()
                    self.membership_error = None
                except NovaKMSError as exc:
                    self._next_membership = now + self.settings.membership_interval
                    if self.membership_error != exc.message:
                        self._log.warning("membership_read_failed", error=exc.message)
                    self.membership_error = exc.message
            if time.monotonic() >= self._next_probe:
                self.probe()
        finally:
            self._maintaining.release()

    # -- connections ----------------------------------------------------------------------

    def _close_retired(self) -> None:
        with self._lock:
            idle = [n for n in self._retired if n.inflight == 0]
            for node in idle:
                self._retired.remove(node)
        for node in idle:
            if node.client is not None:
                node.client.close()

    def _connected(self, address: str) -> BlockingClient:
        with self._lock:
            node = self._nodes.get(address)
        if node is None:
            raise TransportError(f"{address} is no longer a member")
        with node.lock:
            if node.client is not None and node.client.usable:
                return node.client
            node.client = BlockingClient.connect(
                address,
                signer=self._signer,
                expect_wallet=node.member.wallet,
                timeout=self.settings.attempt_timeout,
            )
            return node.client

    # -- one call -------------------------------------------------------------------------

    def _note(self, address: str, verdict: Verdict) -> None:
        with self._lock:
            now = time.monotonic()
            if verdict.node == "down":
                self._table.failed(address, now)
            elif verdict.node == "not_ready":
                self._table.not_ready(address, now)

    def _call(self, op: str, safety: Safety, fn: Callable[[BlockingClient], T]) -> T:
        self._maintain()
        plan = CallPlan(op=op, safety=safety, policy=self.settings.retry, start=time.monotonic())
        try:
            while True:
                now = time.monotonic()
                with self._lock:
                    ranked = self._table.ranked(now, self._random)
                step = plan.next(ranked, now, self._random)
                if step is None:
                    raise plan.error()
                if step.delay > 0:
                    time.sleep(step.delay)
                address = step.node
                try:
                    client = self._connected(address)
                except NovaKMSError as exc:
                    verdict = plan.failed(address, exc, sent=False, answered=False)
                    self._note(address, verdict)
                    if verdict.retry:
                        continue
                    raise plan.error() from None
                with self._lock:
                    node = self._nodes.get(address)
                    if node is not None:
                        node.inflight += 1
                    self._table.started(address)
                try:
                    result = fn(client)
                except NovaKMSError as exc:
                    answered = is_answer(exc, connection_usable=client.usable)
                    verdict = plan.failed(address, exc, sent=True, answered=answered)
                    self._note(address, verdict)
                    if verdict.retry:
                        continue
                    raise plan.error() from None
                finally:
                    with self._lock:
                        self._table.finished(address)
                        if node is not None:
                            node.inflight -= 1
                    self._close_retired()
                plan.succeeded(address)
                with self._lock:
                    self._table.succeeded(address)
                return result
        finally:
            _LAST_CALL.set((self._token, plan.trace()))

    # -- the operations (each returns what the single-node BlockingClient returns) -------

    def health(self) -> Health:
        """``health`` of the node that answers."""
        return self._call("health", "safe", lambda c: c.health())

    def status(self) -> Status:
        """``status`` of the node that answers."""
        return self._call("status", "safe", lambda c: c.status())

    def nodes(self) -> Nodes:
        """``nodes`` as the answering node sees them."""
        return self._call("nodes", "safe", lambda c: c.nodes())

    def derive(
        self, path: str, *, context: str | None = None, length: int | None = None
    ) -> DeriveResult:
        """``derive``."""
        return self._call(
            "derive", "safe", lambda c: c.derive(path, context=context, length=length)
        )

    def kv_get(self, key: str) -> KVItem:
        """``kv.get``."""
        return self._call("kv.get", "safe", lambda c: c.kv_get(key))

    def kv_put(
        self,
        key: str,
        value: bytes,
        *,
        ttl_ms: int | None = None,
        if_version: str | None = None,
        acks: int | None = None,
    ) -> PutResult:
        """``kv.put`` (retried only with ``if_version``, as ``ClusterClient.kv_put``)."""
        return self._call(
            "kv.put",
            op_safety("kv.put", if_version=if_version),
            lambda c: c.kv_put(key, value, ttl_ms=ttl_ms, if_version=if_version, acks=acks),
        )

    def kv_delete(self, key: str, *, if_version: str | None = None) -> DeleteResult:
        """``kv.delete`` (retried only with ``if_version``)."""
        return self._call(
            "kv.delete",
            op_safety("kv.delete", if_version=if_version),
            lambda c: c.kv_delete(key, if_version=if_version),
        )

    def kv_list(
        self, *, prefix: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> KVPage:
        """``kv.list``."""
        return self._call(
            "kv.list", "safe", lambda c: c.kv_list(prefix=prefix, limit=limit, cursor=cursor)
        )

    def keys_public(self, name: str, alg: str) -> PublicKey:
        """``keys.public`` (every node has the same keys)."""
        return self._call("keys.public", "safe", lambda c: c.keys_public(name, alg))

    def keys_attest(self, name: str, alg: str) -> KeyAttestation:
        """``keys.attest`` (retried elsewhere: only the signing node differs)."""
        return self._call("keys.attest", "safe", lambda c: c.keys_attest(name, alg))

    def sign(
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
        return self._call(
            "sign",
            "safe",
            lambda c: c.sign(
                name, alg, digest=digest, eip191=eip191, eip712=eip712, message=message, der=der
            ),
        )

    def encrypt(self, name: str, plaintext: bytes, *, aad: bytes | None = None) -> Ciphertext:
        """``encrypt`` (retried elsewhere: nothing is stored)."""
        return self._call("encrypt", "safe", lambda c: c.encrypt(name, plaintext, aad=aad))

    def decrypt(self, ciphertext: bytes, *, aad: bytes | None = None) -> Plaintext:
        """``decrypt`` (any node opens what any node sealed)."""
        return self._call("decrypt", "safe", lambda c: c.decrypt(ciphertext, aad=aad))

    def cert_ca(self, app_id: int) -> str:
        """``cert.ca``."""
        return self._call("cert.ca", "safe", lambda c: c.cert_ca(app_id))

    def cert_sign(self, csr: str | bytes, *, days: int | None = None) -> CertIssued:
        """``cert.sign`` (never sent twice)."""
        return self._call("cert.sign", "unsafe", lambda c: c.cert_sign(csr, days=days))
