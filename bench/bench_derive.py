"""Throughput and latency of ``derive``, next to a bare-trio baseline measured in the same run.

Usage::

    .venv/bin/python bench/bench_derive.py            # full run, about 1-2 minutes
    .venv/bin/python bench/bench_derive.py --quick    # short run, about 15 s (CI smoke)

Two servers run in their own processes: ``novakms serve`` (development mode, rate limiting
switched off so that the limiter is not what is measured) and ``bench/echo.py`` (trio +
length-prefixed cbor2, no handshake, crypto or auth). The load is generated here, in this
process, with the real :class:`novakms.client.Client`. For each scenario the baseline and the
KMS are measured back to back, so that noise from other work on the machine hits both alike.

The table goes to stdout; the figures also go to ``bench/results/derive-<UTC timestamp>.json``
and ``bench/results/derive-latest.json``, with a chart beside each (``.png``, throughput and
p50 / p99 per scenario against the baseline; needs matplotlib, see ``bench/plot.py``).
Any failed request makes the run exit 1.
See ``bench/README.md`` for what the figures mean and their caveats.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import cbor2
import trio

from novakms.client.aio import Client
from novakms.crypto.signer import LocalSigner
from novakms.dev.env import prepare_state
from novakms.errors import NovaKMSError, TransportError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: bench.*
from bench.plot import chart_beside

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
ECHO_SCRIPT = BENCH_DIR / "echo.py"

HOST = "127.0.0.1"
DERIVE_PATH = "bench/derive"
KEY_LENGTH = 32
#: Limits passed to the KMS server: the per-wallet and per-source token buckets are switched
#: off, everything else keeps its default (notably max_inflight = 32 per connection).
SERVER_LIMITS = ("wallet_rate=inf", "handshake_rate=inf")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
CALL_TIMEOUT = 30.0
HEADER_SIZE = 4
RECEIVE_CHUNK = 65536
MAX_ERRORS_KEPT = 5

FULL = {"requests": 80_000, "warmup": 5_000, "handshakes": 200}
QUICK = {"requests": 12_000, "warmup": 1_000, "handshakes": 200}

#: One request: raises on any failure, including a wrong answer.
CallFn = Callable[[], Awaitable[None]]


class BenchError(Exception):
    """The benchmark cannot go on, or a request got a wrong answer."""


# --- settings and scenarios -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scenario:
    """A load shape: ``concurrency`` tasks spread evenly over ``connections`` connections."""

    name: str
    description: str
    concurrency: int
    connections: int


SCENARIOS = (
    Scenario("c1", "concurrency 1, 1 connection (sequential)", 1, 1),
    Scenario("c64", "concurrency 64, 1 connection (pipelined)", 64, 1),
    Scenario("c64x8", "concurrency 64 over 8 connections", 64, 8),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """What one run does (all counts per scenario and per target)."""

    quick: bool
    requests: int
    warmup: int
    handshakes: int


# --- measuring --------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) used so far by another process; None if unknown.

    On Linux this reads the process's CPU-time clock, the clock ``clock_getcpuclockid(3)``
    returns (nanosecond resolution); elsewhere, or if that fails, ``/proc/<pid>/stat``
    (resolution 1/CLK_TCK, usually 10 ms).
    """
    if sys.platform == "linux":
        clock_id = (~pid << 3) | 2  # the kernel's MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
        with contextlib.suppress(OSError):
            return time.clock_gettime(clock_id)
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it are space-separated.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent not idle since boot (``/proc/stat``), None where unknown."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Figures:
    """Measured figures of one target in one scenario (or in the handshake test)."""

    count: int
    errors: int
    seconds: float
    per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    server_cpu_s: float | None
    server_cpu_us_per_op: float | None
    server_cpu_share: float | None
    client_cpu_s: float
    client_cpu_us_per_op: float
    client_cpu_share: float | None
    other_cpu_share: float | None
    first_errors: tuple[str, ...]


