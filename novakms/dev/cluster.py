"""The supervisor behind ``novakms dev``: bring a development KMS up, announce it, keep it running.

Two shapes:

* :func:`run_static` — ``--chain static``: one in-process node on the static registry file of
  the state directory; no chain.
* :func:`run_cluster` — the default: a local anvil with the registries and the demo world
  (:mod:`novakms.dev.world`), optionally a guardian set, then N nodes, each its own
  ``novakms serve`` process (:mod:`novakms.dev.nodes`). Once every node holds the same secret
  its fingerprint is pinned on chain, as an operator does; once all serve, each dev guardian's
  sealed share is fetched into its share file.

Both print one JSON ready line on stdout and run until SIGINT or SIGTERM. This is the engine
of a CLI command: problems are reported as the CLI's :class:`~novakms.cli.common.CliError`
and the ready line is the CLI's JSON output.
"""

from __future__ import annotations

import functools
import signal
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from novakms.admin.tx import TxSender
from novakms.auth.static import StaticRegistry
from novakms.chain import abi
from novakms.cli.common import fingerprint_bytes, print_json, write_private_file
from novakms.client.aio import Client
from novakms.config import Limits, Mode, ServerConfig
from novakms.crypto.signer import LocalSigner
from novakms.dev.anvil import AnvilProcess, find_anvil
from novakms.dev.env import DevState, prepare_guardians, write_key_file
from novakms.dev.nodes import (
    DevNode,
    NodeLaunch,
    print_event,
    start_node,
    stop_nodes,
    supervise,
)
from novakms.dev.world import set_guardians, setup_world
from novakms.errors import AnvilError, CliError, NovaKMSError
from novakms.server.node import build_node
from novakms.server.server import serve_until_signal

__all__ = ["NODE_STOP_GRACE", "ClusterPlan", "run_cluster", "run_static"]

NODE_STOP_GRACE = 20.0  # seconds `novakms dev` gives its nodes to drain on exit
_START_TIMEOUT = 90  # seconds for the nodes to agree on a secret, and again to serve


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterPlan:
    """What :func:`run_cluster` brings up (the checked options of ``novakms dev``).

    Attributes:
        port: the first node's port (the others follow it), or 0 for a free port per node.
        chain_port: anvil's port, or 0 for a free one.
        limits: ``NAME=VALUE`` overrides passed on to every node.
        master_secret_file: the user's secret file (absolute), or None.
        threshold: shares needed to recover, when ``guardians`` is not 0.
        restart_delay: seconds from a node's exit to its restart, or None: no restarts.
    """

    host: str
    port: int
    nodes: int
    chain_port: int
    log_level: str
    log_format: str
    poll_interval: float
    limits: tuple[str, ...]
    master_secret_file: str | None
    guardians: int
    threshold: int | None
    restart_delay: float | None


async def run_static(
    *, host: str, port: int, state: DevState, signer: LocalSigner, secret: bytes, limits: Limits
) -> None:
    """One in-process node on the static registry file (no chain), until SIGINT or SIGTERM."""
    metrics = f"{host}:{_free_port(host)}"
    config = ServerConfig(
        listen=(f"tcp://{host}:{port}",),
        metrics=(f"tcp://{metrics}",),
        mode=Mode.DEVELOPMENT,
        limits=limits,
    )
    registry = StaticRegistry.load(state.registry_file)
    node = build_node(
        config=config, signer=signer, registry=registry, membership=registry, secret=secret
    )

    async def on_ready(addresses: list[str]) -> None:
        nodes = [{"address": addresses[0], "wallet": signer.wallet, "metrics": metrics}]
        print_json({"nodes": nodes, "apps": _apps_line(state), "chain": None})

    await serve_until_signal(node, config, on_ready=on_ready)


