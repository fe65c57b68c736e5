"""The trio server: a built node behind its listeners; one handler task per connection.

Theory of operation
-------------------

:func:`~novakms.server.node.build_node` composes a node (keyring, store gate, registry,
membership, replicator: who owns what is in :mod:`novakms.server.node`); :func:`serve` runs it
behind its listeners until told to stop. The nurseries, outermost first::

    serve() / Server.run()
      node-task nursery       membership poller (started first: ``membership.run``), pin watch,
                              replicator, bootstrap (while there is no secret), store sweeper;
                              cancelled last, after the replicator pushed its outboxes once
                              more (``Replicator.drain``, within ``flush_timeout``)
        connection nursery    one task per connection (``_handle``); on shutdown readers stop
                              and in-flight requests finish within ``drain_timeout``
          listener nursery    an accept loop per listener (``_serve_listener``); cancelled first
        per connection:       [PROXY header] -> admission -> handshake (one deadline) ->
                              a reader task and a writer task (below)

After the handshake a connection has one **reader** and one **writer**. The reader decodes
each request and answers the ops that only compute (``dispatch.INLINE_OPS``: derive, kv.get,
health, cert.ca) itself, without a task; every other op gets a task of its own. Should an op
answered inline have to wait after all (its caller's authorization must first be fetched from
the chain), a new reader takes over at that moment and the old one ends with that op, so
reading never waits on I/O. Answers go, encoded, to the writer's queue; the writer seals
everything queued and sends it with one write. At most ``max_inflight`` requests are read and
not yet answered on the wire, and at most ``max_queued_response_bytes`` of answers wait for
the client: beyond either, the reader reads nothing more. The idle timeout is a deadline on
the reader's one cancel scope, armed only while it waits for bytes.

A node without a membership (``Node.membership is None``) starts only the sweeper.

Shutdown (``stop`` set, or :meth:`Server.shutdown`): the listeners close; every connection
stops reading and answers ``shutting_down`` once its in-flight requests are done (a ``kv.put``
waiting for acknowledgements still gets them: replication runs until the connections are
drained); then the outboxes are pushed once more; then the node's tasks are cancelled.
Cancelling the caller instead stops everything at once.

Who writes what: the server owns the connections (the admission table, the count ``status``
reads through ``Node.connections``) and nothing else; each request reaches the node only
through :func:`novakms.server.ops.handle`, whose auth column decides authorization.

Every connection handler catches ``Exception`` at its top: one bad client is logged and closed,
never crashes the server; ``BaseException`` (cancellation, KeyboardInterrupt) passes through.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import os
import signal
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from typing import Any, TypeVar

import trio

from novakms.auth.admission import ConnectionTable
from novakms.auth.source import Membership
from novakms.cluster.peering import run_bootstrap
from novakms.config import Limits, ServerConfig
from novakms.errors import (
    BadRequest,
    ChannelError,
    HandshakeError,
    InternalError,
    InvalidRequest,
    NovaKMSError,
    ProtocolError,
    RateLimited,
    RequestError,
    TransportError,
    Unavailable,
)
from novakms.log import BoundLogger, bind_task, get_logger, set_request
from novakms.log.sampling import Sampler
from novakms.net.addresses import parse_address
from novakms.net.framed import END_OF_STREAM, FramedStream, SealedStream
from novakms.net.metrics_http import serve_metrics
from novakms.net.sockets import connection_source, listener_address, open_listener
from novakms.server.metrics import CONTENT_TYPE, NodeMetrics
from novakms.server.node import Node
from novakms.server.ops import dispatch
from novakms.wire import cbor
from novakms.wire.channel import sealed_body_size
from novakms.wire.framing import encode_frame
from novakms.wire.handshake import HANDSHAKE_MAX_ITEMS, ServerHandshake
from novakms.wire.messages import Request, close_notice, error_response, ok_response, parse_request
from novakms.wire.proxy_header import MAX_HEADER, parse_v2

__all__ = ["Server", "serve"]

_T = TypeVar("_T")
_NOTICE_TIMEOUT = 1.0
#: accept() errors that mean "out of resources for now" (as trio.serve_listeners): log, retry.
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_RETRY = 0.1
_ACCEPT_LOG = logging.getLogger("trio.serve_listeners")
#: The longest a connection's reading pauses after a rate_limited answer (PROTOCOL.md §10).
_RATE_LIMIT_PAUSE = 1.0


class Server:
    """A KMS node's network front.

    Args:
        config: listen addresses and limits.
        node: the node requests are served from (:func:`~novakms.server.node.build_node`).
        random_bytes: RNG for ephemeral keys and nonces (default: the node's).
        clock: wall clock in unix seconds for auth timestamps and rate limits (default: the
            node's).
        listeners: listeners opened by the caller, each with the address it reports, served
            besides ``config.listen`` (tests serve in-memory listeners with it).
    """

    def __init__(
        self,
        *,
        config: ServerConfig,
        node: Node,
        random_bytes: Callable[[int], bytes] | None = None,
        clock: Callable[[], float] | None = None,
        listeners: Sequence[tuple[trio.abc.Listener[trio.abc.Stream], str]] = (),
    ) -> None:
        self.config = config
        self._given = list(listeners)
        self.node = node
        self.limits = config.limits
        self._random = node.random_bytes if random_bytes is None else random_bytes
        self._clock = node.clock if clock is None else clock
        self.addresses: list[str] = []
        self.metrics_addresses: list[str] = []
        self._log = get_logger("novakms.server.server", node=node.wallet)
        self._access = get_logger("novakms.access", node=node.wallet) if config.access_log else None
        # Refused and closed connections: a few lines per kind and window, the rest counted.
        self._sampler = Sampler()
        self.metrics = NodeMetrics(node, self._roles)
        self._shutdown = trio.Event()
        self._closing = False
        self._next_id = 0
        self._connections: dict[int, _Connection] = {}
        node.count_connections_with(self.connection_count)
        self._table = ConnectionTable(
            max_connections=self.limits.max_connections,
            max_per_source=self.limits.max_connections_per_source,
            max_unproven=min(self.limits.max_unproven_connections, self.limits.max_connections),
            max_unproven_per_source=self.limits.max_unproven_per_source,
        )

    def connection_count(self) -> int:
        """Connections admitted and not yet closed."""
        return len(self._connections)

    def _roles(self) -> list[str]:
        return [conn.role for conn in self._connections.values()]

    def _sampled(self, log: BoundLogger, event: str, kind: str, **fields: Any) -> None:
        """Log ``event`` unless the sampler leaves it out (then it is only counted)."""
        suppressed = self._sampler.admit(f"{event}:{kind}", trio.current_time())
        if suppressed is None:
            self.metrics.suppressed(event)
        elif suppressed:
            log.info(event, **fields, suppressed=suppressed)
        else:
            log.info(event, **fields)

    async def run(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until :meth:`shutdown` (graceful) or cancellation (immediate).

        ``task_status.started`` receives the bound addresses (ports resolved).

        Raises:
            ValueError: nothing to listen on (no address in the config, no listener given).
            OSError: a listen address cannot be bound.
        """
        if not (self.config.listen or self.config.listen_proxy or self._given):
            raise ValueError("at least one listen address (or listener) is required")
        # (listener, its address, whether it reads a PROXY header first)
        listeners: list[tuple[trio.abc.Listener[trio.abc.Stream], str, bool]] = []
        scrapes: list[trio.SocketListener] = []
        try:
            for proxied, texts in ((False, self.config.listen), (True, self.config.listen_proxy)):
                for text in texts:
                    opened = await open_listener(
                        parse_address(text), reuse_port=self.config.reuse_port
                    )
                    listeners.append((opened, listener_address(opened), proxied))
            for text in self.config.metrics:
                scrapes.append(await open_listener(parse_address(text)))
        except BaseException:
            for listener in [*(item[0] for item in listeners), *scrapes]:
                await listener.aclose()
            raise
        listeners += [(listener, address, False) for listener, address in self._given]
        self.addresses = [address for _, address, _ in listeners]
        self.metrics_addresses = [listener_address(listener) for listener in scrapes]
        # Node-lifetime tasks outermost, connections inside them, listeners innermost: on
        # shutdown the listeners go first, then the connections drain while replication still
        # runs (a kv.put waiting for acknowledgements, an outbox to push), then replication
        # pushes its outboxes once more, and only then are the node's tasks cancelled.
        async with trio.open_nursery() as node_tasks:
            await self._start_node_tasks(node_tasks)
            async with trio.open_nursery() as connections:
                async with trio.open_nursery() as listening:
                    for listener, _, proxied in listeners:
                        listening.start_soon(
                            functools.partial(
                                self._serve_listener, listener, connections, proxied=proxied
                            )
                        )
                    for scrape in scrapes:
                        listening.start_soon(
                            functools.partial(
                                serve_metrics,
                                scrape,
                                self.metrics.exposition,
                                content_type=CONTENT_TYPE,
                            )
                        )
                    self._log.info(
                        "listening",
                        addresses=",".join(self.addresses),
                        metrics=",".join(self.metrics_addresses),
                    )
                    task_status.started(list(self.addresses))
                    await self._shutdown.wait()
                    listening.cancel_scope.cancel()
                # Drain: stop reading new requests, let in-flight ones finish within the deadline.
                self._closing = True
                for conn in list(self._connections.values()):
                    conn.stop_reading(_shutting_down())
                connections.cancel_scope.deadline = trio.current_time() + self.limits.drain_timeout
            if self.node.replicator is not None:
                await self.node.replicator.drain(self.limits.flush_timeout)
            node_tasks.cancel_scope.cancel()
        self._log.info("stopped")

    async def _start_node_tasks(self, nursery: trio.Nursery) -> None:
        """The tasks that live as long as the node: poller, pin watch, replication, bootstrap."""
        node = self.node
        nursery.start_soon(self._sweep_store)
        if node.consensus is not None:
            nursery.start_soon(node.consensus.run)
        membership, bootstrap = node.membership, node.bootstrap
        if membership is None or bootstrap is None:  # a lone node: nobody to poll or to ask
            return
        await nursery.start(membership.run)
        nursery.start_soon(self._watch_pin, membership)
        if node.replicator is not None:
            nursery.start_soon(node.replicator.run)
        if not node.keyring.initialized:  # get it from the cluster (DESIGN §6)
            nursery.start_soon(
                functools.partial(
                    run_bootstrap,
                    bootstrap,
                    interval=self.limits.bootstrap_interval,
                    timeout=self.limits.peer_timeout,
                    random_bytes=self._random,
                )
            )

    def shutdown(self) -> None:
        """Begin a graceful shutdown (idempotent)."""
        self._shutdown.set()

    async def _watch_pin(self, membership: Membership) -> None:
        """Check the held secret against the owner's pin as each poll brings it (issue 9.7)."""
        keyring = self.node.keyring
        while True:
            pin = membership.pinned()
            if keyring.check_pin(pin):
                if keyring.pin_mismatch:
                    self._log.warning("secret_mismatch", fingerprint=keyring.fingerprint(), pin=pin)
                else:
                    self._log.info("secret_matches_pin", fingerprint=keyring.fingerprint())
            await trio.sleep(membership.poll_interval)

    async def _sweep_store(self) -> None:
        """Purge expired values and forget old tombstones, every ``sweep_interval`` seconds."""
        while True:
            await trio.sleep(self.limits.sweep_interval)
            purged, forgotten = self.node.gate.sweep(int(self._clock() * 1000))
            if purged or forgotten:
                self._log.debug("store_swept", purged=purged, forgotten=forgotten)

    async def _serve_listener(
        self,
        listener: trio.abc.Listener[trio.abc.Stream],
        connections: trio.Nursery,
        *,
        proxied: bool,
    ) -> None:
        """Accept connections until cancelled, one :meth:`_handle` task each.

        What ``trio.serve_listeners`` does (it closes the listener at the end; out of file
        descriptors or memory it logs and retries after a pause), without closing every stream
        a second time: :meth:`_handle` closes its stream on every path.
        """
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                        raise
                    _ACCEPT_LOG.error(
                        "accept returned %s (%s); retrying in %s seconds",
                        errno.errorcode[exc.errno],
                        os.strerror(exc.errno),
                        _ACCEPT_RETRY,
                        exc_info=True,
                    )
                    await trio.sleep(_ACCEPT_RETRY)
                else:
                    connections.start_soon(self._run_connection, stream, proxied)

    async def _run_connection(self, stream: trio.abc.Stream, proxied: bool) -> None:
        try:
            await self._handle(stream, proxied=proxied)
        except BaseException:  # e.g. cancelled before _handle reached its try: still close
            await trio.aclose_forcefully(stream)
            raise

    async def _handle(self, stream: trio.abc.Stream, *, proxied: bool = False) -> None:
        self._next_id += 1
        bind_task(conn=self._next_id)  # on every line this connection's tasks write
        framed = FramedStream(stream, max_frame=self.limits.max_frame)
        framed.set_receive_limit(self.limits.max_handshake_frame)
        conn = _Connection(self._next_id, framed, connection_source(stream), self.limits)
        log = self._log.bind(source=conn.source)
        session: dispatch.Session | None = None
        try:
            with conn.scope:
                # The PROXY header and the handshake share the handshake deadline.
                with trio.move_on_after(self.limits.handshake_timeout) as deadline:
                    if proxied:
                        if not await self._read_proxy_header(conn, log):
                            return
                        log = log.bind(source=conn.source)
                    if not await self._admit(conn, log):
                        return
                    established = await self._handshake(conn, log)
                if deadline.cancelled_caught:
                    self.metrics.connection_refused("handshake_timeout")
                    self._sampled(log, "handshake_timeout", "")
                    return
                if established is None:
                    return
                session = established
                conn.role = session.role
                log = log.bind(wallet=session.wallet or "anonymous", role=session.role)
                if log.isEnabledFor(logging.DEBUG):  # what structlog's filter_by_level checks
                    log.debug("session_open")
                await self._request_loop(conn, session, log)
            if conn.scope.cancelled_caught:
                log.info("connection_aborted", reason="send_timeout")
        except Exception:
            log.exception("connection_failed")
        finally:
            for closer in () if session is None else session.on_close:
                closer()
            self._connections.pop(conn.id, None)
            self._table.release(conn.id)
            await framed.aclose()

    async def _read_proxy_header(self, conn: _Connection, log: BoundLogger) -> bool:
        """Read the PROXY v2 header; the connection's source becomes the client it names."""
        data = b""
        try:
            while True:
                parsed = parse_v2(data)
                if parsed is not None:
                    break
                chunk = await conn.framed.stream.receive_some(MAX_HEADER - len(data))
                if not chunk:
                    return False
                data += chunk
        except ProtocolError as exc:
            self.metrics.connection_refused("proxy_header")
            self._sampled(log, "proxy_header_rejected", "", error=exc.message)
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return False
        header, rest = parsed
        if header.source is not None:
            conn.source = header.source
        if rest:
            try:
                conn.framed.feed(rest)
            except ProtocolError as exc:
                await self._send_plain_notice(conn.framed, exc)
                return False
        return True

    async def _admit(self, conn: _Connection, log: BoundLogger) -> bool:
        refusal = self._admission(conn)
        if refusal is None:
            return True
        reason = str(refusal.details.get("reason", refusal.code))
        self.metrics.connection_refused(reason)
        self._sampled(log, "connection_refused", reason, code=refusal.code, reason=reason)
        await self._send_plain_notice(conn.framed, refusal)
        return False

    def _admission(self, conn: _Connection) -> NovaKMSError | None:
        if self._closing:
            return Unavailable("the node is shutting down", reason="shutting_down")
        wait = self.node.handshake_limiter.take(conn.source, self._clock())
        if wait > 0:
            return RateLimited(
                "too many handshakes from this source", retry_after_ms=max(1, int(wait * 1000))
            )
        decision = self._table.admit(conn.id, conn.source)
        if not decision.admitted:
            return Unavailable("too many connections", reason=decision.reason)
        if decision.evict is not None:
            victim = self._connections.get(decision.evict)
            if victim is not None:
                victim.stop_reading(
                    Unavailable("closing an idle anonymous session for a new one", reason="evicted")
                )
        self._connections[conn.id] = conn
        return None

    async def _send_plain_notice(self, framed: FramedStream, error: NovaKMSError) -> None:
        with trio.move_on_after(_NOTICE_TIMEOUT):
            with contextlib.suppress(TransportError):
                await framed.send_body(cbor.encode(close_notice(error)))

    async def _send_sealed_quietly(self, sealed: SealedStream, message: dict[str, Any]) -> bool:
        try:
            await sealed.send(message)
        except (TransportError, ChannelError):
            return False
        return True

    def _handshake_rejected(self, log: BoundLogger, exc: NovaKMSError) -> None:
        self.metrics.handshake(refused=exc.code)
        self._sampled(log, "handshake_rejected", exc.code, code=exc.code, error=exc.message)

    async def _handshake(self, conn: _Connection, log: BoundLogger) -> dispatch.Session | None:
        framed = conn.framed
        hs = ServerHandshake(
            wallet=self.node.wallet, eph_private=self._random(32), nonce=self._random(32)
        )
        try:
            body = await framed.receive_body()
            if body is None:
                return None
            text = hs.receive_hello(body)
            signature = await self.node.signer.sign_text(text)
            challenge, channel = hs.challenge(signature)
        except TransportError:
            return None
        except (ProtocolError, HandshakeError, RequestError) as exc:
            self._handshake_rejected(log, exc)
            await self._send_plain_notice(framed, exc)
            return None
        sealed = SealedStream(framed, channel, max_items=HANDSHAKE_MAX_ITEMS)
        try:
            await framed.send_body(challenge)
            auth = await sealed.receive()
        except (TransportError, ChannelError):
            return None
        except ProtocolError as exc:
            self._handshake_rejected(log, exc)
            await self._send_sealed_quietly(sealed, close_notice(exc))
            return None
        if auth is END_OF_STREAM:
            return None
        try:
            wallet = hs.receive_auth(
                auth, now=int(self._clock()), window=self.limits.timestamp_window
            )
        except (ProtocolError, HandshakeError) as exc:
            self._handshake_rejected(log, exc)
            await self._send_sealed_quietly(sealed, close_notice(exc))
            return None
        # Anonymous sessions get the small frame limit; Ready announces what this one accepts.
        max_frame = self.limits.max_frame if wallet else self.limits.max_anonymous_frame
        ready = hs.ready(wallet=wallet, max_frame=max_frame, max_inflight=self.limits.max_inflight)
        # Nothing else sends on the connection yet: the Ready frame goes out without the lock
        # that keeps a session's concurrent senders in counter order (the same bytes).
        try:
            await framed.send_body(channel.seal(ready, max_body=framed.max_frame))
        except (TransportError, ChannelError):
            return None
        framed.set_receive_limit(max_frame)
        conn.sealed = sealed
        self.metrics.handshake()
        # A key pair proves nothing by itself: the session stays unproven (evictable when idle)
        # until its wallet passes authorization (dispatch.REGISTERED, see _run_request).
        self._table.established(conn.id, proven=False)
        assert hs.role is not None  # set by receive_hello
        return dispatch.Session(
            role=hs.role,
            wallet=wallet,
            source=conn.source,
            transcript_hash=hs.th or b"",
            reserve=conn.budget.take_for_request,
        )

    async def _request_loop(
        self, conn: _Connection, session: dispatch.Session, log: BoundLogger
    ) -> None:
        assert conn.sealed is not None
        writer = conn.writer = _Writer(conn, self.limits.send_timeout)
        async with trio.open_nursery() as tasks:
            tasks.start_soon(writer.run)
            async with trio.open_nursery() as requests:
                if self._closing:  # the handshake finished while the node began shutting down
                    conn.stop_reading(_shutting_down())
                requests.start_soon(self._reader, conn, session, requests)
                await conn.done_reading.wait()
                notice = conn.read_outcome
                # Idle timeout, eviction and shutdown let in-flight requests finish (the
                # drain); a broken stream or a protocol violation makes their answers
                # meaningless.
                drains = isinstance(notice, Unavailable) and not isinstance(notice, TransportError)
                if notice is not None and not drains:
                    requests.cancel_scope.cancel()
            # Every answer is queued; the writer sends them, then the close notice, and ends.
            final = None
            if notice is not None and not isinstance(notice, ChannelError | TransportError):
                final = cbor.encode(close_notice(notice))
            writer.finish(final)
        if notice is None:
            return
        reason = str(notice.details.get("reason", ""))
        self._sampled(
            log,
            "connection_closed",
            f"{notice.code}:{reason}",
            code=notice.code,
            error=notice.message,
        )

    def _decode_budget(self, session: dispatch.Session) -> int | None:
        if session.wallet is None:
            return self.limits.max_anonymous_items
        if session.role == "peer" and session.state.get(dispatch.REGISTERED) is True:
            return None  # an authorized KMS peer: bounded by max_frame alone
        return self.limits.max_request_items

    def _idle_timeout(self, session: dispatch.Session) -> float:
        unregistered = session.wallet is None or session.state.get(dispatch.REGISTERED) is False
        return self.limits.anonymous_idle_timeout if unregistered else self.limits.idle_timeout

    async def _reader(
        self, conn: _Connection, session: dispatch.Session, requests: trio.Nursery
    ) -> None:
        """The connection's reader task; reports how reading ended (``conn.read_outcome``).

        A reader that hands over (an op it answers inline had to wait) ends after that op
        without reporting: its successor reads on and reports.
        """
        set_request(None)  # a successor starts in its predecessor's context
        generation = conn.reader_generation
        outcome = await self._read_requests(conn, session, requests, generation)
        if conn.reader_generation == generation:
            conn.read_outcome = outcome
            conn.done_reading.set()

    async def _read_requests(
        self,
        conn: _Connection,
        session: dispatch.Session,
        requests: trio.Nursery,
        generation: int,
    ) -> NovaKMSError | None:
        """Read requests until the stream ends (None) or must be closed (the error to report).

        One cancel scope covers the reading (``conn.reader``); its deadline is the idle
        timeout, armed only while the reader waits for bytes. It is re-entered only when that
        deadline passes while requests are still running in tasks.
        """
        while True:
            with trio.CancelScope() as reader:
                conn.reader = reader
                outcome = await self._read_loop(conn, session, requests, reader, generation)
            if not reader.cancelled_caught:
                return outcome
            if conn.close_reason is not None:  # stop_reading: shutdown or eviction
                return conn.close_reason
            if not conn.inflight:  # the idle deadline, with nothing running
                return Unavailable("closing an idle connection", reason="idle_timeout")

    async def _read_loop(
        self,
        conn: _Connection,
        session: dispatch.Session,
        requests: trio.Nursery,
        reader: trio.CancelScope,
        generation: int,
    ) -> NovaKMSError | None:
        assert conn.sealed is not None
        channel = conn.sealed.channel
        framed = conn.framed
        budget = conn.budget
        max_inflight = self.limits.max_inflight
        inline_ops = dispatch.INLINE_OPS
        try:
            while True:
                if conn.close_reason is not None:
                    return conn.close_reason
                # Backpressure: with max_inflight requests read and not yet answered on the
                # wire, or the connection's response budget spent by answers the client has
                # not read, nothing more is read. Over its rate, nothing more is read until
                # the bucket has a token again (at most _RATE_LIMIT_PAUSE), so refusals cost
                # the node as little as answers.
                if (
                    conn.outstanding >= max_inflight
                    or budget.used >= budget.limit
                    or conn.resume_at > trio.current_time()
                ):
                    conn.writer.flush()
                    conn.waiting = True
                    try:
                        await budget.wait_for_room(conn, max_inflight)
                        if conn.resume_at > trio.current_time():
                            await trio.sleep_until(conn.resume_at)
                        else:  # the flush may have made room: others' turn all the same
                            await trio.lowlevel.checkpoint()
                    finally:
                        conn.waiting = False
                    continue
                body = framed.next_buffered()
                if body is None:  # wait for bytes, within the idle timeout
                    conn.writer.flush()
                    conn.waiting = True
                    reader.deadline = trio.current_time() + self._idle_timeout(session)
                    try:
                        body = await framed.receive_body()
                    finally:
                        conn.waiting = False
                        reader.deadline = math.inf
                    if body is None:
                        return None
                item = channel.open(body, max_items=self._decode_budget(session))
                self._table.touch(conn.id)
                try:
                    request = parse_request(item)
                except InvalidRequest as exc:
                    conn.invalid += 1
                    self.metrics.request("", exc.code, 0.0)
                    if exc.request_id is None:
                        return exc
                    if conn.invalid > self.limits.max_invalid_requests:
                        return BadRequest("too many invalid requests", reason="invalid_requests")
                    # The answer counts as outstanding like any request: a client that never
                    # reads cannot make the node queue answers without bound.
                    conn.outstanding += 1
                    answer = error_response(exc.request_id, exc)
                    await self._queue_answer(conn, exc.request_id, answer, wake=False)
                    continue
                if request.id in conn.inflight:
                    return ProtocolError(f"request id {request.id} is already in flight")
                conn.outstanding += 1
                if request.op not in inline_ops:
                    conn.inflight.add(request.id)
                    requests.start_soon(self._run_request_task, conn, session, request)
                    continue
                # Answered here, without a task of its own: such an op only computes. Should
                # it wait after all (its caller's authorization must first be fetched), a new
                # reader takes over at once and this task ends once the op is answered.
                set_request(request.id)
                handed_over = functools.partial(self._hand_over, conn, session, request, requests)
                await self._run_request(conn, session, request, on_wait=handed_over)
                if conn.reader_generation != generation:
                    self._table.busy(conn.id, -1)
                    conn.inflight.discard(request.id)
                    return None
                set_request(None)
        except (ProtocolError, TransportError) as exc:  # ChannelError is a ProtocolError
            return exc

    def _hand_over(
        self,
        conn: _Connection,
        session: dispatch.Session,
        request: Request,
        requests: trio.Nursery,
    ) -> None:
        """The op the reader answers inline waits: it becomes a request, a new reader reads."""
        conn.writer.flush()  # the reader waits: what it left queued goes now
        conn.reader_generation += 1
        conn.inflight.add(request.id)
        self._table.busy(conn.id, +1)
        requests.start_soon(self._reader, conn, session, requests)

    def _answered(self, session: dispatch.Session, op: str, code: str, seconds: float) -> None:
        """Count the answer; with the access log on, write its line."""
        self.metrics.request(op, code, seconds)
        if self._access is not None:
            self._access.info(
                "request",
                op=op,
                app=session.state.get(dispatch.APP_ID),
                wallet=session.wallet or "anonymous",
                role=session.role,
                code=code,
                ms=round(seconds * 1000, 3),
            )

    async def _run_request_task(
        self, conn: _Connection, session: dispatch.Session, request: Request
    ) -> None:
        set_request(request.id)
        self._table.busy(conn.id, +1)
        try:
            await self._run_request(conn, session, request)
        finally:
            self._table.busy(conn.id, -1)
            conn.inflight.discard(request.id)
            conn.budget.release()  # a cancelled request's reservation

    async def _run_request(
        self,
        conn: _Connection,
        session: dispatch.Session,
        request: Request,
        *,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        """Serve one request and queue its answer (in the reader, or in its own task).

        ``on_wait`` (the reader's) is called if the op suspends the task for the first time.
        """
        started = time.perf_counter()
        generation = conn.reader_generation
        code = "ok"
        try:
            served = dispatch.handle(
                self.node,
                session,
                request.op,
                request.args,
                self._clock(),
                connections=len(self._connections),
            )
            result = await (served if on_wait is None else _run_noting_wait(served, on_wait))
            message = ok_response(request.id, result)
        except RequestError as exc:
            code = exc.code
            message = error_response(request.id, exc)
            self._request_log(session, request).debug("request_failed", code=exc.code)
            if isinstance(exc, RateLimited):
                pause = min(exc.details["retry_after_ms"] / 1000, _RATE_LIMIT_PAUSE)
                conn.resume_at = max(conn.resume_at, trio.current_time() + pause)
        except Exception:
            code = InternalError.code
            self._request_log(session, request).exception("request_crashed")
            message = error_response(request.id, InternalError("internal error"))
        self._answered(session, request.op, code, time.perf_counter() - started)
        if session.state.get(dispatch.REGISTERED) is True:
            self._table.prove(conn.id)
        # Free the id before answering: the client may reuse it as soon as it reads this.
        conn.inflight.discard(request.id)
        # The reader leaves its answers queued until it waits (``_Writer.flush``).
        by_reader = on_wait is not None and conn.reader_generation == generation
        await self._queue_answer(conn, request.id, message, op=request.op, wake=not by_reader)

    def _request_log(self, session: dispatch.Session, request: Request) -> BoundLogger:
        return self._log.bind(wallet=session.wallet or "anonymous", op=request.op, req=request.id)

    async def _queue_answer(
        self,
        conn: _Connection,
        request_id: int,
        message: dict[str, Any],
        *,
        op: str = "",
        wake: bool = True,
    ) -> None:
        """Encode an answer and hand it to the connection's writer with its budget bytes.

        The answer's bytes are reserved first (within ``send_timeout``: a client that does not
        read for that long is dropped). An answer that cannot be encoded or is larger than a
        frame is a bug: it is logged and replaced by ``internal``.
        """
        try:
            plaintext = cbor.encode(message)
        except (TypeError, ValueError):
            self._log.exception("response_unencodable", op=op, req=request_id)
            plaintext = _internal_error(request_id)
        if sealed_body_size(len(plaintext)) > conn.framed.max_frame:
            self._log.error("response_unencodable", op=op, req=request_id, size=len(plaintext))
            plaintext = _internal_error(request_id)
        budget = conn.budget
        held = budget.take_answer(len(plaintext))
        if held is None:  # no room now: wait until the client reads
            conn.writer.flush()  # what the reader left queued holds room
            with trio.move_on_after(self.limits.send_timeout) as waiting:
                await budget.take_for_request(len(plaintext) - budget.held())
            if waiting.cancelled_caught:
                conn.scope.cancel()  # a client that does not read: nothing more can be sent
                return
            held = budget.detach()
        conn.writer.put(plaintext, held, wake=wake)


async def serve(
    node: Node,
    config: ServerConfig,
    *,
    listeners: Sequence[tuple[trio.abc.Listener[trio.abc.Stream], str]] = (),
    stop: trio.Event | None = None,
    on_server: Callable[[Server], None] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a built node (:func:`~novakms.server.node.build_node`) until ``stop`` or cancel.

    The one way to run a node: the CLI (``serve`` in both modes, ``dev --chain static``) and
    the tests' fixtures go through it.

    Args:
        node: the node.
        config: the listen addresses (``listen``, ``listen_proxy``) and limits.
        listeners: pre-opened listeners with the address each reports, served besides
            ``config``'s (tests' in-memory listeners, a socket handed over by a supervisor).
        stop: set it to shut down gracefully (listeners closed, connections drained within
            ``drain_timeout``, outboxes pushed within ``flush_timeout``); cancellation stops
            at once.
        on_server: receives the :class:`Server` before it listens (tests inspect it).
        task_status: ``started`` with the bound addresses (ports resolved) once listening.

    Raises:
        OSError: a listen address cannot be bound.
    """
    server = Server(config=config, node=node, listeners=listeners)
    if on_server is not None:
        on_server(server)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(server.run)
        task_status.started(addresses)
        if stop is not None:
            await stop.wait()
            server.shutdown()


async def serve_until_signal(
    node: Node,
    config: ServerConfig,
    *,
    on_ready: Callable[[list[str]], Awaitable[None]] | None = None,
) -> None:
    """:func:`serve` until SIGINT or SIGTERM, then shut down gracefully (the CLI's runner).

    Args:
        node: the built node.
        config: its listen addresses and limits.
        on_ready: awaited with the bound addresses once the node listens, or None.
    """
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(functools.partial(serve, node, config, stop=stop))
            if on_ready is not None:
                await on_ready(addresses)
            async for _ in signals:
                stop.set()
                break


@types.coroutine
def _run_noting_wait(
    coro: Coroutine[Any, Any, _T], on_wait: Callable[[], None]
) -> Generator[Any, Any, _T]:
    """Await ``coro`` in the current task, calling ``on_wait`` the first time it suspends.

    The same as ``await coro`` (every value trio sends in and every exception it throws in
    reach ``coro``), with a hook at the first suspension: the reader hands over there.
    """
    value: Any = None
    error: BaseException | None = None
    waited = False
    while True:
        try:
            trap = coro.send(value) if error is None else coro.throw(error)
        except StopIteration as done:
            result: _T = done.value
            return result
        if not waited:
            waited = True
            on_wait()
        try:
            value, error = (yield trap), None
        except BaseException as exc:  # delivered into the coroutine on the next step
            value, error = None, exc


def _internal_error(request_id: int) -> bytes:
    return cbor.encode(error_response(request_id, InternalError("internal error")))


def _shutting_down() -> Unavailable:
    return Unavailable("the node is shutting down", reason="shutting_down")


class _ResponseBudget:
    """Answer bytes of one connection produced but not yet written (a byte semaphore).

    A request reserves the size of its answer before building it (``kv.get`` reserves the
    stored value's size before opening it, through ``Session.reserve``); the reservation moves
    with the answer to the writer (:meth:`detach`), which gives it back once the answer is
    written (:meth:`give_back`). Reservations are held per task until detached: a request task
    holds its own, the reader holds the one of the request it serves inline.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._held: dict[trio.lowlevel.Task, int] = {}
        self._lot = trio.lowlevel.ParkingLot()

    @property
    def used(self) -> int:
        """Bytes reserved by all requests and unwritten answers of the connection."""
        return self._used

    def held(self) -> int:
        """What the current task holds."""
        return self._held.get(trio.lowlevel.current_task(), 0)

    def try_take(self, size: int) -> bool:
        """Reserve ``size`` bytes for the current task if there is room now (never waits).

        One reservation larger than the whole budget goes through when nothing else is held.
        """
        if self._used and self._used + size > self.limit:
            return False
        if size > 0:
            task = trio.lowlevel.current_task()
            self._held[task] = self._held.get(task, 0) + size
            self._used += size
        return True

    def take_answer(self, size: int) -> int | None:
        """Make the current task's reservation cover an answer of ``size`` bytes, if there is
        room now, and detach it (:meth:`try_take` of the difference, then :meth:`detach`).

        Returns:
            The bytes detached, for the writer to give back; None when there is no room now
            (the reservation stays with the task).
        """
        task = trio.lowlevel.current_task()
        held = self._held.pop(task, 0)
        extra = size - held
        if self._used and self._used + extra > self.limit:
            if held:
                self._held[task] = held
            return None
        if extra > 0:
            self._used += extra
            return size
        return held

    async def take_for_request(self, size: int) -> None:
        """Reserve ``size`` bytes for the current task, waiting while the budget is spent.

        Returns at once when there is room (``Session.reserve`` of the ops answered inline).
        """
        while not self.try_take(size):
            await self._lot.park()

    def detach(self) -> int:
        """Take the current task's reservation off it, for the writer to give back."""
        return self._held.pop(trio.lowlevel.current_task(), 0)

    def release(self) -> None:
        """Give back everything the current task holds (a request that answers nothing)."""
        self.give_back(self.detach())

    def give_back(self, size: int) -> None:
        """Give back ``size`` detached bytes, and wake whoever waits for room."""
        self._used -= size
        self._lot.unpark_all()

    async def wait_for_room(self, conn: _Connection, max_inflight: int) -> None:
        """Wait until the budget is not spent and fewer than ``max_inflight`` answers are
        outstanding (the reader calls this before reading a request)."""
        while self._used >= self.limit or conn.outstanding >= max_inflight:
            await self._lot.park()


class _Writer:
    """The one sender of a connection's answers, in the order they were queued.

    Answers are sealed as they are queued, with the budget bytes they hold. Each turn the
    writer sends every queued frame with one write, then gives their bytes back. A write that
    takes longer than ``send_timeout`` aborts the connection (the stream may hold half a
    frame: nothing more can be said). After a broken write, answers are dropped as they come.
    :meth:`finish` queues the close notice and ends the writer once everything before it is
    sent.

    The reader queues the answers of the ops it serves inline without waking the writer
    (``wake=False``) and calls :meth:`flush` before it waits for anything: while the writer is
    idle, the queued frames are then written at once, without a turn of the writer's task
    (what the kernel does not take at once, the writer sends). One lone request costs one
    task switch less; a burst is still one write.
    """

    def __init__(self, conn: _Connection, send_timeout: float) -> None:
        assert conn.sealed is not None
        self._conn = conn
        self._channel = conn.sealed.channel
        self._framed = conn.framed
        self._send_timeout = send_timeout
        self._queue: list[bytes] = []  # frames; a flush's unsent rest may join several
        self._queued_answers = 0
        self._queued_held = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._sending = False
        self._finished = False
        self._final: bytes | None = None
        self._broken = False

    def put(self, plaintext: bytes, held: int, *, wake: bool = True) -> None:
        """Seal and queue one answer holding ``held`` budget bytes; ``wake=False`` leaves it
        queued until :meth:`flush` or the next wake."""
        if self._broken:
            self._written(1, held)
            return
        try:
            body = self._channel.seal_plaintext(plaintext)
        except ChannelError:  # the channel is closed: nothing more can be sent
            self._break()
            self._written(1, held)
            return
        self._queue.append(encode_frame(body, max_frame=self._framed.max_frame))
        self._queued_answers += 1
        self._queued_held += held
        if wake:
            self._lot.unpark()

    def flush(self) -> None:
        """Send the queued frames now if the writer is idle and the kernel takes them without
        waiting; else (and for what it does not take) wake the writer."""
        if not self._queue:
            return
        if not self._sending and not self._broken:
            data = b"".join(self._queue)
            try:
                sent = self._framed.send_now(data)
            except TransportError:
                sent = 0  # the writer's own write meets the error and breaks the connection
            if sent == len(data):
                self._written(*self._take_queue())
                return
            self._queue = [data[sent:]]
        self._lot.unpark()

    def finish(self, final: bytes | None) -> None:
        """No more answers: send ``final`` (a close notice) after the queued ones, and end."""
        self._finished = True
        self._final = final
        self._lot.unpark()

    def _take_queue(self) -> tuple[int, int]:
        """Empty the queue; returns the answers it held and their budget bytes."""
        taken = self._queued_answers, self._queued_held
        self._queue, self._queued_answers, self._queued_held = [], 0, 0
        return taken

    def _written(self, answers: int, held: int) -> None:
        self._conn.outstanding -= answers
        self._conn.budget.give_back(held)

    def _break(self) -> None:
        self._broken = True
        self._written(*self._take_queue())  # dropped, not sent: their bytes are given back
        self._lot.unpark()

    async def run(self) -> None:
        conn, framed = self._conn, self._framed
        batch = (0, 0)  # the answers and budget bytes of the write under way
        with trio.CancelScope() as deadline:
            try:
                while True:
                    while not self._queue and not self._finished and not self._broken:
                        await self._lot.park()
                    if not self._queue or self._broken:
                        break
                    data = b"".join(self._queue)
                    batch = self._take_queue()
                    deadline.deadline = trio.current_time() + self._send_timeout
                    self._sending = True
                    await framed.send_data(data)
                    self._sending = False
                    deadline.deadline = math.inf
                    self._written(*batch)
                    batch = (0, 0)
            except TransportError:
                self._written(*batch)
                self._break()
                return
        if deadline.cancelled_caught:
            self._written(*batch)
            self._break()
            conn.scope.cancel()  # a client that does not read: nothing more can be sent
            return
        if self._final is not None and not self._broken:
            with trio.move_on_after(_NOTICE_TIMEOUT), contextlib.suppress(TransportError):
                await framed.send_body(self._channel.seal_plaintext(self._final))


class _Connection:
    """The glue state of one accepted connection.

    ``scope`` covers the whole connection and is cancelled when a send times out (the stream
    may hold half a frame: nothing more can be said). ``reader`` covers reading requests;
    :meth:`stop_reading` closes the connection gracefully (shutdown, eviction): the reader
    stops before its next request (at once if it is waiting), in-flight requests still finish
    and a close notice is sent.
    """

    def __init__(self, conn_id: int, framed: FramedStream, source: str, limits: Limits) -> None:
        self.id = conn_id
        self.framed = framed
        self.source = source
        self.sealed: SealedStream | None = None
        self.writer: _Writer
        self.role = "handshaking"  # the handshake's role once it names one
        self.scope = trio.CancelScope()
        self.reader = trio.CancelScope()
        self.waiting = False  # the reader waits for bytes or room (it may be cancelled)
        self.reader_generation = 0  # incremented each time a new reader takes over
        self.done_reading = trio.Event()
        self.read_outcome: NovaKMSError | None = None  # why reading ended (None: end of stream)
        self.close_reason: NovaKMSError | None = None
        self.budget = _ResponseBudget(limits.max_queued_response_bytes)
        self.outstanding = 0  # requests read whose answers are not yet written
        self.inflight: set[int] = set()  # ids of the requests running in tasks
        self.invalid = 0
        self.resume_at = 0.0  # trio time before which no request is read (rate limited)

    def stop_reading(self, reason: NovaKMSError) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        if self.waiting:
            self.reader.cancel()
