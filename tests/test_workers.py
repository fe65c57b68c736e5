"""Stateless workers sharing one port (``novakms serve --reuse-port``, docs/scaling.md).

In process: a worker node serves derive, cert.ca and status, runs no replicator, and refuses
every store op with ``unavailable`` / ``stateless_worker`` before looking at the caller or the
arguments. With real processes: two ``novakms serve --reuse-port`` on one TCP port both answer
fresh connections (each worker's own metrics listener counts what it served), derive the same
keys from the same secret file, and refuse ``kv.*``; a third process without the option cannot
take the port.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from novakms.auth.static import StaticRegistry
from novakms.client.aio import Client
from novakms.config import ServerConfig
from novakms.crypto.signer import LocalSigner
from novakms.dev.env import DevState, prepare_state
from novakms.errors import NovaKMSError, TransportError, Unavailable
from novakms.server.node import build_node
from novakms.server.ops.dispatch import KV_OPS, STORE_OPS
from tests.harness.registry import Wallets
from tests.harness.world import free_port
from tests.test_cli import SECRET, hkdf

CONNECTIONS = 48  # fresh connections, one derive each: P(all on one worker) = 2**-47


def _refused_as_worker(exc: NovaKMSError) -> bool:
    return isinstance(exc, Unavailable) and exc.details.get("reason") == "stateless_worker"


# -- in process ---------------------------------------------------------------------------------


def test_store_ops_are_kv_sync_and_cas() -> None:
    assert KV_OPS < STORE_OPS
    assert {op for op in STORE_OPS - KV_OPS} == {
        "sync.hello",
        "sync.push",
        "sync.digests",
        "sync.buckets",
        "sync.keys",
        "sync.pull",
        "sync.snapshot",
        "sync.forget",
        "cas.prepare",
        "cas.accept",
        "cas.recover",
    }


def test_a_worker_needs_the_secret_configured(wallets: Wallets) -> None:
    with pytest.raises(ValueError, match="master secret"):
        build_node(
            config=ServerConfig(),
            signer=wallets.node,
            registry=StaticRegistry(),
            membership=StaticRegistry(),
            stateless_worker=True,
        )


async def test_a_worker_serves_the_secret_ops_and_refuses_the_store(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server(stateless_worker=True)
    assert srv.node.stateless_worker and srv.node.replicator is None
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        key = (await kms.derive("db")).key
        assert len(key) == 32
        assert (await kms.call("cert.ca", {"app_id": 1}))["certificate"].startswith("-----BEGIN")
        assert (await kms.status()).ready
        for op, args in (
            ("kv.put", {"key": "k", "value": b"v"}),
            ("kv.get", {"key": "k"}),
            ("kv.delete", {"key": "k"}),
            ("kv.list", {}),
            ("kv.get", {"nonsense": 1}),  # refused before the arguments are looked at
            ("sync.hello", {}),  # and before the caller (an app here, not a peer)
            ("sync.push", {}),
        ):
            with pytest.raises(Unavailable) as info:
                await kms.call(op, args)
            assert _refused_as_worker(info.value), (op, info.value.details)
        assert (await kms.derive("db")).key == key  # the connection lives on
    assert srv.node.store is not None and srv.node.store.records() == []


# -- real processes ------------------------------------------------------------------------------


def _serve_argv(state: DevState, secret: Path, port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "novakms.cli",
        "serve",
        "--listen",
        f"tcp://127.0.0.1:{port}",
        "--key-file",
        str(state.node_key_file),
        "--registry",
        str(state.registry_file),
        "--master-secret-file",
        str(secret),
        *extra,
    ]


@contextlib.contextmanager
def _workers(argvs: list[list[str]], logs: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {**os.environ, "IN_ENCLAVE": "false"}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for index, argv in enumerate(argvs):
            with (logs / f"worker{index}.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
                    )
                )
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _metrics(client: httpx.AsyncClient, port: int) -> dict[str, float]:
    """The worker's series without labels order noise: ``name{labels}`` -> value."""
    answer = await client.get(f"http://127.0.0.1:{port}/metrics")
    answer.raise_for_status()
    series = {}
    for line in answer.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            series[name] = float(value)
    return series


def _count(series: dict[str, float], name: str, **labels: str) -> float:
    total = 0.0
    for key, value in series.items():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})?", key)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'([a-z_]+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += value
    return total


