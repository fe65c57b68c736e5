"""A load-generator process of ``bench/bench_derive.py``: its share of a scenario's load.

``bench_derive.py`` starts ``--load-processes`` of these for the whole run (``python -m
bench.loadgen``, ``PYTHONPATH`` = the checkout, pinned to the CPUs the server does not use) and
gives each, per measurement, its share of the scenario's connections. The parent talks to it
over stdin / stdout, one JSON object per line::

    parent: {"job": {...}}                      a measurement: target, load shape, warm-up
    child:  {"ready": {...}}                    connections open, warm-up done (or {"error"})
    parent: {"go": {"start": T0, "end": T1}}    the measured window, time.monotonic() seconds
    child:  {"result": {...}}                   counts, latency histogram, errors, CPU seconds
    ...                                         the next job; end of stdin: exit

``time.monotonic()`` is ``CLOCK_MONOTONIC``, one clock for every process of the machine, so
the parent's window means the same instants here. Nothing but these lines goes to stdout.

**Close to the wire.** A load generator written like the servers (trio, a task and an event
per request, a ``send_all`` per request) costs about as much CPU per request as the echo
server it drives, so on a small machine it, not the server, would be the bottleneck. Here the
connections are made with trio (for novakms: the real :class:`novakms.client.aio.Client`, its
handshake and authentication) and the job protocol runs on trio, but the requests of a
measurement are driven by a plain ``epoll`` loop on the connections' sockets, blocking this
process's trio loop while it runs (nothing else runs here meanwhile):

* requests are encoded from a template (only the id changes) and, for novakms, sealed with the
  connection's own channel (ChaCha20-Poly1305, the client's counters);
* every readable socket is read in one ``recv``; each complete answer is opened and checked,
  and the requests it frees are written together in one ``send`` per socket and wake-up;
* answers are checked byte for byte: the first one is decoded, its key (or ``kv.get`` value)
  must have the SHA-256 the parent gave (no key is ever printed or passed around), and every
  later answer must be the same bytes but its id.

Three kinds of job (an op's ``args`` come as ``args_cbor``, their CBOR in hex: JSON has no
bytes):

``closed``
    ``window`` requests in flight on each connection, a new one as soon as one is answered
    (closed loop). Counted: the answers that arrive inside the window; latency from send to
    answer.
``open``
    requests sent on a fixed schedule (``rate`` per second for this process, round-robin over
    its connections) whatever the answers do: open loop, no coordinated omission. Latency is
    measured from each request's *scheduled* send time, and how late each send really was is
    reported too. The schedule is kept with a Linux ``timerfd`` (microsecond wake-ups;
    ``epoll_wait`` alone counts whole milliseconds).
``handshake``
    new connections opened and closed one after the other, with trio (novakms: the real
    client's full authenticated handshake; echo: a bare TCP connect and close).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import select
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import cbor2
import trio

from novakms.client.aio import Client
from novakms.crypto.signer import LocalSigner
from novakms.wire.framing import DEFAULT_MAX_FRAME

__all__ = [
    "Checker",
    "Histogram",
    "LoadError",
    "encode_uint",
    "main",
    "merge_histograms",
    "request_template",
]

CALL_TIMEOUT = 30.0
#: After the window, how long the answers still outstanding are waited for.
DRAIN_TIMEOUT = 10.0
HEADER_SIZE = 4  # u32be frame length (PROTOCOL.md §2), the echo server's framing too
RECEIVE_CHUNK = 262_144
MAX_ERRORS_KEPT = 5
#: The start of every answer map both servers send: map(2), then the key "id".
ANSWER_PREFIX = b"\xa2\x62id"

#: Latency histogram: whole microseconds -> how many (exact to 1 us, small as JSON).
Histogram = Counter[int]


class LoadError(Exception):
    """The job cannot go on (bad job, cannot connect, the server misbehaved)."""


# --- encoding ---------------------------------------------------------------------------------


def encode_uint(value: int) -> bytes:
    """A CBOR unsigned integer, shortest form (the encoding both servers expect)."""
    if value < 24:
        return bytes((value,))
    if value < 0x100:
        return b"\x18" + value.to_bytes(1, "big")
    if value < 0x10000:
        return b"\x19" + value.to_bytes(2, "big")
    if value < 0x1_0000_0000:
        return b"\x1a" + value.to_bytes(4, "big")
    return b"\x1b" + value.to_bytes(8, "big")


def decode_uint(data: bytes, position: int) -> tuple[int, int] | None:
    """The CBOR unsigned integer at ``position`` and the position after it; None if not one."""
    if position >= len(data):
        return None
    head = data[position]
    if head < 24:
        return head, position + 1
    size = {0x18: 1, 0x19: 2, 0x1A: 4, 0x1B: 8}.get(head)
    if size is None or position + 1 + size > len(data):
        return None
    stop = position + 1 + size
    return int.from_bytes(data[position + 1 : stop], "big"), stop


def request_template(op: str, args: dict[str, Any]) -> Callable[[int], bytes]:
    """``id -> encoded {"id": id, "op": op, "args": args}``, byte for byte what cbor2 encodes."""
    prefix = b"\xa3" + cbor2.dumps("id")
    suffix = cbor2.dumps("op") + cbor2.dumps(op) + cbor2.dumps("args") + cbor2.dumps(args)

    def encode(request_id: int) -> bytes:
        return prefix + encode_uint(request_id) + suffix

    for probe in (0, 23, 24, 255, 256, 65_535, 65_536, 2**32):
        if encode(probe) != cbor2.dumps({"id": probe, "op": op, "args": args}):
            raise LoadError(f"the request template does not encode id {probe} as cbor2 does")
    return encode


def merge_histograms(histograms: list[dict[str, int]] | list[Histogram]) -> Histogram:
    """The sum of histograms, also as they come back from JSON (string keys)."""
    total: Histogram = Counter()
    for histogram in histograms:
        for micros, count in histogram.items():
            total[int(micros)] += count
    return total


# --- checking answers -------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """What one job measured in this process."""

    count: int = 0
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    latency: Histogram = field(default_factory=Counter)
    late: Histogram = field(default_factory=Counter)
    scheduled: int = 0

    def error(self, message: str) -> None:
        """Count one failed or wrong answer (the first few are kept verbatim)."""
        self.errors += 1
        if len(self.first_errors) < MAX_ERRORS_KEPT:
            self.first_errors.append(message)


class Checker:
    """Checks answers: ``{"id": n, "ok": {..., field: bytes}}``, the field of a known SHA-256.

    The first right answer is decoded and checked in full; from then on an answer is right
    when it is the same bytes but its id (the servers' answers to one request never vary:
    same key, or same value, version and timestamps). Anything else is decoded and checked
    in full again, so a wrong answer is always told apart and described.
    """

    def __init__(self, field_name: str, sha256_hex: str) -> None:
        self._field = field_name
        self._digest = bytes.fromhex(sha256_hex)
        self._suffix: bytes | None = None

    def check(self, plaintext: bytes) -> tuple[int | None, str | None]:
        """(the answer's request id, None) for a right answer, (id or None, what is wrong)."""
        suffix = self._suffix
        if suffix is not None and plaintext.startswith(ANSWER_PREFIX):
            parsed = decode_uint(plaintext, len(ANSWER_PREFIX))
            if parsed is not None:
                request_id, stop = parsed
                if len(plaintext) - stop == len(suffix) and plaintext.endswith(suffix):
                    return request_id, None
        try:
            answer = cbor2.loads(plaintext)
        except (cbor2.CBORDecodeError, ValueError) as exc:
            return None, f"an answer that is not CBOR: {exc}"
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), int):
            return None, "an answer without an id"
        request_id = answer["id"]
        ok = answer.get("ok")
        if not isinstance(ok, dict):
            error = answer.get("err")
            code = error.get("code") if isinstance(error, dict) else None
            return request_id, f"error answer {code!r}" if code else "an answer without ok"
        value = ok.get(self._field)
        if not isinstance(value, bytes):
            return request_id, f"an answer without {self._field} bytes"
        if hashlib.sha256(value).digest() != self._digest:
            return request_id, f"a different {self._field} than the parent's"
        head = ANSWER_PREFIX + encode_uint(request_id)
        if self._suffix is None and plaintext.startswith(head):
            self._suffix = plaintext[len(head) :]
        return request_id, None


