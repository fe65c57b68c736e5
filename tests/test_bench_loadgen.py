"""bench/loadgen.py and bench/bench_derive.py: the encoding, the answer checks and the figures.

Pure functions only (no server, no process): what the benchmark's numbers rest on.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import cbor2
import pytest

from bench import bench_derive, loadgen
from bench.echo import FAKE_KEY, respond

BOUNDARIES = (0, 1, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**64 - 1)


@pytest.mark.parametrize("value", BOUNDARIES)
def test_uint_encoding_is_cbor2s_shortest_form(value: int) -> None:
    encoded = loadgen.encode_uint(value)
    assert encoded == cbor2.dumps(value)
    assert loadgen.decode_uint(b"xx" + encoded, 2) == (value, 2 + len(encoded))


def test_decode_uint_refuses_what_is_not_one() -> None:
    assert loadgen.decode_uint(b"", 0) is None
    assert loadgen.decode_uint(b"\x19\x01", 0) is None  # truncated
    assert loadgen.decode_uint(b"\x61a", 0) is None  # a text string


@pytest.mark.parametrize("op", ["derive", "kv.get"])
def test_request_template_is_what_cbor2_encodes(op: str) -> None:
    args = {"path": "bench/derive"} if op == "derive" else {"key": "bench/value"}
    encode = loadgen.request_template(op, args)
    for request_id in BOUNDARIES:
        assert encode(request_id) == cbor2.dumps({"id": request_id, "op": op, "args": args})


def echo_answer(request_id: int, op: str = "derive") -> bytes:
    args = {"path": "bench/derive"} if op == "derive" else {"key": "bench/value"}
    return respond({"id": request_id, "op": op, "args": args})


def test_checker_accepts_the_right_answer_then_compares_bytes() -> None:
    checker = loadgen.Checker("key", hashlib.sha256(FAKE_KEY).hexdigest())
    assert checker.check(echo_answer(7)) == (7, None)  # decoded in full, then learnt
    for request_id in (8, 300, 70_000):
        assert checker.check(echo_answer(request_id)) == (request_id, None)  # the fast path


def test_checker_tells_every_wrong_answer() -> None:
    checker = loadgen.Checker("key", hashlib.sha256(FAKE_KEY).hexdigest())
    assert checker.check(echo_answer(1)) == (1, None)
    other_key = cbor2.dumps({"id": 2, "ok": {"app_id": 1, "path": "bench/derive", "key": b"x"}})
    assert checker.check(other_key) == (2, "a different key than the parent's")
    error = cbor2.dumps({"id": 3, "err": {"code": "forbidden", "message": "no"}})
    assert checker.check(error) == (3, "error answer 'forbidden'")
    assert checker.check(cbor2.dumps({"id": 4, "ok": {}})) == (4, "an answer without key bytes")
    assert checker.check(cbor2.dumps([1, 2])) == (None, "an answer without an id")
    request_id, problem = checker.check(b"\xff")
    assert request_id is None
    assert problem is not None
    assert problem.startswith("an answer that is not CBOR")
    assert checker.check(echo_answer(5)) == (5, None)


def test_checker_of_kv_get_answers() -> None:
    from bench.echo import FAKE_VALUE

    checker = loadgen.Checker("value", hashlib.sha256(FAKE_VALUE).hexdigest())
    assert checker.check(echo_answer(1, "kv.get")) == (1, None)
    assert checker.check(echo_answer(2, "kv.get")) == (2, None)
    assert checker.check(echo_answer(3))[1] == "an answer without value bytes"
    answer = cbor2.loads(echo_answer(4, "kv.get"))["ok"]
    assert set(answer) == {"key", "value", "version", "updated_at_ms", "expires_at_ms"}


def test_histogram_percentiles_are_nearest_rank() -> None:
    histogram = {100: 50, 200: 49, 5000: 1}
    assert bench_derive.histogram_percentile(histogram, 0.50) == 100
    assert bench_derive.histogram_percentile(histogram, 0.99) == 200
    assert bench_derive.histogram_percentile(histogram, 1.0) == 5000
    assert bench_derive.histogram_percentile({}, 0.5) == 0.0
    merged = loadgen.merge_histograms([{"100": 2}, {"100": 1, "7": 1}])
    assert merged == {100: 3, 7: 1}


def test_aggregate_of_the_load_processes() -> None:
    results = [
        {"count": 3, "errors": 0, "first_errors": [], "latency_us": {"100": 3}, "late_us": {},
         "cpu_s": 0.25, "timer": None},
        {"count": 1, "errors": 1, "first_errors": ["bad"], "latency_us": {"900": 1},
         "late_us": {}, "cpu_s": 0.25, "timer": None},
    ]  # fmt: skip
    fig = bench_derive.aggregate(
        results, [(0, []), (1, ["warm"])], seconds=2.0, server_cpu=0.5, other_share=0.1, rate=None
    )
    assert (fig.count, fig.errors, fig.per_second) == (4, 2, 2.0)
    assert (fig.p50_ms, fig.max_ms, fig.mean_ms) == (0.1, 0.9, 0.3)
    assert fig.server_cpu_us_per_op == pytest.approx(125_000)
    assert fig.server_cpu_share == 0.25
    assert (fig.load_cpu_s, fig.load_cpu_share, fig.load_processes) == (0.5, 0.25, 2)
    assert fig.first_errors == ("warm", "bad")


def test_medians_of_rounds_and_their_ratios() -> None:
    one = bench_derive.aggregate(
        [{"count": 10, "errors": 0, "first_errors": [], "latency_us": {"1000": 10},
          "late_us": {}, "cpu_s": 0.1, "timer": None}],
        [(0, [])], seconds=1.0, server_cpu=0.001, other_share=None, rate=None,
    )  # fmt: skip
    rounds = [replace(one, per_second=v, errors=e) for v, e in ((10, 0), (30, 1), (20, 0))]
    median = bench_derive.median_figures(rounds)
    assert median.per_second == 20
    assert median.errors == 1  # summed: any error fails the run
    assert median.other_cpu_share is None
    per_round: list[dict[str, float | None]] = [
        {"throughput": 0.5, "p99": None},
        {"throughput": 0.7, "p99": 1.0},
    ]
    assert bench_derive.median_ratios(per_round) == {"throughput": 0.6, "p99": None}


def test_connections_are_split_evenly() -> None:
    assert bench_derive.split(8, 2) == [4, 4]
    assert bench_derive.split(8, 3) == [3, 3, 2]
    assert bench_derive.split(1, 1) == [1]
    by_name = {s.name: s for s in bench_derive.SCENARIOS}
    assert by_name["c64"].processes(4) == 1  # one connection: one process
    assert by_name["c64x8"].processes(4) == 4
    assert by_name["c64x8"].processes(16) == 8
    assert by_name["handshake"].processes(3) == 3


def test_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    quick = bench_derive.parse_args(["--quick", "--scenarios", "c64,c1", "--no-pin"])
    assert (quick.rounds, quick.duration_s, quick.pin) == (1, 1.0, False)
    assert quick.scenarios == ("c1", "c64")  # in the benchmark's order
    full = bench_derive.parse_args(["--rate", "500", "--scenarios", "open50"])
    assert (full.rounds, full.rate, full.scenarios) == (3, 500.0, ("open50",))
    checkout = tmp_path / "before"
    (checkout / "novakms").mkdir(parents=True)
    (checkout / "novakms" / "__init__.py").write_text("")
    also = bench_derive.parse_args(["--also", f"before={checkout}"])
    assert also.also == (("before", str(checkout.resolve())),)
    with pytest.raises(SystemExit) as shown:
        bench_derive.parse_args(["--help"])
    assert shown.value.code == 0
    assert "--load-processes" in capsys.readouterr().out
    for wrong in (
        ["--scenarios", "open50"],  # its rate comes from c64x8
        ["--scenarios", "c2"],
        ["--also", "novakms=/tmp"],
        ["--also", f"x={tmp_path}"],  # not a checkout
        ["--rounds", "0"],
    ):
        with pytest.raises(SystemExit) as refused:
            bench_derive.parse_args(wrong)
        assert refused.value.code == 2