class CpuMeter:
    """CPU time used by the server, by this process and by everything else over a stretch."""

    def __init__(self, server_pid: int) -> None:
        self._pid = server_pid
        self._server = process_cpu_seconds(server_pid)
        self._client = time.process_time()
        self._machine = machine_busy_seconds()

    def figures(
        self, *, count: int, seconds: float, latencies: list[float], errors: list[str], total: int
    ) -> Figures:
        """Figures for ``count`` operations that took ``seconds`` of wall time."""
        server_end = process_cpu_seconds(self._pid)
        client_cpu = time.process_time() - self._client
        machine_end = machine_busy_seconds()
        server_cpu = other_share = None
        if server_end is not None and self._server is not None:
            server_cpu = server_end - self._server
            if machine_end is not None and self._machine is not None and seconds > 0:
                # /proc/stat counts in ticks (10 ms): clamp the rounding below zero away.
                other = machine_end - self._machine - server_cpu - client_cpu
                other_share = max(0.0, other / seconds)
        latencies.sort()
        ops = max(count, 1)
        return Figures(
            count=count,
            errors=total,
            seconds=seconds,
            per_second=count / seconds if seconds > 0 else 0.0,
            p50_ms=percentile(latencies, 0.50) * 1e3,
            p99_ms=percentile(latencies, 0.99) * 1e3,
            max_ms=(latencies[-1] if latencies else 0.0) * 1e3,
            mean_ms=(sum(latencies) / len(latencies) if latencies else 0.0) * 1e3,
            server_cpu_s=server_cpu,
            server_cpu_us_per_op=None if server_cpu is None else server_cpu / ops * 1e6,
            server_cpu_share=None if server_cpu is None or seconds <= 0 else server_cpu / seconds,
            client_cpu_s=client_cpu,
            client_cpu_us_per_op=client_cpu / ops * 1e6,
            client_cpu_share=client_cpu / seconds if seconds > 0 else None,
            other_cpu_share=other_share,
            first_errors=tuple(errors),
        )


@dataclass(slots=True)
class Load:
    """Outcome of one batch of requests."""

    seconds: float
    latencies: list[float]
    errors: int
    first_errors: list[str]


async def run_load(calls: Sequence[CallFn], concurrency: int, count: int) -> Load:
    """Make ``count`` requests from ``concurrency`` tasks, task ``i`` using ``calls[i % n]``."""
    latencies: list[float] = []
    first_errors: list[str] = []
    errors = 0
    remaining = count

    async def worker(call: CallFn) -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            try:
                await call()
            except Exception as exc:  # every failure is counted, and fails the run at the end
                errors += 1
                if len(first_errors) < MAX_ERRORS_KEPT:
                    first_errors.append(f"{type(exc).__name__}: {exc}")
            else:
                latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index in range(concurrency):
            nursery.start_soon(worker, calls[index % len(calls)])
    return Load(time.perf_counter() - start, latencies, errors, first_errors)


# --- targets ----------------------------------------------------------------------------------


class Target(Protocol):
    """A server under load."""

    label: str
    pid: int

    def connection(self) -> contextlib.AbstractAsyncContextManager[CallFn]:
        """Open one connection; the context value makes one ``derive`` request on it."""
        ...

    async def handshake(self) -> None:
        """Open one new connection and close it again."""
        ...


class KmsTarget:
    """The novakms node: the real client, authenticated as demo app 1."""

    label = "novakms"

    def __init__(self, *, pid: int, address: str, signer: LocalSigner, server_wallet: str) -> None:
        self.pid = pid
        self.address = address
        self._signer = signer
        self._server_wallet = server_wallet
        self._expected_key: bytes | None = None
        self.max_inflight: int | None = None

    async def _connect(self, *, signer: LocalSigner | None) -> Client:
        return await Client.connect(
            self.address, signer=signer, expect_wallet=self._server_wallet, timeout=CALL_TIMEOUT
        )

    async def probe(self) -> None:
        """Readiness: an anonymous ``health`` call."""
        async with await self._connect(signer=None) as kms:
            answer = await kms.health()
        if answer.status != "ok":
            raise BenchError(f"health answered {answer!r}")

    async def prepare(self) -> None:
        """Learn the server's max_inflight and the key the benchmark path derives (not shown)."""
        async with await self._connect(signer=self._signer) as kms:
            self.max_inflight = kms.server_max_inflight
            self._expected_key = (await kms.derive(DERIVE_PATH)).key

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[CallFn]:
        """One authenticated connection doing ``derive(DERIVE_PATH)``."""
        expected = self._expected_key
        if expected is None or len(expected) != KEY_LENGTH:
            raise BenchError("the KMS target was not prepared")
        async with await self._connect(signer=self._signer) as kms:

            async def call() -> None:
                result = await kms.derive(DERIVE_PATH)
                if result.key != expected:
                    raise BenchError("derive answered a different key than before")

            yield call

    async def handshake(self) -> None:
        """Connect (X25519 + server signature + client PoP) and close."""
        client = await self._connect(signer=self._signer)
        await client.aclose()


