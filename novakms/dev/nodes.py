"""The node processes of ``novakms dev``: how each is started, watched, restarted and stopped.

Every node is its own ``novakms serve`` process. Once the cluster is ready, a node that exits is
reported on stderr as one JSON line (``node_exited``) and the others keep serving. With a
restart delay the node is started again after it, with the same key file and listen address
(``node_restarted``). A restarted node joins like an enclave node does: it gets no
``--master-secret-file`` while any other node process runs, so it fetches the secret from its
peers and catches up their store; only a node that would run alone is given the file again
(when there is one).

The command's own stderr lines are single-line JSON objects with an ``event``, so that tools
can tell them from the node logs that share the stream (logfmt by default; JSON records with
``--log-format json``, which have no ``event`` key of this kind: they carry ``logger``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

__all__ = [
    "DevNode",
    "NodeLaunch",
    "node_command",
    "print_event",
    "start_node",
    "stop_nodes",
    "supervise",
]

POLL_INTERVAL = 0.2  # seconds between checks whether a node process still runs


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeLaunch:
    """What every node of the development cluster is started with.

    Attributes:
        master_secret_file: the user's secret file (absolute), or None: the nodes then agree on
            a secret by themselves.
    """

    log_level: str
    log_format: str = "logfmt"
    chain_rpc: str
    nova_app_registry: str
    kms_registry: str
    poll_interval: float
    limits: tuple[str, ...] = ()
    master_secret_file: str | None = None
    require_pin: bool = False


@dataclasses.dataclass(kw_only=True)
class DevNode:
    """One node of the cluster: its identity, and its current process once started."""

    host: str
    port: int
    wallet: str
    key_file: Path
    metrics_port: int | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``HOST:PORT``, as the ready line and the events name the node."""
        return f"{self.host}:{self.port}"

    @property
    def metrics_address(self) -> str | None:
        """``HOST:PORT`` of its Prometheus listener (``http://HOST:PORT/metrics``), if any."""
        return None if self.metrics_port is None else f"{self.host}:{self.metrics_port}"

    @property
    def running(self) -> bool:
        """Whether the node's process has been started and has not exited."""
        return self.process is not None and self.process.poll() is None


def node_command(launch: NodeLaunch, node: DevNode, *, with_secret: bool) -> list[str]:
    """The ``novakms serve`` command line of one node, for its first start and its restarts.

    Args:
        launch: what every node is started with.
        node: the node (its key file and listen address).
        with_secret: pass ``--master-secret-file`` when the user gave one. False makes the node
            join like an enclave node: it fetches the secret from its peers.

    Returns:
        The argv; it names files, never a key or the secret itself.
    """
    command = [sys.executable, "-m", "novakms.cli", "--log-level", launch.log_level]
    command += ["--log-format", launch.log_format, "serve"]
    command += ["--listen", f"tcp://{node.address}", "--key-file", str(node.key_file)]
    if node.metrics_address is not None:
        command += ["--metrics", f"tcp://{node.metrics_address}"]
    command += [
        "--chain-rpc",
        launch.chain_rpc,
        "--nova-app-registry",
        launch.nova_app_registry,
        "--kms-registry",
        launch.kms_registry,
        "--poll-interval",
        str(launch.poll_interval),
    ]
    for item in launch.limits:
        command += ["--limit", item]
    if with_secret and launch.master_secret_file:
        command += ["--master-secret-file", launch.master_secret_file]
    if launch.require_pin:
        command.append("--require-pin")
    return command


def start_node(launch: NodeLaunch, node: DevNode, *, with_secret: bool) -> None:
    """Start the node's process (development mode; its logs, and the JSON error it prints if
    it cannot start, go to this command's stderr; stdout stays the command's own).

    Raises:
        OSError: the process could not be started.
    """
    node.process = subprocess.Popen(
        node_command(launch, node, with_secret=with_secret),
        env={**os.environ, "IN_ENCLAVE": "false"},
        stdout=2,  # a node prints only its error there: onto this command's stderr, with its log
    )


def print_event(event: str, **fields: Any) -> None:
    """One JSON object on one stderr line (written at once, so it does not mix with node logs)."""
    sys.stderr.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stderr.flush()


def _signal_name(returncode: int) -> str | None:
    """The signal that ended a process (negative Popen return codes), or None."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


async def supervise(
    launch: NodeLaunch, node: DevNode, nodes: Sequence[DevNode], *, restart_delay: float | None
) -> None:
    """Report each exit of ``node``'s process; with ``restart_delay``, start it again after it.

    Runs until cancelled (or, without restarts, until the node has exited). A restart passes
    the secret file only if no other node of ``nodes`` is running.
    """
    while True:
        process = node.process
        assert process is not None, "supervise a started node"
        while (returncode := process.poll()) is None:  # noqa: ASYNC110  (Popen has no async wait)
            await trio.sleep(POLL_INTERVAL)
        print_event(
            "node_exited",
            node=node.address,
            wallet=node.wallet,
            pid=process.pid,
            exit=returncode,
            signal=_signal_name(returncode),
        )
        if restart_delay is None:
            return
        await _restart(launch, node, nodes, delay=restart_delay)
        assert node.process is not None
        print_event("node_restarted", node=node.address, wallet=node.wallet, pid=node.process.pid)


async def _restart(
    launch: NodeLaunch, node: DevNode, nodes: Sequence[DevNode], *, delay: float
) -> None:
    """Start ``node`` again after ``delay`` seconds (and again after each failure to start it).

    It joins like an enclave node unless it would run alone: then, and only then, it is given
    the secret file again.
    """
    while True:
        await trio.sleep(delay)
        alone = not any(other.running for other in nodes if other is not node)
        try:
            start_node(launch, node, with_secret=alone)
        except OSError as exc:
            print_event(
                "node_restart_failed",
                node=node.address,
                wallet=node.wallet,
                error=exc.strerror or str(exc),
            )
        else:
            return


def stop_nodes(nodes: Sequence[DevNode], *, grace: float) -> None:
    """SIGTERM every running node, give them ``grace`` seconds to drain, then kill the rest.

    The grace period is shared (the nodes drain in parallel). A second interrupt while waiting
    kills the leftovers at once.
    """
    processes = [node.process for node in nodes if node.process is not None]
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace
    try:
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
