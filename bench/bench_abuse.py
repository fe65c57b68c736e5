"""A well-behaved app's ``derive`` latency and the node's memory while the node is attacked.

Usage::

    .venv/bin/python bench/bench_abuse.py            # every phase, both source modes (~4 min)
    .venv/bin/python bench/bench_abuse.py --quick    # shorter windows, attackers on 127.0.0.2

One phase per attack of issue 9 (items 1-5), plus an idle phase first. Every phase starts a
fresh ``novakms serve`` (development mode, **default limits**) in its own process on
``127.0.0.1``, connects the victim (demo app 2, the real :class:`novakms.client.Client`, from
``127.0.0.1``), then runs one attack in a separate attacker process (this script with
``--attacker``) while the victim calls ``derive`` at a fixed rate (open loop: each call
starts on its schedule whether or not the previous ones were answered, so a stalled node cannot
hide behind fewer calls; latency runs from the call's start to its answer) and opens a fresh
connection every ``--probe-interval`` s (its refusals are reported).
The node's RSS comes from ``/proc/<pid>/status`` (VmRSS), sampled every 50 ms.

Attackers bind their sockets to ``127.0.0.2`` (``--source separate``), so per-source limits
of the node see two clients; ``--source shared`` makes them use ``127.0.0.1`` like the victim,
which is what a node inside an enclave sees (every client arrives through the parent's CID).
Every attack is bounded in count and time and stops by itself; every socket operation has a
deadline, and refusals, resets and closes by the node are counted, never fatal.

The table goes to stdout (progress to stderr); the figures go to
``bench/results/abuse-<UTC timestamp>.json`` and ``bench/results/abuse-latest.json``, with a
chart beside each (``.png``: the victim's p50 / p99 / max per phase; with ``--compare``, also
``-compare.png``: p99 and RSS growth before -> after; needs matplotlib, see ``bench/plot.py``).
Goals per phase (issue 9): victim p99 <= 5x the idle p99, no victim call above 1 s, node RSS
growth <= 64 MiB, and the victim served (no failed call, no refused connect).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from novakms.client.aio import Client
from novakms.client.results import parse_derive_result
from novakms.crypto import eth
from novakms.crypto.signer import LocalSigner, Signer
from novakms.dev.env import DevState, prepare_state
from novakms.errors import NovaKMSError, TransportError
from novakms.net.framed import END_OF_STREAM, FramedStream, SealedStream
from novakms.wire import cbor
from novakms.wire.framing import DEFAULT_MAX_FRAME, encode_frame
from novakms.wire.handshake import ClientHandshake, Ready
from novakms.wire.messages import parse_close_notice

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: bench.*
from bench.bench_derive import (
    Spawned,
    free_port,
    git_info,
    machine_info,
    percentile,
    server_process,
    tail,
)
from bench.plot import chart_beside

BENCH_DIR = Path(__file__).resolve().parent
SCRIPT = str(Path(__file__).resolve())
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"
ATTACKER_SOURCES = {"separate": "127.0.0.2", "shared": "127.0.0.1"}
DERIVE_PATH = "bench/abuse"
BIG_KEY = "abuse/big"
BIG_VALUE_BYTES = 1_048_576
MIB = 1024 * 1024

# Goals of issue 9, checked per phase.
GOAL_P99_FACTOR = 5.0
GOAL_MAX_MS = 1000.0
GOAL_RSS_GROWTH_MIB = 64.0

READY_TIMEOUT = 30.0
RSS_PERIOD = 0.05
GRACE = 4.0  # after the window: calls still running get this long, then count as timed out
RESULT_TIMEOUT = 15.0  # for the attacker to report after it was told to stop
CONNECT_TIMEOUT = 3.0
SEND_TIMEOUT = 2.0
WARMUP_CALLS = 20

FULL = {"window": 6.0, "rate": 100.0}
QUICK = {"window": 3.0, "rate": 100.0}


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ============================================================================================
# Hostile bodies (built byte by byte: the project's encoder refuses to nest this deep)
# ============================================================================================


def _array_head(count: int) -> bytes:
    return b"\x9a" + count.to_bytes(4, "big")  # array, 4-byte length


#: One unit of the nested body: 15 one-element arrays around a 0 (depth 15; 16 bytes).
NESTED_UNIT = b"\x81" * 15 + b"\x00"
#: The same inside a request's ``args.x`` (3 levels above it): depth 13 in 16 bytes.
NESTED_UNIT_IN_REQUEST = b"\x81" * 12 + b"\x83\x00\x00\x00"


def nested_body(size: int) -> bytes:
    """``[[[…[0]…]], …]``: depth 16, ~size/16 units, at most ``size`` bytes."""
    units = (size - 5) // len(NESTED_UNIT)
    return _array_head(units) + NESTED_UNIT * units


def flat_body(size: int) -> bytes:
    """``[0, 0, …]``: one array of ``size - 5`` zeros."""
    return _array_head(size - 5) + b"\x00" * (size - 5)


def request_with_body(request_id: int, kind: str, size: int) -> bytes:
    """``{"id": id, "op": "health", "args": {"x": <nested or flat array>}}``, <= size bytes."""
    prefix = b"\xa3" + cbor.encode("id") + cbor.encode(request_id) + cbor.encode("op")
    prefix += cbor.encode("health") + cbor.encode("args") + b"\xa1" + cbor.encode("x")
    room = size - len(prefix) - 5
    if kind == "nested":
        units = room // len(NESTED_UNIT_IN_REQUEST)
        return prefix + _array_head(units) + NESTED_UNIT_IN_REQUEST * units
    return prefix + _array_head(room) + b"\x00" * room


def invalid_request(request_id: int) -> bytes:
    """A request that fails validation but carries an id (empty op)."""
    return b"\xa3" + b"\x62id" + cbor.encode(request_id) + b"\x62op\x60" + b"\x64args\xa0"


def max_plaintext(max_frame: int) -> int:
    """Largest plaintext whose sealed body fits a frame (16-byte tag, 5-byte bstr head)."""
    return max_frame - 16 - 5


# ============================================================================================
# Attacker side (runs in its own process: `bench_abuse.py --attacker JSON`)
# ============================================================================================


@dataclass(slots=True)
class AttackStats:
    """What an attack did and how the node answered."""

    sent: int = 0  # attack units sent (hellos, bodies, frames, requests, connects)
    refused: int = 0  # units the node refused (close notice or refusing error answer)
    closed: int = 0  # attacker connections the node closed (EOF, reset, after a notice)
    answered: int = 0  # units the node served as if nothing were wrong
    timeouts: int = 0  # operations that hit their deadline (node silent or not reading)
    connections: int = 0  # connections the attacker opened (TCP established)
    codes: Counter[str] = field(default_factory=Counter)
    notes: dict[str, Any] = field(default_factory=dict)

    def refusal(self, exc: NovaKMSError) -> None:
        self.refused += 1
        reason = exc.details.get("reason")
        self.codes[f"{exc.code}:{reason}" if reason else exc.code] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "refused": self.refused,
            "closed": self.closed,
            "answered": self.answered,
            "timeouts": self.timeouts,
            "connections": self.connections,
            "codes": dict(self.codes),
            "notes": self.notes,
        }


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    source: str
    server_wallet: str


async def open_raw(target: Target, stats: AttackStats) -> trio.SocketStream:
    """A TCP connection to the node from ``target.source`` (any 127.x address on loopback)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        await sock.bind((target.source, 0))
        with trio.fail_after(CONNECT_TIMEOUT):
            await sock.connect((target.host, target.port))
    except BaseException:
        sock.close()
        raise
    stats.connections += 1
    return trio.SocketStream(sock)


