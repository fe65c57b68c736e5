"""Rolling restarts under continuous writes: acknowledged, lost, time to safe-to-stop, catch-up.

Usage::

    .venv/bin/python bench/bench_rolling.py            # 3 rounds at 50 writes/s per writer
    .venv/bin/python bench/bench_rolling.py --quick    # 1 round at 20 writes/s

Runs ``novakms dev --restart`` (3 nodes, anvil; every node its own process) and the procedure of
docs/operations.md for every node in turn, ``--rounds`` times, while two writers put unique
keys round-robin on every node, one with ``acks=1`` and one with ``acks=0`` (see
``bench/rolling.py``). Per restart it measures ``wait-safe`` (until ``status.safe_to_stop``),
SIGTERM until the process exited (drain + outbox push), and the restarted process until it
serves again (start, secret, catch-up). At the end every acknowledged key is read back on every
node: **lost must be 0**; the run exits 1 otherwise.

The table goes to stdout (progress to stderr); the figures go to
``bench/results/rolling-<UTC timestamp>.json`` and ``rolling-latest.json``, and a chart of the
per-restart times beside each (``.png``, ``bench/plot.py``; needs matplotlib:
``pip install -e '.[bench]'``).
Everything runs on this one machine: writers, nodes and anvil share its cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: bench.*
from bench.bench_derive import git_info, machine_info
from bench.plot import chart_beside
from bench.rolling import RollingResult, dev_cluster, rolling_restart

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BURST = 20  # acks=0 writes to each node between its wait-safe and its SIGTERM


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "max": max(values),
        "min": min(values),
    }


def to_json(result: RollingResult) -> dict[str, Any]:
    steps = [dataclasses.asdict(step) for step in result.steps]
    return {
        "seconds": result.seconds,
        "steps": steps,
        "until_safe_s": summary([s.until_safe_s for s in result.steps]),
        "safe_s": summary([s.safe_s for s in result.steps]),
        "exit_s": summary([s.exit_s for s in result.steps]),
        "serving_s": summary([s.serving_s for s in result.steps]),
        "degraded_steps": sum(1 for s in result.steps if s.degraded),
        "writers": {
            w.prefix: {
                "acks": w.acks,
                "attempts": w.attempts,
                "refused": dict(w.refused),
            }
            for w in result.writers
        },
        "verdicts": {
            prefix: {**verdict, "lost_total": sum(verdict["lost"].values())}
            for prefix, verdict in result.verdict.items()
        },
    }


def report(results: dict[str, Any]) -> str:
    run = results["run"]
    lines = [
        f"rolling restart: {results['settings']['rounds']} round(s) x 3 nodes, "
        f"{results['settings']['rate']:.0f} writes/s per writer, "
        f"{results['settings']['preload']} records preloaded, {run['seconds']:.0f} s",
        "",
        "| keys | attempts | acknowledged | lost | wrong value | same keys on every node |",
        "|---|---|---|---|---|---|",
    ]
    for prefix, v in run["verdicts"].items():
        attempts = run["writers"].get(prefix, {}).get("attempts", v["acknowledged"])
        lines.append(
            f"| {prefix} | {attempts} | {v['acknowledged']} | {v['lost_total']} | "
            f"{sum(v['wrong_value'].values())} | {v['same_keys_everywhere']} |"
        )
    lines += [
        "",
        "| per restart (s) | median | max |",
        "|---|---|---|",
    ]
    for name, label in (
        ("until_safe_s", "until status.safe_to_stop"),
        ("safe_s", "the wait-safe command (then)"),
        ("exit_s", "SIGTERM until exited (drain + push)"),
        ("serving_s", "restart until serving (catch-up)"),
    ):
        lines.append(f"| {label} | {run[name]['median']:.2f} | {run[name]['max']:.2f} |")
    lines.append(f"\nrestarts that ended degraded: {run['degraded_steps']} of {len(run['steps'])}")
    refused = {prefix: w["refused"] for prefix, w in run["writers"].items() if w["refused"]}
    if refused:
        lines.append(f"writes refused (not acknowledged, retried as new keys): {refused}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round at 20 writes/s")
    parser.add_argument("--rounds", type=int, help="rolling restarts of the whole cluster (3)")
    parser.add_argument("--rate", type=float, help="writes/s of each writer (50)")
    parser.add_argument("--preload", type=int, help="records written before (20000)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    rate = args.rate or (20.0 if args.quick else 50.0)
    preload = args.preload if args.preload is not None else (1000 if args.quick else 20_000)
    started = datetime.now(UTC)
    results: dict[str, Any] = {
        "benchmark": "rolling",
        "timestamp": started.isoformat(),
        "settings": {
            "rounds": rounds,
            "rate": rate,
            "preload": preload,
            "burst_before_stop": BURST,
            "acks": [1, 0],
            "nodes": 3,
        },
        "machine": machine_info(),
        "git": git_info(),
    }
    with tempfile.TemporaryDirectory(prefix="novakms-bench-rolling-") as tmp:
        progress("starting a 3-node novakms dev --restart cluster")
        # Production defaults but for a brisk bootstrap, no per-wallet rate limit, and room
        # for the preload.
        limits = ("bootstrap_interval=0.2", "wallet_rate=inf", "app_quota_bytes=1073741824")
        with dev_cluster(Path(tmp), limits=limits, log_level="WARNING") as cluster:
            progress(f"{rounds} rolling restart(s) under {rate:.0f} writes/s per writer")
            progress(f"preloading {preload} records, then the restarts")
            result = trio.run(
                lambda: rolling_restart(
                    cluster, rounds=rounds, rate=rate, preload=preload, burst_before_stop=BURST
                )
            )
    results["run"] = to_json(result)
    print(report(results))
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(results, indent=2) + "\n"
    paths = [RESULTS_DIR / f"rolling-{stamp}.json", RESULTS_DIR / "rolling-latest.json"]
    for path in paths:
        path.write_text(text)
    chart_beside(results, paths)
    lost = sum(v["lost_total"] for v in results["run"]["verdicts"].values())
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
