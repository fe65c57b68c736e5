"""Test identities, the static registry they live in, and the protocol vectors.

Shared by test modules (and the ``wallets`` fixture of tests/conftest.py): import from here,
never from a conftest or another test module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from novakms.auth.model import Identity
from novakms.auth.source import Registry
from novakms.crypto.signer import LocalSigner

__all__ = [
    "MASTER_SECRET",
    "VECTORS",
    "GatedSource",
    "Wallets",
    "dev_key",
    "load_vectors",
    "registry_json",
]

VECTORS = Path(__file__).resolve().parent.parent.parent / "protocol" / "vectors"
MASTER_SECRET = bytes(range(32))


def load_vectors(name: str) -> Any:
    """A vector file from protocol/vectors/."""
    return json.loads((VECTORS / name).read_text())


def dev_key(label: str) -> bytes:
    """A fixed, visibly arbitrary test key (a valid secp256k1 scalar) named by ``label``."""
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

    @classmethod
    def make(cls) -> Wallets:
        """Every identity, each from :func:`dev_key` of its field name."""
        return cls(**{name: LocalSigner(dev_key(name)) for name in cls.__dataclass_fields__})


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


class GatedSource:
    """A registry whose ``authorize_app`` waits on :attr:`gate` (a request held open) and counts
    its calls; with :attr:`crash` it raises instead (a bug in the source)."""

    name = "gated"

    def __init__(self, inner: Registry) -> None:
        self.inner = inner
        self.gate = trio.Event()
        self.calls = 0
        self.crash = False

    async def authorize_app(self, wallet: str) -> Identity:
        self.calls += 1
        if self.crash:
            raise RuntimeError("boom: a bug in the source")
        await self.gate.wait()
        return await self.inner.authorize_app(wallet)

    async def authorize_peer(self, wallet: str) -> Identity:
        return await self.inner.authorize_peer(wallet)

    def describe(self) -> dict[str, object]:
        return {}
