"""The local development environment: dev keys, a static registry with two demo apps, and
the key files of dev guardians.

Everything here is development-only; ``novakms dev`` refuses to run inside an enclave.
Key files are created with mode 0600 and reused when the state directory is reused, so app
wallets stay stable across restarts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from novakms.crypto.eth import (
    format_private_key,
    generate_private_key,
    parse_private_key,
    wallet_from_private_key,
)
from novakms.crypto.guardian_shares import enc_public_key_of, generate_enc_keypair

__all__ = [
    "DEMO_APP_IDS",
    "DevApp",
    "DevState",
    "in_nitro_enclave",
    "prepare_guardians",
    "prepare_state",
    "write_key_file",
]

DEMO_APP_IDS = (1, 2)
NSM_DEVICE = "/dev/nsm"
#: A further path that counts as the NSM device (tests stand a file in for /dev/nsm with it).
#: It can only add a reason to be in enclave mode, never remove one.
EXTRA_NSM_ENV = "NOVAKMS_NSM_DEVICE"


def in_nitro_enclave(environ: Mapping[str, str] | None = None) -> bool:
    """True when the Nitro Security Module device exists (we are inside a Nitro Enclave)."""
    extra = (os.environ if environ is None else environ).get(EXTRA_NSM_ENV)
    return os.path.exists(NSM_DEVICE) or bool(extra and os.path.exists(extra))


@dataclass(frozen=True, slots=True, kw_only=True)
class DevApp:
    """A demo app: its id, its instance wallet and the key file holding that wallet's key."""

    app_id: int
    wallet: str
    key_file: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class DevState:
    """Files of a development environment."""

    directory: Path
    node_key_file: Path
    node_wallet: str
    registry_file: Path
    apps: tuple[DevApp, ...]
    nodes: tuple[tuple[str, Path], ...] = ()  # (wallet, key file) of every node, node 1 first


def write_key_file(path: Path, key: bytes) -> Path:
    """Write a private key file (mode 0600, replacing an existing one); return its full path."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(format_private_key(key) + "\n")
    return path.resolve()


def _key_file(path: Path, random_bytes: Callable[[int], bytes]) -> str:
    """Load the key in ``path``, creating it (0600) first when missing; return its wallet."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(format_private_key(generate_private_key(random_bytes)) + "\n")
    try:
        key = parse_private_key(path.read_text())
    except ValueError:
        raise ValueError(f"{path} does not hold a valid private key") from None
    return wallet_from_private_key(key)


def prepare_state(
    directory: Path, *, nodes: int = 1, random_bytes: Callable[[int], bytes] = os.urandom
) -> DevState:
    """Create (or reuse) the dev keys and write the static registry for them.

    Raises:
        ValueError: an existing key file is invalid.
        OSError: the directory cannot be written.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)  # whatever the umask, and also a reused directory: it holds keys
    node_key = directory / "node.key"
    node_wallet = _key_file(node_key, random_bytes)
    all_nodes = [(node_wallet, node_key.resolve())]
    for index in range(2, nodes + 1):
        extra = directory / f"node{index}.key"
        all_nodes.append((_key_file(extra, random_bytes), extra.resolve()))
    apps = []
    for app_id in DEMO_APP_IDS:
        key_file = directory / f"app{app_id}.key"
        apps.append(
            DevApp(
                app_id=app_id, wallet=_key_file(key_file, random_bytes), key_file=key_file.resolve()
            )
        )
    registry = {
        "kms_app_id": None,
        "operators": [node_wallet],
        "apps": [
            {
                "app_id": app.app_id,
                "status": "ACTIVE",
                "versions": [{"version_id": 1, "status": "ENROLLED"}],
            }
            for app in apps
        ],
        "instances": [
            {
                "instance_id": index,
                "app_id": app.app_id,
                "version_id": 1,
                "wallet": app.wallet,
                "zk_verified": True,
                "status": "ACTIVE",
                "instance_url": f"http://127.0.0.1/demo-app-{app.app_id}",
            }
            for index, app in enumerate(apps, start=1)
        ],
    }
    registry_file = directory / "registry.json"
    fd = os.open(registry_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when an older run left it readable
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(registry, indent=2) + "\n")
    return DevState(
        directory=directory.resolve(),
        node_key_file=node_key.resolve(),
        node_wallet=node_wallet,
        registry_file=registry_file.resolve(),
        apps=tuple(apps),
        nodes=tuple(all_nodes),
    )


def prepare_guardians(directory: Path, count: int) -> list[dict[str, Any]]:
    """Create (or reuse) ``count`` dev guardians' key files in the state directory.

    Guardian ``i`` lives in ``directory/guardian<i>/``: ``wallet.key`` (secp256k1) and
    ``enc.key`` (X25519), both 0600, kept when the directory is reused.

    Returns:
        Per guardian: ``wallet``, ``key_file``, ``enc_key_file``, ``share_file`` (where its
        sealed share goes; absolute paths) and ``enc_public_key`` (bytes, for the chain).
    """
    guardians: list[dict[str, Any]] = []
    for i in range(count):
        home = directory / f"guardian{i + 1}"
        home.mkdir(mode=0o700, exist_ok=True)
        wallet_file, enc_file = home / "wallet.key", home / "enc.key"
        if not wallet_file.exists():
            write_key_file(wallet_file, generate_private_key(os.urandom))
        if not enc_file.exists():
            write_key_file(enc_file, generate_enc_keypair()[0])
        enc_private = parse_private_key(enc_file.read_text())
        guardians.append(
            {
                "wallet": wallet_from_private_key(parse_private_key(wallet_file.read_text())),
                "key_file": str(wallet_file.resolve()),
                "enc_key_file": str(enc_file.resolve()),
                "share_file": str((home / "share.bin").resolve()),
                "enc_public_key": enc_public_key_of(enc_private),
            }
        )
    return guardians