class _Pending:
    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.answer: Any = None


class EchoConnection:
    """Minimal pipelining client of ``bench/echo.py``: one reader task dispatches by request id."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._send_lock = trio.StrictFIFOLock()
        self._failure: str | None = None

    def _fail(self, reason: str) -> None:
        self._failure = self._failure or reason
        for pending in self._pending.values():
            pending.done.set()

    async def reader(self) -> None:
        """Read answers until the stream ends; wake each waiting caller."""
        buf = bytearray()
        try:
            while True:
                data = await self._stream.receive_some(RECEIVE_CHUNK)
                if not data:
                    self._fail("the echo server closed the connection")
                    return
                buf += data
                while len(buf) >= HEADER_SIZE:
                    stop = HEADER_SIZE + int.from_bytes(buf[:HEADER_SIZE], "big")
                    if len(buf) < stop:
                        break
                    answer = cbor2.loads(bytes(buf[HEADER_SIZE:stop]))
                    del buf[:stop]
                    pending = self._pending.pop(answer["id"], None)
                    if pending is not None:
                        pending.answer = answer
                        pending.done.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail(f"echo connection broken: {exc!r}")
        except (cbor2.CBORDecodeError, KeyError, TypeError) as exc:
            self._fail(f"the echo server answered garbage: {exc!r}")

    async def call(self) -> None:
        """One request/answer round trip; checks the answer's shape."""
        if self._failure is not None:
            raise BenchError(self._failure)
        request_id = next(self._ids)
        pending = self._pending[request_id] = _Pending()
        body = cbor2.dumps({"id": request_id, "op": "derive", "args": {"path": DERIVE_PATH}})
        async with self._send_lock:
            await self._stream.send_all(len(body).to_bytes(HEADER_SIZE, "big") + body)
        with trio.fail_after(CALL_TIMEOUT):
            await pending.done.wait()
        answer = pending.answer
        if answer is None:
            raise BenchError(self._failure or "no answer")
        key = answer.get("ok", {}).get("key")
        if not isinstance(key, bytes) or len(key) != KEY_LENGTH:
            raise BenchError("the echo server answered without a key")


class EchoTarget:
    """The baseline: ``bench/echo.py``."""

    label = "baseline"

    def __init__(self, *, pid: int, port: int) -> None:
        self.pid = pid
        self.port = port

    async def probe(self) -> None:
        """Readiness: one round trip."""
        async with self.connection() as call:
            await call()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[CallFn]:
        """One TCP connection with its reader task."""
        stream = await trio.open_tcp_stream(HOST, self.port)
        async with stream, trio.open_nursery() as nursery:
            conn = EchoConnection(stream)
            nursery.start_soon(conn.reader)
            yield conn.call
            nursery.cancel_scope.cancel()

    async def handshake(self) -> None:
        """A bare TCP connect and close."""
        stream = await trio.open_tcp_stream(HOST, self.port)
        await stream.aclose()


# --- scenarios --------------------------------------------------------------------------------


async def measure_scenario(target: Target, scenario: Scenario, settings: Settings) -> Figures:
    """Open the connections, warm up, then measure ``settings.requests`` requests."""
    async with contextlib.AsyncExitStack() as stack:
        calls = [
            await stack.enter_async_context(target.connection())
            for _ in range(scenario.connections)
        ]
        warm = await run_load(calls, scenario.concurrency, settings.warmup)
        meter = CpuMeter(target.pid)
        load = await run_load(calls, scenario.concurrency, settings.requests)
        figures = meter.figures(
            count=settings.requests,
            seconds=load.seconds,
            latencies=load.latencies,
            errors=warm.first_errors + load.first_errors,
            total=warm.errors + load.errors,
        )
    return figures


