"""``novakms``: serve a node, run a development KMS, talk to a node as a client, and the
offline guardian tools (``novakms guardian``, in :mod:`novakms.cli.guardian`).

Machine-readable output goes to stdout as JSON; logs go to stderr. Client errors print
``{"error": {"code": …, "message": …}}`` and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import trio

from novakms import __version__
from novakms.admin.tx import TransactionFailed, TxSender
from novakms.auth.guardians import (
    MAX_GUARDIANS,
    GuardianSet,
    GuardianSetError,
    guardian_set,
    parse_enc_key,
)
from novakms.auth.model import ZERO_ADDRESS
from novakms.auth.static import StaticRegistry
from novakms.chain import abi
from novakms.chain.registry import RegistryReader
from novakms.chain.rpc import ChainError, JsonRpcClient
from novakms.chain.source import ChainAuthorizationSource, ChainSettings
from novakms.cli.common import CliError
from novakms.cli.common import print_json as _print_json
from novakms.cli.common import read_master_secret as _read_master_secret
from novakms.cli.guardian import add_guardian_parser, write_private_file
from novakms.client.aio import Client
from novakms.client.blocking import BlockingClient
from novakms.config import (
    Limits,
    Mode,
    ServerConfig,
    enclave_mode,
    parse_limit_overrides,
)
from novakms.crypto.eth import (
    generate_private_key,
    normalize_wallet,
    parse_private_key,
    wallet_from_private_key,
)
from novakms.crypto.guardian_shares import enc_public_key_of, generate_enc_keypair
from novakms.crypto.kdf import MASTER_SECRET_SIZE
from novakms.crypto.signer import LocalSigner, SyncSigner
from novakms.dev.anvil import AnvilError, AnvilProcess, find_anvil
from novakms.dev.env import DevState, in_nitro_enclave, prepare_state, write_key_file
from novakms.dev.nodes import DevNode, NodeLaunch, start_node, stop_nodes, supervise
from novakms.dev.world import clear_guardians, deploy_registries, set_guardians, setup_world
from novakms.errors import NovaKMSError, TransportError, Unavailable
from novakms.log import configure
from novakms.net.addresses import parse_address
from novakms.net.odyn import DEFAULT_ODYN_URL
from novakms.server.node import Node
from novakms.server.server import Server

__all__ = ["main"]

_DEFAULT_CHAIN = ChainSettings()
ENCLAVE_CHAIN_RPC = "http://127.0.0.1:18545"  # the in-enclave light client
EXIT_ERROR = 1
EXIT_USAGE = 2
NODE_STOP_GRACE = 20.0  # seconds `novakms dev` gives its nodes to drain on exit
_WAIT_SAFE_CALL_TIMEOUT = 5.0  # seconds for one connect + status of `admin wait-safe`


def _fail(code: str, message: str, exit_code: int = EXIT_ERROR, **details: Any) -> NoReturn:
    _print_json({"error": {"code": code, "message": message, **details}})
    sys.exit(exit_code)


def _listen(args: argparse.Namespace, default: str) -> tuple[str, ...]:
    """The plain listen addresses: the default only when no listener of either kind is given."""
    if args.listen:
        return tuple(args.listen)
    return () if args.listen_proxy else (default,)


def _limits(items: Sequence[str]) -> Limits:
    try:
        return parse_limit_overrides(items)
    except ValueError as exc:
        raise CliError(str(exc)) from None


# --- serve ------------------------------------------------------------------------------------


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


def _proxy_address(text: str) -> str:
    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _in_enclave(*, default: bool) -> bool:
    try:
        return enclave_mode(os.environ, nsm_present=in_nitro_enclave(), default=default)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _cmd_serve(args: argparse.Namespace) -> int:
    enclave = _in_enclave(default=True)
    limits = _limits(args.limit)
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
            listen=_listen(args, "vsock://4294967295:7400"),
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
        secret = _read_master_secret(args.master_secret_file)
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
        listen=_listen(args, "127.0.0.1:7400"),
        listen_proxy=tuple(args.listen_proxy),
        mode=Mode.DEVELOPMENT,
        limits=limits,
    )
    node = Node(
        signer=signer,
        registry=source,
        membership=source,
        limits=config.limits,
        mode=config.mode,
        master_secret=secret,
        peer_proxy=args.peer_proxy,
        require_pin=args.require_pin,
    )
    trio.run(_serve_until_signal, Server(config=config, node=node), None)
    return 0


async def _serve_enclave(
    config: ServerConfig, auth: ChainAuthorizationSource, odyn_url: str, peer_proxy: str | None
) -> None:
    from novakms.net.odyn import OdynSigner

    signer = await OdynSigner.connect(odyn_url)
    # The master secret comes from the cluster (peer bootstrap); until then the node serves
    # status and reports not_ready for everything that needs the secret.
    node = Node(
        signer=signer,
        registry=auth,
        membership=auth,
        limits=config.limits,
        mode=config.mode,
        peer_proxy=peer_proxy,
    )
    await _serve_until_signal(Server(config=config, node=node), None)


OnReady = Callable[[list[str]], Awaitable[None]]


async def _serve_until_signal(server: Server, on_ready: OnReady | None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(server.run)
            if on_ready is not None:
                await on_ready(addresses)
            async for _ in signals:
                server.shutdown()
                break


# --- dev --------------------------------------------------------------------------------------


def _cmd_dev(args: argparse.Namespace) -> int:
    if _in_enclave(default=False):
        raise CliError("`novakms dev` is for development machines and refuses to run in an enclave")
    if args.nodes is None:
        args.nodes = 1 if args.chain == "static" else 3
    if args.nodes < 1 or (args.chain == "static" and args.nodes != 1):
        raise CliError("--nodes must be at least 1 (and exactly 1 with --chain static)")
    if args.restart and args.chain == "static":
        raise CliError("--restart is for the node processes of the anvil cluster (--chain anvil)")
    if args.restart_delay < 0:
        raise CliError("--restart-delay must be at least 0")
    if args.guardians and args.chain == "static":
        raise CliError("--guardians needs the chain (--chain anvil): the set lives in KMSRegistry")
    threshold = args.threshold if args.threshold is not None else args.guardians // 2 + 1
    if args.guardians < 0 or args.guardians > MAX_GUARDIANS:
        raise CliError(f"--guardians must be 0..{MAX_GUARDIANS}")
    if args.guardians and not 1 <= threshold <= args.guardians:
        raise CliError("--threshold must be 1..--guardians")
    args.threshold = threshold if args.guardians else None
    if args.master_secret is not None:
        raise CliError(
            "--master-secret is gone: a secret on the command line is readable by every user "
            "in /proc/PID/cmdline; put the 64 hex characters in a file for --master-secret-file"
        )
    secret = None
    if args.master_secret_file:  # absolute: the node processes may run elsewhere
        args.master_secret_file = str(Path(args.master_secret_file).resolve())
        secret = _read_master_secret(args.master_secret_file)
    limits = _limits(args.limit)
    # Keys live in a private directory; one the command made up itself is removed on exit.
    temporary = not args.state_dir
    state_dir = Path(tempfile.mkdtemp(prefix="novakms-dev-")) if temporary else Path(args.state_dir)
    try:
        try:
            state = prepare_state(state_dir, nodes=args.nodes)
            signer = LocalSigner.from_file(state.node_key_file)
        except (OSError, ValueError) as exc:
            raise CliError(str(exc)) from None
        try:
            if args.chain == "static":
                secret = secret or os.urandom(MASTER_SECRET_SIZE)
                trio.run(_dev_static, args, state, signer, secret, limits)
            else:
                trio.run(_dev_cluster, args, state)
        except OSError as exc:
            raise CliError(
                f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
            ) from None
        except AnvilError as exc:
            raise CliError(f"cannot start the development chain: {exc}") from None
    finally:
        if temporary:
            shutil.rmtree(state_dir, ignore_errors=True)
    return 0


async def _dev_static(
    args: argparse.Namespace, state: DevState, signer: LocalSigner, secret: bytes, limits: Limits
) -> None:
    """One in-process node on the static registry file (no chain)."""
    config = ServerConfig(
        listen=(f"tcp://{args.host}:{args.port}",), mode=Mode.DEVELOPMENT, limits=limits
    )
    registry = StaticRegistry.load(state.registry_file)
    node = Node(
        signer=signer,
        registry=registry,
        membership=registry,
        limits=limits,
        mode=config.mode,
        master_secret=secret,
    )

    async def on_ready(addresses: list[str]) -> None:
        nodes = [{"address": addresses[0], "wallet": signer.wallet}]
        _print_json({"nodes": nodes, "apps": _apps_line(state), "chain": None})

    await _serve_until_signal(Server(config=config, node=node), on_ready)


def _apps_line(state: DevState) -> list[dict[str, Any]]:
    """The demo apps as the ready line lists them."""
    return [
        {"app_id": a.app_id, "wallet": a.wallet, "key_file": str(a.key_file)} for a in state.apps
    ]


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def _dev_cluster(args: argparse.Namespace, state: DevState) -> None:
    """Anvil + registries, then N nodes as separate ``novakms serve`` processes."""
    ports = [args.port + i if args.port else _free_port(args.host) for i in range(args.nodes)]
    anvil = AnvilProcess(find_anvil()).start(port=args.chain_port)
    with anvil:
        admin_key = anvil.private_keys[0]
        admin_key_file = write_key_file(state.directory / "admin.key", admin_key)
        async with anvil.rpc() as rpc:
            world = await setup_world(
                rpc,
                admin_key,
                node_wallets=[
                    (w, f"http://{args.host}:{p}")
                    for (w, _), p in zip(state.nodes, ports, strict=True)
                ],
                app_wallets=[a.wallet for a in state.apps],
            )
            guardians = _dev_guardians(state.directory, args.guardians)
            if guardians:
                await set_guardians(
                    TxSender(rpc, admin_key),
                    world.kms_registry,
                    [g["wallet"] for g in guardians],
                    [g.pop("enc_public_key") for g in guardians],
                    args.threshold,
                )
        launch = NodeLaunch(
            log_level=args.log_level,
            chain_rpc=anvil.url,
            nova_app_registry=world.nova_app_registry,
            kms_registry=world.kms_registry,
            poll_interval=args.poll_interval,
            limits=tuple(args.limit),
            master_secret_file=args.master_secret_file,
            require_pin=True,
        )
        nodes = [
            DevNode(host=args.host, port=port, wallet=wallet, key_file=key)
            for (wallet, key), port in zip(state.nodes, ports, strict=True)
        ]
        try:
            for node in nodes:
                # Development only: with a secret file every node starts with it (no bootstrap).
                start_node(launch, node, with_secret=True)
            # As an operator does: once the nodes agree on a secret, pin its fingerprint.
            fingerprint = await _await_one_secret(nodes)
            async with anvil.rpc() as rpc:
                await TxSender(rpc, admin_key).send(
                    world.kms_registry,
                    abi.kms_registry().encode_call(
                        "setMasterSecretHash", _fingerprint_bytes(fingerprint)
                    ),
                )
            await _await_cluster_ready(nodes)
            for guardian in guardians:  # each guardian's share, sealed to its own key
                await _fetch_share(nodes[0].address, guardian)
            extra: dict[str, Any] = (
                {"guardians": guardians, "threshold": args.threshold} if guardians else {}
            )
            _print_json(
                {
                    "nodes": [
                        {"address": node.address, "wallet": node.wallet, "pid": _pid(node)}
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
            # From here on a node that exits is reported (and restarted with --restart); the
            # command itself runs until SIGINT or SIGTERM.
            restart_delay = args.restart_delay if args.restart else None
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with trio.open_nursery() as nursery:
                    for node in nodes:
                        nursery.start_soon(
                            functools.partial(
                                supervise, launch, node, nodes, restart_delay=restart_delay
                            )
                        )
                    async for _ in signals:
                        break
                    nursery.cancel_scope.cancel()
        finally:
            stop_nodes(nodes, grace=NODE_STOP_GRACE)


def _pid(node: DevNode) -> int:
    assert node.process is not None
    return node.process.pid


def _dev_guardians(directory: Path, count: int) -> list[dict[str, Any]]:
    """``count`` guardians' key files in the state directory (kept when it is reused)."""
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