@dataclass(slots=True)
class Session:
    framed: FramedStream
    sealed: SealedStream
    ready: Ready
    server_wallet: str

    @property
    def stream(self) -> trio.SocketStream:
        stream = self.framed.stream
        assert isinstance(stream, trio.SocketStream)
        return stream


async def open_session(target: Target, stats: AttackStats, signer: Signer | None) -> Session:
    """The real client handshake (as ``Client.connect`` does it) over a socket from ``source``.

    Raises:
        NovaKMSError: the node refused (its close notice), TransportError when it closed.
        OSError, trio.TooSlowError: could not connect / no answer in time.
    """
    stream = await open_raw(target, stats)
    framed = FramedStream(stream, max_frame=DEFAULT_MAX_FRAME)
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            hs = ClientHandshake(
                role="app", eph_private=os.urandom(32), expect_wallet=target.server_wallet
            )
            await framed.send_body(hs.hello())
            body = await framed.receive_body()
            if body is None:
                raise TransportError("closed during the handshake")
            channel = hs.receive_challenge(body)
            sealed = SealedStream(framed, channel)
            if signer is None:
                auth = hs.auth_message(wallet=None)
            else:
                ts = int(time.time())
                sig = await signer.sign_text(hs.auth_text(ts))
                auth = hs.auth_message(wallet=signer.wallet, ts=ts, sig=sig)
            await sealed.send(auth)
            item = await sealed.receive()
            if item is END_OF_STREAM:
                raise TransportError("closed during the handshake")
            ready = hs.receive_ready(item)
    except BaseException:
        await framed.aclose()
        raise
    assert hs.server_wallet is not None
    return Session(framed, sealed, ready, hs.server_wallet)


async def try_session(
    target: Target, stats: AttackStats, signer: Signer | None = None
) -> Session | None:
    """``open_session``, counting a refusal, a close or a timeout instead of raising."""
    try:
        return await open_session(target, stats, signer)
    except TransportError:
        stats.closed += 1
    except NovaKMSError as exc:
        stats.refusal(exc)
    except (OSError, trio.TooSlowError):
        stats.timeouts += 1
    return None


def closed_by_peer(stream: trio.SocketStream) -> bool:
    """Did the node close (FIN or reset) this connection? Reads nothing (poll RDHUP)."""
    try:
        fd = stream.socket.fileno()
    except OSError:
        return True
    if fd < 0:
        return True
    poller = select.poll()
    rdhup = getattr(select, "POLLRDHUP", 0x2000)
    poller.register(fd, rdhup | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(0))


async def send_with_deadline(
    stream: trio.abc.SendStream, data: bytes, until: float | None = None
) -> str:
    """Send until ``until`` (default: SEND_TIMEOUT from now): "ok", "closed" or "stalled"."""
    try:
        with trio.fail_at(trio.current_time() + SEND_TIMEOUT if until is None else until):
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return "closed"
    except trio.TooSlowError:
        return "stalled"
    return "ok"


async def read_outcome(framed: FramedStream, stats: AttackStats, until: float) -> None:
    """Read what the node answers to a plaintext frame: a close notice, a close, or silence."""
    try:
        with trio.fail_at(until):
            body = await framed.receive_body()
    except trio.TooSlowError:
        stats.timeouts += 1
        return
    except NovaKMSError:  # reset, framing error
        stats.closed += 1
        return
    if body is None:
        stats.closed += 1
        return
    try:
        notice = parse_close_notice(cbor.decode(body))
    except NovaKMSError:
        notice = None
    if notice is not None:
        stats.refusal(notice)
        stats.closed += 1
    else:
        stats.answered += 1


