"""A rolling restart under continuous writes, done the way docs/operations.md says.

The driver shared by ``bench/bench_rolling.py`` (which reports the figures) and
``tests/cluster/test_rolling_nemesis.py`` (which asserts nothing acknowledged is lost). It runs a
``novakms dev --restart`` cluster (anvil, the registries, one ``novakms serve`` process per node;
``dev`` restarts a node that exits, with the same key and address, and reports it on stderr),
keeps writers busy on every node, and restarts every node in turn:

1. ``novakms admin wait-safe --node ADDR`` (a subprocess, as an operator runs it);
2. SIGTERM to the node's process;
3. ``dev`` restarts it (``node_restarted`` on its stderr, with the new pid);
4. wait until the node serves again (``status.ready`` and not ``syncing``).

Writers use unique keys, so a write is either acknowledged (the put answered OK: with
``acks=1`` once a peer held it, with ``acks=0`` once the receiving node did) or not; at the end
every acknowledged key must read back its value on every node, and every node must list the
same keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from novakms.client.aio import Client
from novakms.crypto.signer import LocalSigner
from novakms.errors import NotFound, NovaKMSError, TransportError, Unavailable

READY_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0
#: Limits for a cluster that restarts briskly (bootstrap and anti-entropy every half second).
FAST_LIMITS = (
    "bootstrap_interval=0.2",
    "anti_entropy_interval=0.5",
    "wallet_rate=inf",
)


@dataclass
class Cluster:
    """A running ``novakms dev --restart`` process and what it reported."""

    proc: subprocess.Popen[bytes]
    ready: dict[str, Any]
    log_path: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def addresses(self) -> list[str]:
        return [node["address"] for node in self.ready["nodes"]]

    def pid(self, address: str) -> int:
        """The node's current process id (its latest ``node_restarted`` event, else the ready
        line)."""
        with self.lock:
            for event in reversed(self.events):
                if event.get("event") == "node_restarted" and event.get("node") == address:
                    return int(event["pid"])
        return next(int(n["pid"]) for n in self.ready["nodes"] if n["address"] == address)

    def event_count(self) -> int:
        with self.lock:
            return len(self.events)

    async def wait_event(
        self, kind: str, address: str, *, after: int, timeout: float
    ) -> dict[str, Any]:
        """The first ``kind`` event about ``address`` among events ``after`` onwards."""
        with trio.fail_after(timeout):
            while True:
                with self.lock:
                    for event in self.events[after:]:
                        if event.get("event") == kind and event.get("node") == address:
                            return event
                if self.proc.poll() is not None:
                    raise RuntimeError(f"novakms dev exited (see {self.log_path})")
                await trio.sleep(0.05)


def _read_stderr(cluster: Cluster, stream: Any) -> None:
    with open(cluster.log_path, "ab") as log:
        for raw in iter(stream.readline, b""):
            log.write(raw)
            log.flush()
            text = raw.decode("utf-8", "replace").strip()
            if text.startswith("{"):
                with contextlib.suppress(ValueError):
                    event = json.loads(text)
                    if isinstance(event, dict):
                        with cluster.lock:
                            cluster.events.append(event)


@contextlib.contextmanager
def dev_cluster(
    workdir: Path,
    *,
    nodes: int = 3,
    limits: Sequence[str] = FAST_LIMITS,
    restart_delay: float = 0.2,
    log_level: str = "INFO",
) -> Iterator[Cluster]:
    """Start ``novakms dev --restart``; yield once it printed its ready line; stop it after."""
    state = workdir / f"state-{time.monotonic_ns()}"
    log_path = workdir / f"{state.name}.log"
    argv = [sys.executable, "-m", "novakms.cli", "--log-level", log_level, "dev", "--port", "0"]
    argv += ["--state-dir", str(state), "--nodes", str(nodes), "--poll-interval", "0.2"]
    argv += ["--restart", "--restart-delay", str(restart_delay)]
    for item in limits:
        argv += ["--limit", item]
    env = {**os.environ, "IN_ENCLAVE": "false"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    assert proc.stderr is not None
    cluster = Cluster(proc=proc, ready={}, log_path=log_path)
    reader = threading.Thread(target=_read_stderr, args=(cluster, proc.stderr), daemon=True)
    reader.start()
    try:
        line = _read_ready_line(proc, log_path)
        cluster.ready = json.loads(line)
        yield cluster
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)
        proc.stdout.close()
        proc.stderr.close()
        for address in cluster.addresses if cluster.ready else []:
            with contextlib.suppress(ProcessLookupError, StopIteration):
                os.kill(cluster.pid(address), signal.SIGKILL)  # belt and braces


def _read_ready_line(proc: subprocess.Popen[bytes], log_path: Path) -> str:
    assert proc.stdout is not None
    result: list[bytes] = []
    thread = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    thread.start()
    thread.join(READY_TIMEOUT)
    if not result or not result[0].strip():
        tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
        raise RuntimeError(f"novakms dev did not become ready:\n{tail}")
    return result[0].decode()


# --- writers -----------------------------------------------------------------------------------


@dataclass
class Writer:
    """Writes unique keys to the nodes in turn at ``rate`` per second until stopped."""

    signer: LocalSigner
    addresses: list[str]
    acks: int
    prefix: str
    rate: float
    acked: dict[str, bytes] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)
    attempts: int = 0

    async def run(self, stop: trio.Event) -> None:
        clients: dict[str, Client] = {}
        start = trio.current_time()
        try:
            while not stop.is_set():
                address = self.addresses[self.attempts % len(self.addresses)]
                key = f"{self.prefix}/{self.attempts:06d}"
                value = f"{key} acks={self.acks}".encode()
                self.attempts += 1
                try:
                    client = clients.get(address)
                    if client is None:
                        client = clients[address] = await Client.connect(
                            address, signer=self.signer, timeout=5.0
                        )
                    await client.kv_put(key, value, acks=self.acks)
                except NovaKMSError as exc:
                    reason = exc.details.get("reason") if isinstance(exc, Unavailable) else None
                    if isinstance(exc, TransportError):
                        reason = "connection"  # the node is down, or went down meanwhile
                    self.refused[f"{exc.code}/{reason}" if reason else exc.code] += 1
                    # A fresh connection next time (a closed one would repeat its notice).
                    dropped = clients.pop(address, None)
                    if dropped is not None:
                        await dropped.aclose()
                else:
                    self.acked[key] = value
                await trio.sleep_until(start + self.attempts / self.rate)
        finally:
            for client in clients.values():
                await client.aclose()


# --- the procedure -----------------------------------------------------------------------------


async def status(address: str) -> dict[str, Any] | None:
    try:
        async with await Client.connect(address, timeout=5.0) as kms:
            return dict(await kms.call("status"))
    except NovaKMSError:
        return None


async def wait_safe(address: str, timeout: float) -> float:
    """``novakms admin wait-safe`` as an operator runs it; the seconds it took."""
    started = time.perf_counter()
    argv = [sys.executable, "-m", "novakms.cli", "admin", "wait-safe", "--node", address]
    result = await trio.run_process(
        [*argv, "--timeout", str(timeout)], capture_stdout=True, capture_stderr=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"wait-safe {address} failed: {result.stdout!r} {result.stderr!r}")
    return time.perf_counter() - started


async def wait_serving(address: str, timeout: float) -> dict[str, Any]:
    """Poll ``status`` until the node serves (ready, not syncing); the last status."""
    with trio.fail_after(timeout):
        while True:
            report = await status(address)
            if report is not None and report.get("ready") and not report.get("syncing"):
                return report
            await trio.sleep(0.05)


@dataclass
class Step:
    """One node's restart."""

    address: str
    round: int
    until_safe_s: float  # polling status until it said safe_to_stop
    safe_s: float  # the wait-safe command, start to exit (mostly its own start-up)
    exit_s: float  # SIGTERM until dev saw the process exit
    serving_s: float  # dev's restart until the node serves again (start + catch-up)
    degraded: str | None


