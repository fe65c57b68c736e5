"""``novakms admin``: operator tools. KMS nodes never send a transaction; operators do, here.

Holds the subcommand's arguments and:

* the chain subcommands (``deploy``, ``set-app-id``, ``pin-secret``, ``reset-pin``,
  ``set-guardians``, ``clear-guardians`` and the development registry's ``app-status``,
  ``version-status``, ``instance-status``): they send transactions with the admin's key file,
  only to an address that holds a contract; a revert names the registries' custom error and
  fails with the code it means (``forbidden``, ``conflict``, ``not_found``, ``bad_request``:
  :mod:`novakms.admin.refusals`), exit code 1;
* ``guardian-set``: reads KMSRegistry's guardian set (no key);
* ``wait-safe``: polls a node's ``status`` until it reports ``safe_to_stop``
  (:func:`wait_safe_to_stop`; no chain, no key).
"""

from __future__ import annotations

import argparse
import functools
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from novakms.auth.guardians import GuardianSet, guardian_set, parse_enc_key
from novakms.auth.model import ZERO_ADDRESS
from novakms.cli.common import (
    Option,
    add_options,
    address_type,
    fingerprint_bytes,
    fingerprint_type,
    http_url_type,
    in_enclave,
    leaf_parsers,
    node_address_type,
    non_negative_seconds,
    positive_seconds,
    print_json,
)
from novakms.crypto.eth import normalize_wallet, parse_private_key
from novakms.errors import (
    CliError,
    GuardianSetError,
    NovaKMSError,
    TransactionFailed,
    TransportError,
    Unavailable,
)

# trio, the chain libraries (eth-account, eth-abi) and the client load inside the functions
# that use them: a usage error (and `novakms --help`) costs none of them.

__all__ = ["StatusFetcher", "add_parser", "wait_safe_to_stop"]

_OPTIONS = (
    Option(
        ("--rpc",),
        {"type": http_url_type, "metavar": "URL", "help": "JSON-RPC URL (chain subcommands)"},
    ),
    Option(
        ("--key",),
        {
            "metavar": "FILE",
            "help": "the admin's key file, owner of the registries (subcommands that send)",
        },
    ),
    Option(
        ("--rpc-timeout",),
        {
            "type": positive_seconds,
            "default": 30.0,
            "metavar": "S",
            "help": "seconds for each JSON-RPC call, a transaction's receipt included",
        },
    ),
)
_EPILOG = """examples:
  novakms admin --rpc http://127.0.0.1:8545 --key admin.key deploy
  novakms admin --rpc URL --key admin.key set-app-id --kms-registry 0x… --app-id 1
  novakms admin --rpc URL --key admin.key pin-secret --kms-registry 0x… --from-node 10.0.0.5:7400
  novakms admin --rpc URL guardian-set --kms-registry 0x…
  novakms admin wait-safe --node 10.0.0.5:7400 --timeout 600
"""
_WAIT_SAFE_CALL_TIMEOUT = 5.0  # seconds for one connect + status of `admin wait-safe`
_APP_STATUS = {"ACTIVE": 0, "INACTIVE": 1, "REVOKED": 2}
_INSTANCE_STATUS = {"STOPPED": 1, "FAILED": 2}