@dataclass(slots=True)
class Attack:
    """One attack: ``setup`` before the victim connects, ``run`` during the window."""

    target: Target
    params: dict[str, Any]
    stats: AttackStats
    deadline: float  # trio time at which run must have stopped
    app_key_file: str | None
    sessions: list[Session] = field(default_factory=list)
    streams: list[trio.SocketStream] = field(default_factory=list)

    async def setup(self) -> None:
        kind = self.params["kind"]
        if kind == "idle_sessions":
            await self._open_idle_sessions()
        elif kind == "slow_reader":
            await self._put_big_value()
            signer = self._app_signer()
            for _ in range(self.params["connections"]):
                session = await try_session(self.target, self.stats, signer)
                if session is not None:
                    self.sessions.append(session)
        # The other attacks open their sessions when they start: a short idle timeout for
        # anonymous sessions must not close them while the victim is being set up.

    async def run(self) -> None:
        kind = self.params["kind"]
        runner: Callable[[], Awaitable[None]] = getattr(self, f"_run_{kind}")
        with trio.move_on_at(self.deadline):
            await runner()

    async def close(self) -> None:
        for session in self.sessions:
            await session.framed.aclose()
        for stream in self.streams:
            with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                await stream.aclose()

    def _app_signer(self) -> LocalSigner:
        assert self.app_key_file is not None
        return LocalSigner.from_file(self.app_key_file)

    # --- 1a / 1b: huge ClientHellos -----------------------------------------------------------

    async def _run_hello_flood(self) -> None:
        size = DEFAULT_MAX_FRAME
        body = nested_body(size) if self.params["body"] == "nested" else flat_body(size)
        frame = encode_frame(body, max_frame=DEFAULT_MAX_FRAME)
        self.stats.notes["hello_bytes"] = len(body)

        async def one() -> None:
            try:
                stream = await open_raw(self.target, self.stats)
            except (OSError, trio.TooSlowError):
                self.stats.timeouts += 1
                return
            self.streams.append(stream)
            framed = FramedStream(stream, max_frame=DEFAULT_MAX_FRAME)
            # Until the deadline: a node busy decoding other hellos reads slowly.
            outcome = await send_with_deadline(stream, frame, self.deadline)
            if outcome == "stalled":
                # The node stopped reading the hello: it may have refused it at the prefix.
                self.stats.notes["sends_stalled"] = self.stats.notes.get("sends_stalled", 0) + 1
            else:
                self.stats.sent += outcome == "ok"
            answered = False
            try:
                await read_outcome(framed, self.stats, self.deadline + 1)
                answered = True
            finally:
                self.stats.timeouts += not answered  # no answer before the end of the attack

        async with trio.open_nursery() as nursery:
            for _ in range(self.params["connections"]):
                nursery.start_soon(one)

    # --- 1c: the same bodies as requests of anonymous sessions ---------------------------------

    async def _run_session_bodies(self) -> None:
        size = max_plaintext(DEFAULT_MAX_FRAME)
        remaining = self.params["bodies"]
        kinds = ("nested", "flat")

        async def worker(session: Session | None) -> None:
            nonlocal remaining
            request_id = failed = 0
            while remaining > 0 and failed < 20:
                if session is None:
                    session = await try_session(self.target, self.stats)
                    if session is None:
                        failed += 1  # refused or closed: try again, a bounded number of times
                        await trio.sleep(0.05)
                        continue
                    failed = 0
                    self.sessions.append(session)
                remaining -= 1
                request_id += 1
                plaintext = request_with_body(request_id, kinds[request_id % 2], size)
                body = session.sealed.channel.seal_plaintext(plaintext)
                frame = encode_frame(body, max_frame=DEFAULT_MAX_FRAME)
                outcome = await send_with_deadline(session.stream, frame, self.deadline)
                if outcome == "stalled":
                    self.stats.timeouts += 1
                    session = None
                    continue
                self.stats.sent += outcome == "ok"
                answered = False
                try:
                    # Bounded by the attack's deadline; after a failed send, by one second.
                    with trio.move_on_after(math.inf if outcome == "ok" else 1.0):
                        item = await session.sealed.receive()
                        answered = True
                    if not answered:
                        item, answered = END_OF_STREAM, True
                except NovaKMSError:
                    item, answered = END_OF_STREAM, True
                finally:
                    self.stats.timeouts += not answered  # no answer before the end
                if item is END_OF_STREAM:
                    self.stats.closed += 1
                    session = None
                    continue
                notice = parse_close_notice(item)
                if notice is not None:
                    self.stats.refusal(notice)
                    self.stats.closed += 1
                    session = None
                elif isinstance(item, dict) and "err" in item:
                    self.stats.answered += 1  # decoded, then answered with an error
                    self.stats.codes[f"answer:{item['err'].get('code')}"] += 1
                else:
                    self.stats.answered += 1

        async with trio.open_nursery() as nursery:
            for _ in range(self.params["sessions"]):
                nursery.start_soon(worker, None)

    # --- 2: invalid requests with an id, never reading -----------------------------------------

    async def _run_invalid_flood(self) -> None:
        session = await try_session(self.target, self.stats)
        if session is None:
            return
        self.sessions.append(session)
        channel = session.sealed.channel
        batch, count = self.params["batch"], self.params["count"]
        request_id = 0
        while request_id < count:
            frames = []
            for _ in range(batch):
                request_id += 1
                body = channel.seal_plaintext(invalid_request(request_id))
                frames.append(encode_frame(body, max_frame=DEFAULT_MAX_FRAME))
            chunk = b"".join(frames)
            outcome = await send_with_deadline(session.stream, chunk)
            if outcome == "closed":
                self.stats.closed += 1
                return
            if outcome == "stalled":
                self.stats.timeouts += 1
                self.stats.notes["stalled_after_sent"] = self.stats.sent
                break
            self.stats.sent += batch
            self.stats.notes["bytes"] = self.stats.notes.get("bytes", 0) + len(chunk)
        # Keep the connection (and whatever the node queued for it) until the window ends.
        while not closed_by_peer(session.stream):  # noqa: ASYNC110  (polls without reading)
            await trio.sleep(0.1)
        self.stats.closed += 1

    # --- 3: many idle anonymous sessions from one source ---------------------------------------

    async def _open_idle_sessions(self) -> None:
        """Open up to ``count`` sessions, paced under the handshake rate; keep them idle."""
        count, burst, rate = self.params["count"], self.params["burst"], self.params["rate"]
        give_up = trio.current_time() + self.params["setup_seconds"]
        start = trio.current_time()
        opened = attempts = refused_in_a_row = 0
        with trio.move_on_at(give_up):
            while opened < count and refused_in_a_row < 20:
                if attempts >= burst:
                    await trio.sleep_until(start + (attempts - burst) / rate)
                attempts += 1
                session = await try_session(self.target, self.stats)
                if session is None:
                    refused_in_a_row += 1
                    await trio.sleep(0.1)
                    continue
                refused_in_a_row = 0
                opened += 1
                self.sessions.append(session)
        self.stats.sent = attempts
        self.stats.answered = opened
        self.stats.notes["opened"] = opened
        self.stats.notes["setup_s"] = trio.current_time() - start

    async def _run_idle_sessions(self) -> None:
        await trio.sleep_until(self.deadline)

    def count_closed_sessions(self) -> None:
        """How many of the held sessions the node closed by the end (attacks 3 and 4)."""
        closed = sum(closed_by_peer(s.stream) for s in self.sessions)
        self.stats.closed += closed
        self.stats.notes["still_open_at_end"] = len(self.sessions) - closed

    # --- 4: an app pipelining big kv.get and never reading -------------------------------------

    async def _put_big_value(self) -> None:
        session = await try_session(self.target, self.stats, self._app_signer())
        if session is None:
            self.stats.notes["put"] = "no session"
            return
        client = Client(session.sealed, session.server_wallet, session.ready, CONNECT_TIMEOUT)
        try:
            await client.kv_put(BIG_KEY, b"\x5a" * BIG_VALUE_BYTES)
            self.stats.notes["put"] = "ok"
        except NovaKMSError as exc:
            self.stats.notes["put"] = f"{exc.code}: {exc.message}"
        finally:
            await client.aclose()

    async def _run_slow_reader(self) -> None:
        per_connection = self.params["requests"]

        async def one(session: Session) -> None:
            frames = []
            for request_id in range(1, per_connection + 1):
                message = {"id": request_id, "op": "kv.get", "args": {"key": BIG_KEY}}
                frames.append(
                    encode_frame(session.sealed.channel.seal(message), max_frame=DEFAULT_MAX_FRAME)
                )
            outcome = await send_with_deadline(session.stream, b"".join(frames))
            if outcome == "ok":
                self.stats.sent += per_connection
            else:
                self.stats.timeouts += outcome == "stalled"

        async with trio.open_nursery() as nursery:
            for session in self.sessions:
                nursery.start_soon(one, session)
        await trio.sleep_until(self.deadline)

    # --- 5a: handshake flood -------------------------------------------------------------------

    async def _run_handshake_flood(self) -> None:
        rate, count = self.params["rate"], self.params["count"]
        limiter = trio.CapacityLimiter(self.params["concurrency"])
        start = trio.current_time()

        async def one() -> None:
            async with limiter:
                session = await try_session(self.target, self.stats)
                if session is not None:
                    self.stats.answered += 1
                    await session.framed.aclose()

        async with trio.open_nursery() as nursery:
            for index in range(count):
                await trio.sleep_until(start + index / rate)
                self.stats.sent += 1
                nursery.start_soon(one)

    # --- 5b: unregistered wallets hammering requests -------------------------------------------

    async def _run_wallet_hammer(self) -> None:
        per_wallet, tasks = self.params["requests"], self.params["tasks"]

        async def hammer(client: Client) -> None:
            left = per_wallet
            lost = False

            async def worker() -> None:
                nonlocal left, lost
                while left > 0:
                    left -= 1
                    self.stats.sent += 1
                    try:
                        await client.call("health", timeout=SEND_TIMEOUT)
                    except TransportError:
                        self.stats.closed += not lost
                        lost, left = True, 0
                    except NovaKMSError as exc:
                        self.stats.refusal(exc)
                    else:
                        self.stats.answered += 1

            async with trio.open_nursery() as nursery:
                for _ in range(tasks):
                    nursery.start_soon(worker)

        for _ in range(self.params["wallets"]):
            signer = LocalSigner(eth.generate_private_key(os.urandom))
            session = await try_session(self.target, self.stats, signer)
            if session is not None:
                self.sessions.append(session)
        async with trio.open_nursery() as nursery:
            for session in self.sessions:
                client = Client(session.sealed, session.server_wallet, session.ready, SEND_TIMEOUT)
                nursery.start_soon(hammer, client)