async def measure_handshakes(target: Target, count: int) -> Figures:
    """``count`` sequential connect + close, after a few unmeasured ones."""
    for _ in range(min(10, count)):
        await target.handshake()
    latencies: list[float] = []
    meter = CpuMeter(target.pid)
    start = time.perf_counter()
    for _ in range(count):
        began = time.perf_counter()
        await target.handshake()
        latencies.append(time.perf_counter() - began)
    seconds = time.perf_counter() - start
    return meter.figures(count=count, seconds=seconds, latencies=latencies, errors=[], total=0)


async def wait_ready(server: Spawned, probe: CallFn) -> float:
    """Poll ``probe`` until it succeeds; returns the seconds since the server was launched."""
    while True:
        code = server.process.poll()
        if code is not None:
            raise BenchError(
                f"{server.name} exited with code {code} before it was ready:\n{tail(server.log)}"
            )
        try:
            with trio.fail_after(5):
                await probe()
        except (OSError, TransportError, trio.TooSlowError) as exc:  # not listening yet
            if time.perf_counter() - server.launched > READY_TIMEOUT:
                raise BenchError(
                    f"{server.name} not ready after {READY_TIMEOUT} s ({exc}):\n{tail(server.log)}"
                ) from None
            await trio.sleep(0.05)
        else:
            return time.perf_counter() - server.launched


@dataclass(frozen=True, slots=True)
class Results:
    """Everything measured in one run."""

    startup_s: dict[str, float]
    scenarios: list[tuple[Scenario, Figures, Figures]]  # scenario, baseline, novakms
    handshakes: tuple[Figures, Figures]  # baseline, novakms


async def run_all(
    kms: KmsTarget, kms_server: Spawned, echo: EchoTarget, echo_server: Spawned, settings: Settings
) -> Results:
    """Wait for both servers, then run every scenario (baseline and KMS back to back)."""
    startup = {
        "baseline": await wait_ready(echo_server, echo.probe),
        "novakms": await wait_ready(kms_server, kms.probe),
    }
    await kms.prepare()
    scenarios = []
    for scenario in SCENARIOS:
        progress(f"{scenario.name}: {scenario.description} ...")
        base = await measure_scenario(echo, scenario, settings)
        real = await measure_scenario(kms, scenario, settings)
        scenarios.append((scenario, base, real))
    progress(f"handshakes: {settings.handshakes} sequential connect + close ...")
    handshakes = (
        await measure_handshakes(echo, settings.handshakes),
        await measure_handshakes(kms, settings.handshakes),
    )
    return Results(startup_s=startup, scenarios=scenarios, handshakes=handshakes)


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on HOST that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a server log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True, slots=True)
class Spawned:
    """A server process, its combined stdout/stderr log and when it was launched."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    launched: float  # time.perf_counter()


@contextlib.contextmanager
def server_process(name: str, argv: list[str], log: Path, env: dict[str, str]) -> Iterator[Spawned]:
    """Run a server in its own process (and session); always stop it on exit.

    SIGTERM first (both servers shut down gracefully on it), SIGKILL after STOP_TIMEOUT. On
    Linux the child also gets SIGTERM if this process dies without cleaning up.
    """
    launched = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log.parent,  # not the checkout: `-m` must import the installed novakms
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    try:
        yield Spawned(name, process, log, launched)
    finally:
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        except BaseException:  # e.g. a second Ctrl-C while waiting
            process.kill()
            raise


# --- reporting --------------------------------------------------------------------------------


def progress(text: str) -> None:
    """A progress line on stderr (stdout carries only the report)."""
    print(text, file=sys.stderr, flush=True)


def git_info() -> dict[str, Any]:
    """Commit and dirtiness of the working tree; None values when git cannot tell."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO_DIR, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "nproc": affinity or os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "trio": version_of("trio"),
        "cbor2": version_of("cbor2"),
        "novakms": version_of("novakms"),
    }