async def _until_serving(
    address: str, wallet: str, processes: list[subprocess.Popen[bytes]], logs: Path
) -> None:
    with trio.fail_after(30):
        while True:
            for index, process in enumerate(processes):
                if process.poll() is not None:
                    log = (logs / f"worker{index}.log").read_text(errors="replace")
                    pytest.fail(f"worker {index} exited with {process.returncode}:\n{log}")
            with contextlib.suppress(TransportError, OSError):
                async with await Client.connect(address, expect_wallet=wallet, timeout=2) as kms:
                    if (await kms.health()).status == "ok":
                        return
            await trio.sleep(0.05)


@pytest.mark.slow
async def test_two_workers_share_the_port_answer_alike_and_refuse_the_store(
    tmp_path: Path,
) -> None:
    state = prepare_state(tmp_path / "state")
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    port, metrics = free_port(), [free_port(), free_port()]
    address = f"tcp://127.0.0.1:{port}"
    app = state.apps[0]
    signer = LocalSigner.from_file(app.key_file)
    argvs = [
        _serve_argv(state, secret, port, "--reuse-port", "--metrics", f"127.0.0.1:{m}")
        for m in metrics
    ]
    with _workers(argvs, tmp_path) as processes:
        await _until_serving(address, state.node_wallet, processes, tmp_path)
        # Only after both listen (the first one alone answers the probe above).
        async with httpx.AsyncClient(timeout=5) as http:
            with trio.fail_after(30):
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        for m in metrics:
                            await _metrics(http, m)
                        break
                    await trio.sleep(0.05)
            before = [await _metrics(http, m) for m in metrics]

            keys = set()
            for _ in range(CONNECTIONS):  # each a fresh connection: the kernel picks a worker
                async with await Client.connect(
                    address, signer=signer, expect_wallet=state.node_wallet
                ) as kms:
                    keys.add((await kms.derive("scaling/test")).key)
            assert keys == {hkdf(app.app_id, "scaling/test", 32)}  # one secret, one key

            after = [await _metrics(http, m) for m in metrics]
            served = [
                _count(a, "novakms_requests_total", op="derive", code="ok")
                - _count(b, "novakms_requests_total", op="derive", code="ok")
                for a, b in zip(after, before, strict=True)
            ]
            assert sum(served) == CONNECTIONS
            assert all(count > 0 for count in served), served  # both workers answered
            handshakes = [
                _count(a, "novakms_handshakes_total", result="ok")
                - _count(b, "novakms_handshakes_total", result="ok")
                for a, b in zip(after, before, strict=True)
            ]
            assert sum(handshakes) == CONNECTIONS and all(h > 0 for h in handshakes)

        # The store is refused, whichever worker answers.
        for _ in range(4):
            async with await Client.connect(
                address, signer=signer, expect_wallet=state.node_wallet
            ) as kms:
                with pytest.raises(Unavailable) as info:
                    await kms.kv_put("k", b"v")
                assert _refused_as_worker(info.value)

        # A process without the option cannot join (nor take) the port: one JSON error, exit 2.
        out = subprocess.run(
            _serve_argv(state, secret, port),
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "IN_ENCLAVE": "false"},
        )
        assert out.returncode == 2, out.stdout + out.stderr
        assert "cannot listen" in json.loads(out.stdout)["error"]["message"]
    assert [p.returncode for p in processes] == [0, 0]  # both stopped cleanly on SIGTERM


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        (["--listen", "unix:///tmp/x.sock"], {"IN_ENCLAVE": "false"}, "is not TCP"),
        ([], {"IN_ENCLAVE": "true"}, "--reuse-port is a development input"),
    ],
)
def test_reuse_port_is_refused_where_it_cannot_hold(
    tmp_path: Path, extra: list[str], env: dict[str, str], message: str
) -> None:
    state = prepare_state(tmp_path / "state")
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    argv = _serve_argv(state, secret, free_port(), "--reuse-port")
    if env["IN_ENCLAVE"] == "true":  # enclave mode refuses every development input: just the flag
        argv = [sys.executable, "-m", "novakms.cli", "serve", "--reuse-port"]
    out = subprocess.run(
        argv + extra, capture_output=True, text=True, timeout=30, env={**os.environ, **env}
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in json.loads(out.stdout)["error"]["message"]


@pytest.mark.slow
def test_reuse_port_needs_the_secret_file(tmp_path: Path) -> None:
    state = prepare_state(tmp_path / "state")
    argv = [
        sys.executable,
        "-m",
        "novakms.cli",
        "serve",
        "--reuse-port",
        "--key-file",
        str(state.node_key_file),
        "--registry",
        str(state.registry_file),
    ]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=30, env={**os.environ, "IN_ENCLAVE": "false"}
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--master-secret-file" in json.loads(out.stdout)["error"]["message"]