async def attacker_main(config: dict[str, Any]) -> dict[str, Any]:
    """Set up, say ``ready``, wait for ``go`` on stdin, attack until done, stdin EOF or deadline."""
    target = Target(config["host"], config["port"], config["source"], config["server_wallet"])
    stats = AttackStats()
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    attack = Attack(
        target=target,
        params=config["params"],
        stats=stats,
        deadline=0.0,
        app_key_file=config.get("app_key_file"),
    )
    try:
        with trio.fail_after(config["setup_timeout"]):
            await attack.setup()
        print("ready", flush=True)
        with trio.move_on_after(config["setup_timeout"]):
            await stdin.receive_some(64)  # "go" (or EOF: stop at once)
        attack.deadline = trio.current_time() + config["run_timeout"]
        started = trio.current_time()
        async with trio.open_nursery() as nursery:

            async def stop_on_eof() -> None:
                while await stdin.receive_some(64):
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_eof)
            await attack.run()
            stats.notes["run_s"] = trio.current_time() - started
            if attack.params["kind"] in ("idle_sessions", "slow_reader"):
                await trio.sleep_until(attack.deadline)  # hold until told to stop
            nursery.cancel_scope.cancel()
        stats.notes.setdefault("run_s", trio.current_time() - started)
    finally:
        if attack.params["kind"] == "idle_sessions" or attack.params["kind"] == "slow_reader":
            attack.count_closed_sessions()
        await attack.close()
    return stats.to_json()


def attacker_entry(raw: str) -> int:
    config = json.loads(raw)
    try:
        result = trio.run(attacker_main, config)
    except BaseException as exc:  # report anything, the orchestrator shows it
        print("result " + json.dumps({"crashed": f"{type(exc).__name__}: {exc}"}), flush=True)
        raise
    print("result " + json.dumps(result), flush=True)
    return 0


# ============================================================================================
# Phases
# ============================================================================================


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    description: str
    params: dict[str, Any] | None  # None: no attack (idle)
    setup_timeout: float = 10.0
    app_key: bool = False


