"""Metrics and logs of a real node after real traffic (issue 14, observability).

The metrics endpoint is scraped over a real socket and parsed by prometheus-client's own
parser; log lines are parsed by an independent logfmt reader written here, and as JSON.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import re
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from novakms.client.aio import Client
from novakms.config import Limits
from novakms.errors import NovaKMSError, UnknownOp
from novakms.log import formatter
from novakms.log.sampling import Sampler
from novakms.net.addresses import parse_address
from novakms.net.metrics_http import MAX_CONNECTIONS
from novakms.server.ops.dispatch import OPS
from tests.harness.registry import MASTER_SECRET, Wallets

HOSTILE_OPS = [
    "derive\nts=2026-01-01T00:00:00Z level=error logger=novakms event=forged",
    'kv.get" event=forged x="',
    "a=b event=forged",
    "\x1b[2J\x1b[31mred",
    "line\u2028separator\u0085next",
    "tab\there\rcarriage",
    "back\\slash\\",
    "é\U0001f600",
]


async def http_get(address: str, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` raw to ``address``; the status code and the body of the answer."""
    target = parse_address(address)
    stream = await trio.open_tcp_stream(target.host, target.port)
    async with stream:
        await stream.send_all(request)
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, keyed by name and sorted labels."""
    status, body = await http_get(
        address, b"GET /metrics HTTP/1.1\r\nHost: kms\r\nAccept: */*\r\n\r\n"
    )
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_real_traffic_and_carry_no_client_chosen_label(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server(metrics=True)
    (address,) = srv.server.metrics_addresses
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        for i in range(3):
            await kms.derive(f"path/{i}")
        await kms.kv_put("k", b"value")
        for op in HOSTILE_OPS:
            with pytest.raises(UnknownOp):
                await kms.call(op, {})
        # A refused handshake: a hello that is not CBOR.
        target = parse_address(srv.tcp)
        bad = await trio.open_tcp_stream(target.host, target.port)
        await bad.send_all(b"\x00\x00\x00\x03abc")
        with trio.fail_after(10):
            while await bad.receive_some(4096):
                pass
        await bad.aclose()
        samples = await scrape(address)
        # The app's connection is open while scraping.
        assert value(samples, "novakms_connections_open", role="app") == 1

    assert value(samples, "novakms_requests_total", op="derive", code="ok") == 3
    assert value(samples, "novakms_requests_total", op="kv.put", code="ok") == 1
    assert value(samples, "novakms_requests_total", op="unknown", code="unknown_op") == len(
        HOSTILE_OPS
    )
    assert value(samples, "novakms_request_duration_seconds_count", op="derive") == 3
    assert value(samples, "novakms_request_duration_seconds_bucket", op="derive", le="+Inf") == 3
    assert value(samples, "novakms_handshakes_total", result="ok", reason="") == 1
    assert value(samples, "novakms_handshakes_total", result="refused", reason="bad_request") == 1
    assert value(samples, "novakms_store_records", state="live") == 1
    assert value(samples, "novakms_store_app_records", app="1") == 1
    assert value(samples, "novakms_store_bytes") > 0
    assert value(samples, "novakms_ready") == 1
    assert value(samples, "novakms_secret_initialized") == 1
    assert value(samples, "novakms_node_info", wallet=srv.node.wallet, version=srv.node.version,
                 mode="development") == 1  # fmt: skip
    # Bounded labels: ops from the table, codes and roles from the code, no hostile text.
    for (name, labels), _ in samples.items():
        for key, label in labels:
            if key == "op":
                assert label in OPS or label == "unknown", (name, label)
            assert all(" " <= char <= "~" for char in label), (name, label)
    text = (await http_get(address, b"GET /metrics HTTP/1.0\r\n\r\n"))[1]
    assert MASTER_SECRET.hex() not in text.decode()
    assert not any(name.endswith("_created") for name, _ in samples)  # no timestamp series


async def test_the_metrics_listener_answers_only_get_metrics(start_server: Any) -> None:
    srv = await start_server(metrics=True)
    (address,) = srv.server.metrics_addresses
    assert (await http_get(address, b"GET /other HTTP/1.1\r\n\r\n"))[0] == 404
    assert (await http_get(address, b"POST /metrics HTTP/1.1\r\n\r\n"))[0] == 405
    assert (await http_get(address, b"GET /metrics\r\n\r\n"))[0] == 400
    assert (await http_get(address, b"GET /metrics HTTP/1.1\r\n" + b"X" * 9000))[0] == 400
    # More scrapers than slots, all holding their connection open: the extra ones are closed
    # at once, and the listener serves again when they are gone.
    target = parse_address(address)
    holders = [await trio.open_tcp_stream(target.host, target.port) for _ in range(MAX_CONNECTIONS)]
    await trio.sleep(0.1)  # let the listener accept them all
    extra = await trio.open_tcp_stream(target.host, target.port)
    with trio.fail_after(10):
        assert await extra.receive_some(100) == b""
    await extra.aclose()
    for holder in holders:
        await holder.aclose()
    assert (await http_get(address, b"GET /metrics HTTP/1.1\r\n\r\n"))[0] == 200


# --- logs -----------------------------------------------------------------------------------

_PAIR = re.compile(r'([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|[^\s"=]+)(?: |$)')
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def parse_logfmt(line: str) -> dict[str, str]:
    """An independent strict logfmt reader: the whole line must be ``key=value`` pairs."""
    fields: dict[str, str] = {}
    position = 0
    while position < len(line):
        match = _PAIR.match(line, position)
        assert match is not None, f"not logfmt at {position}: {line!r}"
        key, raw = match.groups()
        assert key not in fields, f"key {key} twice in {line!r}"
        fields[key] = _unquote(raw)
        position = match.end()
    return fields


def _unquote(raw: str) -> str:
    if not raw.startswith('"'):
        return raw
    out, chars = [], iter(raw[1:-1])
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        escape = next(chars)
        if escape in _UNESCAPE:
            out.append(_UNESCAPE[escape])
        elif escape == "u":
            out.append(chr(int("".join(next(chars) for _ in range(4)), 16)))
        else:
            assert escape == "U"
            out.append(chr(int("".join(next(chars) for _ in range(8)), 16)))
    return "".join(out)


class CapturedLog:
    """The lines the novakms loggers write while installed, rendered as ``fmt``."""

    def __init__(self, fmt: str) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter(fmt))  # type: ignore[arg-type]
        self.logger = logging.getLogger("novakms")

    def __enter__(self) -> CapturedLog:
        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *_: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
async def test_hostile_op_names_cannot_forge_or_split_a_log_line(
    start_server: Any, wallets: Wallets, fmt: str
) -> None:
    srv = await start_server(access_log=True)
    with CapturedLog(fmt) as log:
        async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
            await kms.derive("fine")
            for op in HOSTILE_OPS:
                with pytest.raises(UnknownOp):
                    await kms.call(op, {})
        async with await Client.connect(srv.tcp) as anonymous:  # logged at debug
            for op in HOSTILE_OPS:
                with pytest.raises(NovaKMSError):
                    await anonymous.call(op, {})
    records = [parse_logfmt(line) if fmt == "logfmt" else json.loads(line) for line in log.lines()]
    assert records, "nothing was logged"
    for record in records:
        assert list(record)[:4] == ["ts", "level", "logger", "event"]
        assert record["event"] != "forged" and record["level"] in ("debug", "info")
    access = [r for r in records if r["logger"] == "novakms.access"]
    # One access line per request (the derive, and the hostile ops of both sessions), each
    # with its op exactly as sent, its code, and the connection and request ids.
    assert len(access) == 1 + 2 * len(HOSTILE_OPS)
    assert [r["op"] for r in access] == ["derive", *HOSTILE_OPS, *HOSTILE_OPS]
    assert {r["code"] for r in access[1:]} == {"unknown_op"}
    assert all("conn" in r and "req" in r and "ms" in r for r in access)
    assert str(access[0]["app"]) == "1" and access[0]["wallet"] == wallets.app1.wallet
    assert all(line.isascii() for line in log.lines())


async def test_a_flood_of_refused_connections_is_counted_and_sampled_in_the_log(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server(metrics=True, limits=Limits(max_connections_per_source=1))
    target = parse_address(srv.tcp)
    flood = 200
    started = trio.current_time()
    with CapturedLog("logfmt") as log:
        async with await Client.connect(srv.tcp, signer=wallets.app1):  # holds the slot
            for _ in range(flood):
                stream = await trio.open_tcp_stream(target.host, target.port)
                with trio.fail_after(10):
                    while await stream.receive_some(4096):  # the notice, then the close
                        pass
                await stream.aclose()
            samples = await scrape(srv.server.metrics_addresses[0])
    elapsed = trio.current_time() - started
    # Refused for the held slot, or (past the handshake burst) for the handshake rate.
    reasons = ("too_many_connections_from_source", "rate_limited")
    refused = [value(samples, "novakms_connections_refused_total", reason=r) for r in reasons]
    assert sum(refused) == flood, samples
    written = [parse_logfmt(line) for line in log.lines()]
    written = [r for r in written if r["event"] == "connection_refused"]
    burst, window = Sampler().burst, Sampler().window
    # At most a burst per kind and sampling window (however slow the machine ran the flood).
    for reason in reasons:
        lines = [r for r in written if r["reason"] == reason]
        assert len(lines) <= burst * (math.floor(elapsed / window) + 1)
    assert len(written) >= 1
    left_out = value(samples, "novakms_log_lines_suppressed_total", event="connection_refused")
    reported = sum(int(r.get("suppressed", 0)) for r in written)
    assert len(written) + left_out == flood and reported <= left_out


def test_request_series_are_those_prometheus_client_would_write() -> None:
    """The hand-tallied request series render exactly as a Counter and a Histogram would."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from novakms.server.metrics import LATENCY_BUCKETS, _RequestTally

    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally = _RequestTally()
    ours.register(tally)
    counter = Counter("novakms_requests", "", ["op", "code"], registry=theirs)
    histogram = Histogram(
        "novakms_request_duration_seconds", "", ["op"], buckets=LATENCY_BUCKETS, registry=theirs
    )
    rng = random.Random(15)
    # On the bounds, between them, below the first and above the last.
    durations = [*LATENCY_BUCKETS, 0.0, 1e-7, 0.0003, 7.5, 11.0, 1e6]
    for _ in range(3000):
        op, code = rng.choice(["derive", "kv.get", "unknown"]), rng.choice(["ok", "forbidden"])
        seconds = rng.choice([*durations, rng.random() / 10])
        tally.count(op, code, seconds)
        counter.labels(op, code).inc()
        histogram.labels(op).observe(seconds)

    def series(registry: CollectorRegistry) -> list[str]:
        lines = generate_latest(registry).decode().splitlines()
        return sorted(line for line in lines if not line.startswith("#"))

    assert series(ours) == series(theirs)
    assert len(series(ours)) == 6 + 3 * (len(LATENCY_BUCKETS) + 3)
