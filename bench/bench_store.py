"""Memory and speed of the pure KV store: bytes per record for N records of V-byte values.

    .venv/bin/python bench/bench_store.py [--records 100000] [--value-bytes 100]

Measures with tracemalloc (every Python allocation the store makes, after a full collection)
and, as a cross-check, the process's resident set size. Writes bench/results/store-*.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

from novakms.config import Limits
from novakms.crypto.aead import data_key
from novakms.store.kv import KVStore

RESULTS = Path(__file__).resolve().parent / "results"


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--apps", type=int, default=1)
    args = parser.parse_args()

    secret = os.urandom(32)
    keys = {app: data_key(master_secret=secret, app_id=app) for app in range(1, args.apps + 1)}
    limits = Limits(app_quota_bytes=2**40, global_quota_bytes=2**40)
    names = [f"service/{i:08d}" for i in range(args.records)]
    value = os.urandom(args.value_bytes)
    gc.collect()
    rss_before = rss_bytes()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    store = KVStore(
        node="0x" + "ab" * 20, limits=limits, data_key=keys.__getitem__, random_bytes=os.urandom
    )
    now = int(time.time() * 1000)
    start = time.perf_counter()
    for index, name in enumerate(names):
        store.put(1 + index % args.apps, name, value, now)
    put_seconds = time.perf_counter() - start
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = rss_bytes()
    start = time.perf_counter()
    for index, name in enumerate(names):
        store.get(1 + index % args.apps, name, now)
    get_seconds = time.perf_counter() - start
    stats = store.stats()
    per_record = (current - base) / args.records
    result = {
        "benchmark": "store-memory",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "records": args.records,
        "value_bytes": args.value_bytes,
        "key_bytes": len(names[0]),
        "apps": args.apps,
        "traced_bytes_per_record": round(per_record, 1),
        "rss_bytes_per_record": round((rss_after - rss_before) / args.records, 1),
        "peak_traced_mib": round((peak - base) / 2**20, 1),
        "accounted_bytes_per_record": stats.used_bytes / args.records,
        "put_per_second": round(args.records / put_seconds),
        "get_per_second": round(args.records / get_seconds),
    }
    shape = f"{args.records:,} records of {args.value_bytes}-byte values, {len(names[0])}-byte keys"
    print(f"KV store, {shape}")
    print(f"  memory per record (tracemalloc): {per_record:,.0f} bytes")
    print(f"  memory per record (RSS delta):   {result['rss_bytes_per_record']:,.0f} bytes")
    print(f"  quota charge per record:         {result['accounted_bytes_per_record']:,.0f} bytes")
    puts, gets = result["put_per_second"], result["get_per_second"]
    print(f"  put: {puts:,}/s   get (open + LRU touch): {gets:,}/s")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"store-{stamp}.json", "store-latest.json"):
        (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