# --- connections ------------------------------------------------------------------------------


def send_all(sock: socket.socket, data: bytes) -> None:
    """Write all of ``data`` on a non-blocking socket (waiting for room if it is ever full)."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            select.select([], [sock], [], CALL_TIMEOUT)
            continue
        view = view[sent:]


class Link:
    """One connection: requests queued and written in bursts, answers read a chunk at a time.

    ``seal`` / ``open_`` turn request plaintext into a frame body and a frame body into answer
    plaintext (the identity for the echo server, the sealed channel for novakms). ``sock`` is
    a duplicate of the connection's socket (non-blocking, shared with its trio stream).
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        seal: Callable[[bytes], bytes],
        open_: Callable[[bytes], bytes],
        encode: Callable[[int], bytes],
        checker: Checker,
    ) -> None:
        self.sock = sock
        self._seal = seal
        self._open = open_
        self._encode = encode
        self._checker = checker
        self._next_id = 1
        self._queued: list[bytes] = []
        self._buffer = bytearray()
        #: request id -> when it was sent (closed loop) or scheduled (open loop)
        self.outstanding: dict[int, float] = {}

    def fileno(self) -> int:
        """The socket's file descriptor."""
        return self.sock.fileno()

    def queue(self, since: float) -> None:
        """Queue one request, its latency counted from ``since``; :meth:`flush` sends it."""
        request_id = self._next_id
        self._next_id += 1
        self.outstanding[request_id] = since
        body = self._seal(self._encode(request_id))
        self._queued.append(len(body).to_bytes(HEADER_SIZE, "big") + body)

    def flush(self) -> None:
        """Write every queued request at once."""
        if self._queued:
            batch, self._queued = self._queued, []
            send_all(self.sock, b"".join(batch))

    def receive(self, tally: Tally) -> tuple[float, list[tuple[float, bool]]]:
        """Read what the socket has: (when it came, the complete answers in it).

        Each answer is (when its request was sent or scheduled, whether it was right); a
        wrong one is counted in ``tally``, and its request is done all the same.

        Raises:
            LoadError: the server closed the connection, sent a frame over the limit, or
                answered a request never sent.
        """
        try:
            data = self.sock.recv(RECEIVE_CHUNK)
        except BlockingIOError:
            return time.monotonic(), []
        now = time.monotonic()
        if not data:
            raise LoadError("the server closed the connection")
        buffer = self._buffer
        buffer += data
        answers = []
        position, size = 0, len(buffer)
        outstanding, check, open_ = self.outstanding, self._checker.check, self._open
        while size - position >= HEADER_SIZE:
            length = int.from_bytes(buffer[position : position + HEADER_SIZE], "big")
            if length > DEFAULT_MAX_FRAME:
                raise LoadError("a frame over the limit")
            stop = position + HEADER_SIZE + length
            if stop > size:
                break
            request_id, wrong = check(open_(bytes(buffer[position + HEADER_SIZE : stop])))
            position = stop
            since = outstanding.pop(request_id, None) if request_id is not None else None
            if since is None:
                raise LoadError(f"an answer to no request sent (id {request_id!r}: {wrong})")
            if wrong is not None:
                tally.error(wrong)
            answers.append((since, wrong is None))
        del buffer[:position]
        return now, answers


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """Where and how to connect, from the job."""

    kind: str  # "echo" or "kms"
    host: str
    port: int
    key_file: str | None
    server_wallet: str | None

    @classmethod
    def of(cls, data: dict[str, Any]) -> TargetSpec:
        """Parse the job's ``target`` map."""
        kind = data["kind"]
        if kind not in ("echo", "kms"):
            raise LoadError(f"unknown target kind {kind!r}")
        return cls(kind, data["host"], int(data["port"]), data.get("key_file"), data.get("wallet"))

    @property
    def address(self) -> str:
        """``tcp://HOST:PORT``."""
        return f"tcp://{self.host}:{self.port}"