def version_of(package: str) -> str | None:
    """Installed version of a distribution."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


COLUMNS = (
    ("target", 9, "<"),
    ("requests", 8, ">"),
    ("seconds", 7, ">"),
    ("req/s", 8, ">"),
    ("p50 ms", 7, ">"),
    ("p99 ms", 7, ">"),
    ("max ms", 7, ">"),
    ("errors", 6, ">"),
    ("srv CPU us/req", 14, ">"),
    ("srv CPU %", 9, ">"),
    ("cli CPU us/req", 14, ">"),
    ("cli CPU %", 9, ">"),
    ("other CPU %", 11, ">"),
)


def _row(cells: Sequence[str], columns: Sequence[tuple[str, int, str]] = COLUMNS) -> str:
    padded = (
        f"{cell:{align}{width}}" for cell, (_, width, align) in zip(cells, columns, strict=True)
    )
    return "  ".join(padded).rstrip()


def _percent(share: float | None) -> str:
    return _num(None if share is None else share * 100, 0)


def _figure_cells(label: str, fig: Figures) -> list[str]:
    return [
        label,
        f"{fig.count:,}",
        f"{fig.seconds:.2f}",
        f"{fig.per_second:,.0f}",
        _num(fig.p50_ms),
        _num(fig.p99_ms),
        _num(fig.max_ms),
        str(fig.errors),
        _num(fig.server_cpu_us_per_op, 0),
        _percent(fig.server_cpu_share),
        _num(fig.client_cpu_us_per_op, 0),
        _percent(fig.client_cpu_share),
        _percent(fig.other_cpu_share),
    ]


def _ratio_cells(base: Figures, real: Figures) -> list[str]:
    def times(value: float | None) -> str:
        return "-" if value is None else f"x{value:.2f}"

    return [
        "ratio",
        "",
        "",
        times(ratio(real.per_second, base.per_second)),
        times(ratio(real.p50_ms, base.p50_ms)),
        times(ratio(real.p99_ms, base.p99_ms)),
        times(ratio(real.max_ms, base.max_ms)),
        "",
        times(ratio(real.server_cpu_us_per_op, base.server_cpu_us_per_op)),
        "",
        times(ratio(real.client_cpu_us_per_op, base.client_cpu_us_per_op)),
        "",
        "",
    ]


def render(results: Results, info: dict[str, Any]) -> str:
    """The human-readable report."""
    machine, settings = info["machine"], info["settings"]
    commit = info["git"]["commit"] or "unknown"
    if info["git"]["dirty"]:
        commit += " (dirty)"
    lines = [
        f"novakms derive benchmark  {info['timestamp']}  commit {commit}",
        f"machine: {machine['nproc']} CPUs ({machine['cpu_model'] or 'unknown model'}), "
        f"load avg {_num((machine['loadavg_at_start'] or [None])[0])}, "
        f"Python {machine['python']}, {machine['platform']}",
        f"load: {settings['requests']:,} measured requests per scenario and target after "
        f"{settings['warmup']:,} warm-up requests; client = this process (one trio thread)",
        f"novakms: `novakms serve` (IN_ENCLAVE=false) in its own process, "
        f"--limit {' --limit '.join(SERVER_LIMITS)}: rate limiting is OFF and not measured; "
        f"other limits default (max_inflight {info['server']['max_inflight']} per connection)",
        "baseline: bench/echo.py in its own process: trio + 4-byte length + cbor2, same message "
        "shapes, no handshake / encryption / auth / KDF",
        "latency: per call, around each await (perf_counter); srv/cli CPU: user+system CPU of the "
        "server process / of this process, per request and as % of one core over the measurement; "
        "other CPU %: the rest of the machine (noise)",
        "ratio = novakms / baseline (throughput below 1 and latency above 1 = the protocol's cost)",
        "",
    ]
    header = _row([name for name, _, _ in COLUMNS])
    for scenario, base, real in results.scenarios:
        lines += [f"[{scenario.name}] {scenario.description}", header, "-" * len(header)]
        lines += [_row(_figure_cells("baseline", base)), _row(_figure_cells("novakms", real))]
        lines += [_row(_ratio_cells(base, real)), ""]
    base, real = results.handshakes
    hs_columns = (
        ("handshakes", 10, "<"),
        ("count", 6, ">"),
        ("seconds", 7, ">"),
        ("conn/s", 8, ">"),
        ("p50 ms", 7, ">"),
        ("p99 ms", 7, ">"),
        ("max ms", 7, ">"),
        ("srv CPU us/conn", 15, ">"),
        ("cli CPU us/conn", 15, ">"),
    )
    header = _row([name for name, _, _ in hs_columns], hs_columns)
    lines += [
        f"[handshake] {settings['handshakes']} new connections, one after the other "
        "(connect + close); baseline = bare TCP, novakms = X25519 + signed challenge + "
        "client proof of possession + Ready",
        header,
        "-" * len(header),
    ]
    for label, fig in (("baseline", base), ("novakms", real)):
        cells = [
            label,
            f"{fig.count:,}",
            f"{fig.seconds:.2f}",
            f"{fig.per_second:,.0f}",
            _num(fig.p50_ms),
            _num(fig.p99_ms),
            _num(fig.max_ms),
            _num(fig.server_cpu_us_per_op, 0),
            _num(fig.client_cpu_us_per_op, 0),
        ]
        lines.append(_row(cells, hs_columns))
    lines.append(
        "server startup until ready: "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in results.startup_s.items())
    )
    return "\n".join(lines)


def to_json(results: Results, info: dict[str, Any]) -> dict[str, Any]:
    """The JSON document written to bench/results."""

    def figures(fig: Figures) -> dict[str, Any]:
        data = asdict(fig)
        data["first_errors"] = list(fig.first_errors)
        return data

    def ratios(base: Figures, real: Figures) -> dict[str, float | None]:
        return {
            "throughput": ratio(real.per_second, base.per_second),
            "p50": ratio(real.p50_ms, base.p50_ms),
            "p99": ratio(real.p99_ms, base.p99_ms),
            "max": ratio(real.max_ms, base.max_ms),
            "server_cpu_per_op": ratio(real.server_cpu_us_per_op, base.server_cpu_us_per_op),
            "client_cpu_per_op": ratio(real.client_cpu_us_per_op, base.client_cpu_us_per_op),
        }

    base_hs, real_hs = results.handshakes
    return {
        **info,
        "units": {
            "seconds": "wall-clock seconds of the measured phase",
            "per_second": "requests (or connections) per second",
            "*_ms": "per-request latency around each call (time.perf_counter), milliseconds",
            "server_cpu_*": "user+system CPU of the server process (its CPU-time clock)",
            "client_cpu_*": "CPU of the benchmark process (time.process_time)",
            "*_cpu_share": "CPU seconds / wall seconds (1.0 = one core busy)",
            "other_cpu_share": "CPU used by everything else on the machine (noise), /proc/stat",
            "ratio": "novakms / baseline",
        },
        "startup_s": results.startup_s,
        "scenarios": [
            {
                "name": scenario.name,
                "description": scenario.description,
                "concurrency": scenario.concurrency,
                "connections": scenario.connections,
                "baseline": figures(base),
                "novakms": figures(real),
                "ratio": ratios(base, real),
            }
            for scenario, base, real in results.scenarios
        ],
        "handshake": {
            "description": "sequential connect + close of new connections",
            "baseline": figures(base_hs),
            "novakms": figures(real_hs),
            "ratio": ratios(base_hs, real_hs),
        },
    }


def write_results(document: dict[str, Any], stamp: str) -> Path:
    """Write the timestamped file and derive-latest.json, a chart beside each; return the first."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2) + "\n"
    path = RESULTS_DIR / f"derive-{stamp}.json"
    latest = RESULTS_DIR / "derive-latest.json"
    path.write_text(text)
    latest.write_text(text)
    chart_beside(document, [path, latest])
    return path


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Settings:
    """Command-line options; the benchmark uses no randomness, so there is no seed."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0] if __doc__ else None,
        epilog="See bench/README.md.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short run (~15 s) for CI: fewer requests"
    )
    parser.add_argument(
        "--requests",
        type=int,
        help=f"measured requests per scenario and target (default {FULL['requests']:,}, "
        f"--quick {QUICK['requests']:,})",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        help=f"unmeasured requests before each measurement (default {FULL['warmup']:,}, "
        f"--quick {QUICK['warmup']:,})",
    )
    parser.add_argument(
        "--handshakes",
        type=int,
        help=f"sequential new connections timed (default {FULL['handshakes']}, "
        f"--quick {QUICK['handshakes']})",
    )
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    settings = Settings(
        quick=args.quick,
        requests=defaults["requests"] if args.requests is None else args.requests,
        warmup=defaults["warmup"] if args.warmup is None else args.warmup,
        handshakes=defaults["handshakes"] if args.handshakes is None else args.handshakes,
    )
    if settings.requests < 1 or settings.warmup < 0 or settings.handshakes < 1:
        parser.error("--requests and --handshakes must be at least 1, --warmup at least 0")
    return settings


def run(settings: Settings) -> int:
    """Start both servers, measure, report; returns the exit code."""
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    info: dict[str, Any] = {
        "benchmark": "derive",
        "timestamp": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "git": git_info(),
        "machine": machine_info(),
        "settings": {
            **asdict(settings),
            "scenarios": [asdict(s) for s in SCENARIOS],
            "derive_path": DERIVE_PATH,
            "key_length": KEY_LENGTH,
        },
    }
    with tempfile.TemporaryDirectory(prefix="novakms-bench-") as tmp:
        state = prepare_state(Path(tmp) / "state")
        secret_file = Path(tmp) / "master-secret"
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(os.urandom(32).hex() + "\n")
        kms_port, echo_port = free_port(), free_port()
        kms_argv = [
            sys.executable,
            "-m",
            "novakms.cli",
            "serve",
            "--listen",
            f"tcp://{HOST}:{kms_port}",
            "--key-file",
            str(state.node_key_file),
            "--registry",
            str(state.registry_file),
            "--master-secret-file",
            str(secret_file),
        ]
        for limit in SERVER_LIMITS:
            kms_argv += ["--limit", limit]
        echo_argv = [sys.executable, str(ECHO_SCRIPT), "--listen", f"{HOST}:{echo_port}"]
        env = {**os.environ, "IN_ENCLAVE": "false", "PYTHONUNBUFFERED": "1"}
        signer = LocalSigner.from_file(state.apps[0].key_file)
        with (
            server_process(
                "the echo server", echo_argv, Path(tmp) / "echo.log", env
            ) as echo_server,
            server_process("the KMS server", kms_argv, Path(tmp) / "kms.log", env) as kms_server,
        ):
            kms = KmsTarget(
                pid=kms_server.process.pid,
                address=f"tcp://{HOST}:{kms_port}",
                signer=signer,
                server_wallet=state.node_wallet,
            )
            echo = EchoTarget(pid=echo_server.process.pid, port=echo_port)
            info["server"] = {
                "command": "novakms serve (python -m novakms.cli.main serve), IN_ENCLAVE=false",
                "limits": list(SERVER_LIMITS),
                "note": "per-wallet and handshake rate limiting disabled: not what is measured",
                "baseline": "bench/echo.py",
            }
            results = trio.run(run_all, kms, kms_server, echo, echo_server, settings)
            info["server"]["max_inflight"] = kms.max_inflight
            info["server"]["cpu_total_s"] = {
                "novakms": process_cpu_seconds(kms.pid),
                "baseline": process_cpu_seconds(echo.pid),
            }
    print(render(results, info), flush=True)
    document = to_json(results, info)
    errors = sum(real.errors + base.errors for _, base, real in results.scenarios)
    document["ok"] = errors == 0
    path = write_results(document, stamp)
    latest = RESULTS_DIR / "derive-latest.json"
    print(f"\nwrote {path.relative_to(REPO_DIR)} and {latest.relative_to(REPO_DIR)}")
    if errors:
        progress(f"FAILED: {errors} request(s) failed:")
        for scenario, base, real in results.scenarios:
            for label, fig in (("baseline", base), ("novakms", real)):
                for message in fig.first_errors:
                    progress(f"  [{scenario.name} {label}] {message}")
        return 1
    return 0


def leaves(error: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups, or the exception itself."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit code 0 = all requests succeeded, 1 = failure, 130 = interrupted."""
    settings = parse_args(argv)
    try:
        return run(settings)
    except BaseException as error:  # trio wraps errors of nursery tasks in exception groups
        found = list(leaves(error))
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in found):
            progress("interrupted; the servers were stopped")
            return 130
        expected = [leaf for leaf in found if isinstance(leaf, BenchError | NovaKMSError)]
        if not expected or len(expected) != len(found):
            raise
        for leaf in expected:
            progress(f"benchmark failed: {type(leaf).__name__}: {leaf}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
