"""``novakms dev``: a local development KMS with two demo apps.

Holds the subcommand's arguments and their checks, the state directory (a temporary one is
removed on exit) and the mapping of start-up failures to usage errors; the cluster itself is
:mod:`novakms.dev.cluster` (:func:`~novakms.dev.cluster.run_cluster`, or
:func:`~novakms.dev.cluster.run_static` with ``--chain static``).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
from pathlib import Path

from novakms.auth.guardians import MAX_GUARDIANS
from novakms.cli.common import (
    LIMIT_HELP,
    in_enclave,
    non_negative_seconds,
    parse_limits,
    port_type,
    positive_seconds,
    read_master_secret,
)
from novakms.crypto.kdf import MASTER_SECRET_SIZE
from novakms.crypto.signer import LocalSigner
from novakms.dev.env import prepare_state
from novakms.errors import CliError

__all__ = ["add_parser"]

_EPILOG = """examples:
  novakms dev                                  # 3 nodes on free ports, anvil, two demo apps
  novakms dev --port 7400 --nodes 5 --state-dir ./dev-state   # fixed ports, kept state
  novakms dev --chain static                   # one in-process node, no chain
  novakms dev --restart --guardians 3          # restart exited nodes; a guardian set
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``novakms dev``.

    Args:
        commands: the top-level subparsers of ``novakms``.
    """
    dev = commands.add_parser(
        "dev",
        help="run a local development KMS with two demo apps",
        description="Run a local development KMS: anvil with the registries and N nodes, each "
        "its own `novakms serve` process (or, with --chain static, one in-process node). "
        "Prints one JSON line on stdout when all are ready (every node's address, wallet, "
        "pid and metrics listener, the demo apps, the chain) and runs until SIGINT or "
        'SIGTERM. While it starts it reports {"event": "progress", "step", "message"} on '
        "stderr; a node that exits after that is reported on stderr as a JSON line "
        '{"event": "node_exited", "node", "wallet", "pid", "exit", "signal"} and the others '
        "keep serving. The command's own stderr lines are JSON objects with an event; node "
        "logs share stderr. Anvil is taken from $NOVAKMS_ANVIL, else the checkout's "
        "node_modules (scripts/setup), else PATH. A temporary state directory is removed "
        "on exit.",
        epilog=_EPILOG,
    )
    dev.add_argument(
        "--port",
        type=port_type,
        default=0,
        help="the first node's TCP port, the others on the ports after it (default 0: free "
        "ports, so that clusters of two users or checkouts never collide)",
    )
    dev.add_argument("--host", default="127.0.0.1", help="the address the nodes listen on")
    dev.add_argument(
        "--master-secret-file",
        help="development only: file with the 64-hex master secret (default: a random one)",
    )
    dev.add_argument("--master-secret", help=argparse.SUPPRESS)  # refused: see _cmd_dev
    dev.add_argument(
        "--state-dir", help="where dev keys and the registry live (default: a new temp dir)"
    )
    dev.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE", help=LIMIT_HELP)
    dev.add_argument(
        "--chain",
        choices=("anvil", "static"),
        default="anvil",
        help="anvil (default): a local chain with the registries; static: a registry file",
    )
    dev.add_argument(
        "--chain-port", type=port_type, default=0, help="anvil's port (0 picks a free one)"
    )
    dev.add_argument(
        "--poll-interval",
        type=positive_seconds,
        default=1.0,
        metavar="S",
        help="seconds between the nodes' chain polls",
    )
    dev.add_argument(
        "--nodes",
        type=int,
        help="KMS nodes, each its own process (default 3; 1 with --chain static)",
    )
    dev.add_argument(
        "--restart",
        action="store_true",
        help="restart a node that exits, after --restart-delay, with the same key file and "
        "listen address. It joins like an enclave node: while any other node process runs it "
        "gets no --master-secret-file, fetches the secret from its peers and catches up their "
        "KV store; only when no other node runs is the secret file (if given) passed again. "
        'Prints {"event": "node_restarted", "node", "wallet", "pid"} on stderr',
    )
    dev.add_argument(
        "--restart-delay",
        type=non_negative_seconds,
        default=1.0,
        metavar="S",
        help="with --restart: seconds from a node's exit to its restart",
    )
    dev.add_argument(
        "--guardians",
        type=int,
        default=0,
        metavar="N",
        help="register N guardians on chain (key files in the state dir), fetch each one's "
        "sealed share once the cluster is ready, and list them in the ready line",
    )
    dev.add_argument(
        "--threshold",
        type=int,
        metavar="K",
        help="with --guardians: shares needed to recover (default: a majority)",
    )
    dev.set_defaults(func=_cmd_dev)


def _cmd_dev(args: argparse.Namespace) -> int:
    if in_enclave(default=False):
        raise CliError("`novakms dev` is for development machines and refuses to run in an enclave")
    if args.nodes is None:
        args.nodes = 1 if args.chain == "static" else 3
    if args.nodes < 1 or (args.chain == "static" and args.nodes != 1):
        raise CliError("--nodes must be at least 1 (and exactly 1 with --chain static)")
    if args.restart and args.chain == "static":
        raise CliError("--restart is for the node processes of the anvil cluster (--chain anvil)")
    if args.guardians and args.chain == "static":
        raise CliError("--guardians needs the chain (--chain anvil): the set lives in KMSRegistry")
    threshold = args.threshold if args.threshold is not None else args.guardians // 2 + 1
    if args.guardians < 0 or args.guardians > MAX_GUARDIANS:
        raise CliError(f"--guardians must be 0..{MAX_GUARDIANS}")
    if args.guardians and not 1 <= threshold <= args.guardians:
        raise CliError("--threshold must be 1..--guardians")
    if args.master_secret is not None:
        raise CliError(
            "--master-secret is gone: a secret on the command line is readable by every user "
            "in /proc/PID/cmdline; put the 64 hex characters in a file for --master-secret-file"
        )
    secret = None
    if args.master_secret_file:  # absolute: the node processes may run elsewhere
        args.master_secret_file = str(Path(args.master_secret_file).resolve())
        secret = read_master_secret(args.master_secret_file)
    limits = parse_limits(args.limit)
    # Loaded once the options are checked: the cluster brings trio, the server and the chain
    # libraries, which a usage error does not need.
    import trio

    from novakms.dev.cluster import ClusterPlan, run_cluster, run_static

    # Keys live in a private directory; one the command made up itself is removed on exit.
    temporary = not args.state_dir
    state_dir = Path(tempfile.mkdtemp(prefix="novakms-dev-")) if temporary else Path(args.state_dir)
    try:
        try:
            state = prepare_state(state_dir, nodes=args.nodes)
            signer = LocalSigner.from_file(state.node_key_file)
        except (OSError, ValueError) as exc:
            raise CliError(str(exc)) from None
        if args.chain == "static":
            run = functools.partial(
                run_static,
                host=args.host,
                port=args.port,
                state=state,
                signer=signer,
                secret=secret or os.urandom(MASTER_SECRET_SIZE),
                limits=limits,
            )
            trio.run(run)
        else:
            plan = ClusterPlan(
                host=args.host,
                port=args.port,
                nodes=args.nodes,
                chain_port=args.chain_port,
                log_level=args.log_level,
                log_format=args.log_format,
                poll_interval=args.poll_interval,
                limits=tuple(args.limit),
                master_secret_file=args.master_secret_file,
                guardians=args.guardians,
                threshold=threshold if args.guardians else None,
                restart_delay=args.restart_delay if args.restart else None,
            )
            trio.run(run_cluster, plan, state)
    finally:
        if temporary:
            shutil.rmtree(state_dir, ignore_errors=True)
    return 0
