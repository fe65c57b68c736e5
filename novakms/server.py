"""The trio server: listeners, one handler task per connection, bounded in-flight requests.

Topology (hypercorn / trio style)::

    run()
      connection nursery      one task per connection; drained with a deadline on shutdown
        listener nursery      trio.serve_listeners per listener, cancelled first on shutdown
        per connection:       handshake (deadline) -> reader loop -> request tasks (<= max_inflight)

Every connection handler catches ``Exception`` at its top: one bad client is logged and closed,
never crashes the server; ``BaseException`` (cancellation, KeyboardInterrupt) passes through.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import trio

from novakms import handlers
from novakms.cluster.peering import run_bootstrap
from novakms.cluster.replicator import Replicator
from novakms.config import ServerConfig
from novakms.errors import (
    ChannelError,
    HandshakeError,
    InternalError,
    NovaKMSError,
    ProtocolError,
    RateLimited,
    RequestError,
    TooLarge,
    TransportError,
    Unavailable,
)
from novakms.log import BoundLogger, get_logger
from novakms.net.addresses import parse_address
from novakms.net.framed import END_OF_STREAM, FramedStream, SealedStream
from novakms.net.sockets import connection_source, listener_address, open_listener
from novakms.node import Node
from novakms.wire import cbor
from novakms.wire.handshake import ServerHandshake
from novakms.wire.messages import (
    InvalidRequest,
    Request,
    close_notice,
    error_response,
    ok_response,
    parse_request,
)

__all__ = ["Server"]

_NOTICE_TIMEOUT = 1.0


class Server:
    """A KMS node's network front.

    Args:
        config: listen addresses and limits.
        node: the state requests are served from.
        random_bytes: RNG for ephemeral keys and nonces (``os.urandom``; injectable for tests).
        clock: wall clock in unix seconds (``time.time``) for auth timestamps and rate limits.
    """

    def __init__(
        self,
        *,
        config: ServerConfig,
        node: Node,
        random_bytes: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.node = node
        self.limits = config.limits
        self._random = random_bytes
        self._clock = clock
        self.addresses: list[str] = []
        self._log = get_logger("novakms.server", node=node.wallet)
        self._shutdown = trio.Event()
        self._closing = False
        self._readers: set[trio.CancelScope] = set()

    async def run(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until :meth:`shutdown` (graceful) or cancellation (immediate).

        ``task_status.started`` receives the bound addresses (ports resolved).
        """
        listeners = []
        try:
            for text in self.config.listen:
                listeners.append(await open_listener(parse_address(text)))
        except BaseException:
            for listener in listeners:
                await listener.aclose()
            raise
        self.addresses = [listener_address(listener) for listener in listeners]
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as listening:
                for listener in listeners:
                    listening.start_soon(self._serve_listener, listener, connections)
                listening.start_soon(self._sweep_store)
                poller = getattr(self.node.auth, "run", None)
                if poller is not None:  # the chain source's poller lives as long as the node
                    await listening.start(poller)
                if getattr(self.node.auth, "peers", None) is not None:
                    self.node.replicator = Replicator(self.node)
                    listening.start_soon(self.node.replicator.run)
                if self.node.master_secret is None:  # get it from the cluster (DESIGN §6)
                    listening.start_soon(
                        functools.partial(
                            run_bootstrap,
                            self.node,
                            interval=self.limits.bootstrap_interval,
                            timeout=self.limits.peer_timeout,
                            random_bytes=self._random,
                        )
                    )
                self._log.info("listening", addresses=",".join(self.addresses))
                task_status.started(list(self.addresses))
                await self._shutdown.wait()
                listening.cancel_scope.cancel()
            # Drain: stop reading new requests, let in-flight ones finish within the deadline.
            self._closing = True
            for scope in list(self._readers):
                scope.cancel()
            connections.cancel_scope.deadline = trio.current_time() + self.limits.drain_timeout
        self._log.info("stopped")

    def shutdown(self) -> None:
        """Begin a graceful shutdown (idempotent)."""
        self._shutdown.set()

    async def _sweep_store(self) -> None:
        """Purge expired values and forget old tombstones, every ``sweep_interval`` seconds."""
        while True:
            await trio.sleep(self.limits.sweep_interval)
            if self.node.store is not None:
                purged, forgotten = self.node.store.sweep(int(self._clock() * 1000))
                if purged or forgotten:
                    self._log.debug("store_swept", purged=purged, forgotten=forgotten)

    async def _serve_listener(
        self, listener: trio.SocketListener, connections: trio.Nursery
    ) -> None:
        await trio.serve_listeners(self._handle, [listener], handler_nursery=connections)

    async def _handle(self, stream: trio.SocketStream) -> None:
        source = connection_source(stream)
        log = self._log.bind(source=source)
        framed = FramedStream(stream, max_frame=self.limits.max_frame)
        try:
            refusal = self._admission(source)
            if refusal is not None:
                log.info(
                    "connection_refused",
                    code=refusal.code,
                    reason=refusal.details.get("reason", ""),
                )
                await self._send_plain_notice(framed, refusal)
                return
            self.node.connections += 1
            try:
                await self._serve_connection(framed, source, log)
            finally:
                self.node.connections -= 1
        except Exception:
            log.exception("connection_failed")
        finally:
            await framed.aclose()

    def _admission(self, source: str) -> NovaKMSError | None:
        if self._closing:
            return Unavailable("the node is shutting down", reason="shutting_down")
        if self.node.connections >= self.limits.max_connections:
            return Unavailable("too many connections", reason="too_many_connections")
        wait = self.node.handshake_limiter.take(source, self._clock())
        if wait > 0:
            return RateLimited(
                "too many handshakes from this source", retry_after_ms=max(1, int(wait * 1000))
            )
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

    async def _serve_connection(self, framed: FramedStream, source: str, log: BoundLogger) -> None:
        with trio.move_on_after(self.limits.handshake_timeout) as deadline:
            established = await self._handshake(framed, source, log)
        if deadline.cancelled_caught:
            log.info("handshake_timeout")
            return
        if established is None:
            return
        sealed, session = established
        log = log.bind(wallet=session.wallet or "anonymous", role=session.role)
        log.debug("session_open")
        await self._request_loop(sealed, session, log)

    async def _handshake(
        self, framed: FramedStream, source: str, log: BoundLogger
    ) -> tuple[SealedStream, handlers.Session] | None:
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
            log.info("handshake_rejected", code=exc.code, error=exc.message)
            await self._send_plain_notice(framed, exc)
            return None
        sealed = SealedStream(framed, channel)
        try:
            await framed.send_body(challenge)
            auth = await sealed.receive()
        except (TransportError, ChannelError):
            return None
        except ProtocolError as exc:
            log.info("handshake_rejected", code=exc.code, error=exc.message)
            await self._send_sealed_quietly(sealed, close_notice(exc))
            return None
        if auth is END_OF_STREAM:
            return None
        try:
            wallet = hs.receive_auth(
                auth, now=int(self._clock()), window=self.limits.timestamp_window
            )
        except (ProtocolError, HandshakeError) as exc:
            log.info("handshake_rejected", code=exc.code, error=exc.message)
            await self._send_sealed_quietly(sealed, close_notice(exc))
            return None
        ready = hs.ready(
            wallet=wallet, max_frame=self.limits.max_frame, max_inflight=self.limits.max_inflight
        )
        if not await self._send_sealed_quietly(sealed, ready):
            return None
        assert hs.role is not None  # set by receive_hello
        return sealed, handlers.Session(
            role=hs.role, wallet=wallet, source=source, transcript_hash=hs.th or b""
        )

    async def _request_loop(
        self, sealed: SealedStream, session: handlers.Session, log: BoundLogger
    ) -> None:
        inflight: set[int] = set()
        slots = trio.Semaphore(self.limits.max_inflight)
        notice: NovaKMSError | None = None
        async with trio.open_nursery() as requests:
            reader = trio.CancelScope()
            self._readers.add(reader)
            try:
                if self._closing:  # the handshake finished while the node began shutting down
                    reader.cancel()
                with reader:
                    notice = await self._read_requests(sealed, session, inflight, slots, requests)
                if reader.cancelled_caught:
                    notice = Unavailable("the node is shutting down", reason="shutting_down")
            finally:
                self._readers.discard(reader)
            # Idle timeout and shutdown let in-flight requests finish (the drain); a broken
            # stream or a protocol violation makes their answers meaningless.
            if notice is not None and not isinstance(notice, Unavailable):
                requests.cancel_scope.cancel()
        if notice is None:
            return
        log.info("connection_closed", code=notice.code, error=notice.message)
        if not isinstance(notice, ChannelError | TransportError):
            with trio.move_on_after(_NOTICE_TIMEOUT):
                await self._send_sealed_quietly(sealed, close_notice(notice))

    async def _read_requests(
        self,
        sealed: SealedStream,
        session: handlers.Session,
        inflight: set[int],
        slots: trio.Semaphore,
        requests: trio.Nursery,
    ) -> NovaKMSError | None:
        """Read requests until the stream ends (None) or must be closed (the error to report)."""
        while True:
            # Backpressure: with max_inflight requests running, do not read any further.
            await slots.acquire()
            spawned = False
            try:
                with trio.move_on_after(self.limits.idle_timeout) as idle:
                    item = await sealed.receive()
                if idle.cancelled_caught:
                    if inflight:
                        continue
                    return Unavailable("closing an idle connection", reason="idle_timeout")
                if item is END_OF_STREAM:
                    return None
                try:
                    request = parse_request(item)
                except InvalidRequest as exc:
                    if exc.request_id is None:
                        return exc
                    requests.start_soon(
                        self._send_sealed_quietly, sealed, error_response(exc.request_id, exc)
                    )
                    continue
                if request.id in inflight:
                    return ProtocolError(f"request id {request.id} is already in flight")
                inflight.add(request.id)
                requests.start_soon(self._run_request, sealed, session, request, inflight, slots)
                spawned = True
            except (ProtocolError, TransportError) as exc:  # ChannelError is a ProtocolError
                return exc
            finally:
                if not spawned:
                    slots.release()

    async def _run_request(
        self,
        sealed: SealedStream,
        session: handlers.Session,
        request: Request,
        inflight: set[int],
        slots: trio.Semaphore,
    ) -> None:
        log = self._log.bind(wallet=session.wallet or "anonymous", op=request.op)
        try:
            try:
                result = await handlers.handle(
                    self.node, session, request.op, request.args, self._clock()
                )
                message = ok_response(request.id, result)
            except RequestError as exc:
                message = error_response(request.id, exc)
                log.debug("request_failed", code=exc.code)
            except Exception:
                log.exception("request_crashed")
                message = error_response(request.id, InternalError("internal error"))
            # Free the id before answering: the client may reuse it as soon as it reads this.
            inflight.discard(request.id)
            try:
                await self._send_sealed_quietly(sealed, message)
            except (TypeError, ValueError, TooLarge):  # unencodable or larger than a frame: a bug
                log.exception("response_unencodable")
                await self._send_sealed_quietly(
                    sealed, error_response(request.id, InternalError("internal error"))
                )
        finally:
            inflight.discard(request.id)
            slots.release()