async def _fetch_share(address: str, guardian: dict[str, Any]) -> None:
    """``novakms guardian fetch`` for a dev guardian: its sealed share into its share file."""
    signer = LocalSigner.from_file(guardian["key_file"])
    async with await Client.connect(address, signer=signer, role="guardian", timeout=10) as kms:
        answer = await kms.guardian_share()
    write_private_file(Path(guardian["share_file"]), answer["share"], exclusive=False)


async def _await_one_secret(nodes: Sequence[DevNode]) -> str:
    """Wait until every node holds the master secret; the fingerprint they agree on."""
    fingerprints: set[str] = set()
    with trio.move_on_after(90) as scope:
        for node in nodes:
            while True:
                if not all(other.running for other in nodes):
                    raise CliError("a node exited while starting (see its log above)")
                try:
                    async with await Client.connect(node.address, timeout=2) as kms:
                        fingerprint = (await kms.status()).get("secret", {}).get("fingerprint")
                    if isinstance(fingerprint, str):
                        fingerprints.add(fingerprint)
                        break
                except NovaKMSError:
                    pass
                await trio.sleep(0.1)
    if scope.cancelled_caught:
        raise CliError("the development cluster did not agree on a secret within 90 s")
    if len(fingerprints) != 1:
        raise CliError("the development nodes hold different secrets (split brain)")
    return fingerprints.pop()