async def kms_client(spec: TargetSpec, signer: LocalSigner) -> Client:
    """An authenticated connection by the real client."""
    return await Client.connect(
        spec.address, signer=signer, expect_wallet=spec.server_wallet, timeout=CALL_TIMEOUT
    )


def _duplicate(stream: trio.abc.Stream) -> socket.socket:
    """A stdlib socket on a duplicate of a trio socket stream's file descriptor."""
    if not isinstance(stream, trio.SocketStream):
        raise LoadError(f"not a socket stream: {type(stream).__name__}")
    return socket.socket(fileno=os.dup(stream.socket.fileno()))


@contextlib.asynccontextmanager
async def open_link(
    spec: TargetSpec, signer: LocalSigner | None, encode: Callable[[int], bytes], checker: Checker
) -> AsyncIterator[Link]:
    """One connection to the target as a :class:`Link` (closed on exit)."""
    if spec.kind == "echo":
        stream = await trio.open_tcp_stream(spec.host, spec.port)  # TCP_NODELAY, as novakms's
        async with stream:
            with _duplicate(stream) as sock:
                yield Link(sock, seal=bytes, open_=bytes, encode=encode, checker=checker)
        return
    assert signer is not None
    client = await kms_client(spec, signer)
    try:
        # The real client's connection after its handshake, driven directly with its sealed
        # channel, without its per-call machinery (a task switch and an event per request).
        # Nothing is called through ``client`` from here on, and nothing is left in its frame
        # decoder: the server sends nothing after Ready until asked.
        sealed = client._sealed  # no public accessor: see above
        channel = sealed.channel
        max_body = sealed.framed.max_frame

        def seal(plaintext: bytes) -> bytes:
            return channel.seal_plaintext(plaintext, max_body=max_body)

        with _duplicate(sealed.framed.stream) as sock:
            yield Link(
                sock, seal=seal, open_=channel.open_plaintext, encode=encode, checker=checker
            )
    finally:
        await client.aclose()


