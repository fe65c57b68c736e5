"""Shared fixtures: Hypothesis profiles, dev keys, a static registry and running servers."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, settings

from novakms.auth.static import StaticRegistry
from novakms.config import Limits, ServerConfig
from novakms.crypto.signer import LocalSigner
from novakms.server.node import Node, build_node
from novakms.server.server import Server, serve

settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

VECTORS = Path(__file__).resolve().parent.parent / "protocol" / "vectors"
MASTER_SECRET = bytes(range(32))


def load_vectors(name: str) -> Any:
    """A vector file from protocol/vectors/."""
    return json.loads((VECTORS / name).read_text())


def _key(label: str) -> bytes:
    # Fixed, visibly arbitrary test keys (valid secp256k1 scalars).
    return hashlib.sha256(f"novakms test key: {label}".encode()).digest()


@dataclass(frozen=True)
class Wallets:
    """Test identities: the node, and app instances in various on-chain states."""

    node: LocalSigner
    app1: LocalSigner
    app2: LocalSigner
    stopped: LocalSigner
    not_zk: LocalSigner
    inactive_app: LocalSigner
    revoked_version: LocalSigner
    deprecated_version: LocalSigner
    stranger: LocalSigner


@pytest.fixture(scope="session")
def wallets() -> Wallets:
    return Wallets(**{name: LocalSigner(_key(name)) for name in Wallets.__dataclass_fields__})


def registry_json(w: Wallets) -> dict[str, Any]:
    """Apps 1, 2 active; app 3 INACTIVE; app 1 has versions 1 ENROLLED, 2 REVOKED, 3 DEPRECATED."""

    def inst(
        i: int,
        signer: LocalSigner,
        app: int,
        version: int,
        *,
        zk: bool = True,
        status: str = "ACTIVE",
    ) -> dict[str, Any]:
        return {
            "instance_id": i,
            "app_id": app,
            "version_id": version,
            "wallet": signer.wallet,
            "zk_verified": zk,
            "status": status,
        }

    return {
        "kms_app_id": None,
        "operators": [w.node.wallet],
        "apps": [
            {
                "app_id": 1,
                "status": "ACTIVE",
                "versions": [
                    {"version_id": 1, "status": "ENROLLED"},
                    {"version_id": 2, "status": "REVOKED"},
                    {"version_id": 3, "status": "DEPRECATED"},
                ],
            },
            {
                "app_id": 2,
                "status": "ACTIVE",
                "versions": [{"version_id": 1, "status": "ENROLLED"}],
            },
            {
                "app_id": 3,
                "status": "INACTIVE",
                "versions": [{"version_id": 1, "status": "ENROLLED"}],
            },
        ],
        "instances": [
            inst(1, w.app1, 1, 1),
            inst(2, w.app2, 2, 1),
            inst(3, w.stopped, 1, 1, status="STOPPED"),
            inst(4, w.not_zk, 1, 1, zk=False),
            inst(5, w.inactive_app, 3, 1),
            inst(6, w.revoked_version, 1, 2),
            inst(7, w.deprecated_version, 1, 3),
        ],
    }


@dataclass
class RunningServer:
    server: Server
    node: Node
    registry: StaticRegistry
    addresses: list[str]
    stop: trio.Event

    @property
    def tcp(self) -> str:
        return next(a for a in self.addresses if not a.startswith("unix://"))

    @property
    def unix(self) -> str:
        return next(a for a in self.addresses if a.startswith("unix://"))

    @property
    def proxied(self) -> str:
        """The PROXY-protocol listener (started with ``proxy=True``)."""
        assert len(self.addresses) == 3, "start the server with proxy=True"
        return self.addresses[2]


StartServer = Callable[..., Any]


@pytest.fixture
async def start_server(nursery: trio.Nursery, wallets: Wallets, tmp_path: Path) -> StartServer:
    """Start a real server on TCP (loopback, free port) and a Unix socket; returns a handle."""

    async def start(
        *,
        limits: Limits | None = None,
        master_secret: bytes | None = MASTER_SECRET,
        proxy: bool = False,
        registry_changes: dict[str, Any] | None = None,
        **node_kwargs: Any,
    ) -> RunningServer:
        registry = StaticRegistry.from_json(registry_json(wallets) | (registry_changes or {}))
        sock = tmp_path / f"kms-{len(os.listdir(tmp_path))}.sock"
        config = ServerConfig(
            listen=("tcp://127.0.0.1:0", f"unix://{sock}"),
            listen_proxy=("tcp://127.0.0.1:0",) if proxy else (),
            limits=limits or Limits(),
        )
        node = build_node(
            config=config,
            signer=wallets.node,
            registry=registry,
            membership=registry,
            secret=master_secret,
            **node_kwargs,
        )
        servers: list[Server] = []
        stop = trio.Event()
        addresses = await nursery.start(
            functools.partial(serve, node, config, stop=stop, on_server=servers.append)
        )
        return RunningServer(
            server=servers[0], node=node, registry=registry, addresses=addresses, stop=stop
        )

    return start