async def _await_cluster_ready(nodes: Sequence[DevNode]) -> None:
    """Wait until every node serves: it has the secret and is no longer syncing."""
    with trio.move_on_after(90) as scope:
        for node in nodes:
            while True:
                if not all(other.running for other in nodes):
                    raise CliError("a node exited while starting (see its log above)")
                try:
                    async with await Client.connect(node.address, timeout=2) as kms:
                        status = await kms.status()
                        if status.get("ready") and not status.get("syncing"):
                            break
                except NovaKMSError:
                    pass
                await trio.sleep(0.1)
    if scope.cancelled_caught:
        raise CliError("the development cluster did not become ready within 90 s")


# --- client -----------------------------------------------------------------------------------


def _client_signer(args: argparse.Namespace) -> SyncSigner | None:
    if args.key and args.odyn:
        raise CliError("use either --key or --odyn, not both")
    if args.key:
        if _in_enclave(default=False):
            raise CliError("local key files are refused in an enclave; use --odyn")
        try:
            return LocalSigner.from_file(args.key)
        except (OSError, ValueError) as exc:
            raise CliError(str(exc)) from None
    if args.odyn:
        from novakms.net.odyn import OdynSigner

        return OdynSigner.connect_sync(args.odyn)
    return None


def _cmd_client(args: argparse.Namespace) -> int:
    try:
        parse_address(args.node)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    signer = _client_signer(args)
    with BlockingClient.connect(
        args.node, signer=signer, expect_wallet=args.expect_wallet, timeout=args.timeout
    ) as client:
        if args.op == "health":
            _print_json(client.health())
        elif args.op == "status":
            _print_json(client.status())
        elif args.op == "nodes":
            _print_json(client.call("nodes"))
        elif args.op == "derive":
            result = client.derive(args.path, context=args.context, length=args.length)
            _print_json(
                {
                    "app_id": result.app_id,
                    "path": result.path,
                    "key": result.key,
                    "length": result.length,
                }
            )
        elif args.op == "kv":
            _print_json(_kv(client, args))
        elif args.op == "cert":
            _cert(client, args)
    return 0


