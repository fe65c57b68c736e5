"""Replication lag and join time of a multi-node development cluster.

Usage::

    .venv/bin/python bench/bench_cluster.py            # full: 200 writes/s for 15 s, 100k records
    .venv/bin/python bench/bench_cluster.py --quick    # 5 s of lag load, 5k records

Two tests, each on its own ``novakms dev`` cluster (anvil + registries + one ``novakms serve``
process per node, started as a subprocess; the benchmark waits for its JSON ready line and
always stops it with SIGINT, then SIGKILL if it does not exit):

1. **Replication lag** (3 nodes): one task writes keys with 100-byte values to node A at a
   steady rate; reader tasks on node B (their own connection) poll each written key until it
   reads back. Lag of a key = first successful read on B - return of the put on A.
2. **Join time** (3 nodes, raised quotas): N records are written to node A as fast as possible
   (pipelined, many tasks on one connection); then (a) the time until the slower of B and C
   reports ``store.live == N``, and (b) a true late join: a fourth node is registered on the
   chain and started by hand; time from its process start until it reports ready and
   ``store.live == N``.

The table goes to stdout (progress to stderr); the figures go to
``bench/results/cluster-<UTC timestamp>.json`` and ``bench/results/cluster-latest.json``
(with every key's lag in ``lag.lags_ms``), and a histogram + CDF of the lags beside each
(``.png``; needs matplotlib, see ``bench/plot.py``). Everything runs on this one machine: the
clients, all nodes and anvil share its cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from novakms.admin.tx import TxSender
from novakms.chain.rpc import JsonRpcClient
from novakms.client.aio import Client
from novakms.crypto import eth
from novakms.crypto.signer import LocalSigner
from novakms.dev.world import register_instance
from novakms.errors import NotFound, NovaKMSError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: bench.*
from bench.bench_derive import git_info, machine_info
from bench.plot import chart_beside

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"
VALUE = b"v" * 100
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0
KMS_APP_ID = 3  # dev creates two demo apps (1, 2); the KMS app is the next one
LAG_DEADLINE = 10.0  # a key not read on B within this many seconds counts as missing
LAG_READERS = 32
POLL_SLEEP = 0.002  # between two reads of the same key on B
BIG_QUOTAS = ("app_quota_bytes=4294967296", "global_quota_bytes=8589934592")

FULL = {"rate": 200.0, "duration": 15.0, "records": 100_000}
QUICK = {"rate": 200.0, "duration": 5.0, "records": 5_000}


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[max(1, math.ceil(fraction * len(sorted_values))) - 1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --- processes --------------------------------------------------------------------------------


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of an exited dev process is reaped by init; treat as gone once it is.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    return False


@contextlib.contextmanager
def dev_cluster(nodes: int, limits: Sequence[str], workdir: Path) -> Iterator[dict[str, Any]]:
    """A ``novakms dev`` cluster; yields its ready line (parsed)."""
    state = workdir / f"state-{nodes}-{time.monotonic_ns()}"
    log = workdir / f"dev-{state.name}.log"
    argv = [sys.executable, "-m", "novakms.cli", "--log-level", "WARNING", "dev", "--port", "0"]
    argv += ["--state-dir", str(state), "--nodes", str(nodes)]
    for item in limits:
        argv += ["--limit", item]
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log_file)
    ready: dict[str, Any] | None = None
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise RuntimeError(f"dev cluster not ready (see {log}):\n{log.read_text()[-2000:]}")
            readable, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
            if readable:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    continue
                line += chunk
        ready = json.loads(line.decode())
        yield ready
    finally:
        _stop(proc)
        for node in (ready or {}).get("nodes", []):  # belt and braces: no orphaned node
            if _pid_alive(node["pid"]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node["pid"], signal.SIGKILL)


# --- test 1: replication lag ------------------------------------------------------------------


async def lag_test(ready: dict[str, Any], rate: float, duration: float) -> dict[str, Any]:
    app = ready["apps"][0]
    signer = LocalSigner.from_file(app["key_file"])
    node_a, node_b = ready["nodes"][0]["address"], ready["nodes"][1]["address"]
    count = int(rate * duration)
    put_done: list[float] = [0.0] * count
    lags: list[float] = []
    missing: list[int] = []
    put_errors: list[str] = []
    send, receive = trio.open_memory_channel[int](count)
    writes_seconds = 0.0

    async with (
        await Client.connect(node_a, signer=signer) as kms_a,
        await Client.connect(node_b, signer=signer) as kms_b,
    ):

        async def writer() -> None:
            nonlocal writes_seconds
            async with send:
                start = trio.current_time()
                wall = time.perf_counter()
                for i in range(count):
                    await trio.sleep_until(start + i / rate)
                    try:
                        await kms_a.kv_put(f"lag/{i:07d}", VALUE)
                    except NovaKMSError as exc:
                        put_errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    put_done[i] = time.perf_counter()
                    send.send_nowait(i)
                writes_seconds = time.perf_counter() - wall

        async def reader() -> None:
            async for i in receive:
                key = f"lag/{i:07d}"
                deadline = put_done[i] + LAG_DEADLINE
                while True:
                    try:
                        got = await kms_b.kv_get(key)
                    except NotFound:
                        got = None
                    now = time.perf_counter()
                    if got is not None:
                        if got.value != VALUE:
                            raise RuntimeError(f"wrong value for {key}")
                        lags.append(now - put_done[i])
                        break
                    if now > deadline:
                        missing.append(i)
                        break
                    await trio.sleep(POLL_SLEEP)

        with trio.fail_after(duration * 3 + LAG_DEADLINE + 60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                for _ in range(LAG_READERS):
                    nursery.start_soon(reader)
    lags.sort()
    written = count - len(put_errors)
    return {
        "nodes": 3,
        "target_rate": rate,
        "duration_s": duration,
        "writes_attempted": count,
        "writes_ok": written,
        "put_errors": len(put_errors),
        "first_put_errors": put_errors[:5],
        "writes_per_s": written / writes_seconds if writes_seconds else 0.0,
        "arrived": len(lags),
        "missing_after_10s": len(missing),
        "lag_p50_ms": percentile(lags, 0.50) * 1e3,
        "lag_p99_ms": percentile(lags, 0.99) * 1e3,
        "lag_max_ms": (lags[-1] if lags else 0.0) * 1e3,
        "lag_mean_ms": (sum(lags) / len(lags) if lags else 0.0) * 1e3,
        "reader_tasks": LAG_READERS,
        "poll_sleep_ms": POLL_SLEEP * 1e3,
        # every key's lag, ascending, in ms (0.001 ms steps): the chart's histogram and CDF
        "lags_ms": [round(lag * 1e3, 3) for lag in lags],
    }


# --- test 2: acknowledged writes -------------------------------------------------------------


async def acks_test(ready: dict[str, Any], count: int) -> dict[str, Any]:
    """Latency of sequential ``kv.put`` on A without acks and with ``acks=2`` (both peers)."""
    app = ready["apps"][0]
    signer = LocalSigner.from_file(app["key_file"])
    results: dict[str, Any] = {"writes": count}
    async with await Client.connect(ready["nodes"][0]["address"], signer=signer) as kms:
        for label, acks in (("no_acks", None), ("acks_2", 2)):
            times: list[float] = []
            for i in range(count):
                start = time.perf_counter()
                answer = await kms.kv_put(f"acks/{label}/{i:05d}", VALUE, acks=acks)
                times.append(time.perf_counter() - start)
                if acks is not None and answer.acked < acks:
                    raise RuntimeError(f"acked {answer.acked} < {acks}")
            times.sort()
            results[label] = {
                "p50_ms": percentile(times, 0.50) * 1e3,
                "p99_ms": percentile(times, 0.99) * 1e3,
                "max_ms": times[-1] * 1e3,
            }
    return results


# --- test 3: join time ------------------------------------------------------------------------


async def node_status(address: str) -> dict[str, Any] | None:
    """A node's ``status``, None if it does not answer."""
    try:
        with trio.fail_after(5):
            async with await Client.connect(address, timeout=2) as kms:
                return dict(await kms.call("status"))
    except (NovaKMSError, OSError, trio.TooSlowError):
        return None


