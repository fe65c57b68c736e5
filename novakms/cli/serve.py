"""``novakms serve``: one KMS node, in enclave mode (the default) or development mode.

Holds the subcommand's arguments (and the chain options it shares with nothing else), their
merge with the environment and a TOML config file (:mod:`novakms.cli.settings`; ``--config``,
``--check``), the checks of what each mode accepts, and the two composition roots that build a
node and serve it until SIGINT or SIGTERM: :func:`_serve_enclave` (Odyn signer, chain source,
secret from the cluster) and :func:`_serve_development` (key file, static registry or chain,
optional secret file). Both run :func:`novakms.server.server.serve_until_signal`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
from typing import TYPE_CHECKING, Any

from novakms.cli.common import (
    LIMIT_HELP,
    address_type,
    in_enclave,
    listen_addresses,
    node_address_type,
    parse_limits,
    print_json,
    read_master_secret,
)
from novakms.cli.settings import ENV_PREFIX, Setting, parse_file, resolve, settings_of
from novakms.config import DEFAULT_ODYN_URL, ChainSettings, Limits, Mode, ServerConfig
from novakms.crypto.signer import LocalSigner
from novakms.errors import CliError
from novakms.net.addresses import parse_address

if TYPE_CHECKING:  # the server, trio and the chain source load only to serve (not for --check)
    from novakms.auth.static import StaticRegistry
    from novakms.chain.source import ChainAuthorizationSource

__all__ = ["CONFIG_ENV", "ENCLAVE_CHAIN_RPC", "add_parser"]

_DEFAULT_CHAIN = ChainSettings()
ENCLAVE_CHAIN_RPC = "http://127.0.0.1:18545"  # the in-enclave light client


_DEFAULTS: dict[str, Any] = {
    "odyn_url": DEFAULT_ODYN_URL,
    "block_tag": "finalized",
    "poll_interval": _DEFAULT_CHAIN.poll_interval,
    "auth_ttl": _DEFAULT_CHAIN.ttl,
    "rpc_timeout": 5.0,
}
_LISTEN_DEFAULT = {Mode.ENCLAVE: "vsock://4294967295:7400", Mode.DEVELOPMENT: "127.0.0.1:7400"}
_MAX_CONFIG_BYTES = 65536
CONFIG_ENV = ENV_PREFIX + "CONFIG"

_EPILOG = f"""Settings: command line > environment > config file > default. Every option is also a
key of the TOML file given with --config (or {CONFIG_ENV}): the option's name without '--'
(chain-rpc = "http://..."; listen = ["vsock://4294967295:7400"]; require-pin = true; limits
in a [limits] table: max_inflight = 64), and an environment variable {ENV_PREFIX}<NAME>
({ENV_PREFIX}CHAIN_RPC; lists comma-separated; {ENV_PREFIX}LIMITS=max_inflight=64,...). A list
from a higher source replaces a lower one's; limits merge per name. IN_ENCLAVE picks the mode
(unset: enclave). --check prints the effective settings as JSON and exits without serving.

