"""Microbenchmark of the CBOR codec: the fast paths against the references (issue 15).

    .venv/bin/python bench/bench_cbor.py [--repeats 15] [--cbor2]

``encode_reference`` and ``decode_reference`` are the codec as it was before the fast paths
(the same code), so both columns come from one process. Each cell is the median, over
``--repeats`` interleaved rounds (every message and implementation once per round), of one
timeit run that takes ~20 ms of CPU time (``time.process_time``: less sensitive than wall time
to the other processes on a shared machine). ``--cbor2`` adds ``cbor2.dumps(canonical=True)``
for comparison (not a candidate: see the module docstring of ``novakms.wire.cbor``).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
import timeit
from collections.abc import Callable
from typing import Any

from novakms.wire import cbor

WALLETS = ["0x" + f"{i:02x}" * 20 for i in (0xA1, 0xB2, 0xC3)]


def record(i: int) -> dict[str, Any]:
    """A replication record as ``record_to_wire`` writes it (60-byte sealed value)."""
    return {
        "a": 1,
        "k": f"bench/key-{i}",
        "v": bytes([i % 256]) * 60,
        "c": [[wallet, 1000 + i] for wallet in WALLETS[: 1 + i % 3]],
        "h": (1_764_763_200_123 + i) << 16 | i,
        "n": WALLETS[i % 3],
        "x": None,
    }


MESSAGES: dict[str, Any] = {
    "derive request": {"id": 7, "op": "derive", "args": {"path": "bench/derive"}},
    "derive response": {
        "id": 7,
        "ok": {"app_id": 1, "path": "bench/derive", "key": bytes(range(32)), "length": 32},
    },
    "kv.get response (1 KiB)": {
        "id": 7,
        "ok": {
            "key": "bench/kv-1",
            "value": bytes(range(256)) * 4,
            "version": [[WALLETS[0], 3]],
            "updated_at_ms": 1_764_763_200_123,
            "expires_at_ms": None,
        },
    },
    "sync.push (50 records)": {
        "id": 9,
        "op": "sync.push",
        "args": {"records": [record(i) for i in range(50)]},
    },
}
SEALED = bytes(range(256)) * 4 + bytes(16)  # a sealed 1 KiB plaintext: ciphertext and tag


def old_open(body: bytes) -> bytes:
    """The sealed frame as ``SecureChannel.open_plaintext`` parsed it before."""
    sealed = cbor.decode_reference(body, max_items=1)
    if not isinstance(sealed, bytes):
        raise TypeError
    return sealed


def cases(with_cbor2: bool) -> dict[tuple[str, str], dict[str, Callable[[], object]]]:
    """(message, operation) -> {implementation: a call to time}."""
    out: dict[tuple[str, str], dict[str, Callable[[], object]]] = {}
    for name, message in MESSAGES.items():
        data = cbor.encode(message)
        assert data == cbor.encode_reference(message)
        assert cbor.decode(data) == cbor.decode_reference(data) == message
        encoders: dict[str, Callable[[], object]] = {
            "before": functools.partial(cbor.encode_reference, message),
            "after": functools.partial(cbor.encode, message),
        }
        if with_cbor2:
            import cbor2

            assert cbor2.dumps(message, canonical=True) == data
            encoders["cbor2"] = functools.partial(cbor2.dumps, message, canonical=True)
        out[(name, "encode")] = encoders
        out[(name, "decode")] = {
            "before": functools.partial(cbor.decode_reference, data),
            "after": functools.partial(cbor.decode, data),
        }
    body = cbor.encode(SEALED)
    assert cbor.decode_byte_string(body) == old_open(body) == SEALED
    out[("sealed frame (1 KiB)", "encode")] = {
        "before": lambda: cbor.encode_reference(SEALED),
        "after": lambda: cbor.encode(SEALED),
    }
    out[("sealed frame (1 KiB)", "decode")] = {
        "before": lambda: old_open(body),
        "after": lambda: cbor.decode_byte_string(body),
    }
    return out


def calibrate(fn: Callable[[], object], target: float = 0.02) -> int:
    """A number of calls that takes about ``target`` seconds of CPU time."""
    number = 1
    while True:
        elapsed = timeit.timeit(fn, number=number, timer=time.process_time)
        if elapsed >= target / 10:
            return max(1, int(number * target / elapsed))
        number *= 10


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--cbor2", action="store_true", help="add cbor2 canonical encoding")
    args = parser.parse_args()

    table = cases(args.cbor2)
    numbers = {
        (key, impl): calibrate(fn) for key, impls in table.items() for impl, fn in impls.items()
    }
    samples: dict[tuple[tuple[str, str], str], list[float]] = {k: [] for k in numbers}
    for _ in range(args.repeats):
        for key, row in table.items():
            for impl, fn in row.items():
                number = numbers[(key, impl)]
                elapsed = timeit.timeit(fn, number=number, timer=time.process_time)
                samples[(key, impl)].append(elapsed / number * 1e6)

    impls = ["before", "after", *(["cbor2"] if args.cbor2 else [])]
    header = "| message | op | " + " | ".join(f"{i} µs" for i in impls) + " | speed-up |"
    print(header)
    print("|---|---|" + "---:|" * (len(impls) + 1))
    for key, row in table.items():
        medians = {impl: statistics.median(samples[(key, impl)]) for impl in row}
        cells = [f"{medians[i]:.2f}" if i in medians else "" for i in impls]
        speedup = medians["before"] / medians["after"]
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + f" | {speedup:.1f}x |")


if __name__ == "__main__":
    main()