async def burst(address: str, signer: LocalSigner, acked: dict[str, bytes], count: int) -> None:
    """``count`` acks=0 writes to one node, pipelined on one connection (the answered ones go
    into ``acked``)."""
    async with await Client.connect(address, signer=signer, timeout=5.0) as kms:

        async def one(key: str) -> None:
            value = f"{key} burst".encode()
            await kms.kv_put(key, value)
            acked[key] = value

        first = len(acked)
        async with trio.open_nursery() as nursery:
            for i in range(first, first + count):
                nursery.start_soon(one, f"rolling/burst/{i:06d}")


async def load(address: str, signer: LocalSigner, acked: dict[str, bytes], count: int) -> None:
    """``count`` records of 256 bytes with acks=1, 32 at a time on one connection."""
    limiter = trio.CapacityLimiter(32)
    async with await Client.connect(address, signer=signer, timeout=10.0) as kms:

        async def one(i: int) -> None:
            key, value = f"rolling/preload/{i:07d}", i.to_bytes(4, "big") * 64
            async with limiter:
                await kms.kv_put(key, value, acks=1)
            acked[key] = value

        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(one, i)


async def restart(
    cluster: Cluster,
    address: str,
    *,
    round_: int,
    timeout: float,
    before_stop: Callable[[str], Awaitable[None]] | None = None,
) -> Step:
    polled = time.perf_counter()
    with trio.fail_after(timeout):
        while not ((await status(address)) or {}).get("safe_to_stop"):  # noqa: ASYNC110
            await trio.sleep(0.02)
    until_safe_s = time.perf_counter() - polled
    safe_s = await wait_safe(address, timeout)  # as the operator does: returns at once now
    if before_stop is not None:
        await before_stop(address)  # writes that race the stop: only the shutdown drain has them
    mark = cluster.event_count()
    os.kill(cluster.pid(address), signal.SIGTERM)
    stopped = time.perf_counter()
    await cluster.wait_event("node_exited", address, after=mark, timeout=timeout)
    exit_s = time.perf_counter() - stopped
    await cluster.wait_event("node_restarted", address, after=mark, timeout=timeout)
    restarted = time.perf_counter()
    report = await wait_serving(address, timeout)
    return Step(
        address=address,
        round=round_,
        until_safe_s=until_safe_s,
        safe_s=safe_s,
        exit_s=exit_s,
        serving_s=time.perf_counter() - restarted,
        degraded=report.get("degraded"),
    )