async def wait_live(address: str, target: int, timeout: float, t0: float) -> dict[str, Any]:
    """Poll until the node serves (secret, not syncing) with ``live >= target``.

    Times are relative to ``t0``: ``ready_s`` when it had the secret, ``serving_s`` when it
    finished its snapshot (served KV), ``seconds`` when it held every record.
    """
    ready_at: float | None = None
    serving_at: float | None = None
    last = 0
    snapshot = None
    with trio.move_on_after(timeout):
        while True:
            status = await node_status(address)
            if status is not None:
                now = time.perf_counter() - t0
                last = int((status.get("store") or {}).get("live", 0))
                snapshot = (status.get("cluster") or {}).get("snapshot")
                if status.get("ready") and ready_at is None:
                    ready_at = now
                serving = status.get("ready") and not status.get("syncing")
                if serving and serving_at is None:
                    serving_at = now
                if serving and last >= target:
                    return {
                        "done": True,
                        "seconds": now,
                        "ready_s": ready_at,
                        "serving_s": serving_at,
                        "live": last,
                        "snapshot": snapshot,
                    }
            await trio.sleep(0.25)
    return {
        "done": False,
        "seconds": None,
        "ready_s": ready_at,
        "serving_s": serving_at,
        "live": last,
        "snapshot": snapshot,
        "timed_out_after_s": timeout,
    }