# --- timing -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """The measured window, ``time.monotonic()`` seconds."""

    start: float
    end: float


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


class Timer:
    """A Linux timerfd on ``CLOCK_MONOTONIC``: becomes readable at an absolute instant.

    ``fd`` is None where there is none (then the open loop waits in ``epoll_wait``, whole
    milliseconds rounded up).
    """

    _CLOCK_MONOTONIC = 1
    _TFD_CLOEXEC = 0o2000000
    _TFD_NONBLOCK = 0o4000
    _TFD_TIMER_ABSTIME = 1

    def __init__(self) -> None:
        self.fd: int | None = None
        self._libc: Any = None
        if sys.platform == "linux":
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL(None, use_errno=True)
                fd = libc.timerfd_create(
                    self._CLOCK_MONOTONIC, self._TFD_NONBLOCK | self._TFD_CLOEXEC
                )
                if fd >= 0:
                    self.fd, self._libc = fd, libc

    @property
    def kind(self) -> str:
        """``timerfd`` or ``epoll-ms``."""
        return "timerfd" if self.fd is not None else "epoll-ms"

    def arm(self, moment: float) -> None:
        """Become readable at ``moment`` (``time.monotonic()``; at once if it is past)."""
        if self.fd is None:
            return
        seconds = int(moment)
        nanos = min(int((moment - seconds) * 1e9), 999_999_999)
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(seconds, max(nanos, 1)))
        if self._libc.timerfd_settime(self.fd, self._TFD_TIMER_ABSTIME, ctypes.byref(spec), None):
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def clear(self) -> None:
        """Consume an expiry (after the fd was readable)."""
        if self.fd is not None:
            with contextlib.suppress(BlockingIOError):
                os.read(self.fd, 8)

    def close(self) -> None:
        """Release the timerfd."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# --- the loads --------------------------------------------------------------------------------


def closed_loop(
    links: list[Link], window: int, until: float, tally: Tally, counted: Window | None
) -> None:
    """``window`` requests in flight per link until ``until``; then wait for the rest.

    Answers arriving inside ``counted`` are counted, with their latency (None: warm-up).
    """
    by_fd = {link.fileno(): link for link in links}
    latency = tally.latency
    with select.epoll() as poller:
        start = time.monotonic()
        for fd, link in by_fd.items():
            poller.register(fd, select.EPOLLIN)
            for _ in range(window):
                link.queue(start)
            link.flush()
        deadline = until + DRAIN_TIMEOUT
        busy = len(by_fd)
        while busy:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            for fd, _ in poller.poll(timeout):
                link = by_fd[fd]
                now, answers = link.receive(tally)
                inside = counted is not None and counted.start <= now <= counted.end
                issuing = now < until
                for sent, right in answers:
                    if right and inside:
                        tally.count += 1
                        latency[int((now - sent) * 1e6 + 0.5)] += 1
                    if issuing:
                        link.queue(now)
                link.flush()
                if not link.outstanding:
                    poller.unregister(fd)
                    busy -= 1
    _unanswered(links, tally)


def open_loop(links: list[Link], rate: float, window: Window, tally: Tally) -> str:
    """Send ``rate`` requests per second, round-robin over ``links``, through ``window``.

    Returns the timer kind used. Latency counts from each request's scheduled time; how late
    each request really left (after its burst was written) goes to ``tally.late``.
    """
    by_fd = {link.fileno(): link for link in links}
    timer = Timer()
    kind = timer.kind
    latency, late = tally.latency, tally.late
    interval = 1.0 / rate
    index = 0
    due = window.start
    try:
        with select.epoll() as poller:
            for fd in by_fd:
                poller.register(fd, select.EPOLLIN)
            if timer.fd is not None:
                poller.register(timer.fd, select.EPOLLIN)
            timer.arm(due)
            deadline = window.end + DRAIN_TIMEOUT
            while True:
                now = time.monotonic()
                scheduling = due < window.end
                if not scheduling and not any(link.outstanding for link in links):
                    break
                if now >= deadline:
                    break
                if scheduling:
                    timeout = -1.0 if timer.fd is not None else max(0.0, due - now)
                else:
                    timeout = deadline - now
                for fd, _ in poller.poll(timeout):
                    if fd == timer.fd:
                        timer.clear()
                        continue
                    now, answers = by_fd[fd].receive(tally)
                    for scheduled, right in answers:
                        if right:
                            tally.count += 1
                            latency[int((now - scheduled) * 1e6 + 0.5)] += 1
                now = time.monotonic()
                if due <= now and due < window.end:
                    dues = []
                    while due <= now and due < window.end:
                        links[index % len(links)].queue(due)
                        dues.append(due)
                        index += 1
                        due = window.start + index * interval
                    for link in links:
                        link.flush()
                    sent = time.monotonic()
                    for scheduled in dues:
                        late[int((sent - scheduled) * 1e6 + 0.5)] += 1
                    if due < window.end:
                        timer.arm(due)
    finally:
        timer.close()
    tally.scheduled = index
    _unanswered(links, tally)
    return kind


def _unanswered(links: list[Link], tally: Tally) -> None:
    for link in links:
        for _ in link.outstanding:
            tally.error(f"no answer within {DRAIN_TIMEOUT:g} s after the window")
        link.outstanding.clear()


async def handshakes(
    spec: TargetSpec, signer: LocalSigner | None, until: float, tally: Tally, *, counted: bool
) -> None:
    """Connect and close, one after the other, until ``until`` (counted: those done by then)."""
    while time.monotonic() < until:
        began = time.monotonic()
        try:
            if spec.kind == "echo":
                stream = await trio.open_tcp_stream(spec.host, spec.port)
                await stream.aclose()
            else:
                assert signer is not None
                client = await kms_client(spec, signer)
                await client.aclose()
        except Exception as exc:  # counted, and fails the run at the end
            tally.error(f"{type(exc).__name__}: {exc}")
            await trio.sleep(0.01)
            continue
        now = time.monotonic()
        if counted and now <= until:
            tally.count += 1
            tally.latency[int((now - began) * 1e6 + 0.5)] += 1


# --- the process ------------------------------------------------------------------------------


def send(message: dict[str, Any]) -> None:
    """One JSON line to the parent."""
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


class LineReader:
    """JSON lines from stdin, read without blocking the trio loop."""

    def __init__(self) -> None:
        self._stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        self._buffer = b""

    async def message(self) -> dict[str, Any] | None:
        """The next message; None at the end of stdin."""
        while b"\n" not in self._buffer:
            data = await self._stream.receive_some(65536)
            if not data:
                return None
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise LoadError("a message that is not a JSON object")
        return message

    async def aclose(self) -> None:
        """Close the duplicated stdin."""
        await self._stream.aclose()


async def ready(lines: LineReader, warm: Tally) -> Window:
    """Tell the parent this process is ready (with the warm-up's errors); wait for its go."""
    send({"ready": {"errors": warm.errors, "first_errors": warm.first_errors}})
    message = await lines.message()
    if message is None or "go" not in message:
        raise LoadError(f"expected go, got {message!r}")
    return Window(float(message["go"]["start"]), float(message["go"]["end"]))


async def sleep_until_monotonic(moment: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``moment`` (trio's clock has its own offset)."""
    await trio.sleep(max(0.0, moment - time.monotonic()))


def wait_until_monotonic(moment: float) -> None:
    """The same, blocking (``time.sleep`` has microsecond resolution)."""
    time.sleep(max(0.0, moment - time.monotonic()))


async def run_job(job: dict[str, Any], lines: LineReader) -> dict[str, Any]:
    """Connect, warm up, report ready, wait for the go, measure; the result for the parent."""
    spec = TargetSpec.of(job["target"])
    kind = job["kind"]
    signer = LocalSigner.from_file(spec.key_file) if spec.kind == "kms" and spec.key_file else None
    if spec.kind == "kms" and signer is None:
        raise LoadError("a novakms target needs its key_file")
    warmup_s = float(job.get("warmup_s", 0.0))
    warm, tally = Tally(), Tally()
    timer_kind = None
    if kind == "handshake":
        await handshakes(spec, signer, time.monotonic() + warmup_s, warm, counted=False)
        window = await ready(lines, warm)
        await sleep_until_monotonic(window.start)
        cpu = time.process_time()
        await handshakes(spec, signer, window.end, tally, counted=True)
        cpu = time.process_time() - cpu
    elif kind in ("closed", "open"):
        encode = request_template(job["op"], cbor2.loads(bytes.fromhex(job["args_cbor"])))
        checker = Checker(job["check"]["field"], job["check"]["sha256"])
        per_link = int(job.get("window", 1))
        async with contextlib.AsyncExitStack() as stack:
            links = [
                await stack.enter_async_context(open_link(spec, signer, encode, checker))
                for _ in range(int(job["connections"]))
            ]
            closed_loop(links, per_link, time.monotonic() + warmup_s, warm, None)
            window = await ready(lines, warm)
            wait_until_monotonic(window.start)
            cpu = time.process_time()
            if kind == "closed":
                closed_loop(links, per_link, window.end, tally, window)
            else:
                timer_kind = open_loop(links, float(job["rate"]), window, tally)
            cpu = time.process_time() - cpu
    else:
        raise LoadError(f"unknown job kind {kind!r}")
    return {
        "count": tally.count,
        "errors": warm.errors + tally.errors,
        "first_errors": (warm.first_errors + tally.first_errors)[:MAX_ERRORS_KEPT],
        "latency_us": {str(k): v for k, v in sorted(tally.latency.items())},
        "late_us": {str(k): v for k, v in sorted(tally.late.items())},
        "scheduled": tally.scheduled,
        "cpu_s": cpu,
        "timer": timer_kind,
    }


async def serve() -> None:
    """Run jobs until stdin ends."""
    lines = LineReader()
    try:
        while True:
            message = await lines.message()
            if message is None:
                return
            if "job" not in message:
                continue  # e.g. the go of a job that failed after its ready
            try:
                result = await run_job(message["job"], lines)
            except Exception as exc:  # bad job, cannot connect, server gone: the parent stops
                send({"error": f"{type(exc).__name__}: {exc}"})
                continue
            send({"result": result})
    finally:
        await lines.aclose()


def main() -> int:
    """Entry point (``python -m bench.loadgen``)."""
    trio.run(serve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