examples:
  novakms serve --config /etc/novakms/novakms.toml
  IN_ENCLAVE=0 novakms serve --key-file node.key --registry registry.json --listen 127.0.0.1:7400
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``novakms serve``.

    Args:
        commands: the top-level subparsers of ``novakms``.
    """
    serve = commands.add_parser(
        "serve",
        help="serve a KMS node (mode from IN_ENCLAVE; unset = enclave)",
        epilog=_EPILOG,
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML file with any of the options below (or {CONFIG_ENV})",
    )
    serve.add_argument(
        "--check",
        action="store_true",
        help="check the settings, print them as JSON and exit without serving",
    )
    serve.add_argument(
        "--listen",
        action="append",
        help="tcp://HOST:PORT, unix:///path or vsock://CID:PORT (default: "
        f"{_LISTEN_DEFAULT[Mode.ENCLAVE]} in enclave mode, {_LISTEN_DEFAULT[Mode.DEVELOPMENT]} "
        "in development mode, none when --listen-proxy is given)",
    )
    serve.add_argument(
        "--listen-proxy",
        action="append",
        metavar="ADDRESS",
        help="listen where every connection starts with a PROXY protocol v2 header (behind a "
        "proxy such as the enclave's parent forwarder): limits apply to the client it names",
    )
    serve.add_argument(
        "--metrics",
        action="append",
        metavar="ADDRESS",
        help="serve Prometheus metrics at http://ADDRESS/metrics (tcp://HOST:PORT, or "
        "vsock://CID:PORT inside an enclave; repeatable; default: no metrics listener)",
    )
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        help="log one novakms.access line per answered request: op, app, wallet, code, ms "
        "(default: off)",
    )
    serve.add_argument("--key-file", help="development only: the node's wallet key file")
    serve.add_argument(
        "--master-secret-file", help="development only: file with the 64-hex master secret"
    )
    serve.add_argument("--registry", help="development only: static registry JSON file")
    serve.add_argument(
        "--require-pin",
        action=argparse.BooleanOptionalAction,
        help="development mode: serve apps only under the owner's pinned secret, as enclave "
        "mode always does",
    )
    serve.add_argument(
        "--reuse-port",
        action=argparse.BooleanOptionalAction,
        help="development prototype (docs/scaling.md): listen with SO_REUSEPORT so that several "
        "`novakms serve` processes share the TCP port, each a stateless worker: derive, cert.*, "
        "status and the handshakes are served, kv.* and sync.* refused (unavailable: "
        "stateless_worker); needs --master-secret-file, TCP listeners only; limits, metrics "
        "and logs are per process",
    )
    serve.add_argument("--limit", action="append", metavar="NAME=VALUE", help=LIMIT_HELP)
    serve.add_argument(
        "--odyn-url", help=f"enclave mode: the Odyn API (default {DEFAULT_ODYN_URL})"
    )
    serve.add_argument(
        "--peer-proxy",
        type=node_address_type,
        help="dial TCP peers through this HTTP CONNECT proxy (e.g. the enclave's egress proxy): "
        "HOST:PORT or vsock://CID:PORT",
    )
    _chain_arguments(serve)
    settings = settings_of(serve, skip=("config", "check"))
    serve.set_defaults(func=functools.partial(_cmd_serve, settings))


def _chain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chain-rpc", help=f"JSON-RPC URL (enclave default {ENCLAVE_CHAIN_RPC})")
    parser.add_argument(
        "--nova-app-registry", type=address_type, help="NovaAppRegistry (proxy) address"
    )
    parser.add_argument("--kms-registry", type=address_type, help="KMSRegistry address")
    parser.add_argument(
        "--block-tag",
        choices=("finalized", "safe", "latest"),
        help="the block the registries are read at (default finalized)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        help=f"seconds between registry polls (default {_DEFAULT_CHAIN.poll_interval})",
    )
    parser.add_argument(
        "--auth-ttl",
        type=float,
        help=f"backstop TTL of cached authorizations, seconds (default {_DEFAULT_CHAIN.ttl})",
    )
    parser.add_argument(
        "--rpc-timeout", type=float, help="seconds for one JSON-RPC request (default 5.0)"
    )


def _settings(settings: list[Setting], args: argparse.Namespace) -> argparse.Namespace:
    """The command line merged with the environment and the config file (settings module)."""
    path = args.config or os.environ.get(CONFIG_ENV, "").strip() or None
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                raw = handle.read(_MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise CliError(f"cannot read the config {path}: {exc.strerror or exc}") from None
        if len(raw) > _MAX_CONFIG_BYTES:
            raise CliError(f"config {path}: larger than {_MAX_CONFIG_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CliError(f"config {path}: not UTF-8 text") from None
        file_values = parse_file(text, settings, name=path)
    given = {s.dest: getattr(args, s.dest) for s in settings}
    resolved = resolve(
        settings, given, environ=os.environ, file_values=file_values, defaults=_DEFAULTS
    )
    return argparse.Namespace(**resolved, config=path)


def _cmd_serve(settings: list[Setting], args: argparse.Namespace) -> int:
    opts = _settings(settings, args)
    mode = Mode.ENCLAVE if in_enclave(default=True) else Mode.DEVELOPMENT
    config = ServerConfig(
        listen=listen_addresses(opts, _LISTEN_DEFAULT[mode]),
        listen_proxy=tuple(opts.listen_proxy),
        mode=mode,
        limits=parse_limits(opts.limit),
        metrics=tuple(opts.metrics or ()),
        access_log=bool(opts.access_log),
        reuse_port=bool(opts.reuse_port),
    )
    _check_addresses(config)
    if mode is Mode.ENCLAVE:
        for flag, value in (
            ("--key-file", opts.key_file),
            ("--master-secret-file", opts.master_secret_file),
            ("--registry", opts.registry),
            ("--reuse-port", opts.reuse_port),
        ):
            if value:
                raise CliError(
                    f"{flag} is a development input and is refused in enclave mode (IN_ENCLAVE)"
                )
        opts.chain_rpc = opts.chain_rpc or ENCLAVE_CHAIN_RPC
        _check_chain(opts)
        if args.check:
            return _print_check(opts, config)
        import trio

        trio.run(_serve_enclave, config, _chain_source(opts), opts.odyn_url, opts.peer_proxy)
        return 0
    if not opts.key_file:
        raise CliError("development mode needs --key-file")
    if not opts.registry and not opts.chain_rpc:
        raise CliError(
            "development mode needs --registry FILE or --chain-rpc URL with the registries"
        )
    if not opts.registry:
        _check_chain(opts)
    if config.reuse_port:
        _check_reuse_port(opts, config)
    secret = None
    if opts.master_secret_file:
        secret = read_master_secret(opts.master_secret_file)
    from novakms.auth.static import StaticRegistry

    try:
        signer = LocalSigner.from_file(opts.key_file)
        registry = StaticRegistry.load(opts.registry) if opts.registry else None
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    if args.check:
        return _print_check(opts, config, wallet=signer.wallet)
    source = registry or _chain_source(opts)
    import trio

    trio.run(_serve_development, opts, config, signer, source, secret)
    return 0


def _check_addresses(config: ServerConfig) -> None:
    for address in (*config.listen, *config.listen_proxy, *config.metrics):
        try:
            parse_address(address)
        except ValueError as exc:
            raise CliError(f"listen address {address!r}: {exc}") from None


def _check_reuse_port(opts: argparse.Namespace, config: ServerConfig) -> None:
    """``--reuse-port``: TCP listeners, and the secret from a file (docs/scaling.md)."""
    if not opts.master_secret_file:
        raise CliError(
            "--reuse-port needs --master-secret-file: workers that bootstrapped the secret on "
            "their own could each generate a different one"
        )
    for text in (*config.listen, *config.listen_proxy):
        if parse_address(text).scheme != "tcp":
            raise CliError(
                f"--reuse-port: listen address {text!r} is not TCP (SO_REUSEPORT is TCP only)"
            )


def _check_chain(opts: argparse.Namespace) -> None:
    if not opts.nova_app_registry or not opts.kms_registry:
        raise CliError("the chain source needs --nova-app-registry and --kms-registry")
    if not opts.chain_rpc.startswith(("http://", "https://")):
        raise CliError(f"--chain-rpc {opts.chain_rpc!r} is not an http(s) URL")
    for name in ("poll_interval", "auth_ttl", "rpc_timeout"):
        value = getattr(opts, name)
        if not value > 0:  # also refuses NaN
            raise CliError(f"--{name.replace('_', '-')} must be more than 0, got {value}")


def _print_check(
    opts: argparse.Namespace, config: ServerConfig, *, wallet: str | None = None
) -> int:
    """``--check``: the effective settings (paths and addresses only, never a secret)."""
    defaults = Limits()
    print_json(
        {
            "ok": True,
            "mode": config.mode.value,
            "config": opts.config,
            "listen": list(config.listen),
            "listen_proxy": list(config.listen_proxy),
            "metrics": list(config.metrics),
            "access_log": config.access_log,
            "reuse_port": config.reuse_port,
            "wallet": wallet,
            "registry": opts.registry,
            "chain": None
            if opts.registry
            else {
                "rpc": opts.chain_rpc,
                "nova_app_registry": opts.nova_app_registry,
                "kms_registry": opts.kms_registry,
                "block_tag": opts.block_tag,
                "poll_interval": opts.poll_interval,
                "auth_ttl": opts.auth_ttl,
                "rpc_timeout": opts.rpc_timeout,
            },
            "odyn_url": opts.odyn_url if config.mode is Mode.ENCLAVE else None,
            "peer_proxy": opts.peer_proxy,
            "require_pin": config.mode is Mode.ENCLAVE or bool(opts.require_pin),
            "master_secret_file": opts.master_secret_file is not None,
            "limits": {
                f.name: getattr(config.limits, f.name)
                for f in dataclasses.fields(Limits)
                if getattr(config.limits, f.name) != getattr(defaults, f.name)
            },
        }
    )
    return 0


def _chain_source(opts: argparse.Namespace) -> ChainAuthorizationSource:
    from novakms.chain.registry import RegistryReader
    from novakms.chain.rpc import JsonRpcClient
    from novakms.chain.source import ChainAuthorizationSource

    try:
        reader = RegistryReader(
            JsonRpcClient(opts.chain_rpc, timeout=opts.rpc_timeout),
            nova_app_registry=opts.nova_app_registry,
            kms_registry=opts.kms_registry,
            block_tag=opts.block_tag,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return ChainAuthorizationSource(
        reader, ChainSettings(poll_interval=opts.poll_interval, ttl=opts.auth_ttl)
    )


async def _serve_development(
    args: argparse.Namespace,
    config: ServerConfig,
    signer: LocalSigner,
    source: StaticRegistry | ChainAuthorizationSource,
    secret: bytes | None,
) -> None:
    """The development node: a local key, the given source, the secret file's secret if any."""
    from novakms.server.node import build_node
    from novakms.server.server import serve_until_signal

    node = build_node(
        config=config,
        signer=signer,
        registry=source,
        membership=source,
        secret=secret,
        peer_proxy=args.peer_proxy,
        require_pin=args.require_pin,
        stateless_worker=config.reuse_port,
    )
    await serve_until_signal(node, config)


async def _serve_enclave(
    config: ServerConfig, auth: ChainAuthorizationSource, odyn_url: str, peer_proxy: str | None
) -> None:
    """The enclave node: Odyn signs, the chain authorizes, the cluster hands out the secret."""
    from novakms.net.odyn import OdynSigner
    from novakms.server.node import build_node
    from novakms.server.server import serve_until_signal

    signer = await OdynSigner.connect(odyn_url)
    # The master secret comes from the cluster (peer bootstrap); until then the node serves
    # status and reports not_ready for everything that needs the secret.
    node = build_node(
        config=config, signer=signer, registry=auth, membership=auth, peer_proxy=peer_proxy
    )
    await serve_until_signal(node, config)