def phases(quick: bool) -> list[Phase]:
    """The attacks of issue 9 items 1-5, each bounded in count and time."""
    return [
        Phase("idle", "no attack", None),
        Phase(
            "1a-nested-hello",
            "10 connections, each a 2 MiB ClientHello of nested CBOR (depth 16, 131k units)",
            {"kind": "hello_flood", "body": "nested", "connections": 10},
        ),
        Phase(
            "1b-flat-hello",
            "100 connections, each a 2 MiB ClientHello of one flat array (2M items)",
            {"kind": "hello_flood", "body": "flat", "connections": 100},
        ),
        Phase(
            "1c-anon-bodies",
            "anonymous sessions sending the same 2 MiB bodies (nested/flat) inside requests",
            {"kind": "session_bodies", "sessions": 4, "bodies": 12 if quick else 24},
        ),
        Phase(
            "2-invalid-flood",
            "anonymous session: invalid requests with an id (up to 300k), never reading",
            {"kind": "invalid_flood", "count": 300_000, "batch": 500},
        ),
        Phase(
            "3-idle-sessions",
            "1024 idle anonymous sessions from one source (paced under the handshake rate), "
            "then the victim connects",
            {
                "kind": "idle_sessions",
                "count": 1024,
                "burst": 90,
                "rate": 45.0,
                "setup_seconds": 30.0,
            },
            setup_timeout=40.0,
        ),
        Phase(
            "4-slow-reader",
            "app 1 pipelines 40 kv.get of a 1 MiB value on 8 connections, never reads",
            {"kind": "slow_reader", "connections": 8, "requests": 40},
            app_key=True,
        ),
        Phase(
            "5a-handshake-flood",
            "anonymous handshakes at 250/s (connect, handshake, close)",
            {"kind": "handshake_flood", "rate": 250.0, "count": 2500, "concurrency": 64},
        ),
        Phase(
            "5b-unregistered-wallets",
            "5 random unregistered wallets, 16 pipelined health calls each, up to 20k per wallet",
            {"kind": "wallet_hammer", "wallets": 5, "tasks": 16, "requests": 20_000},
        ),
    ]


# ============================================================================================
# The node, its memory, the victim
# ============================================================================================


def rss_mib(pid: int) -> float | None:
    """VmRSS of a process in MiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


class RssMeter:
    """Samples a process's RSS; ``mark()`` resets the running maximum."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.last: float | None = rss_mib(pid)
        self.peak: float = self.last or 0.0

    def mark(self) -> float:
        self.last = rss_mib(self.pid)
        self.peak = self.last or 0.0
        return self.peak

    async def run(self) -> None:
        while True:
            value = rss_mib(self.pid)
            if value is not None:
                self.last = value
                self.peak = max(self.peak, value)
            await trio.sleep(RSS_PERIOD)


def error_label(exc: BaseException) -> str:
    """``code[:reason]`` of a refusal; ``transport`` for a timeout or a close without notice."""
    if isinstance(exc, TransportError):
        return "transport"
    if isinstance(exc, NovaKMSError):
        reason = exc.details.get("reason")
        return f"{exc.code}:{reason}" if reason else exc.code
    return type(exc).__name__


@dataclass(slots=True)
class VictimFigures:
    planned: int = 0
    ok: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    connects: int = 0
    connect_refused: Counter[str] = field(default_factory=Counter)
    connect_ms: list[float] = field(default_factory=list)
    wrong_keys: int = 0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        connect = sorted(self.connect_ms)
        return {
            "planned": self.planned,
            "ok": self.ok,
            "errors": sum(self.errors.values()),
            "error_codes": dict(self.errors),
            "wrong_keys": self.wrong_keys,
            "p50_ms": percentile(lat, 0.50) * 1e3,
            "p99_ms": percentile(lat, 0.99) * 1e3,
            "max_ms": (lat[-1] if lat else 0.0) * 1e3,
            "connects": self.connects,
            "connects_refused": sum(self.connect_refused.values()),
            "connect_refusals": dict(self.connect_refused),
            "connect_p50_ms": percentile(connect, 0.50),
            "connect_max_ms": connect[-1] if connect else 0.0,
        }


class Victim:
    """Demo app 2 on the real client: one long-lived connection plus connect probes."""

    def __init__(self, address: str, signer: LocalSigner, server_wallet: str) -> None:
        self.address = address
        self.signer = signer
        self.server_wallet = server_wallet
        self.figures = VictimFigures()
        self.client: Client | None = None
        self.expected: bytes | None = None
        self._connected = trio.Event()
        self._lost = trio.Event()

    async def _connect_once(self, timeout: float) -> Client | None:
        """One connect; refusals and failures are counted, never raised."""
        self.figures.connects += 1
        began = time.perf_counter()
        try:
            client = await Client.connect(
                self.address,
                signer=self.signer,
                expect_wallet=self.server_wallet,
                timeout=max(0.1, timeout),
            )
        except (NovaKMSError, OSError) as exc:
            self.figures.connect_refused[error_label(exc)] += 1
            return None
        self.figures.connect_ms.append((time.perf_counter() - began) * 1e3)
        return client

    async def connect(self, until: float) -> bool:
        """Connect the long-lived connection, retrying (every 50 ms) until ``until``."""
        while trio.current_time() < until:
            client = await self._connect_once(min(CONNECT_TIMEOUT, until - trio.current_time()))
            if client is not None:
                self.client = client
                self._lost = trio.Event()
                self._connected.set()
                return True
            await trio.sleep(0.05)
        return False

    async def warm_up(self) -> None:
        assert self.client is not None
        for _ in range(WARMUP_CALLS):
            key = (await self.client.derive(DERIVE_PATH)).key
            if self.expected is None:
                self.expected = key
            elif key != self.expected:
                raise RuntimeError("derive answered a different key during the warm-up")

    async def _reconnector(self, until: float) -> None:
        while trio.current_time() < until:
            await self._lost.wait()
            self._connected = trio.Event()
            old, self.client = self.client, None
            if old is not None:
                await old.aclose()
            if not await self.connect(until):
                return

    async def _call(self, scheduled: float, hard_deadline: float) -> None:
        began = scheduled
        try:
            with trio.fail_at(hard_deadline):
                await trio.sleep_until(scheduled)
                began = trio.current_time()  # timer lateness is the victim's, not the node's
                while True:
                    await self._connected.wait()
                    client = self.client
                    if client is None:
                        continue
                    try:
                        # Its own timeout past the hard deadline: the deadline decides.
                        answer = await client.call(
                            "derive",
                            {"path": DERIVE_PATH},
                            timeout=hard_deadline - trio.current_time() + 1,
                        )
                        result = parse_derive_result(answer)
                    except TransportError as exc:
                        self.figures.errors[error_label(exc)] += 1
                        self._lost.set()
                        return
                    break
        except trio.TooSlowError:
            self.figures.errors["timeout"] += 1
            self.figures.latencies.append(hard_deadline - began)  # a lower bound
            return
        except NovaKMSError as exc:
            self.figures.errors[error_label(exc)] += 1
            return
        self.figures.latencies.append(trio.current_time() - began)
        if result.key != self.expected:
            self.figures.wrong_keys += 1
        else:
            self.figures.ok += 1

    async def _probe(self, interval: float, until: float) -> None:
        """A fresh connection (connect + derive + close) every ``interval`` s."""
        while trio.current_time() + interval < until:
            await trio.sleep(interval)
            client = await self._connect_once(CONNECT_TIMEOUT)
            if client is not None:
                with contextlib.suppress(NovaKMSError):
                    await client.derive(DERIVE_PATH)
                await client.aclose()

    async def run(self, *, rate: float, window: float, probe_interval: float) -> None:
        """``rate * window`` calls, call ``i`` scheduled at ``start + i / rate`` (open loop)."""
        count = int(rate * window)
        self.figures.planned = count
        start = trio.current_time()
        end = start + window
        hard = end + GRACE
        async with trio.open_nursery() as nursery:
            reconnect = trio.CancelScope()

            async def reconnector() -> None:
                with reconnect:
                    await self._reconnector(hard)

            nursery.start_soon(reconnector)
            if probe_interval > 0:
                nursery.start_soon(self._probe, probe_interval, end)
            async with trio.open_nursery() as calls:
                for index in range(count):
                    calls.start_soon(self._call, start + index / rate, hard)
            reconnect.cancel()

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()