def _kv(client: BlockingClient, args: argparse.Namespace) -> Any:
    if args.kv_op == "get":
        item = client.kv_get(args.kv_key)
        return {
            "key": item.key,
            "value": item.value,
            "version": item.version,
            "updated_at_ms": item.updated_at_ms,
        }
    if args.kv_op == "put":
        if args.value is not None:
            value = args.value.encode("utf-8")
        else:
            try:
                value = Path(args.value_file).read_bytes()
            except OSError as exc:
                raise CliError(f"cannot read {args.value_file}: {exc.strerror or exc}") from None
        result = client.kv_put(
            args.kv_key, value, ttl_ms=args.ttl_ms, if_version=args.if_version, acks=args.acks
        )
        return {
            "key": result["key"],
            "version": result["version"],
            "updated_at_ms": result["updated_at_ms"],
            "acked": result["acked"],
        }
    if args.kv_op == "delete":
        return client.kv_delete(args.kv_key, if_version=args.if_version)
    return client.kv_list(prefix=args.prefix, limit=args.limit, cursor=args.cursor)


def _cert(client: BlockingClient, args: argparse.Namespace) -> None:
    if args.cert_op == "ca":
        sys.stdout.write(client.cert_ca(args.app_id))
        sys.stdout.flush()
        return
    try:
        csr = Path(args.csr).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.csr}: {exc.strerror or exc}") from None
    result = client.cert_sign(csr, days=args.days)
    _print_json({"certificate": result["certificate"], "ca": result["ca"]})


# --- admin (operators' transactions; KMS nodes never send any) ------------------------------


def _admin_key(args: argparse.Namespace) -> bytes:
    if _in_enclave(default=False):
        raise CliError("admin commands use local key files and are refused in an enclave")
    try:
        return parse_private_key(Path(args.key).read_text())
    except OSError as exc:
        raise CliError(f"cannot read {args.key}: {exc.strerror or exc}") from None
    except ValueError:
        raise CliError(f"{args.key} does not hold a valid private key") from None


_APP_STATUS = {"ACTIVE": 0, "INACTIVE": 1, "REVOKED": 2}
_INSTANCE_STATUS = {"STOPPED": 1, "FAILED": 2}


def _cmd_admin(args: argparse.Namespace) -> int:
    if args.admin_op == "wait-safe":
        return _cmd_wait_safe(args)
    if args.admin_op == "guardian-set":
        if not args.rpc:
            raise CliError(
                "admin guardian-set reads the chain and needs --rpc: "
                "novakms admin --rpc URL guardian-set --kms-registry ADDR"
            )
        guardians = trio.run(_read_guardians, args)
        _print_json(guardians.to_json())
        return 0
    missing = [flag for flag, value in (("--rpc", args.rpc), ("--key", args.key)) if not value]
    if missing:
        raise CliError(
            f"admin {args.admin_op} sends transactions and needs {' and '.join(missing)}: "
            f"novakms admin --rpc URL --key FILE {args.admin_op} ..."
        )
    if args.admin_op == "set-guardians":
        args.guardian_set = _guardians_argument(args.guardian, args.threshold)
    key = _admin_key(args)
    try:
        result = trio.run(_admin, args, key)
    except TransactionFailed as exc:
        raise _reverted(exc) from None
    _print_json(result)
    return 0


