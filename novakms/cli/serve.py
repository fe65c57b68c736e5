"""``novakms serve``: one KMS node, in enclave mode (the default) or development mode.

Holds the subcommand's arguments (and the chain options it shares with nothing else), the
checks of what each mode accepts, and the two composition roots that build a node and serve it
until SIGINT or SIGTERM: :func:`_serve_enclave` (Odyn signer, chain source, secret from the
cluster) and :func:`_serve_development` (key file, static registry or chain, optional secret
file). Both run :func:`novakms.server.server.serve_until_signal`.
"""

from __future__ import annotations

import argparse

import trio

from novakms.auth.static import StaticRegistry
from novakms.chain.registry import RegistryReader
from novakms.chain.rpc import JsonRpcClient
from novakms.chain.source import ChainAuthorizationSource, ChainSettings
from novakms.cli.common import (
    LIMIT_HELP,
    address_type,
    in_enclave,
    listen_addresses,
    parse_limits,
    proxy_address_type,
    read_master_secret,
)
from novakms.config import Mode, ServerConfig
from novakms.crypto.signer import LocalSigner
from novakms.errors import CliError
from novakms.net.odyn import DEFAULT_ODYN_URL
from novakms.server.node import build_node
from novakms.server.server import serve_until_signal

__all__ = ["ENCLAVE_CHAIN_RPC", "add_parser"]

_DEFAULT_CHAIN = ChainSettings()
ENCLAVE_CHAIN_RPC = "http://127.0.0.1:18545"  # the in-enclave light client


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``novakms serve``.

    Args:
        commands: the top-level subparsers of ``novakms``.
    """
    serve = commands.add_parser(
        "serve", help="serve a KMS node (mode from IN_ENCLAVE; unset = enclave)"
    )
    serve.add_argument(
        "--listen", action="append", help="tcp://HOST:PORT, unix:///path or vsock://CID:PORT"
    )
    serve.add_argument(
        "--listen-proxy",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="listen where every connection starts with a PROXY protocol v2 header (behind a "
        "proxy such as the enclave's parent forwarder): limits apply to the client it names",
    )
    serve.add_argument("--key-file", help="development only: the node's wallet key file")
    serve.add_argument(
        "--master-secret-file", help="development only: file with the 64-hex master secret"
    )
    serve.add_argument("--registry", help="development only: static registry JSON file")
    serve.add_argument(
        "--require-pin",
        action="store_true",
        help="development mode: serve apps only under the owner's pinned secret, as enclave "
        "mode always does",
    )
    serve.add_argument(
        "--limit", action="append", default=[], metavar="NAME=VALUE", help=LIMIT_HELP
    )
    serve.add_argument("--odyn-url", default=DEFAULT_ODYN_URL, help="enclave mode: the Odyn API")
    serve.add_argument(
        "--peer-proxy",
        type=proxy_address_type,
        help="dial TCP peers through this HTTP CONNECT proxy (e.g. the enclave's egress proxy): "
        "HOST:PORT or vsock://CID:PORT",
    )
    _chain_arguments(serve)
    serve.set_defaults(func=_cmd_serve)


def _chain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chain-rpc", help=f"JSON-RPC URL (enclave default {ENCLAVE_CHAIN_RPC})")
    parser.add_argument(
        "--nova-app-registry", type=address_type, help="NovaAppRegistry (proxy) address"
    )
    parser.add_argument("--kms-registry", type=address_type, help="KMSRegistry address")
    parser.add_argument("--block-tag", default="finalized", choices=("finalized", "safe", "latest"))
    parser.add_argument("--poll-interval", type=float, default=_DEFAULT_CHAIN.poll_interval)
    parser.add_argument(
        "--auth-ttl", type=float, default=_DEFAULT_CHAIN.ttl, help="backstop TTL, seconds"
    )
    parser.add_argument("--rpc-timeout", type=float, default=5.0)


def _chain_source(args: argparse.Namespace, rpc_url: str) -> ChainAuthorizationSource:
    if not args.nova_app_registry or not args.kms_registry:
        raise CliError("the chain source needs --nova-app-registry and --kms-registry")
    try:
        reader = RegistryReader(
            JsonRpcClient(rpc_url, timeout=args.rpc_timeout),
            nova_app_registry=args.nova_app_registry,
            kms_registry=args.kms_registry,
            block_tag=args.block_tag,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return ChainAuthorizationSource(
        reader, ChainSettings(poll_interval=args.poll_interval, ttl=args.auth_ttl)
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    enclave = in_enclave(default=True)
    limits = parse_limits(args.limit)
    if enclave:
        for flag, value in (
            ("--key-file", args.key_file),
            ("--master-secret-file", args.master_secret_file),
            ("--registry", args.registry),
        ):
            if value:
                raise CliError(
                    f"{flag} is a development input and is refused in enclave mode (IN_ENCLAVE)"
                )
        config = ServerConfig(
            listen=listen_addresses(args, "vsock://4294967295:7400"),
            listen_proxy=tuple(args.listen_proxy),
            mode=Mode.ENCLAVE,
            limits=limits,
        )
        auth = _chain_source(args, args.chain_rpc or ENCLAVE_CHAIN_RPC)
        trio.run(_serve_enclave, config, auth, args.odyn_url, args.peer_proxy)
        return 0
    if not args.key_file:
        raise CliError("development mode needs --key-file")
    if not args.registry and not args.chain_rpc:
        raise CliError(
            "development mode needs --registry FILE or --chain-rpc URL with the registries"
        )
    secret = None
    if args.master_secret_file:
        secret = read_master_secret(args.master_secret_file)
    try:
        signer = LocalSigner.from_file(args.key_file)
        source: StaticRegistry | ChainAuthorizationSource = (
            StaticRegistry.load(args.registry)
            if args.registry
            else _chain_source(args, args.chain_rpc)
        )
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    config = ServerConfig(
        listen=listen_addresses(args, "127.0.0.1:7400"),
        listen_proxy=tuple(args.listen_proxy),
        mode=Mode.DEVELOPMENT,
        limits=limits,
    )
    trio.run(_serve_development, args, config, signer, source, secret)
    return 0


async def _serve_development(
    args: argparse.Namespace,
    config: ServerConfig,
    signer: LocalSigner,
    source: StaticRegistry | ChainAuthorizationSource,
    secret: bytes | None,
) -> None:
    """The development node: a local key, the given source, the secret file's secret if any."""
    node = build_node(
        config=config,
        signer=signer,
        registry=source,
        membership=source,
        secret=secret,
        peer_proxy=args.peer_proxy,
        require_pin=args.require_pin,
    )
    await serve_until_signal(node, config)


async def _serve_enclave(
    config: ServerConfig, auth: ChainAuthorizationSource, odyn_url: str, peer_proxy: str | None
) -> None:
    """The enclave node: Odyn signs, the chain authorizes, the cluster hands out the secret."""
    from novakms.net.odyn import OdynSigner

    signer = await OdynSigner.connect(odyn_url)
    # The master secret comes from the cluster (peer bootstrap); until then the node serves
    # status and reports not_ready for everything that needs the secret.
    node = build_node(
        config=config, signer=signer, registry=auth, membership=auth, peer_proxy=peer_proxy
    )
    await serve_until_signal(node, config)
