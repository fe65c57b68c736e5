"""Server CPU, throughput and latency of novakms next to a bare-trio echo server, in one run.

Usage::

    .venv/bin/python bench/bench_derive.py            # full run: 3 rounds, about 3 minutes
    .venv/bin/python bench/bench_derive.py --quick    # 1 short round, about 30 s (CI smoke)
    .venv/bin/python bench/bench_derive.py --also before=/tmp/before   # + another checkout

The servers run in their own processes: ``bench/echo.py`` (trio + length-prefixed cbor2, no
handshake, crypto, auth or store), ``novakms serve`` from this checkout (development mode, rate
limiting switched off so that the limiter is not what is measured), and one ``novakms serve``
per ``--also LABEL=PATH``, launched with ``PYTHONPATH=PATH``. With 2 CPUs or more the servers
are pinned to one CPU and the load to the others.

The load comes from ``--load-processes`` separate processes (``bench/loadgen.py``), each with
its share of a scenario's connections, driven by a lean epoll loop, so that the load generator
is not the bottleneck; the parent only coordinates them: each opens its connections and warms
up, then all start on one clock and measure the same window, in which the parent reads the
server's CPU clock. Every target is measured in every scenario, back to back, rounds repeated
(``--rounds``) and the median of the rounds reported, so that noise from other work on the
machine hits all targets alike.

The table goes to stdout (progress to stderr); the figures also go to
``bench/results/derive-<UTC timestamp>.json`` and ``bench/results/derive-latest.json``, with a
chart beside each (``.png``: throughput, p50 / p99 and the server-CPU ratio per scenario; needs
matplotlib, see ``bench/plot.py``). Any failed or wrong answer makes the run exit 1.
See ``bench/README.md`` for the method, what the figures mean and their caveats.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import math
import os
import platform
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal

import cbor2
import trio

from novakms.client.aio import Client
from novakms.crypto.signer import LocalSigner
from novakms.dev.env import prepare_state
from novakms.errors import NovaKMSError, TransportError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: bench.*
from bench.echo import FAKE_KEY, FAKE_VALUE
from bench.loadgen import merge_histograms
from bench.plot import write_with_charts

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
ECHO_SCRIPT = BENCH_DIR / "echo.py"

HOST = "127.0.0.1"
DERIVE_PATH = "bench/derive"
KEY_LENGTH = 32
KV_KEY = "bench/value"
SIGN_KEY = "bench/signer"  # the named key of the sign scenarios
SIGN_MESSAGE = b"novakms bench ed25519 message, 64 bytes long......................"[:64]
#: The value put once and read by the kv.get scenario: not secret, the echo's value's size.
KV_VALUE = (b"novakms bench kv.get value " * 3)[: len(FAKE_VALUE)]
#: Limits passed to the KMS servers: the per-wallet and per-source token buckets are switched
#: off, everything else keeps its default (notably max_inflight = 32 per connection).
SERVER_LIMITS = ("wallet_rate=inf", "handshake_rate=inf")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
CALL_TIMEOUT = 30.0
#: How long a load process may take to connect and warm up, and to send its result after the
#: window (the drain of outstanding answers is bounded by loadgen.DRAIN_TIMEOUT).
JOB_TIMEOUT = 60.0
#: Between the go and the window's start: every load process gets its go before the window.
GO_DELAY = 0.05
MAX_ERRORS_KEPT = 5
#: The open-loop scenario's rate: this fraction of novakms's c64x8 throughput in the run.
OPEN_FRACTION = 0.5
#: Goals of issue 15 ("Close to the wire"): (scenario, ratio, comparison, goal, what).
GOALS = (
    ("c64", "server_cpu_per_op", "<=", 1.7, "server CPU per derive at 64 in flight"),
    ("c64x8", "server_cpu_per_op", "<=", 1.7, "server CPU per derive at 64 in flight, 8 conns"),
    ("kv-c64", "server_cpu_per_op", "<=", 1.7, "server CPU per kv.get at 64 in flight"),
    ("c64", "throughput", ">=", 0.8, "derive throughput on one connection"),
    ("open50", "p99", "<=", 1.5, "p99 at half of saturation (open loop)"),
)

FULL = {"duration": 3.0, "warmup": 0.5, "rounds": 3}
QUICK = {"duration": 1.0, "warmup": 0.2, "rounds": 1}


class BenchError(Exception):
    """The benchmark cannot go on."""


# --- settings and scenarios -------------------------------------------------------------------

Kind = Literal["closed", "open", "handshake"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """A load shape: ``concurrency`` requests in flight spread evenly over ``connections``.

    ``open``: requests at a fixed rate over ``connections`` (``concurrency`` is 0: unbounded);
    ``handshake``: new connections, one after the other in each load process.
    """

    name: str
    description: str
    kind: Kind
    op: str | None
    concurrency: int
    connections: int

    def processes(self, available: int) -> int:
        """How many load processes share it: one per connection at most."""
        if self.kind == "handshake":
            return available
        return max(1, min(available, self.connections))


SCENARIOS = (
    Scenario("c1", "derive, concurrency 1 on 1 connection (sequential)", "closed", "derive", 1, 1),
    Scenario(
        "c64",
        "derive, concurrency 64 on 1 connection (pipelined: the server runs max_inflight at a "
        "time, the rest wait in the socket)",
        "closed",
        "derive",
        64,
        1,
    ),
    Scenario("c64x8", "derive, concurrency 64 over 8 connections", "closed", "derive", 64, 8),
    Scenario(
        "kv-c64",
        f"kv.get of one {len(KV_VALUE)}-byte value, concurrency 64 on 1 connection",
        "closed",
        "kv.get",
        64,
        1,
    ),
    Scenario(
        "handshake",
        "new connections, connect + close one after the other in each load process; echo = "
        "bare TCP, novakms = X25519 + signed challenge + client proof of possession + Ready",
        "handshake",
        None,
        0,
        0,
    ),
    Scenario(
        "open50",
        f"derive, open loop at {OPEN_FRACTION:.0%} of novakms's c64x8 throughput, over 8 "
        "connections; latency from each request's scheduled send time",
        "open",
        "derive",
        0,
        8,
    ),
)
#: Not in the default set: issue 16's named-key signatures, next to derive when asked for
#: (``--scenarios c64,sign-k1,sign-ed``); servers from before them do not know ``sign``.
EXTRA_SCENARIOS = (
    Scenario(
        "sign-k1",
        "sign (secp256k1, a 32-byte digest), concurrency 64 on 1 connection",
        "closed",
        "sign/secp256k1",
        64,
        1,
    ),
    Scenario(
        "sign-ed",
        f"sign (ed25519, a {len(SIGN_MESSAGE)}-byte message), concurrency 64 on 1 connection",
        "closed",
        "sign/ed25519",
        64,
        1,
    ),
)
SCENARIO_NAMES = tuple(s.name for s in SCENARIOS)
ALL_SCENARIOS = SCENARIOS + EXTRA_SCENARIOS
#: What a scenario's ``op`` (a workload) sends: the wire op and its args.
WORKLOADS: dict[str, tuple[str, dict[str, Any]]] = {
    "derive": ("derive", {"path": DERIVE_PATH}),
    "kv.get": ("kv.get", {"key": KV_KEY}),
    "sign/secp256k1": ("sign", {"name": SIGN_KEY, "alg": "secp256k1", "digest": bytes(range(32))}),
    "sign/ed25519": ("sign", {"name": SIGN_KEY, "alg": "ed25519", "message": SIGN_MESSAGE}),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """What one run does."""

    quick: bool
    duration_s: float
    warmup_s: float
    rounds: int
    load_processes: int
    pin: bool
    rate: float | None
    scenarios: tuple[str, ...]
    also: tuple[tuple[str, str], ...] = ()


def default_load_processes() -> int:
    """One load process per CPU the server does not get (at least one).

    Not more: two processes sharing one CPU cost ~50 % more CPU per request than one (their
    bursts are smaller, and they preempt each other), measured on the 2-CPU machine.
    """
    return max(1, len(available_cpus()) - 1)


# --- measuring --------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def histogram_percentile(histogram: dict[int, int], fraction: float) -> float:
    """Nearest-rank percentile of a histogram (value -> count); 0.0 when empty."""
    total = sum(histogram.values())
    if not total:
        return 0.0
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return float(value)
    return float(max(histogram))


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
    fields_ = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields_[11]), int(fields_[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent not idle since boot (``/proc/stat``), None where unknown."""
    try:
        with open("/proc/stat") as handle:
            fields_ = handle.readline().split()
    except OSError:
        return None
    if not fields_ or fields_[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields_[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Figures:
    """Measured figures of one target in one scenario (one round, or the median of rounds).

    For the handshake scenario an operation is a new connection; for the open loop the
    latency counts from each request's scheduled send time.
    """

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
    load_cpu_s: float
    load_cpu_us_per_op: float | None
    load_cpu_share: float
    load_processes: int
    other_cpu_share: float | None
    first_errors: tuple[str, ...] = ()
    rate: float | None = None
    late_p99_ms: float | None = None
    late_max_ms: float | None = None
    timer: str | None = None


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    if len(present) != len(values) or not present:
        return None
    return float(statistics.median(present))


def median_figures(rounds: Sequence[Figures]) -> Figures:
    """Per field, the median of the rounds; errors are summed (any error fails the run)."""
    if len(rounds) == 1:
        return rounds[0]
    values: dict[str, Any] = {}
    for item in fields(Figures):
        name = item.name
        column = [getattr(fig, name) for fig in rounds]
        if name == "errors":
            values[name] = sum(column)
        elif name == "first_errors":
            values[name] = tuple(e for fig in rounds for e in fig.first_errors)[:MAX_ERRORS_KEPT]
        elif name in ("load_processes", "timer"):
            values[name] = column[0]
        elif name == "count":
            values[name] = int(statistics.median(column))
        else:
            values[name] = _median(column)
    return Figures(**values)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def ratios(real: Figures, echo: Figures) -> dict[str, float | None]:
    """A target's figures over the echo's (the same scenario and round)."""
    return {
        "throughput": ratio(real.per_second, echo.per_second),
        "p50": ratio(real.p50_ms, echo.p50_ms),
        "p99": ratio(real.p99_ms, echo.p99_ms),
        "max": ratio(real.max_ms, echo.max_ms),
        "server_cpu_per_op": ratio(real.server_cpu_us_per_op, echo.server_cpu_us_per_op),
        "load_cpu_per_op": ratio(real.load_cpu_us_per_op, echo.load_cpu_us_per_op),
    }


def median_ratios(per_round: Sequence[dict[str, float | None]]) -> dict[str, float | None]:
    """Per ratio, the median over the rounds (each round measures the pair back to back)."""
    return {name: _median([r[name] for r in per_round]) for name in per_round[0]}


class CpuMeter:
    """CPU used by the server, by this process and by the whole machine over the window."""

    def __init__(self, server_pid: int) -> None:
        self._pid = server_pid
        self._start: tuple[float | None, float, float | None] | None = None
        self._end: tuple[float | None, float, float | None] | None = None

    def _read(self) -> tuple[float | None, float, float | None]:
        return process_cpu_seconds(self._pid), time.process_time(), machine_busy_seconds()

    def start(self) -> None:
        """The window begins."""
        self._start = self._read()

    def stop(self) -> None:
        """The window ends."""
        self._end = self._read()

    def shares(self, seconds: float, load_cpu: float) -> tuple[float | None, float | None]:
        """(server CPU seconds, other CPU share) over the window; None where unknown."""
        assert self._start is not None
        assert self._end is not None
        (server0, own0, machine0), (server1, own1, machine1) = self._start, self._end
        server = None if server0 is None or server1 is None else server1 - server0
        other = None
        if server is not None and machine0 is not None and machine1 is not None and seconds > 0:
            # /proc/stat counts in ticks (10 ms): clamp the rounding below zero away.
            rest = machine1 - machine0 - server - load_cpu - (own1 - own0)
            other = max(0.0, rest / seconds)
        return server, other


def aggregate(
    results: list[dict[str, Any]],
    warm_errors: list[tuple[int, list[str]]],
    *,
    seconds: float,
    server_cpu: float | None,
    other_share: float | None,
    rate: float | None,
) -> Figures:
    """One target's figures from its load processes' results."""
    histogram = merge_histograms([r["latency_us"] for r in results])
    late = merge_histograms([r["late_us"] for r in results])
    count = sum(r["count"] for r in results)
    errors = sum(r["errors"] for r in results) + sum(n for n, _ in warm_errors)
    first = [e for _, errs in warm_errors for e in errs] + [
        e for r in results for e in r["first_errors"]
    ]
    load_cpu = sum(float(r["cpu_s"]) for r in results)
    total = sum(histogram.values())
    ops = max(count, 1)
    timers = {str(r["timer"]) for r in results if r.get("timer")}
    return Figures(
        count=count,
        errors=errors,
        seconds=seconds,
        per_second=count / seconds if seconds > 0 else 0.0,
        p50_ms=histogram_percentile(histogram, 0.50) / 1e3,
        p99_ms=histogram_percentile(histogram, 0.99) / 1e3,
        max_ms=(max(histogram) if histogram else 0) / 1e3,
        mean_ms=(sum(k * v for k, v in histogram.items()) / total / 1e3) if total else 0.0,
        server_cpu_s=server_cpu,
        server_cpu_us_per_op=None if server_cpu is None else server_cpu / ops * 1e6,
        server_cpu_share=None if server_cpu is None or seconds <= 0 else server_cpu / seconds,
        load_cpu_s=load_cpu,
        load_cpu_us_per_op=load_cpu / ops * 1e6 if count else None,
        load_cpu_share=load_cpu / seconds if seconds > 0 else 0.0,
        load_processes=len(results),
        other_cpu_share=other_share,
        first_errors=tuple(first[:MAX_ERRORS_KEPT]),
        rate=rate,
        late_p99_ms=histogram_percentile(late, 0.99) / 1e3 if late else None,
        late_max_ms=max(late) / 1e3 if late else None,
        timer=", ".join(sorted(timers)) or None,
    )


# --- CPUs -------------------------------------------------------------------------------------


def available_cpus() -> list[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


@dataclass(frozen=True, slots=True)
class Pinning:
    """Which CPUs the servers and the load get (empty: not pinned)."""

    enabled: bool
    server_cpus: tuple[int, ...]
    load_cpus: tuple[int, ...]
    note: str

    @classmethod
    def plan(cls, wanted: bool) -> Pinning:
        """The first CPU for the servers and the rest for the load, with 2 CPUs or more."""
        cpus = available_cpus()
        if not wanted:
            return cls(False, (), (), "off (--no-pin)")
        if len(cpus) < 2 or not hasattr(os, "sched_setaffinity"):
            return cls(False, (), (), f"off: {len(cpus)} CPU(s), nothing to pin apart")
        return cls(
            True,
            (cpus[0],),
            tuple(cpus[1:]),
            f"servers on CPU {cpus[0]}, load processes and this one on CPU "
            + ",".join(str(c) for c in cpus[1:]),
        )


def child_setup(cpus: tuple[int, ...]) -> Callable[[], None]:
    """What a child runs between fork and exec: pinned, and SIGTERM when this process dies."""

    def setup() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if sys.platform == "linux":
            pr_set_pdeathsig = 1
            ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)

    return setup


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on HOST that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log, for error messages."""
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


def serve_argv(port: int, state: Any, secret_file: Path, *options: str) -> list[str]:
    """``novakms serve`` on ``HOST:port`` with the run's key, registry and secret files and
    :data:`SERVER_LIMITS`; ``options`` are further ``serve`` options."""
    argv = [sys.executable, "-m", "novakms.cli", "serve", *options, "--listen"]
    argv += [f"tcp://{HOST}:{port}", "--key-file", str(state.node_key_file)]
    argv += ["--registry", str(state.registry_file), "--master-secret-file", str(secret_file)]
    for limit in SERVER_LIMITS:
        argv += ["--limit", limit]
    return argv


@contextlib.contextmanager
def server_process(
    name: str,
    argv: list[str],
    log: Path,
    env: dict[str, str],
    *,
    cpus: tuple[int, ...] = (),
) -> Iterator[Spawned]:
    """Run a server in its own process (and session), on ``cpus`` if given; always stop it.

    SIGTERM first (the servers shut down gracefully on it), SIGKILL after STOP_TIMEOUT. On
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
            cwd=log.parent,  # not a checkout: only PYTHONPATH decides which novakms is imported
            start_new_session=True,
            preexec_fn=child_setup(cpus),
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


class LoadProcess:
    """One ``bench/loadgen.py`` process and its JSON-lines conversation (see that module)."""

    def __init__(self, index: int, log: Path, cpus: tuple[int, ...]) -> None:
        self.index = index
        self.log = log
        env = {**os.environ, "PYTHONPATH": str(REPO_DIR), "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.loadgen"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                cwd=REPO_DIR,
                preexec_fn=child_setup(cpus),
            )
        self._buffer = b""

    def _failed(self, what: str) -> BenchError:
        code = self.process.poll()
        state = "running" if code is None else f"exit code {code}"
        return BenchError(f"load process {self.index} {what} ({state}):\n{tail(self.log)}")

    def send(self, message: dict[str, Any]) -> None:
        """One JSON line to the process."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._failed("is gone") from None

    def receive(self, timeout: float) -> dict[str, Any]:
        """The next JSON line from the process; :class:`BenchError` on an error or timeout."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._failed(f"did not answer within {timeout:g} s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                data = os.read(fd, 1 << 20)
                if not data:
                    raise self._failed("ended")
                self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise BenchError(f"load process {self.index}: {message['error']}")
        return message

    def close(self) -> None:
        """End of stdin: the process exits; killed if it does not."""
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def load_processes(
    count: int, directory: Path, cpus: tuple[int, ...]
) -> Iterator[list[LoadProcess]]:
    """``count`` load processes for the whole run (their stderr in ``directory``)."""
    started: list[LoadProcess] = []
    try:
        for index in range(count):
            started.append(LoadProcess(index, directory / f"load-{index}.log", cpus))
        yield started
    finally:
        for process in started:
            process.close()


# --- targets ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Target:
    """A server under test: the echo baseline or a novakms checkout."""

    label: str
    kind: Literal["echo", "kms"]
    spawned: Spawned
    port: int
    checkout: Path | None = None
    checks: dict[str, dict[str, str]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    startup_s: float | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.spawned.process.pid

    def spec(self, state_key_file: Path, wallet: str) -> dict[str, Any]:
        """The ``target`` of a load job."""
        spec: dict[str, Any] = {"kind": self.kind, "host": HOST, "port": self.port}
        if self.kind == "kms":
            spec.update(key_file=str(state_key_file), wallet=wallet)
        return spec


def sha256_hex(data: bytes) -> str:
    """The hex SHA-256 of ``data`` (how a key is named without being shown)."""
    return hashlib.sha256(data).hexdigest()


async def probe_echo(port: int) -> None:
    """Readiness of the echo server: one round trip."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        body = cbor2.dumps({"id": 1, "op": "derive", "args": {"path": DERIVE_PATH}})
        await stream.send_all(len(body).to_bytes(4, "big") + body)
        data = b""
        while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise OSError("the echo server closed the connection")
            data += chunk
    answer = cbor2.loads(data[4:])
    if answer.get("ok", {}).get("key") != FAKE_KEY:
        raise BenchError("the echo server answered something else than its key")


async def kms_connect(port: int, signer: LocalSigner | None, wallet: str) -> Client:
    """A connection by the real client (anonymous without ``signer``)."""
    return await Client.connect(
        f"tcp://{HOST}:{port}", signer=signer, expect_wallet=wallet, timeout=CALL_TIMEOUT
    )


async def probe_kms(port: int, wallet: str) -> None:
    """Readiness of a KMS server: an anonymous ``health`` call."""
    async with await kms_connect(port, None, wallet) as kms:
        answer = await kms.health()
    if answer.status != "ok":
        raise BenchError(f"health answered {answer!r}")


async def wait_ready(target: Target, probe: Callable[[], Awaitable[None]]) -> None:
    """Poll ``probe`` until it succeeds; records the seconds since the server was launched."""
    server = target.spawned
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
            target.startup_s = time.perf_counter() - server.launched
            return


async def prepare_targets(
    targets: list[Target], signer: LocalSigner, wallet: str, workloads: frozenset[str]
) -> None:
    """Wait until every server is ready; learn what the answers must be, put the kv value.

    The key each KMS derives is known only by its SHA-256 (never printed); the value read by
    the kv.get scenario is put once, as demo app 1.
    """
    for target in targets:
        if target.kind == "echo":
            await wait_ready(target, partial(probe_echo, target.port))
            fake = {"field": "key", "sha256": sha256_hex(FAKE_KEY)}  # any other op: a derive's
            target.checks = {
                "derive": fake,
                "kv.get": {"field": "value", "sha256": sha256_hex(FAKE_VALUE)},
                "sign/secp256k1": fake,
                "sign/ed25519": fake,
            }
            continue
        await wait_ready(target, partial(probe_kms, target.port, wallet))
        async with await kms_connect(target.port, signer, wallet) as kms:
            target.info["max_inflight"] = kms.server_max_inflight
            key = (await kms.derive(DERIVE_PATH)).key
            if len(key) != KEY_LENGTH:
                raise BenchError(f"{target.label}: derive answered a {len(key)}-byte key")
            await kms.kv_put(KV_KEY, KV_VALUE)
            if (await kms.kv_get(KV_KEY)).value != KV_VALUE:
                raise BenchError(f"{target.label}: kv.get did not read back the value put")
        target.checks = {
            "derive": {"field": "key", "sha256": sha256_hex(key)},
            "kv.get": {"field": "value", "sha256": sha256_hex(KV_VALUE)},
        }
        if workloads - set(target.checks):
            async with await kms_connect(target.port, signer, wallet) as kms:
                for name in ("sign/secp256k1", "sign/ed25519"):
                    if name in workloads:  # deterministic signatures: every answer the same
                        op, args = WORKLOADS[name]
                        signature = (await kms.call(op, args))["signature"]
                        target.checks[name] = {
                            "field": "signature",
                            "sha256": sha256_hex(signature),
                        }


#: Prints the novakms package a server would import, then how many of its hot modules are
#: compiled (scripts/native) and of how many ("0 0" for a checkout from before them).
_CHECKOUT_PROBE = """
import novakms
print(novakms.__file__)
try:
    from novakms import native
except ImportError:
    print("0 0")
else:
    flags = native.compiled()
    print(sum(flags.values()), len(flags))
"""


def checkout_info(path: Path, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Git commit of a checkout, and the novakms package its server really imports."""
    done = subprocess.run(
        [sys.executable, "-c", _CHECKOUT_PROBE],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    module, _, native = done.stdout.strip().partition("\n")
    if done.returncode != 0 or not module:
        raise BenchError(f"cannot import novakms with PYTHONPATH={path}:\n{done.stderr[-2000:]}")
    if not Path(module).resolve().is_relative_to(path.resolve()):
        raise BenchError(
            f"with PYTHONPATH={path} the server would import {module}, not the checkout's"
        )
    compiled, _, total = native.partition(" ")
    return {
        "checkout": str(path),
        "novakms_module": module,
        "native_modules": {"compiled": int(compiled or 0), "of": int(total or 0)},
        "git": git_info(path),
    }


def _native_text(native: dict[str, int]) -> str:
    if not native.get("of"):
        return "all modules as source"
    return f"{native.get('compiled', 0)} of {native['of']} hot modules compiled (scripts/native)"


# --- measuring one scenario -------------------------------------------------------------------


def split(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` as even as possible (larger shares first)."""
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


@dataclass(frozen=True, slots=True)
class Run:
    """What every measurement needs: settings, the load processes, the app's credentials."""

    settings: Settings
    loads: list[LoadProcess]
    key_file: Path
    wallet: str


def measure(run: Run, target: Target, scenario: Scenario, rate: float | None) -> Figures:
    """One measurement: jobs to the load processes, ready, go, the window, the results."""
    settings = run.settings
    used = run.loads[: scenario.processes(len(run.loads))]
    spec = target.spec(run.key_file, run.wallet)
    base: dict[str, Any] = {"kind": scenario.kind, "target": spec, "warmup_s": settings.warmup_s}
    shares = (
        [0] * len(used) if scenario.kind == "handshake" else split(scenario.connections, len(used))
    )
    for process, connections in zip(used, shares, strict=True):
        job = dict(base)
        if scenario.op is not None:
            op, args = WORKLOADS[scenario.op]
            job.update(
                op=op,
                args_cbor=cbor2.dumps(args).hex(),
                check=target.checks[scenario.op],
                connections=connections,
                window=scenario.concurrency // scenario.connections if scenario.concurrency else 1,
            )
        if scenario.kind == "open":
            assert rate is not None
            job["rate"] = rate * connections / scenario.connections
        process.send({"job": job})
    warm: list[tuple[int, list[str]]] = []
    for process in used:
        ready = process.receive(JOB_TIMEOUT)["ready"]
        warm.append((int(ready["errors"]), list(ready["first_errors"])))
    start = time.monotonic() + GO_DELAY
    end = start + settings.duration_s
    for process in used:
        process.send({"go": {"start": start, "end": end}})
    meter = CpuMeter(target.pid)
    time.sleep(max(0.0, start - time.monotonic()))
    meter.start()
    time.sleep(max(0.0, end - time.monotonic()))
    meter.stop()
    results = [process.receive(JOB_TIMEOUT)["result"] for process in used]
    load_cpu = sum(float(r["cpu_s"]) for r in results)
    server_cpu, other = meter.shares(settings.duration_s, load_cpu)
    return aggregate(
        results,
        warm,
        seconds=settings.duration_s,
        server_cpu=server_cpu,
        other_share=other,
        rate=rate if scenario.kind == "open" else None,
    )


@dataclass(slots=True)
class ScenarioResult:
    """A scenario's figures: per round and target, their medians, the ratios to the echo."""

    scenario: Scenario
    rounds: list[dict[str, Figures]] = field(default_factory=list)
    rate: float | None = None

    def median(self) -> dict[str, Figures]:
        """Per target, the median of the rounds."""
        labels = list(self.rounds[0])
        return {label: median_figures([r[label] for r in self.rounds]) for label in labels}

    def ratios(self) -> dict[str, dict[str, float | None]]:
        """Per novakms target, the median over the rounds of its figures / the echo's."""
        labels = [label for label in self.rounds[0] if label != "echo"]
        return {
            label: median_ratios([ratios(r[label], r["echo"]) for r in self.rounds])
            for label in labels
        }


def progress(text: str) -> None:
    """A progress line on stderr (stdout carries only the report)."""
    print(text, file=sys.stderr, flush=True)


def _progress_line(label: str, fig: Figures) -> str:
    cpu = "-" if fig.server_cpu_us_per_op is None else f"{fig.server_cpu_us_per_op:,.0f}"
    share = "-" if fig.server_cpu_share is None else f"{fig.server_cpu_share:.0%}"
    return (
        f"    {label}: {fig.per_second:,.0f}/s, p99 {fig.p99_ms:.2f} ms, server {cpu} us/op "
        f"({share} CPU), load {fig.load_cpu_share:.0%} CPU, errors {fig.errors}"
    )


def measure_all(run: Run, targets: list[Target]) -> list[ScenarioResult]:
    """Every scenario, every round, every target back to back (order rotated per round).

    The closed-loop scenarios and the handshakes first (all rounds), then the open loop at
    its rate: ``--rate``, or OPEN_FRACTION of the median c64x8 throughput of ``novakms``.
    """
    settings = run.settings
    chosen = [s for s in ALL_SCENARIOS if s.name in settings.scenarios]
    results = {s.name: ScenarioResult(s) for s in chosen}
    for phase in ("closed", "open"):
        scenarios = [s for s in chosen if (s.kind == "open") == (phase == "open")]
        if not scenarios:
            continue
        rate = None
        if phase == "open":
            rate = settings.rate
            if rate is None:
                c64x8 = results["c64x8"].median()["novakms"]
                rate = OPEN_FRACTION * c64x8.per_second
            if rate <= 0:
                raise BenchError("the open loop's rate is 0: novakms answered nothing at c64x8")
        for number in range(settings.rounds):
            shift = number % len(targets)
            order = targets[shift:] + targets[:shift]
            for scenario in scenarios:
                progress(
                    f"[round {number + 1}/{settings.rounds}] {scenario.name}: "
                    f"{scenario.description}" + (f" ({rate:,.0f} req/s)" if rate else "")
                )
                figures: dict[str, Figures] = {}
                for target in order:
                    figures[target.label] = measure(run, target, scenario, rate)
                    progress(_progress_line(target.label, figures[target.label]))
                results[scenario.name].rounds.append(
                    {target.label: figures[target.label] for target in targets}
                )
                results[scenario.name].rate = rate
    return [results[s.name] for s in chosen]


# --- reporting --------------------------------------------------------------------------------


def git_info(path: Path = REPO_DIR) -> dict[str, Any]:
    """Commit and dirtiness of a working tree; None values when git cannot tell."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=path, capture_output=True, text=True, timeout=10, check=True
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


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _percent(share: float | None) -> str:
    return _num(None if share is None else share * 100, 0)


def _times(value: float | None) -> str:
    return "-" if value is None else f"x{value:.2f}"


def _columns(width: int, handshake: bool) -> tuple[tuple[str, int, str], ...]:
    op = "conn" if handshake else "req"
    return (
        ("target", width, "<"),
        ("count", 8, ">"),
        (f"{op}/s", 8, ">"),
        ("p50 ms", 7, ">"),
        ("p99 ms", 7, ">"),
        ("max ms", 7, ">"),
        ("errors", 6, ">"),
        (f"srv us/{op}", 11, ">"),
        ("srv CPU %", 9, ">"),
        (f"load us/{op}", 12, ">"),
        ("load CPU %", 10, ">"),
        ("other CPU %", 11, ">"),
    )


def _row(cells: Sequence[str], columns: Sequence[tuple[str, int, str]]) -> str:
    padded = (
        f"{cell:{align}{width}}" for cell, (_, width, align) in zip(cells, columns, strict=True)
    )
    return "  ".join(padded).rstrip()


def _figure_cells(label: str, fig: Figures) -> list[str]:
    return [
        label,
        f"{fig.count:,}",
        f"{fig.per_second:,.0f}",
        _num(fig.p50_ms),
        _num(fig.p99_ms),
        _num(fig.max_ms),
        str(fig.errors),
        _num(fig.server_cpu_us_per_op, 0),
        _percent(fig.server_cpu_share),
        _num(fig.load_cpu_us_per_op, 0),
        _percent(fig.load_cpu_share),
        _percent(fig.other_cpu_share),
    ]


def _ratio_cells(label: str, r: dict[str, float | None]) -> list[str]:
    return [
        label,
        "",
        _times(r["throughput"]),
        _times(r["p50"]),
        _times(r["p99"]),
        _times(r["max"]),
        "",
        _times(r["server_cpu_per_op"]),
        "",
        _times(r["load_cpu_per_op"]),
        "",
        "",
    ]


def goal_results(results: list[ScenarioResult]) -> list[dict[str, Any]]:
    """Each goal of issue 15, for each novakms target, against this run's ratios."""
    by_name = {r.scenario.name: r for r in results}
    out = []
    for name, metric, comparison, goal, what in GOALS:
        result = by_name.get(name)
        if result is None:
            continue
        for label, values in result.ratios().items():
            value = values[metric]
            met = None
            if value is not None:
                met = value <= goal if comparison == "<=" else value >= goal
            out.append(
                {
                    "target": label,
                    "scenario": name,
                    "ratio": metric,
                    "what": what,
                    "value": value,
                    "goal": f"{comparison} {goal}",
                    "met": met,
                }
            )
    return out


def render(results: list[ScenarioResult], info: dict[str, Any]) -> str:
    """The human-readable report."""
    machine, settings, pinning = info["machine"], info["settings"], info["pinning"]
    commit = info["git"]["commit"] or "unknown"
    if info["git"]["dirty"]:
        commit += " (dirty)"
    targets = info["targets"]
    lines = [
        f"novakms derive benchmark  {info['timestamp']}  commit {commit}",
        f"machine: {machine['nproc']} CPUs ({machine['cpu_model'] or 'unknown model'}), "
        f"load avg {_num((machine['loadavg_at_start'] or [None])[0])}, "
        f"Python {machine['python']}, {machine['platform']}",
        f"pinning: {pinning['note']}",
        f"load: {settings['load_processes']} load process(es) (bench/loadgen.py, epoll loop, "
        f"one per connection at most); per measurement {settings['warmup_s']:g} s warm-up, "
        f"then {settings['duration_s']:g} s measured; {settings['rounds']} round(s), targets "
        "back to back in each, the median of the rounds shown",
        f"novakms servers: `novakms serve` (IN_ENCLAVE=false), --limit "
        f"{' --limit '.join(SERVER_LIMITS)}: rate limiting OFF; other limits default",
    ]
    for label, target in targets.items():
        if target["kind"] == "kms":
            git = target.get("git") or {}
            lines.append(
                f"  {label}: {target['checkout']} at {str(git.get('commit') or '?')[:10]}"
                f"{' (dirty)' if git.get('dirty') else ''}, max_inflight "
                f"{target.get('max_inflight')} per connection, "
                f"{_native_text(target.get('native_modules') or {})}"
            )
    lines += [
        "echo: bench/echo.py, trio + 4-byte length + cbor2, same answer shapes, no handshake / "
        "encryption / auth / KDF / store",
        "srv: the server process's CPU clock over the window, per request and % of one core; "
        "load: the load processes' CPU; other: the rest of the machine (noise)",
        "ratio rows: target / echo, the median over the rounds of each round's ratio",
        "",
    ]
    width = max(12, *(len(label) + 5 for label in targets))
    for result in results:
        scenario = result.scenario
        medians = result.median()
        columns = _columns(width, scenario.kind == "handshake")
        header = _row([name for name, _, _ in columns], columns)
        processes = next(iter(medians.values())).load_processes
        lines.append(f"[{scenario.name}] {scenario.description}; {processes} load process(es)")
        if scenario.kind == "open" and result.rate is not None:
            echo = medians["echo"]
            lines.append(
                f"  rate {result.rate:,.0f} req/s for every target; sends late by p99 "
                f"{_num(echo.late_p99_ms, 3)} ms / max {_num(echo.late_max_ms, 3)} ms "
                f"(echo run, timer {echo.timer})"
            )
        lines += [header, "-" * len(header)]
        lines += [_row(_figure_cells(label, fig), columns) for label, fig in medians.items()]
        lines += [
            _row(_ratio_cells(f"{label}/echo", values), columns)
            for label, values in result.ratios().items()
        ]
        lines.append("")
    goals = goal_results(results)
    if goals:
        lines.append("goals of issue 15 (ratio to the echo in this run):")
        for goal in goals:
            met = {True: "met", False: "NOT met", None: "-"}[goal["met"]]
            lines.append(
                f"  {goal['target']:<10} {goal['what']} ({goal['scenario']}): "
                f"{_times(goal['value'])}, goal {goal['goal']}: {met}"
            )
    by_name = {r.scenario.name: r for r in results}
    if "handshake" in by_name:
        medians = by_name["handshake"].median()
        lines.append(
            "  server CPU per new connection: "
            + ", ".join(
                f"{label} {_num(fig.server_cpu_us_per_op, 0)} us" for label, fig in medians.items()
            )
        )
    lines.append(
        "server startup until ready: "
        + ", ".join(f"{label} {_num(t['startup_s'])} s" for label, t in targets.items())
    )
    return "\n".join(lines)


def to_json(results: list[ScenarioResult], info: dict[str, Any]) -> dict[str, Any]:
    """The JSON document written to bench/results."""

    def figures(fig: Figures) -> dict[str, Any]:
        data = asdict(fig)
        data["first_errors"] = list(fig.first_errors)
        return data

    return {
        **info,
        "format": 2,
        "units": {
            "seconds": "wall-clock seconds of the measured window",
            "per_second": "requests (handshake: connections) answered in the window / seconds",
            "*_ms": "latency, milliseconds, from a 1-us histogram (open loop: from the "
            "scheduled send time)",
            "server_cpu_*": "user+system CPU of the server process over the window (its clock)",
            "load_cpu_*": "CPU of the load processes over the window (their process_time)",
            "*_cpu_share": "CPU seconds / wall seconds (1.0 = one core busy)",
            "other_cpu_share": "CPU used by everything else on the machine (noise), /proc/stat",
            "late_*": "open loop: how late requests left after their scheduled time",
            "targets": "per target, the median of the rounds (errors: the sum)",
            "ratio": "target / echo: the median over the rounds of each round's ratio",
        },
        "scenarios": [
            {
                **asdict(result.scenario),
                "rate": result.rate,
                "targets": {label: figures(fig) for label, fig in result.median().items()},
                "ratio": result.ratios(),
                "rounds": [
                    {label: figures(fig) for label, fig in one.items()} for one in result.rounds
                ],
            }
            for result in results
        ],
        "goals": goal_results(results),
    }


def write_results(document: dict[str, Any], stamp: str) -> Path:
    """Write the timestamped file and derive-latest.json, a chart beside each; return the first."""
    return write_with_charts(document, RESULTS_DIR, "derive", stamp)


# --- main -------------------------------------------------------------------------------------

LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,19}")


def parse_also(
    parser: argparse.ArgumentParser, values: Sequence[str]
) -> tuple[tuple[str, str], ...]:
    """``LABEL=PATH`` pairs: labels unique and not echo / novakms, PATH a novakms checkout."""
    seen = {"echo", "novakms"}
    pairs = []
    for value in values:
        label, sep, path = value.partition("=")
        if not sep or not LABEL_PATTERN.fullmatch(label) or not path:
            parser.error(f"--also {value!r}: expected LABEL=PATH (LABEL: letters, digits, _.-)")
        if label in seen:
            parser.error(f"--also {value!r}: the label {label!r} is taken")
        checkout = Path(path).expanduser().resolve()
        if not (checkout / "novakms" / "__init__.py").is_file():
            parser.error(f"--also {value!r}: {checkout} has no novakms/__init__.py")
        seen.add(label)
        pairs.append((label, str(checkout)))
    return tuple(pairs)


def parse_args(argv: Sequence[str] | None) -> Settings:
    """Command-line options; the benchmark uses no randomness, so there is no seed."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n", 1)[0] if __doc__ else None,
        epilog="See bench/README.md.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one short round (~30 s) for CI and smoke tests"
    )
    parser.add_argument(
        "--duration",
        type=float,
        help=f"measured seconds per scenario and target (default {FULL['duration']:g}, "
        f"--quick {QUICK['duration']:g})",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        help=f"unmeasured seconds of the same load before each measurement (default "
        f"{FULL['warmup']:g}, --quick {QUICK['warmup']:g})",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"repeat everything, report the medians (default {FULL['rounds']}, --quick "
        f"{QUICK['rounds']})",
    )
    parser.add_argument(
        "--load-processes",
        type=int,
        default=default_load_processes(),
        metavar="N",
        help="load-generator processes (default: one per CPU not given to the servers, at "
        "least 1: %(default)s here)",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the servers to one CPU and the load to the others",
    )
    parser.add_argument(
        "--rate",
        type=float,
        help=f"the open loop's rate, req/s (default {OPEN_FRACTION * 100:.0f}%% of novakms's c64x8 "
        "throughput in this run); give one to compare runs at the same rate",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIO_NAMES),
        help="comma-separated scenarios to run (default: %(default)s; also sign-k1, sign-ed: "
        "named-key signatures, for servers that have them)",
    )
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="also measure a novakms server from the checkout PATH (PYTHONPATH=PATH), e.g. "
        "before=/tmp/before after `git worktree add /tmp/before <commit>`; repeatable",
    )
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    scenarios = tuple(name.strip() for name in str(args.scenarios).split(",") if name.strip())
    known = tuple(s.name for s in ALL_SCENARIOS)
    unknown = [name for name in scenarios if name not in known]
    if unknown or not scenarios:
        parser.error(f"--scenarios: unknown {unknown} (known: {', '.join(known)})")
    if "open50" in scenarios and "c64x8" not in scenarios and args.rate is None:
        parser.error("--scenarios: open50 needs c64x8 (its rate is half of it) or --rate")
    settings = Settings(
        quick=args.quick,
        duration_s=defaults["duration"] if args.duration is None else args.duration,
        warmup_s=defaults["warmup"] if args.warmup is None else args.warmup,
        rounds=int(defaults["rounds"] if args.rounds is None else args.rounds),
        load_processes=args.load_processes,
        pin=args.pin,
        rate=args.rate,
        scenarios=tuple(name for name in known if name in scenarios),
        also=parse_also(parser, args.also),
    )
    if settings.duration_s <= 0 or settings.warmup_s < 0 or settings.rounds < 1:
        parser.error("--duration must be > 0, --warmup >= 0 and --rounds >= 1")
    if settings.load_processes < 1 or (settings.rate is not None and settings.rate <= 0):
        parser.error("--load-processes must be at least 1 and --rate above 0")
    return settings


def run(settings: Settings) -> int:
    """Start the servers and the load processes, measure, report; returns the exit code."""
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    pinning = Pinning.plan(settings.pin)
    info: dict[str, Any] = {
        "benchmark": "derive",
        "timestamp": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "git": git_info(),
        "machine": machine_info(),
        "settings": {
            **asdict(settings),
            "scenarios": [asdict(s) for s in ALL_SCENARIOS if s.name in settings.scenarios],
            "derive_path": DERIVE_PATH,
            "key_length": KEY_LENGTH,
            "kv_key": KV_KEY,
            "kv_value_size": len(KV_VALUE),
            "limits": list(SERVER_LIMITS),
            "open_fraction": OPEN_FRACTION,
        },
        "pinning": asdict(pinning),
    }
    if pinning.enabled:
        os.sched_setaffinity(0, pinning.load_cpus)
    with tempfile.TemporaryDirectory(prefix="novakms-bench-") as tmp_name:
        tmp = Path(tmp_name)
        state = prepare_state(tmp / "state")
        secret_file = tmp / "master-secret"
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(os.urandom(32).hex() + "\n")
        base_env = {**os.environ, "IN_ENCLAVE": "false", "PYTHONUNBUFFERED": "1"}
        checkouts = [("novakms", str(REPO_DIR)), *settings.also]
        with contextlib.ExitStack() as stack:
            targets: list[Target] = []
            echo_port = free_port()
            echo_env = {k: v for k, v in base_env.items() if k != "PYTHONPATH"}
            spawned = stack.enter_context(
                server_process(
                    "the echo server",
                    [sys.executable, str(ECHO_SCRIPT), "--listen", f"{HOST}:{echo_port}"],
                    tmp / "echo.log",
                    echo_env,
                    cpus=pinning.server_cpus,
                )
            )
            targets.append(Target("echo", "echo", spawned, echo_port))
            for label, checkout in checkouts:
                port = free_port()
                env = {**base_env, "PYTHONPATH": checkout}
                details = checkout_info(Path(checkout), env, tmp)
                argv = serve_argv(port, state, secret_file)
                spawned = stack.enter_context(
                    server_process(
                        f"the KMS server {label!r}",
                        argv,
                        tmp / f"kms-{label}.log",
                        env,
                        cpus=pinning.server_cpus,
                    )
                )
                targets.append(
                    Target(label, "kms", spawned, port, checkout=Path(checkout), info=details)
                )
            signer = LocalSigner.from_file(state.apps[0].key_file)
            workloads = frozenset(
                s.op for s in ALL_SCENARIOS if s.name in settings.scenarios and s.op is not None
            )
            trio.run(prepare_targets, targets, signer, state.node_wallet, workloads)
            loads = stack.enter_context(
                load_processes(settings.load_processes, tmp, pinning.load_cpus)
            )
            measured = Run(settings, loads, state.apps[0].key_file, state.node_wallet)
            results = measure_all(measured, targets)
            info["targets"] = {
                target.label: {
                    "kind": target.kind,
                    **target.info,
                    "startup_s": target.startup_s,
                    "cpu_total_s": process_cpu_seconds(target.pid),
                }
                for target in targets
            }
            info["targets"]["echo"].update(
                checkout=str(REPO_DIR), script="bench/echo.py", git=git_info()
            )
    print(render(results, info), flush=True)
    document = to_json(results, info)
    errors = sum(fig.errors for result in results for fig in result.median().values())
    document["ok"] = errors == 0
    path = write_results(document, stamp)
    latest = RESULTS_DIR / "derive-latest.json"
    print(f"\nwrote {path.relative_to(REPO_DIR)} and {latest.relative_to(REPO_DIR)}")
    if errors:
        progress(f"FAILED: {errors} request(s) failed or were answered wrong:")
        for result in results:
            for label, fig in result.median().items():
                for message in fig.first_errors:
                    progress(f"  [{result.scenario.name} {label}] {message}")
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
            progress("interrupted; the servers and load processes were stopped")
            return 130
        expected = [leaf for leaf in found if isinstance(leaf, BenchError | NovaKMSError)]
        if not expected or len(expected) != len(found):
            raise
        for leaf in expected:
            progress(f"benchmark failed: {type(leaf).__name__}: {leaf}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