def _guardians_argument(items: Sequence[str], threshold_text: str) -> GuardianSet:
    """The ``--guardian WALLET:ENCKEY`` list and ``--threshold``, checked by the contract's
    rules before anything is sent (version 1 stands in for the one the contract assigns)."""
    wallets: list[str] = []
    keys: list[bytes] = []
    for item in items:
        wallet, _, key = item.partition(":")
        try:
            wallets.append(normalize_wallet(wallet))
            keys.append(parse_enc_key(key))
        except ValueError:
            raise CliError(
                f"--guardian {item!r}: expected WALLET:ENCKEY, "
                "an address (0x + 40 hex) and an X25519 public key (0x + 64 hex)"
            ) from None
    if re.fullmatch(r"[0-9]{1,3}", threshold_text) is None:
        raise CliError(f"--threshold {threshold_text!r} is not a small non-negative integer")
    try:
        return guardian_set(
            wallets=wallets,
            enc_keys=keys,
            threshold=int(threshold_text),
            version=1,
            allow_empty=False,
        )
    except GuardianSetError as exc:
        raise CliError(f"invalid guardian set (KMSRegistry would refuse it): {exc}") from None


def _reverted(exc: TransactionFailed) -> ChainError:
    """The failed transaction's error, with the registries' custom error named when known."""
    data = exc.revert_data
    name = abi.kms_registry().describe_error(data) or abi.nova_app_registry().describe_error(data)
    if name is None or data is None:
        return exc
    raw = f"custom error 0x{bytes(data[:4]).hex()}"
    message = exc.message.replace(raw, name) if raw in exc.message else f"{exc.message}: {name}"
    details = {"revert": name} if exc.tx_hash is None else {"revert": name, "tx": exc.tx_hash}
    return ChainError(message, **details)


async def _read_guardians(args: argparse.Namespace) -> GuardianSet:
    async with JsonRpcClient(args.rpc, timeout=args.rpc_timeout) as rpc:
        # Only KMSRegistry is read: the NovaAppRegistry address is never used here.
        reader = RegistryReader(
            rpc,
            nova_app_registry=ZERO_ADDRESS,
            kms_registry=args.kms_registry,
            block_tag=args.block_tag,
        )
        return await reader.guardians()


StatusFetcher = Callable[[], Awaitable[Mapping[str, Any]]]


async def wait_safe_to_stop(
    fetch_status: StatusFetcher, *, timeout: float, interval: float
) -> float:
    """Poll a node's ``status`` until it reports ``safe_to_stop: true``.

    A status without ``safe_to_stop`` counts as not safe (``not_reported``); a node that cannot
    be reached (``unreachable``) or answers with an error (its ``reason`` or code) is asked
    again, since it may be restarting.

    Args:
        fetch_status: one ``status`` call; raises NovaKMSError when the node does not answer.
        timeout: seconds to wait in all, the call in flight included.
        interval: seconds between calls.

    Returns:
        The seconds waited (trio's clock).

    Raises:
        Unavailable: ``reason="not_safe_to_stop"`` after ``timeout``, with ``last_reason`` (the
            last reason seen, None when the node gave none) and ``timeout_s``.
    """
    start = trio.current_time()
    last_reason: str | None = "no_answer"
    with trio.move_on_after(timeout):
        while True:
            try:
                status = await fetch_status()
            except TransportError:
                last_reason = "unreachable"
            except NovaKMSError as exc:
                last_reason = str(exc.details.get("reason", exc.code))
            else:
                if status.get("safe_to_stop") is True:
                    return trio.current_time() - start
                if "safe_to_stop" in status:
                    reason = status.get("safe_to_stop_reason")
                    last_reason = None if reason is None else str(reason)
                else:
                    last_reason = "not_reported"
            await trio.sleep(interval)
    raise Unavailable(
        f"the node did not report safe_to_stop within {timeout:g} s (last reason: {last_reason})",
        reason="not_safe_to_stop",
        last_reason=last_reason,
        timeout_s=timeout,
    )


def _cmd_wait_safe(args: argparse.Namespace) -> int:
    try:
        parse_address(args.node)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.timeout < 0 or args.interval <= 0:
        raise CliError("--timeout must be at least 0 and --interval more than 0")

    async def fetch_status() -> Mapping[str, Any]:
        # Anonymous, a fresh connection per call: a restarting node is simply dialed again.
        async with await Client.connect(args.node, timeout=_WAIT_SAFE_CALL_TIMEOUT) as kms:
            return await kms.status()

    waited = trio.run(
        functools.partial(
            wait_safe_to_stop, fetch_status, timeout=args.timeout, interval=args.interval
        )
    )
    _print_json({"node": args.node, "safe_to_stop": True, "waited_s": round(waited, 3)})
    return 0


def _fingerprint_bytes(fingerprint: str) -> bytes:
    raw = fingerprint.removeprefix("0x")
    try:
        if len(raw) == 64:
            return bytes.fromhex(raw)
    except ValueError:
        pass
    raise CliError("a fingerprint is 0x + 64 hex (the fingerprint `status` reports)")