_KMS_REGISTRY: dict[str, Any] = {
    "type": address_type,
    "required": True,
    "metavar": "ADDR",
    "help": "the KMSRegistry contract",
}
_NOVA_APP_REGISTRY: dict[str, Any] = {
    "type": address_type,
    "required": True,
    "metavar": "ADDR",
    "help": "the (development) NovaAppRegistry contract",
}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``novakms admin`` and its subcommands.

    Args:
        commands: the top-level subparsers of ``novakms``.
    """
    admin = commands.add_parser(
        "admin",
        help="operator tools: transactions (nodes never send any), wait-safe",
        description="Operator tools. The chain subcommands send transactions and need --rpc "
        "and --key (before or after the subcommand); guardian-set only reads (--rpc, no key); "
        "wait-safe needs neither. A transaction is never sent to an address without a "
        "contract; a contract's refusal is reported by its error's name with the code "
        "forbidden, conflict, not_found or bad_request.",
        epilog=_EPILOG,
    )
    add_options([admin], _OPTIONS, repeated=False)
    admin_ops = admin.add_subparsers(dest="admin_op", required=True, metavar="SUBCOMMAND")
    deploy = admin_ops.add_parser(
        "deploy", help="deploy KMSRegistry (and the development registry)"
    )
    deploy.add_argument(
        "--nova-app-registry",
        type=address_type,
        help="use this NovaAppRegistry, do not deploy the dev one",
    )
    set_app_id = admin_ops.add_parser("set-app-id", help="KMSRegistry.setKmsAppId (once)")
    set_app_id.add_argument("--kms-registry", **_KMS_REGISTRY)
    set_app_id.add_argument(
        "--app-id", type=int, required=True, help="the KMS's own app id in NovaAppRegistry"
    )
    pin = admin_ops.add_parser("pin-secret", help="pin keccak256(master secret) in KMSRegistry")
    pin.add_argument("--kms-registry", **_KMS_REGISTRY)
    pinned = pin.add_mutually_exclusive_group(required=True)
    pinned.add_argument(
        "--fingerprint", type=fingerprint_type, help="0x + 64 hex, as `status` reports it"
    )
    pinned.add_argument(
        "--from-node",
        type=node_address_type,
        metavar="ADDR",
        help="read the fingerprint from this node's `status`",
    )
    admin_ops.add_parser("reset-pin", help="remove the pin").add_argument(
        "--kms-registry", **_KMS_REGISTRY
    )
    set_guardians_op = admin_ops.add_parser(
        "set-guardians",
        help="KMSRegistry.setGuardians: replace the guardian set",
        description="Replace the guardian set for threshold backup of the master secret "
        "(1..16 guardians, 1 <= threshold <= guardians); the contract bumps its version.",
    )
    set_guardians_op.add_argument("--kms-registry", **_KMS_REGISTRY)
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
    ).add_argument("--kms-registry", **_KMS_REGISTRY)
    guardian_set_op = admin_ops.add_parser(
        "guardian-set",
        help="print KMSRegistry's guardian set (read-only: needs --rpc, no key)",
    )
    guardian_set_op.add_argument("--kms-registry", **_KMS_REGISTRY)
    guardian_set_op.add_argument(
        "--block-tag",
        default="latest",
        choices=("latest", "safe", "finalized"),
        help="read at this block (nodes read at finalized)",
    )
    app_status = admin_ops.add_parser(
        "app-status", help="development registry: set an app's status"
    )
    app_status.add_argument("--registry", **_NOVA_APP_REGISTRY)
    app_status.add_argument("--app-id", type=int, required=True, help="the app's id")
    app_status.add_argument(
        "--status", choices=sorted(_APP_STATUS), required=True, help="the new status"
    )
    version_status = admin_ops.add_parser(
        "version-status", help="development registry: deprecate/revoke"
    )
    version_status.add_argument("--registry", **_NOVA_APP_REGISTRY)
    version_status.add_argument("--app-id", type=int, required=True, help="the app's id")
    version_status.add_argument(
        "--version-id", type=int, required=True, help="the version's id within the app"
    )
    version_status.add_argument(
        "--status", choices=("DEPRECATED", "REVOKED"), required=True, help="the new status"
    )
    instance_status = admin_ops.add_parser(
        "instance-status", help="development registry: stop an instance"
    )
    instance_status.add_argument("--registry", **_NOVA_APP_REGISTRY)
    instance_status.add_argument("--instance-id", type=int, required=True, help="the instance's id")
    instance_status.add_argument(
        "--status", choices=sorted(_INSTANCE_STATUS), required=True, help="the new status"
    )
    wait_safe = admin_ops.add_parser(
        "wait-safe",
        help="wait until a node's status reports safe_to_stop (no chain, no key)",
        description="Poll the node's status over an anonymous connection until it reports "
        "safe_to_stop: true, retrying while it cannot be reached (it may be restarting). "
        'Prints {"node", "safe_to_stop": true, "waited_s"}; after --timeout, an unavailable '
        "error with reason not_safe_to_stop and the last reason seen.",
    )
    wait_safe.add_argument(
        "--node",
        required=True,
        type=node_address_type,
        metavar="ADDR",
        help="HOST:PORT, unix:///path or vsock://CID:PORT",
    )
    wait_safe.add_argument(
        "--timeout",
        type=non_negative_seconds,
        default=300.0,
        metavar="S",
        help="seconds to wait in all",
    )
    wait_safe.add_argument(
        "--interval",
        type=positive_seconds,
        default=0.2,
        metavar="S",
        help="seconds between status calls",
    )
    add_options(leaf_parsers(admin), _OPTIONS, repeated=True)
    admin.set_defaults(func=_cmd_admin)


def _admin_key(args: argparse.Namespace) -> bytes:
    if in_enclave(default=False):
        raise CliError("admin commands use local key files and are refused in an enclave")
    try:
        return parse_private_key(Path(args.key).read_text())
    except OSError as exc:
        raise CliError(f"cannot read {args.key}: {exc.strerror or exc}") from None
    except ValueError:
        raise CliError(f"{args.key} does not hold a valid private key") from None


def _cmd_admin(args: argparse.Namespace) -> int:
    if args.admin_op == "wait-safe":
        return _cmd_wait_safe(args)
    if args.admin_op == "guardian-set":
        if not args.rpc:
            raise CliError(
                "admin guardian-set reads the chain and needs --rpc: "
                "novakms admin --rpc URL guardian-set --kms-registry ADDR"
            )
        import trio

        guardians = trio.run(_read_guardians, args)
        print_json(guardians.to_json())
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
    import trio

    from novakms.admin.refusals import refusal_error

    try:
        result = trio.run(_admin, args, key)
    except TransactionFailed as exc:
        raise refusal_error(exc) from None
    print_json(result)
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


async def _read_guardians(args: argparse.Namespace) -> GuardianSet:
    from novakms.chain.registry import RegistryReader
    from novakms.chain.rpc import JsonRpcClient

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
    import trio

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
    import trio

    from novakms.client.aio import Client

    async def fetch_status() -> Mapping[str, Any]:
        # Anonymous, a fresh connection per call: a restarting node is simply dialed again.
        async with await Client.connect(args.node, timeout=_WAIT_SAFE_CALL_TIMEOUT) as kms:
            return (await kms.status()).document

    waited = trio.run(
        functools.partial(
            wait_safe_to_stop, fetch_status, timeout=args.timeout, interval=args.interval
        )
    )
    print_json({"node": args.node, "safe_to_stop": True, "waited_s": round(waited, 3)})
    return 0


async def _node_fingerprint(address: str) -> str:
    """The fingerprint of the secret a node holds, from its ``status`` (anonymous)."""
    from novakms.client.aio import Client

    try:
        async with await Client.connect(address, timeout=10) as kms:
            status = await kms.status()
    except NovaKMSError as exc:
        raise CliError(f"cannot read the fingerprint from {address}: {exc.message}") from None
    fingerprint = status.secret.fingerprint
    if fingerprint is None:
        raise CliError(f"{address} holds no master secret yet (status.secret.fingerprint)")
    return fingerprint


async def _admin(args: argparse.Namespace, key: bytes) -> dict[str, Any]:
    from novakms.admin.tx import TxSender
    from novakms.chain import abi
    from novakms.chain.rpc import JsonRpcClient
    from novakms.dev.world import clear_guardians, deploy_registries, set_guardians

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
                kms.encode_call("setMasterSecretHash", fingerprint_bytes(fingerprint)),
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