async def join_test(
    ready: dict[str, Any],
    records: int,
    concurrency: int,
    timeout: float,
    workdir: Path,
    limits: Sequence[str],
) -> dict[str, Any]:
    app = ready["apps"][0]
    signer = LocalSigner.from_file(app["key_file"])
    addresses = [n["address"] for n in ready["nodes"]]
    errors: list[str] = []
    next_index = 0

    progress(f"join: writing {records:,} records to node A ({concurrency} tasks, 1 connection)")
    async with await Client.connect(addresses[0], signer=signer) as kms:

        async def worker() -> None:
            nonlocal next_index
            while next_index < records:
                i = next_index
                next_index += 1
                try:
                    await kms.kv_put(f"join/{i:07d}", VALUE)
                except NovaKMSError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

        start = time.perf_counter()
        with trio.fail_after(timeout):
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker)
        write_seconds = time.perf_counter() - start
    written_at = time.perf_counter()
    target = records - len(errors)
    progress(f"join: wrote {target:,} in {write_seconds:.1f} s; waiting for B and C")

    peers: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:

        async def watch(name: str, address: str) -> None:
            peers[name] = await wait_live(address, target, timeout, written_at)

        for name, address in zip(("B", "C"), addresses[1:], strict=False):
            nursery.start_soon(watch, name, address)
    done = [p["seconds"] for p in peers.values() if p["done"]]
    converge = max(done) if len(done) == len(peers) else None
    progress(f"join: peers {peers}")

    # A true late join: register a fourth node on the chain and start it by hand.
    chain = ready["chain"]
    key = eth.generate_private_key(os.urandom)
    wallet = eth.wallet_from_private_key(key)
    key_file = workdir / "late-node.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(eth.format_private_key(key))
    admin_text = Path(chain["admin_key_file"]).read_text()  # noqa: ASYNC240  (tiny, local)
    admin_key = eth.parse_private_key(admin_text.strip())
    port = free_port()
    async with JsonRpcClient(chain["rpc"]) as rpc:
        await register_instance(
            TxSender(rpc, admin_key),
            chain["nova_app_registry"],
            KMS_APP_ID,
            wallet,
            f"http://{HOST}:{port}",
        )
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
        str(key_file),
        "--chain-rpc",
        chain["rpc"],
        "--nova-app-registry",
        chain["nova_app_registry"],
        "--kms-registry",
        chain["kms_registry"],
        "--poll-interval",
        "1",
        "--limit",
        "anti_entropy_interval=1",
    ]
    for item in limits:
        argv += ["--limit", item]
    log = workdir / "late-node.log"
    progress(f"join: starting a late 4th node on port {port}")
    with open(log, "wb") as log_file:  # noqa: ASYNC230  (opened once, before timing)
        t0 = time.perf_counter()
        proc = subprocess.Popen(  # noqa: ASYNC220  (started once, watched without blocking)
            argv,
            env={**os.environ, "IN_ENCLAVE": "false"},
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        late = await wait_live(f"{HOST}:{port}", target, timeout, t0)
        late["exit_code"] = proc.poll()
    finally:
        _stop(proc, signal.SIGTERM)
    if not late["done"]:
        late["log_tail"] = log.read_text()[-1500:]
    progress(f"join: late node {late}")
    return {
        "nodes_at_start": len(addresses),
        "records": records,
        "written": target,
        "put_errors": len(errors),
        "first_put_errors": errors[:5],
        "concurrency": concurrency,
        "write_seconds": write_seconds,
        "writes_per_s": target / write_seconds if write_seconds else 0.0,
        "peers": peers,
        "peers_converged_s": converge,
        "late_join": late,
        "timeout_s": timeout,
    }


# --- report -----------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def report(results: dict[str, Any]) -> str:
    lines = []
    lag = results.get("lag")
    if lag:
        lines += [
            "Replication lag, 3 nodes: writes on A, reads on B "
            f"(target {lag['target_rate']:.0f} writes/s for {lag['duration_s']:.0f} s, "
            "100-byte values)",
            f"  {'writes':>7}  {'writes/s':>8}  {'put err':>7}  {'arrived':>7}  "
            f"{'missing':>7}  {'p50 ms':>7}  {'p99 ms':>7}  {'max ms':>7}  {'mean ms':>7}",
            f"  {lag['writes_ok']:>7,}  {lag['writes_per_s']:>8.1f}  {lag['put_errors']:>7}  "
            f"{lag['arrived']:>7,}  {lag['missing_after_10s']:>7}  {lag['lag_p50_ms']:>7.1f}  "
            f"{lag['lag_p99_ms']:>7.1f}  {lag['lag_max_ms']:>7.1f}  {lag['lag_mean_ms']:>7.1f}",
            f"  (missing = not readable on B within {LAG_DEADLINE:.0f} s; lag resolution is one "
            f"read round trip + {lag['poll_sleep_ms']:.0f} ms poll sleep)",
            "",
        ]
    acks = results.get("acks")
    if acks:
        lines += [
            f"kv.put latency on A, {acks['writes']:,} sequential writes each "
            "(acks=2: answered once both peers stored the write)",
            f"  {'':>8}  {'p50 ms':>7}  {'p99 ms':>7}  {'max ms':>7}",
        ]
        for label in ("no_acks", "acks_2"):
            row = acks[label]
            lines.append(
                f"  {label:>8}  {row['p50_ms']:>7.2f}  {row['p99_ms']:>7.2f}  {row['max_ms']:>7.2f}"
            )
        lines.append("")
    join = results.get("join")
    if join:
        late = join["late_join"]
        lines += [
            f"Join, {join['written']:,} records of 100 bytes written to A "
            f"({join['concurrency']} tasks on 1 connection)",
            f"  write phase:             {join['write_seconds']:.1f} s "
            f"({join['writes_per_s']:,.0f} writes/s, {join['put_errors']} errors)",
        ]
        for name, peer in sorted(join["peers"].items()):
            lines.append(
                f"  node {name} has all:          "
                + (
                    f"{peer['seconds']:.2f} s after the last write returned"
                    if peer["done"]
                    else f"TIMED OUT, live={peer['live']:,}"
                )
            )
        lines.append(
            "  late 4th node ready:     "
            + (
                f"{late['ready_s']:.2f} s after process start"
                if late["ready_s"] is not None
                else "never"
            )
        )
        snapshot = late.get("snapshot") or {}
        lines.append(
            "  late 4th node serving:   "
            + (
                f"{late['serving_s']:.2f} s after process start (snapshot: "
                f"{snapshot.get('records', 0):,} records in {snapshot.get('chunks', 0)} chunks, "
                f"resumed {snapshot.get('resumed', 0)}x)"
                if late.get("serving_s") is not None
                else "never"
            )
        )
        lines.append(
            "  late 4th node has all:   "
            + (
                f"{late['seconds']:.2f} s after process start"
                if late["done"]
                else f"TIMED OUT after {late['timed_out_after_s']:.0f} s, "
                f"live={late['live']:,} of {join['written']:,}"
            )
        )
        lines.append("")
    machine = results["machine"]
    lines.append(
        f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), shared by the benchmark "
        "client, all nodes and anvil"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (smoke test)")
    parser.add_argument("--rate", type=float, help="lag test: writes/s (default 200)")
    parser.add_argument("--duration", type=float, help="lag test: seconds (default 15, quick 5)")
    parser.add_argument("--records", type=int, help="join test: records (default 100k, quick 5k)")
    parser.add_argument("--concurrency", type=int, default=64, help="join test: writer tasks")
    parser.add_argument("--join-timeout", type=float, default=300.0)
    parser.add_argument("--skip-lag", action="store_true")
    parser.add_argument("--skip-join", action="store_true")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    rate = args.rate or defaults["rate"]
    duration = args.duration or defaults["duration"]
    records = int(args.records or defaults["records"])
    acks_count = 100 if args.quick else 1000

    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "benchmark": "cluster",
        "timestamp": started.isoformat(),
        "settings": {
            "quick": args.quick,
            "rate": rate,
            "duration": duration,
            "records": records,
            "concurrency": args.concurrency,
            "join_timeout": args.join_timeout,
        },
        "machine": machine_info(),
        "git": git_info(),
    }
    base_limits = ["wallet_rate=inf", "handshake_rate=inf"]
    failed = False
    with tempfile.TemporaryDirectory(prefix="novakms-bench-cluster-") as tmp:
        workdir = Path(tmp)
        if not args.skip_lag:
            progress("lag: starting a 3-node dev cluster")
            with dev_cluster(3, base_limits, workdir) as ready:
                progress(f"lag: {rate:.0f} writes/s for {duration:.0f} s")
                results["lag"] = trio.run(lag_test, ready, rate, duration)
                progress(f"acks: {acks_count} sequential writes without and with acks=2")
                results["acks"] = trio.run(acks_test, ready, acks_count)
            lag = results["lag"]
            failed |= lag["missing_after_10s"] > 0 or lag["put_errors"] > 0
        if not args.skip_join:
            limits = [*base_limits, *BIG_QUOTAS, f"max_inflight={max(32, args.concurrency)}"]
            progress("join: starting a 3-node dev cluster with raised quotas")
            with dev_cluster(3, limits, workdir) as ready:
                results["join"] = trio.run(
                    join_test,
                    ready,
                    records,
                    args.concurrency,
                    args.join_timeout,
                    workdir,
                    limits,
                )
            join = results["join"]
            failed |= not join["late_join"]["done"] or join["peers_converged_s"] is None
    results["seconds_total"] = (datetime.now(UTC) - started).total_seconds()

    print(report(results))
    RESULTS_DIR.mkdir(exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    paths = [RESULTS_DIR / f"cluster-{stamp}.json", RESULTS_DIR / "cluster-latest.json"]
    for path in paths:
        path.write_text(text)
    progress(f"results: {paths[0]}")
    if "lag" in results:  # the chart is the lag distribution
        chart_beside(results, paths)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