async def _node_fingerprint(address: str) -> str:
    """The fingerprint of the secret a node holds, from its ``status`` (anonymous)."""
    try:
        async with await Client.connect(address, timeout=10) as kms:
            status = await kms.status()
    except NovaKMSError as exc:
        raise CliError(f"cannot read the fingerprint from {address}: {exc.message}") from None
    fingerprint = status.get("secret", {}).get("fingerprint")
    if not isinstance(fingerprint, str):
        raise CliError(f"{address} holds no master secret yet (status.secret.fingerprint)")
    return fingerprint


async def _admin(args: argparse.Namespace, key: bytes) -> dict[str, Any]:
    async with JsonRpcClient(args.rpc, timeout=args.rpc_timeout) as rpc:
        sender = TxSender(rpc, key)
        nova, kms = abi.nova_app_registry(), abi.kms_registry()
        if args.admin_op == "deploy":
            if args.nova_app_registry:
                registry = args.nova_app_registry
                kms_address = await sender.deploy(kms.encode_constructor(registry))
                return {"nova_app_registry": registry.lower(), "kms_registry": kms_address.lower()}
            registry, kms_address = await deploy_registries(sender)
            return {"nova_app_registry": registry, "kms_registry": kms_address}
        if args.admin_op == "set-app-id":
            receipt = await sender.send(
                args.kms_registry, kms.encode_call("setKmsAppId", args.app_id)
            )
        elif args.admin_op == "pin-secret":
            fingerprint = args.fingerprint or await _node_fingerprint(args.from_node)
            receipt = await sender.send(
                args.kms_registry,
                kms.encode_call("setMasterSecretHash", _fingerprint_bytes(fingerprint)),
            )
        elif args.admin_op == "reset-pin":
            receipt = await sender.send(args.kms_registry, kms.encode_call("resetMasterSecretHash"))
        elif args.admin_op == "set-guardians":
            guardians: GuardianSet = args.guardian_set
            receipt = await set_guardians(
                sender,
                args.kms_registry,
                guardians.wallets,
                guardians.enc_keys,
                guardians.threshold,
            )
        elif args.admin_op == "clear-guardians":
            receipt = await clear_guardians(sender, args.kms_registry)
        elif args.admin_op == "app-status":
            call = nova.encode_call("updateAppStatus", args.app_id, _APP_STATUS[args.status])
            receipt = await sender.send(args.registry, call)
        elif args.admin_op == "version-status":
            function = "deprecateVersion" if args.status == "DEPRECATED" else "revokeVersion"
            receipt = await sender.send(
                args.registry, nova.encode_call(function, args.app_id, args.version_id)
            )
        else:
            call = nova.encode_call(
                "updateInstanceStatus", args.instance_id, _INSTANCE_STATUS[args.status]
            )
            receipt = await sender.send(args.registry, call)
        return {"tx": receipt["transactionHash"], "block": int(str(receipt["blockNumber"]), 16)}


# --- parser -----------------------------------------------------------------------------------


