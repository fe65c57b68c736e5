"""``novakms bridge``: the EC2 parent's forwarder from TCP to the enclave's vsock listener.

Runs :class:`novakms.net.bridge.Bridge` until SIGINT or SIGTERM. Once it listens it prints one
JSON line, ``{"listening": ADDRESS, "to": ADDRESS, "proxy_protocol": BOOL}`` (with the bound
port when ``--listen`` asked for port 0).
"""

from __future__ import annotations

import argparse
import signal

import trio

from novakms.cli.common import node_address_type, print_json
from novakms.errors import CliError
from novakms.net.addresses import parse_address
from novakms.net.bridge import DEFAULT_MAX_CONNECTIONS, Bridge

__all__ = ["add_parser"]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``novakms bridge``.

    Args:
        commands: the top-level subparsers of ``novakms``.
    """
    bridge = commands.add_parser(
        "bridge",
        help="forward TCP connections to a node's vsock listener (runs on the EC2 parent)",
        description="Forward every TCP connection to a node's listener (the EC2 parent's side of "
        "an enclave). Prints one JSON line once listening: "
        '{"listening": ADDRESS, "to": ADDRESS, "proxy_protocol": BOOL}; stops on SIGINT/SIGTERM.',
    )
    bridge.add_argument(
        "--listen",
        required=True,
        type=node_address_type,
        help="where apps connect, e.g. tcp://0.0.0.0:7400",
    )
    bridge.add_argument(
        "--to",
        required=True,
        type=node_address_type,
        help="the node's listener, e.g. vsock://16:7400 (tcp:// works too)",
    )
    bridge.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="start each forwarded connection with a PROXY v2 header carrying the client's "
        "address (for a node listening with --listen-proxy)",
    )
    bridge.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="connections forwarded at once; more are closed as they arrive (default: %(default)s)",
    )
    bridge.set_defaults(func=_cmd_bridge)


def _cmd_bridge(args: argparse.Namespace) -> int:
    try:
        bridge = Bridge(
            listen=parse_address(args.listen),
            to=parse_address(args.to),
            proxy_protocol=args.proxy_protocol,
            max_connections=args.max_connections,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    trio.run(_run_until_signal, bridge)
    return 0


async def _run_until_signal(bridge: Bridge) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            address = await nursery.start(bridge.run)
            print_json(
                {
                    "listening": address,
                    "to": str(bridge.to),
                    "proxy_protocol": bridge.proxy_protocol,
                }
            )
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
