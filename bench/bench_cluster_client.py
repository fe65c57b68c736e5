"""Derive throughput of the cluster client over 3 nodes, against a single-node client, in one run.

Usage::

    .venv/bin/python bench/bench_cluster_client.py            # 20,000 derives per measurement
    .venv/bin/python bench/bench_cluster_client.py --quick    # 3,000

One ``novakms dev`` cluster (anvil, the registries, three ``novakms serve`` processes; rate
limits off, as in bench_derive.py). In one trio process, at each concurrency (tasks calling
``derive`` back to back), the same number of derives through:

1. ``single``: one :class:`~novakms.client.aio.Client` connected to one node (``--node`` style,
   its wallet given);
2. ``cluster``: a :class:`~novakms.client.cluster.ClusterClient` built from the chain alone
   (RPC URL and registry addresses), one connection per node, load spread by the ranking.

Every answer is checked against the first one (every node derives the same key). The table
goes to stdout (progress to stderr); the figures go to
``bench/results/cluster-client-<UTC timestamp>.json`` and ``cluster-client-latest.json``, and a
bar chart beside each (``.png``, ``bench/plot.py``) when matplotlib is installed. Everything
shares this machine's cores: the client process, the three nodes and anvil.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from novakms.client.aio import Client
from novakms.client.cluster import ClusterClient
from novakms.client.cluster_core import ClusterSettings
from novakms.client.results import DeriveResult
from novakms.crypto.signer import LocalSigner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: bench.*
from bench.bench_cluster import dev_cluster
from bench.bench_derive import git_info, machine_info
from bench.plot import chart_beside

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LIMITS = ("wallet_rate=inf", "handshake_rate=inf")
CONCURRENCY = (8, 64)
PATH = "bench/cluster-client"


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def measure(
    derive: Callable[[], Awaitable[DeriveResult]], *, requests: int, concurrency: int
) -> dict[str, Any]:
    """``requests`` derives from ``concurrency`` tasks; throughput and the answers' keys."""
    keys: Counter[bytes] = Counter()
    errors: Counter[str] = Counter()
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            try:
                keys[(await derive()).key] += 1
            except Exception as exc:  # counted, reported
                errors[type(exc).__name__] += 1

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    elapsed = time.perf_counter() - started
    return {
        "requests": requests,
        "concurrency": concurrency,
        "seconds": elapsed,
        "per_second": requests / elapsed,
        "distinct_keys": len(keys),
        "errors": dict(errors),
    }


async def run(ready: dict[str, Any], requests: int, warmup: int) -> dict[str, Any]:
    app = LocalSigner.from_file(ready["apps"][0]["key_file"])
    node = ready["nodes"][0]
    chain = ready["chain"]
    results: dict[str, Any] = {"single": [], "cluster": [], "answered_by": {}}
    async with await Client.connect(
        node["address"], signer=app, expect_wallet=node["wallet"]
    ) as single:
        for concurrency in CONCURRENCY:
            await measure(lambda: single.derive(PATH), requests=warmup, concurrency=concurrency)
            figures = await measure(
                lambda: single.derive(PATH), requests=requests, concurrency=concurrency
            )
            progress(f"single  c={concurrency}: {figures['per_second']:.0f}/s")
            results["single"].append(figures)
    settings = ClusterSettings(probe_interval=1.0, membership_interval=10.0)
    answered: Counter[str] = Counter()
    async with ClusterClient.from_chain(
        chain["rpc"],
        chain["kms_registry"],
        chain["nova_app_registry"],
        app,
        block_tag="latest",
        settings=settings,
    ) as cluster:

        async def derive() -> DeriveResult:
            result = await cluster.derive(PATH)
            trace = cluster.last_call()
            answered[trace.answered_by if trace and trace.answered_by else "?"] += 1
            return result

        for concurrency in CONCURRENCY:
            await measure(derive, requests=warmup, concurrency=concurrency)
            answered.clear()
            figures = await measure(derive, requests=requests, concurrency=concurrency)
            figures["answered_by"] = dict(answered)
            progress(f"cluster c={concurrency}: {figures['per_second']:.0f}/s {dict(answered)}")
            results["cluster"].append(figures)
    return results


def table(results: dict[str, Any]) -> str:
    lines = [
        "| concurrency | single node (derive/s) | cluster of 3 (derive/s) | ratio | answered by |",
        "|---:|---:|---:|---:|---|",
    ]
    for single, cluster in zip(results["single"], results["cluster"], strict=True):
        spread = ", ".join(
            f"{address.rsplit(':', 1)[-1]}: {count}"
            for address, count in sorted(cluster["answered_by"].items())
        )
        lines.append(
            f"| {single['concurrency']} | {single['per_second']:.0f} | "
            f"{cluster['per_second']:.0f} | {cluster['per_second'] / single['per_second']:.2f} "
            f"| {spread} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 derives per measurement")
    parser.add_argument("--requests", type=int, help="derives per measurement (20,000)")
    args = parser.parse_args(argv)
    requests = args.requests or (3_000 if args.quick else 20_000)
    warmup = max(200, requests // 10)
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="novakms-bench-cc-") as workdir:
        progress("starting a 3-node dev cluster")
        with dev_cluster(3, LIMITS, Path(workdir)) as ready:
            results = trio.run(run, ready, requests, warmup)
    document = {
        "benchmark": "cluster-client",
        "timestamp": started.isoformat(),
        "settings": {"requests": requests, "warmup": warmup, "concurrency": list(CONCURRENCY)},
        "machine": machine_info(),
        "git": git_info(),
        "results": results,
    }
    failed = [r for r in results["single"] + results["cluster"] if r["errors"]]
    wrong = [r for r in results["single"] + results["cluster"] if r["distinct_keys"] != 1]
    print(table(results))
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document, indent=2) + "\n"
    paths = [
        RESULTS_DIR / f"cluster-client-{stamp}.json",
        RESULTS_DIR / "cluster-client-latest.json",
    ]
    for path in paths:
        path.write_text(text)
    chart_beside(document, paths)
    progress(f"results: {paths[0]}")
    if failed or wrong:
        progress(f"errors: {[r['errors'] for r in failed]}; distinct keys: {len(wrong)} runs off")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