def _address(text: str) -> str:
    """argparse type for contract addresses: 0x + 40 hex, any case; returned lowercase."""
    try:
        return normalize_wallet(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an address (0x + 40 hex digits)"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """The ``novakms`` argument parser."""
    parser = argparse.ArgumentParser(prog="novakms", description=__doc__)
    parser.add_argument("--version", action="version", version=f"novakms {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("NOVAKMS_LOG_LEVEL", "INFO"))
    commands = parser.add_subparsers(dest="command", required=True)
    limit_help = "override a limit, e.g. --limit max_inflight=64 (see protocol/PROTOCOL.md §10)"

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
        "--limit", action="append", default=[], metavar="NAME=VALUE", help=limit_help
    )
    serve.add_argument("--odyn-url", default=DEFAULT_ODYN_URL, help="enclave mode: the Odyn API")
    serve.add_argument(
        "--peer-proxy",
        type=_proxy_address,
        help="dial TCP peers through this HTTP CONNECT proxy (e.g. the enclave's egress proxy): "
        "HOST:PORT or vsock://CID:PORT",
    )
    _chain_arguments(serve)
    serve.set_defaults(func=_cmd_serve)

    dev = commands.add_parser(
        "dev",
        help="run a local development KMS with two demo apps",
        description="Run a local development KMS: anvil with the registries and N nodes, each "
        "its own `novakms serve` process (or, with --chain static, one in-process node). "
        "Prints one JSON line on stdout when all are ready and runs until SIGINT or SIGTERM; "
        "a node that exits after that is reported on stderr as a JSON line "
        '{"event": "node_exited", "node", "wallet", "pid", "exit", "signal"} and the others '
        "keep serving. The command's own stderr lines are JSON objects; node logs share "
        "stderr and are not.",
    )
    dev.add_argument("--port", type=int, default=7400, help="TCP port (0 picks a free one)")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument(
        "--master-secret-file",
        help="development only: file with the 64-hex master secret (default: a random one)",
    )
    dev.add_argument("--master-secret", help=argparse.SUPPRESS)  # refused: see _cmd_dev
    dev.add_argument(
        "--state-dir", help="where dev keys and the registry live (default: a new temp dir)"
    )
    dev.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE", help=limit_help)
    dev.add_argument(
        "--chain",
        choices=("anvil", "static"),
        default="anvil",
        help="anvil (default): a local chain with the registries; static: a registry file",
    )
    dev.add_argument("--chain-port", type=int, default=0, help="anvil's port (0 picks a free one)")
    dev.add_argument("--poll-interval", type=float, default=1.0, help="seconds between chain polls")
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
        type=float,
        default=1.0,
        metavar="S",
        help="with --restart: seconds from a node's exit to its restart (default 1.0)",
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

    client = commands.add_parser("client", help="call a KMS node")
    client.add_argument("--node", required=True, help="HOST:PORT, unix:///path or vsock://CID:PORT")
    client.add_argument("--key", help="the app's wallet key file (0x + 64 hex)")
    client.add_argument(
        "--odyn", nargs="?", const="http://127.0.0.1:18000", help="sign with the enclave's Odyn API"
    )
    client.add_argument("--expect-wallet", help="refuse a server that does not prove this wallet")
    client.add_argument("--timeout", type=float, default=10.0)
    ops = client.add_subparsers(dest="op", required=True)
    ops.add_parser("health")
    ops.add_parser("status")
    ops.add_parser("nodes")
    derive = ops.add_parser("derive")
    derive.add_argument("--path", required=True)
    derive.add_argument("--context")
    derive.add_argument("--length", type=int)
    kv = ops.add_parser("kv", help="the app's key-value store").add_subparsers(
        dest="kv_op", required=True
    )
    kv_get = kv.add_parser("get")
    kv_get.add_argument("kv_key", metavar="KEY")
    kv_put = kv.add_parser("put")
    kv_put.add_argument("kv_key", metavar="KEY")
    source = kv_put.add_mutually_exclusive_group(required=True)
    source.add_argument("--value", help="the value as UTF-8 text")
    source.add_argument("--value-file", help="read the value's bytes from a file")
    kv_put.add_argument("--ttl-ms", type=int)
    kv_put.add_argument(
        "--acks", type=int, help="answer only once this many peers have stored the write"
    )
    kv_put.add_argument(
        "--if-version", help="a version from an earlier read, or 'absent' for new keys only"
    )
    kv_delete = kv.add_parser("delete")
    kv_delete.add_argument("kv_key", metavar="KEY")
    kv_delete.add_argument("--if-version")
    kv_list = kv.add_parser("list")
    kv_list.add_argument("--prefix")
    kv_list.add_argument("--limit", type=int)
    kv_list.add_argument("--cursor")
    cert = ops.add_parser("cert", help="per-app certificates").add_subparsers(
        dest="cert_op", required=True
    )
    cert.add_parser("ca").add_argument("--app-id", type=int, required=True)
    cert_sign = cert.add_parser("sign")
    cert_sign.add_argument("--csr", required=True, help="CSR file, PEM or DER")
    cert_sign.add_argument("--days", type=int)
    client.set_defaults(func=_cmd_client)

    admin = commands.add_parser(
        "admin",
        help="operator tools: transactions (nodes never send any), wait-safe",
        description="Operator tools. The chain subcommands send transactions and need --rpc "
        "and --key, given before the subcommand; guardian-set only reads (--rpc, no key); "
        "wait-safe needs neither.",
    )
    admin.add_argument("--rpc", metavar="URL", help="JSON-RPC URL (chain subcommands)")
    admin.add_argument(
        "--key",
        metavar="FILE",
        help="the admin's key file, owner of the registries (chain subcommands)",
    )
    admin.add_argument("--rpc-timeout", type=float, default=30.0)
    admin_ops = admin.add_subparsers(dest="admin_op", required=True)
    deploy = admin_ops.add_parser(
        "deploy", help="deploy KMSRegistry (and the development registry)"
    )
    deploy.add_argument(
        "--nova-app-registry",
        type=_address,
        help="use this NovaAppRegistry, do not deploy the dev one",
    )
    set_app_id = admin_ops.add_parser("set-app-id", help="KMSRegistry.setKmsAppId (once)")
    set_app_id.add_argument("--kms-registry", type=_address, required=True)
    set_app_id.add_argument("--app-id", type=int, required=True)
    pin = admin_ops.add_parser("pin-secret", help="pin keccak256(master secret) in KMSRegistry")
    pin.add_argument("--kms-registry", type=_address, required=True)
    pinned = pin.add_mutually_exclusive_group(required=True)
    pinned.add_argument("--fingerprint", help="0x + 64 hex, as `status` reports it")
    pinned.add_argument(
        "--from-node", metavar="ADDR", help="read the fingerprint from this node's `status`"
    )
    admin_ops.add_parser("reset-pin", help="remove the pin").add_argument(
        "--kms-registry", type=_address, required=True
    )
    set_guardians_op = admin_ops.add_parser(
        "set-guardians",
        help="KMSRegistry.setGuardians: replace the guardian set",
        description="Replace the guardian set for threshold backup of the master secret "
        "(1..16 guardians, 1 <= threshold <= guardians); the contract bumps its version.",
    )
    set_guardians_op.add_argument("--kms-registry", type=_address, required=True)
    set_guardians_op.add_argument(
        "--threshold", required=True, metavar="K", help="guardians needed to recover"
    )
    set_guardians_op.add_argument(
        "--guardian",
        action="append",
        required=True,
        metavar="WALLET:ENCKEY",
        help="a guardian's address and X25519 HPKE public key (0x + 64 hex); repeat, in order",
    )
    admin_ops.add_parser(
        "clear-guardians", help="KMSRegistry.clearGuardians: empty the guardian set"
    ).add_argument("--kms-registry", type=_address, required=True)
    guardian_set_op = admin_ops.add_parser(
        "guardian-set",
        help="print KMSRegistry's guardian set (read-only: needs --rpc, no key)",
    )
    guardian_set_op.add_argument("--kms-registry", type=_address, required=True)
    guardian_set_op.add_argument(
        "--block-tag",
        default="latest",
        choices=("latest", "safe", "finalized"),
        help="read at this block (default latest; nodes read at finalized)",
    )
    app_status = admin_ops.add_parser(
        "app-status", help="development registry: set an app's status"
    )
    app_status.add_argument("--registry", type=_address, required=True)
    app_status.add_argument("--app-id", type=int, required=True)
    app_status.add_argument("--status", choices=sorted(_APP_STATUS), required=True)
    version_status = admin_ops.add_parser(
        "version-status", help="development registry: deprecate/revoke"
    )
    version_status.add_argument("--registry", type=_address, required=True)
    version_status.add_argument("--app-id", type=int, required=True)
    version_status.add_argument("--version-id", type=int, required=True)
    version_status.add_argument("--status", choices=("DEPRECATED", "REVOKED"), required=True)
    instance_status = admin_ops.add_parser(
        "instance-status", help="development registry: stop an instance"
    )
    instance_status.add_argument("--registry", type=_address, required=True)
    instance_status.add_argument("--instance-id", type=int, required=True)
    instance_status.add_argument("--status", choices=sorted(_INSTANCE_STATUS), required=True)
    wait_safe = admin_ops.add_parser(
        "wait-safe",
        help="wait until a node's status reports safe_to_stop (no chain, no key)",
        description="Poll the node's status over an anonymous connection until it reports "
        "safe_to_stop: true, retrying while it cannot be reached (it may be restarting). "
        'Prints {"node", "safe_to_stop": true, "waited_s"}; after --timeout, an unavailable '
        "error with reason not_safe_to_stop and the last reason seen.",
    )
    wait_safe.add_argument(
        "--node", required=True, metavar="ADDR", help="HOST:PORT, unix:///path or vsock://CID:PORT"
    )
    wait_safe.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds to wait in all (default 300)",
    )
    wait_safe.add_argument(
        "--interval",
        type=float,
        default=0.2,
        metavar="S",
        help="seconds between status calls (default 0.2)",
    )
    admin.set_defaults(func=_cmd_admin)
    add_guardian_parser(commands)
    return parser


def _chain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chain-rpc", help=f"JSON-RPC URL (enclave default {ENCLAVE_CHAIN_RPC})")
    parser.add_argument(
        "--nova-app-registry", type=_address, help="NovaAppRegistry (proxy) address"
    )
    parser.add_argument("--kms-registry", type=_address, help="KMSRegistry address")
    parser.add_argument("--block-tag", default="finalized", choices=("finalized", "safe", "latest"))
    parser.add_argument("--poll-interval", type=float, default=_DEFAULT_CHAIN.poll_interval)
    parser.add_argument(
        "--auth-ttl", type=float, default=_DEFAULT_CHAIN.ttl, help="backstop TTL, seconds"
    )
    parser.add_argument("--rpc-timeout", type=float, default=5.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``novakms`` command."""
    args = build_parser().parse_args(argv)
    configure(args.log_level)
    try:
        return int(args.func(args))
    except CliError as exc:
        _fail("bad_request", str(exc), EXIT_USAGE, **exc.details)
    except NovaKMSError as exc:
        _fail(exc.code, exc.message, **exc.details)
    except KeyboardInterrupt:
        return 130