async def all_keys(client: Client, prefix: str) -> list[str]:
    keys: list[str] = []
    cursor = None
    while True:
        page = await client.kv_list(prefix=prefix, limit=1000, cursor=cursor)
        keys += page.keys
        cursor = page.cursor
        if cursor is None:
            return keys


async def verify(
    addresses: Sequence[str], signer: LocalSigner, acked: dict[str, bytes], prefix: str
) -> dict[str, Any]:
    """Every acknowledged key on every node with its value; every node lists the same keys."""
    lost: dict[str, int] = {}
    wrong: dict[str, int] = {}
    listed: dict[str, list[str]] = {}
    limiter = trio.CapacityLimiter(16)
    for address in addresses:
        missing = bad = 0
        async with await Client.connect(address, signer=signer, timeout=10.0) as kms:

            async def check(key: str, value: bytes, client: Client = kms) -> None:
                nonlocal missing, bad
                async with limiter:
                    try:
                        item = await client.kv_get(key)
                    except NotFound:
                        missing += 1
                        return
                    if item.value != value:
                        bad += 1

            async with trio.open_nursery() as nursery:
                for key, value in acked.items():
                    nursery.start_soon(check, key, value)
            listed[address] = await all_keys(kms, prefix)
        lost[address], wrong[address] = missing, bad
    first = listed[addresses[0]]
    return {
        "acknowledged": len(acked),
        "lost": lost,
        "wrong_value": wrong,
        "same_keys_everywhere": all(keys == first for keys in listed.values()),
        "keys_per_node": {a: len(k) for a, k in listed.items()},
    }


async def settle(addresses: Sequence[str], timeout: float) -> None:
    """Wait until every node is safe to stop: all replication has been confirmed."""
    for address in addresses:
        await wait_safe(address, timeout)


@dataclass
class RollingResult:
    steps: list[Step]
    writers: list[Writer]
    verdict: dict[str, Any]
    seconds: float


async def rolling_restart(
    cluster: Cluster,
    *,
    rounds: int,
    rate: float,
    acks: Sequence[int] = (1, 0),
    step_timeout: float = 120.0,
    warmup: float = 1.0,
    burst_before_stop: int = 0,
    preload: int = 0,
) -> RollingResult:
    """Writers on every node (one per ``acks`` value), ``rounds`` rolling restarts, verify.

    With ``burst_before_stop``, that many acks=0 writes go to each node between its
    ``wait-safe`` and its SIGTERM (verified like the writers', under ``rolling/burst``).
    ``preload`` records are written first (and verified, under ``rolling/preload``), so that
    each restarted node has that much to catch up.
    """
    app = cluster.ready["apps"][0]
    signer = LocalSigner.from_file(app["key_file"])
    addresses = cluster.addresses
    writers = [
        Writer(signer=signer, addresses=addresses, acks=a, prefix=f"rolling/acks{a}", rate=rate)
        for a in acks
    ]
    bursts: dict[str, bytes] = {}
    preloaded: dict[str, bytes] = {}
    if preload:
        await load(addresses[0], signer, preloaded, preload)
        await settle(addresses, step_timeout)

    async def before_stop(address: str) -> None:
        await burst(address, signer, bursts, burst_before_stop)

    stop = trio.Event()
    steps: list[Step] = []
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for writer in writers:
            nursery.start_soon(writer.run, stop)
        await trio.sleep(warmup)
        try:
            for round_ in range(rounds):
                for address in addresses:
                    steps.append(
                        await restart(
                            cluster,
                            address,
                            round_=round_,
                            timeout=step_timeout,
                            before_stop=before_stop if burst_before_stop else None,
                        )
                    )
            await trio.sleep(warmup)
        finally:
            stop.set()
    seconds = time.perf_counter() - started
    await settle(addresses, step_timeout)
    verdict: dict[str, Any] = {}
    for writer in writers:
        verdict[writer.prefix] = await verify(addresses, signer, writer.acked, writer.prefix)
    if burst_before_stop:
        verdict["rolling/burst"] = await verify(addresses, signer, bursts, "rolling/burst")
    if preload:
        verdict["rolling/preload"] = await verify(addresses, signer, preloaded, "rolling/preload")
    return RollingResult(steps=steps, writers=writers, verdict=verdict, seconds=seconds)