# ============================================================================================
# Running one phase
# ============================================================================================


class LineReader:
    """Lines from a trio receive stream, with deadlines."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buf = b""

    async def line(self) -> bytes | None:
        while b"\n" not in self.buf:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line


async def wait_node(spawned: Spawned, address: str) -> None:
    deadline = time.perf_counter() + READY_TIMEOUT
    while True:
        if spawned.process.poll() is not None:
            raise RuntimeError(f"the node exited before it was ready:\n{tail(spawned.log)}")
        try:
            with trio.fail_after(3):
                async with await Client.connect(address, timeout=2) as kms:
                    await kms.health()
        except (NovaKMSError, OSError, trio.TooSlowError):
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the node is not ready:\n{tail(spawned.log)}") from None
            await trio.sleep(0.05)
        else:
            return


@dataclass(frozen=True, slots=True)
class RunSettings:
    quick: bool
    window: float
    rate: float
    probe_interval: float
    source_modes: tuple[str, ...]
    phase_names: tuple[str, ...]
    compare: Path | None = None
    limits: tuple[str, ...] = ()


async def run_phase(
    phase: Phase,
    *,
    settings: RunSettings,
    source: str,
    port: int,
    pid: int,
    spawned: Spawned,
    server_wallet: str,
    victim_key: Path,
    app_key: Path,
    workdir: Path,
) -> dict[str, Any]:
    address = f"{HOST}:{port}"
    await wait_node(spawned, address)
    rss = RssMeter(pid)
    victim = Victim(address, LocalSigner.from_file(victim_key), server_wallet)
    result: dict[str, Any] = {"phase": phase.name, "description": phase.description}
    result["rss_ready_mib"] = result["rss_start_mib"] = rss.mark()
    attack_result: dict[str, Any] | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rss.run)
        process = None
        log = workdir / f"attacker-{phase.name}-{source}.log"
        if phase.params is not None:
            config = {
                "host": HOST,
                "port": port,
                "source": source,
                "server_wallet": server_wallet,
                "params": phase.params,
                "setup_timeout": phase.setup_timeout,
                "run_timeout": settings.window + 1.0,
                "app_key_file": str(app_key) if phase.app_key else None,
            }
            with log.open("wb") as log_file:
                process = await trio.lowlevel.open_process(
                    [
                        sys.executable,
                        SCRIPT,
                        "--attacker",
                        json.dumps(config),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log_file,
                )
            assert process.stdout is not None
            lines = LineReader(process.stdout)
            with trio.move_on_after(phase.setup_timeout + 5):
                line = await lines.line()
            if line is not None and line.startswith(b"result "):
                attack_result = json.loads(line[7:])
            elif line != b"ready":
                progress(f"  attacker setup did not finish ({line!r}); running the victim anyway")
        try:
            # The victim connects after the attacker's setup (item 3: "then the victim
            # connects"); its long-lived connection is then in place before the attack runs.
            connected = await victim.connect(trio.current_time() + settings.window)
            result["victim_connected"] = connected
            if connected:
                with trio.move_on_after(10):
                    await victim.warm_up()
            await trio.sleep(0.2)
            result["rss_start_mib"] = rss.last
            if process is not None:
                assert process.stdin is not None
                with (
                    trio.move_on_after(SEND_TIMEOUT),
                    contextlib.suppress(trio.BrokenResourceError),
                ):
                    await process.stdin.send_all(b"go\n")
            if connected:
                await victim.run(
                    rate=settings.rate,
                    window=settings.window,
                    probe_interval=settings.probe_interval,
                )
            else:
                await trio.sleep(settings.window)
                victim.figures.planned = int(settings.rate * settings.window)
                victim.figures.errors["never_connected"] += victim.figures.planned
            if process is not None:
                assert process.stdin is not None
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await process.stdin.aclose()  # stop
            if process is not None and attack_result is None:
                with trio.move_on_after(RESULT_TIMEOUT):
                    while (line := await lines.line()) is not None:
                        if line.startswith(b"result "):
                            attack_result = json.loads(line[7:])
                            break
            await trio.sleep(0.5)  # what the node still does after the attack stopped
        finally:
            result["rss_max_mib"] = rss.peak
            result["rss_end_mib"] = rss.last
            with trio.CancelScope(shield=True):
                await victim.aclose()
                if process is not None:
                    with trio.move_on_after(5):
                        await process.wait()
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
            nursery.cancel_scope.cancel()
    if phase.params is not None and attack_result is None:
        attack_result = {"crashed": f"no result from the attacker; log:\n{tail(log)}"}
    result["victim"] = victim.figures.summary()
    result["attack"] = attack_result
    result["node_alive"] = spawned.process.poll() is None
    return result


def start_node(
    state_dir: Path, secret_file: Path, workdir: Path, tag: str, limits: Sequence[str] = ()
) -> tuple[DevState, int, contextlib.AbstractContextManager[Spawned]]:
    """A fresh ``novakms serve`` (default limits unless overridden): dev state, port, process."""
    state = prepare_state(state_dir)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "novakms.cli",
        "--log-level",
        "WARNING",
        "serve",
        "--listen",
        f"tcp://{HOST}:{port}",
        "--key-file",
        str(state.node_key_file),
        "--registry",
        str(state.registry_file),
        "--master-secret-file",
        str(secret_file),
    ]
    for item in limits:
        argv += ["--limit", item]
    env = {**os.environ, "IN_ENCLAVE": "false", "PYTHONUNBUFFERED": "1"}
    return state, port, server_process(f"node ({tag})", argv, workdir / f"node-{tag}.log", env)


# ============================================================================================
# Verdicts and report
# ============================================================================================


def verdict(row: dict[str, Any], idle_p99_ms: float) -> tuple[bool, list[str]]:
    """PASS/FAIL of one phase against the goals of issue 9, with the failed goals."""
    victim = row["victim"]
    failed = []
    if victim["p99_ms"] > GOAL_P99_FACTOR * idle_p99_ms:
        failed.append("p99")
    if victim["max_ms"] > GOAL_MAX_MS:
        failed.append("max")
    if row["rss_growth_mib"] > GOAL_RSS_GROWTH_MIB:
        failed.append("rss")
    if victim["errors"] or victim["wrong_keys"] or not row.get("victim_connected", True):
        failed.append("errors")
    if victim["connects_refused"]:
        failed.append("refused")
    if not row["node_alive"]:
        failed.append("node died")
    return not failed, failed


COLUMNS = (
    ("phase", 23, "<"),
    ("ok/calls", 9, ">"),
    ("p50 ms", 7, ">"),
    ("p99 ms", 8, ">"),
    ("max ms", 8, ">"),
    ("err", 5, ">"),
    ("conn fail", 9, ">"),
    ("RSS MiB", 7, ">"),
    ("max MiB", 7, ">"),
    ("+MiB", 6, ">"),
    ("sent", 7, ">"),
    ("refused", 7, ">"),
    ("closed", 6, ">"),
    ("served", 7, ">"),
    ("no ans", 6, ">"),
    ("verdict", 7, "<"),
)


def _row(cells: Sequence[str]) -> str:
    return "  ".join(
        f"{cell:{align}{width}}" for cell, (_, width, align) in zip(cells, COLUMNS, strict=True)
    ).rstrip()


def render(document: dict[str, Any]) -> str:
    settings = document["settings"]
    commit = document["git"]["commit"] or "unknown"
    if document["git"]["dirty"]:
        commit += " (dirty)"
    machine = document["machine"]
    lines = [
        f"novakms abuse benchmark  {document['timestamp']}  commit {commit}",
        f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), load avg "
        f"{(machine['loadavg_at_start'] or [0])[0]:.2f}; node, attacker and victim share them",
        f"victim: demo app 2, derive at {settings['rate']:.0f}/s for {settings['window']:.0f} s "
        f"(open loop: calls start on schedule), a fresh connect every "
        f"{settings['probe_interval']} s; node: novakms serve, fresh per phase, "
        + (
            "limits " + " ".join(settings["node_limits"])
            if settings["node_limits"]
            else "default limits"
        ),
        f"goals: p99 <= {GOAL_P99_FACTOR:.0f}x idle p99, max <= {GOAL_MAX_MS:.0f} ms, "
        f"RSS growth <= {GOAL_RSS_GROWTH_MIB:.0f} MiB, no failed call or refused connect",
        "",
    ]
    for mode in document["modes"]:
        header = _row([name for name, _, _ in COLUMNS])
        lines += [
            f"[attackers from {mode['source']} ({mode['mode']}), victim from {HOST}]",
            header,
            "-" * len(header),
        ]
        for row in mode["phases"]:
            victim, attack = row["victim"], row["attack"] or {}
            cells = [
                row["phase"],
                f"{victim['ok']}/{victim['planned']}",
                f"{victim['p50_ms']:.2f}",
                f"{victim['p99_ms']:.1f}",
                f"{victim['max_ms']:.1f}",
                str(victim["errors"] + victim["wrong_keys"]),
                f"{victim['connects_refused']}/{victim['connects']}",
                f"{row['rss_ready_mib']:.0f}",
                f"{row['rss_max_mib']:.0f}",
                f"{row['rss_growth_mib']:.0f}",
                str(attack.get("sent", "-")),
                str(attack.get("refused", "-")),
                str(attack.get("closed", "-")),
                str(attack.get("answered", "-")),
                str(attack.get("timeouts", "-")),
                "PASS" if row["pass"] else "FAIL " + ",".join(row["failed"]),
            ]
            lines.append(_row(cells))
        lines.append("")
        for row in mode["phases"]:
            attack = row["attack"] or {}
            victim = row["victim"]
            bits = []
            if victim["error_codes"]:
                bits.append(f"victim errors {victim['error_codes']}")
            if victim["connect_refusals"]:
                bits.append(f"victim connects refused {victim['connect_refusals']}")
            if attack.get("codes"):
                bits.append(f"node answered the attacker {attack['codes']}")
            notes = {
                k: round(v, 1) if isinstance(v, float) else v
                for k, v in (attack.get("notes") or {}).items()
                if k != "run_s"
            }
            if notes:
                bits.append(f"notes {notes}")
            if "crashed" in attack:
                bits.append(f"ATTACKER CRASHED: {attack['crashed'][:300]}")
            if bits:
                lines.append(f"  {row['phase']}: " + "; ".join(bits))
        lines.append("")
    lines += [
        "columns: ok/calls = victim derive calls answered / scheduled; err = failed calls; "
        "conn fail = refused or failed / attempted victim connects;",
        "  RSS = node RSS once ready (before the attacker started), max = highest during the "
        "phase, +MiB = max - RSS;",
        "  sent / refused / closed / served / no ans = attack units sent, refused by the node, "
        "attacker connections the node closed, units served as normal, operations of the attacker "
        "without an answer (or a send that stalled) by the end",
    ]
    return "\n".join(lines)


def render_comparison(before: dict[str, Any], after: dict[str, Any], label: str) -> str:
    """One line per phase present in both runs: the victim and RSS figures, before -> after."""
    commit = (before.get("git") or {}).get("commit") or "unknown"
    lines = [f"compared with {label} ({before.get('timestamp')}, commit {commit[:10]}):"]

    def verdict_of(row: dict[str, Any]) -> str:
        return "PASS" if row.get("pass") else "FAIL"

    for mode in after["modes"]:
        old = {
            row["phase"]: row
            for other in before.get("modes", [])
            if other["mode"] == mode["mode"]
            for row in other["phases"]
        }
        for row in mode["phases"]:
            prev = old.get(row["phase"])
            if prev is None:
                continue
            a, b = row["victim"], prev["victim"]
            lines.append(
                f"  [{mode['mode']}] {row['phase']:<23} ok {b['ok']}->{a['ok']}  "
                f"p99 {b['p99_ms']:.1f}->{a['p99_ms']:.1f} ms  "
                f"max {b['max_ms']:.1f}->{a['max_ms']:.1f} ms  "
                f"+MiB {prev['rss_growth_mib']:.0f}->{row['rss_growth_mib']:.0f}  "
                f"{verdict_of(prev)}->{verdict_of(row)}"
            )
    return "\n".join(lines)


# ============================================================================================
# Main
# ============================================================================================


def run(settings: RunSettings) -> int:
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    document: dict[str, Any] = {
        "benchmark": "abuse",
        "timestamp": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "git": git_info(),
        "machine": machine_info(),
        "settings": {
            "quick": settings.quick,
            "window": settings.window,
            "rate": settings.rate,
            "probe_interval": settings.probe_interval,
            "source_modes": list(settings.source_modes),
            "phases": list(settings.phase_names),
            "node_limits": list(settings.limits),
        },
        "goals": {
            "p99_factor_of_idle": GOAL_P99_FACTOR,
            "max_ms": GOAL_MAX_MS,
            "rss_growth_mib": GOAL_RSS_GROWTH_MIB,
        },
        "modes": [],
    }
    selected = [p for p in phases(settings.quick) if p.name in settings.phase_names]
    with tempfile.TemporaryDirectory(prefix="novakms-bench-abuse-") as tmp:
        workdir = Path(tmp)
        secret_file = workdir / "master-secret"
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(os.urandom(32).hex() + "\n")
        idle_p99: float | None = None
        for mode in settings.source_modes:
            source = ATTACKER_SOURCES[mode]
            rows = []
            for phase in selected:
                if phase.params is None and mode != settings.source_modes[0]:
                    continue  # one idle phase per run is enough
                progress(f"[{mode}] {phase.name}: {phase.description}")
                state, port, node = start_node(
                    workdir / "state", secret_file, workdir, f"{mode}-{phase.name}", settings.limits
                )
                with node as spawned:
                    row = trio.run(
                        functools.partial(
                            run_phase,
                            phase,
                            settings=settings,
                            source=source,
                            port=port,
                            pid=spawned.process.pid,
                            spawned=spawned,
                            server_wallet=state.node_wallet,
                            victim_key=state.apps[1].key_file,
                            app_key=state.apps[0].key_file,
                            workdir=workdir,
                        )
                    )
                row["rss_growth_mib"] = row["rss_max_mib"] - row["rss_ready_mib"]
                if phase.params is None:
                    idle_p99 = row["victim"]["p99_ms"]
                    document["idle"] = row
                rows.append(row)
                victim = row["victim"]
                progress(
                    f"  victim {victim['ok']}/{victim['planned']} ok, p99 {victim['p99_ms']:.1f} "
                    f"ms, max {victim['max_ms']:.1f} ms; RSS {row['rss_ready_mib']:.0f} -> "
                    f"{row['rss_max_mib']:.0f} MiB; attack {row['attack']}"
                )
            document["modes"].append({"mode": mode, "source": source, "phases": rows})
    reference = idle_p99 if idle_p99 else 1.0
    document["idle_p99_ms"] = reference
    all_pass = True
    for mode in document["modes"]:
        for row in mode["phases"]:
            row["pass"], row["failed"] = verdict(row, reference)
            all_pass &= row["pass"]
    document["all_pass"] = all_pass
    document["seconds_total"] = (datetime.now(UTC) - started).total_seconds()
    print(render(document), flush=True)
    before: dict[str, Any] | None = None
    if settings.compare is not None:
        before = json.loads(settings.compare.read_text())
        print("\n" + render_comparison(before, document, str(settings.compare)), flush=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2) + "\n"
    path = RESULTS_DIR / f"abuse-{stamp}.json"
    latest = RESULTS_DIR / "abuse-latest.json"
    path.write_text(text)
    latest.write_text(text)
    print(f"\nwrote {path.relative_to(REPO_DIR)} and bench/results/abuse-latest.json")
    chart_beside(document, [path, latest])
    if before is not None:  # and the comparison: abuse-<stamp>-compare.png
        chart_beside(
            document,
            [p.with_name(f"{p.stem}-compare.json") for p in (path, latest)],
            before=before,
        )
    return 0 if all_pass else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows, one source mode")
    parser.add_argument("--window", type=float, help="seconds of attack per phase (6; quick 3)")
    parser.add_argument("--rate", type=float, help="victim derive calls per second (100)")
    parser.add_argument("--probe-interval", type=float, default=0.25)
    parser.add_argument(
        "--source",
        choices=("separate", "shared", "both"),
        help="attackers on 127.0.0.2 (separate), on the victim's 127.0.0.1 (shared), or both "
        "(default both; quick separate)",
    )
    names = [p.name for p in phases(False)]
    parser.add_argument(
        "--phases", help=f"comma-separated subset of: {','.join(names)} (idle always runs)"
    )
    parser.add_argument(
        "--compare",
        type=Path,
        help="a JSON of an earlier run (e.g. bench/results/abuse-before.json): print before -> "
        "after per phase",
    )
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="passed to the node (`novakms serve --limit`); the goals are for the defaults",
    )
    parser.add_argument("--attacker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.attacker is not None:
        return attacker_entry(args.attacker)
    defaults = QUICK if args.quick else FULL
    source = args.source or ("separate" if args.quick else "both")
    chosen = names if args.phases is None else ["idle", *args.phases.split(",")]
    unknown = set(chosen) - set(names)
    if unknown:
        parser.error(f"unknown phases: {sorted(unknown)}")
    settings = RunSettings(
        quick=args.quick,
        window=args.window or defaults["window"],
        rate=args.rate or defaults["rate"],
        probe_interval=args.probe_interval,
        source_modes=("separate", "shared") if source == "both" else (source,),
        phase_names=tuple(n for n in names if n in chosen),
        compare=args.compare,
        limits=tuple(args.limit),
    )
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