async def run_cluster(plan: ClusterPlan, state: DevState) -> None:
    """Anvil + registries, then ``plan.nodes`` nodes as separate ``novakms serve`` processes,
    until SIGINT or SIGTERM: also while starting, so that the nodes and anvil are stopped (and
    a temporary state directory removed by the caller) whenever the command is stopped.

    Progress goes to stderr as ``{"event": "progress", "step": …}`` lines while it starts.

    Raises:
        CliError: a port is taken, anvil cannot be found or started, a node exited while
            starting, or the nodes did not agree on one secret.
        OSError: a node process could not be started.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
            await _run_cluster(plan, state)
            nursery.cancel_scope.cancel()


async def _cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


async def _run_cluster(plan: ClusterPlan, state: DevState) -> None:
    if plan.port:
        ports = [plan.port + i for i in range(plan.nodes)]
        for port in ports:  # taken now: refuse before anything starts
            _check_free(plan.host, port)
    else:
        ports = [_free_port(plan.host) for _ in range(plan.nodes)]
    _progress("chain", "starting anvil")
    try:
        anvil = AnvilProcess(find_anvil()).start(port=plan.chain_port)
    except AnvilError as exc:
        raise CliError(f"cannot start the development chain: {exc}") from None
    with anvil:
        _progress("registries", f"deploying the registries on {anvil.url}")
        admin_key = anvil.private_keys[0]
        admin_key_file = write_key_file(state.directory / "admin.key", admin_key)
        async with anvil.rpc() as rpc:
            world = await setup_world(
                rpc,
                admin_key,
                node_wallets=[
                    (w, f"http://{plan.host}:{p}")
                    for (w, _), p in zip(state.nodes, ports, strict=True)
                ],
                app_wallets=[a.wallet for a in state.apps],
            )
            guardians = prepare_guardians(state.directory, plan.guardians)
            if guardians:
                assert plan.threshold is not None, "a plan with guardians has a threshold"
                await set_guardians(
                    TxSender(rpc, admin_key),
                    world.kms_registry,
                    [g["wallet"] for g in guardians],
                    [g.pop("enc_public_key") for g in guardians],
                    plan.threshold,
                )
        launch = NodeLaunch(
            log_level=plan.log_level,
            log_format=plan.log_format,
            chain_rpc=anvil.url,
            nova_app_registry=world.nova_app_registry,
            kms_registry=world.kms_registry,
            poll_interval=plan.poll_interval,
            limits=plan.limits,
            master_secret_file=plan.master_secret_file,
            require_pin=True,
        )
        nodes = [
            DevNode(
                host=plan.host,
                port=port,
                wallet=wallet,
                key_file=key,
                metrics_port=_free_port(plan.host),
            )
            for (wallet, key), port in zip(state.nodes, ports, strict=True)
        ]
        try:
            _progress("nodes", f"starting {len(nodes)} node processes")
            for node in nodes:
                # Development only: with a secret file every node starts with it (no bootstrap).
                start_node(launch, node, with_secret=True)
            # As an operator does: once the nodes agree on a secret, pin its fingerprint.
            _progress("secret", "waiting for the nodes to agree on a master secret")
            fingerprint = await _await_one_secret(nodes)
            _progress("pin", "pinning the secret's fingerprint in KMSRegistry")
            async with anvil.rpc() as rpc:
                await TxSender(rpc, admin_key).send(
                    world.kms_registry,
                    abi.kms_registry().encode_call(
                        "setMasterSecretHash", fingerprint_bytes(fingerprint)
                    ),
                )
            _progress("ready", "waiting for every node to serve")
            await _await_cluster_ready(nodes)
            for guardian in guardians:  # each guardian's share, sealed to its own key
                await _fetch_share(nodes[0].address, guardian)
            extra: dict[str, Any] = (
                {"guardians": guardians, "threshold": plan.threshold} if guardians else {}
            )
            print_json(
                {
                    "nodes": [
                        {
                            "address": node.address,
                            "wallet": node.wallet,
                            "pid": _pid(node),
                            "metrics": node.metrics_address,
                        }
                        for node in nodes
                    ],
                    "apps": _apps_line(state),
                    "chain": {
                        "rpc": anvil.url,
                        "nova_app_registry": world.nova_app_registry,
                        "kms_registry": world.kms_registry,
                        "admin_key_file": str(admin_key_file),
                    },
                    **extra,
                }
            )
            # From here on a node that exits is reported (and restarted with a restart delay);
            # the command itself runs until SIGINT or SIGTERM (run_cluster's cancel scope).
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(
                        functools.partial(
                            supervise, launch, node, nodes, restart_delay=plan.restart_delay
                        )
                    )
        finally:
            stop_nodes(nodes, grace=NODE_STOP_GRACE)


def _apps_line(state: DevState) -> list[dict[str, Any]]:
    """The demo apps as the ready line lists them."""
    return [
        {"app_id": a.app_id, "wallet": a.wallet, "key_file": str(a.key_file)} for a in state.apps
    ]


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_free(host: str, port: int) -> None:
    """Refuse a node port that is taken (another cluster's node there would answer our
    readiness probes; the wallet pinned in them would then fail, but only after a timeout)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise CliError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} (the nodes use "
                f"--port and the ports after it; --port 0 picks free ones)",
                reason="listen",
            ) from None


def _progress(step: str, message: str) -> None:
    print_event("progress", step=step, message=message)


def _pid(node: DevNode) -> int:
    assert node.process is not None
    return node.process.pid


async def _fetch_share(address: str, guardian: dict[str, Any]) -> None:
    """``novakms guardian fetch`` for a dev guardian: its sealed share into its share file."""
    signer = LocalSigner.from_file(guardian["key_file"])
    async with await Client.connect(address, signer=signer, role="guardian", timeout=10) as kms:
        answer = await kms.guardian_share()
    write_private_file(Path(guardian["share_file"]), answer.share, exclusive=False)


async def _probe(node: DevNode) -> Client:
    """An anonymous connection to ``node`` that must prove the node's wallet: a process of
    someone else's that holds the port is not taken for ours."""
    return await Client.connect(node.address, expect_wallet=node.wallet, timeout=2)


async def _await_one_secret(nodes: Sequence[DevNode]) -> str:
    """Wait until every node holds the master secret; the fingerprint they agree on."""
    fingerprints: set[str] = set()
    with trio.move_on_after(_START_TIMEOUT) as scope:
        for node in nodes:
            while True:
                if not all(other.running for other in nodes):
                    raise CliError("a node exited while starting (see its log above)")
                try:
                    async with await _probe(node) as kms:
                        fingerprint = (await kms.status()).secret.fingerprint
                    if isinstance(fingerprint, str):
                        fingerprints.add(fingerprint)
                        break
                except NovaKMSError:
                    pass
                await trio.sleep(0.1)
    if scope.cancelled_caught:
        raise CliError(
            f"the development cluster did not agree on a secret within {_START_TIMEOUT} s"
        )
    if len(fingerprints) != 1:
        raise CliError("the development nodes hold different secrets (split brain)")
    return fingerprints.pop()


async def _await_cluster_ready(nodes: Sequence[DevNode]) -> None:
    """Wait until every node serves: it has the secret and is no longer syncing."""
    with trio.move_on_after(_START_TIMEOUT) as scope:
        for node in nodes:
            while True:
                if not all(other.running for other in nodes):
                    raise CliError("a node exited while starting (see its log above)")
                try:
                    async with await _probe(node) as kms:
                        status = await kms.status()
                        if status.ready and not status.syncing:
                            break
                except NovaKMSError:
                    pass
                await trio.sleep(0.1)
    if scope.cancelled_caught:
        raise CliError(f"the development cluster did not become ready within {_START_TIMEOUT} s")
