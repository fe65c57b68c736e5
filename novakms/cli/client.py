"""``novakms client``: call a KMS node as an app, over the blocking client.

Holds the subcommand's arguments (``health``, ``status``, ``nodes``, ``derive``, ``kv …``,
``cert …``, ``keys …``, ``sign``, ``encrypt``, ``decrypt``), the choice of signer (a key file,
or the enclave's Odyn API with ``--odyn``) and the JSON each operation prints.

Either one node (``--node``, with ``--expect-wallet`` to pin its wallet) or the cluster the
chain lists (``--chain-rpc``, ``--kms-registry``, ``--nova-app-registry``): then the blocking
cluster client finds the nodes and their wallets in the registries, uses a healthy one and
fails over as :mod:`novakms.client.cluster_core` says. The JSON printed is the same.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from novakms.cli.common import (
    Option,
    add_options,
    address_type,
    http_url_type,
    in_enclave,
    leaf_parsers,
    node_address_type,
    positive_seconds,
    print_json,
)
from novakms.client.blocking import BlockingClient
from novakms.client.results import Nodes, PublicKey
from novakms.config import DEFAULT_ODYN_URL
from novakms.crypto.signer import LocalSigner, SyncSigner
from novakms.errors import CliError

if TYPE_CHECKING:  # the cluster client (and the chain reading behind it) loads only when used
    from novakms.client.blocking_cluster import BlockingClusterClient

    _Kms = BlockingClient | BlockingClusterClient

__all__ = ["add_parser"]


#: The options of ``novakms client`` itself: before or after the operation.
_OPTIONS = (
    Option(
        ("--node",),
        {
            "type": node_address_type,
            "metavar": "ADDR",
            "help": "the node: HOST:PORT, tcp://HOST:PORT, unix:///path or vsock://CID:PORT",
        },
    ),
    Option(
        ("--chain-rpc",),
        {
            "type": http_url_type,
            "metavar": "URL",
            "help": "without --node: find the nodes in the registries on this chain",
        },
    ),
    Option(
        ("--kms-registry",),
        {"type": address_type, "metavar": "ADDR", "help": "KMSRegistry (with --chain-rpc)"},
    ),
    Option(
        ("--nova-app-registry",),
        {"type": address_type, "metavar": "ADDR", "help": "NovaAppRegistry (with --chain-rpc)"},
    ),
    Option(
        ("--block-tag",),
        {
            "choices": ["finalized", "safe", "latest"],
            "default": "finalized",
            "help": "the block the registries are read at (with --chain-rpc)",
        },
    ),
    Option(
        ("--key",),
        {"metavar": "FILE", "help": "sign as the app with this wallet key file (0x + 64 hex)"},
    ),
    Option(
        ("--odyn",),
        {"action": "store_true", "help": "sign as the app with the enclave's Odyn API"},
    ),
    Option(
        ("--odyn-url",),
        {
            "metavar": "URL",
            "type": http_url_type,
            "default": DEFAULT_ODYN_URL,
            "help": "the Odyn API, with --odyn",
        },
    ),
    Option(
        ("--expect-wallet",),
        {
            "type": address_type,
            "metavar": "WALLET",
            "help": "refuse a node that does not prove this wallet (0x + 40 hex; with --node)",
        },
    ),
    Option(
        ("--timeout",),
        {
            "type": positive_seconds,
            "default": 10.0,
            "metavar": "S",
            "help": "seconds for connecting and for each call",
        },
    ),
)

_EPILOG = """The options above may also follow the operation.

examples:
  novakms client --node 127.0.0.1:7400 health
  novakms client --node 127.0.0.1:7400 --key app.key derive --path app/db --length 32
  novakms client --node 127.0.0.1:7400 --key app.key kv put greeting --value hello
  novakms client --node 127.0.0.1:7400 --key app.key kv get greeting --output text
  novakms client --odyn --node vsock://3:7400 cert sign --csr app.csr --out app.pem
  novakms client --chain-rpc URL --kms-registry 0x… --nova-app-registry 0x… --key app.key nodes
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``novakms client`` and its operations.

    Args:
        commands: the top-level subparsers of ``novakms``.
    """
    client = commands.add_parser(
        "client",
        help="call a KMS node (or the cluster on chain)",
        description="Call a KMS node as an app (--key or --odyn) or anonymously (health, "
        "status, nodes, cert ca), either one node (--node) or the cluster the chain lists "
        "(--chain-rpc with the registries). Prints the answer as one JSON line.",
        epilog=_EPILOG,
    )
    add_options([client], _OPTIONS, repeated=False)
    ops = client.add_subparsers(dest="op", required=True, metavar="OP")
    ops.add_parser("health", help="the node's health (anonymous)")
    ops.add_parser("status", help="the node's status document (anonymous)")
    ops.add_parser("nodes", help="the cluster's nodes as the node sees them")
    derive = ops.add_parser("derive", help="derive a key for the app")
    derive.add_argument("--path", required=True, help="the derivation path (text)")
    derive.add_argument("--context", help="optional context (text) mixed into the derivation")
    derive.add_argument("--length", type=int, help="key length in bytes (default: the node's, 32)")
    kv = ops.add_parser("kv", help="the app's key-value store").add_subparsers(
        dest="kv_op", required=True, metavar="KV_OP"
    )
    kv_get = kv.add_parser("get", help="read a key")
    kv_get.add_argument("kv_key", metavar="KEY", help="the key")
    kv_get.add_argument(
        "--output",
        choices=("json", "text", "raw"),
        default="json",
        help="json: the item, value in base64 (default); text: the value alone as UTF-8 text; "
        "raw: the value's bytes alone (nothing added either way)",
    )
    kv_put = kv.add_parser("put", help="write a key")
    kv_put.add_argument("kv_key", metavar="KEY", help="the key")
    source = kv_put.add_mutually_exclusive_group(required=True)
    source.add_argument("--value", help="the value as UTF-8 text")
    source.add_argument("--value-file", metavar="FILE", help="read the value's bytes from FILE")
    kv_put.add_argument(
        "--ttl-ms", type=int, metavar="MS", help="expire after MS milliseconds (default: never)"
    )
    kv_put.add_argument(
        "--acks",
        type=int,
        help="answer only once this many peers have stored the write (default: 0)",
    )
    kv_put.add_argument(
        "--if-version",
        metavar="VERSION",
        help="write only over this version (from an earlier read), or 'absent' for new keys only",
    )
    kv_delete = kv.add_parser("delete", help="delete a key")
    kv_delete.add_argument("kv_key", metavar="KEY", help="the key")
    kv_delete.add_argument(
        "--if-version", metavar="VERSION", help="delete only this version (from an earlier read)"
    )
    kv_list = kv.add_parser("list", help="list the app's keys, a page at a time")
    kv_list.add_argument("--prefix", help="only keys that start with this text")
    kv_list.add_argument("--limit", type=int, help="keys per page (default: the node's page size)")
    kv_list.add_argument("--cursor", help="the cursor of the previous page")
    cert = ops.add_parser("cert", help="per-app certificates").add_subparsers(
        dest="cert_op", required=True, metavar="CERT_OP"
    )
    cert.add_parser("ca", help="an app's CA certificate, PEM (anonymous)").add_argument(
        "--app-id", type=int, required=True, help="the app's id in NovaAppRegistry"
    )
    cert_sign = cert.add_parser("sign", help="have the app's CA sign a CSR")
    cert_sign.add_argument("--csr", required=True, metavar="FILE", help="CSR file, PEM or DER")
    cert_sign.add_argument(
        "--days", type=int, help="validity in days (default: the node's, see PROTOCOL.md)"
    )
    cert_sign.add_argument(
        "--out",
        metavar="FILE",
        help="write the certificate and then its app CA as PEM (a chain file) to FILE and "
        "print the certificate's details instead",
    )
    _add_key_parsers(ops)
    add_options(leaf_parsers(client), _OPTIONS, repeated=True)
    client.set_defaults(func=_cmd_client)


def _add_key_parsers(ops: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keys public|attest``, ``sign``, ``encrypt``, ``decrypt``: the app's named keys."""
    algs = ("secp256k1", "ed25519", "p256")
    keys = ops.add_parser("keys", help="the app's named signing keys").add_subparsers(
        dest="keys_op", required=True, metavar="OP"
    )
    for op, text in (
        ("public", "a named key's public key (and Ethereum address for secp256k1)"),
        ("attest", "the node's signed statement that the public key is the app's"),
    ):
        parser = keys.add_parser(op, help=text)
        parser.add_argument("--name", required=True, help="the key's name (text)")
        parser.add_argument("--alg", required=True, choices=algs, help="the key's algorithm")
    sign = ops.add_parser(
        "sign", help="sign with a named key (public keys, digests, signatures printed as 0x hex)"
    )
    sign.add_argument("--name", required=True, help="the key's name (text)")
    sign.add_argument("--alg", required=True, choices=algs, help="the key's algorithm")
    what = sign.add_mutually_exclusive_group(required=True)
    what.add_argument("--eip191", metavar="TEXT", help="secp256k1: personal_sign this text")
    what.add_argument("--digest", metavar="HEX", help="secp256k1: sign this 32-byte digest")
    what.add_argument(
        "--typed-data", metavar="FILE", help="secp256k1: sign this EIP-712 typed data (JSON)"
    )
    what.add_argument("--message", metavar="TEXT", help="ed25519, p256: sign this text")
    what.add_argument("--message-file", metavar="FILE", help="ed25519, p256: sign FILE's bytes")
    sign.add_argument("--der", action="store_true", help="p256: a DER signature, not r || s")
    encrypt = ops.add_parser("encrypt", help="seal data under a named symmetric key")
    encrypt.add_argument("--name", required=True, help="the key's name (text)")
    source = encrypt.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the plaintext as UTF-8 text")
    source.add_argument("--in", dest="in_file", metavar="FILE", help="the plaintext's bytes")
    encrypt.add_argument("--aad", help="associated data (UTF-8 text) to bind, not encrypt")
    encrypt.add_argument(
        "--out", metavar="FILE", help="write the ciphertext's bytes to FILE (else base64 JSON)"
    )
    decrypt = ops.add_parser("decrypt", help="open a ciphertext of encrypt")
    sealed = decrypt.add_mutually_exclusive_group(required=True)
    sealed.add_argument("--ciphertext", metavar="BASE64", help="the ciphertext, base64")
    sealed.add_argument("--in", dest="in_file", metavar="FILE", help="the ciphertext's bytes")
    decrypt.add_argument("--aad", help="the associated data given to encrypt (UTF-8 text)")
    decrypt.add_argument(
        "--output",
        choices=["json", "text", "raw"],
        default="json",
        help="json: the result with the plaintext in base64; text / raw: the plaintext alone",
    )


def _client_signer(args: argparse.Namespace) -> SyncSigner | None:
    if args.key and args.odyn:
        raise CliError("use either --key or --odyn, not both")
    if args.key:
        if in_enclave(default=False):
            raise CliError("local key files are refused in an enclave; use --odyn")
        try:
            return LocalSigner.from_file(args.key)
        except (OSError, ValueError) as exc:
            raise CliError(str(exc)) from None
    if args.odyn:
        from novakms.net.odyn import OdynSigner

        return OdynSigner.connect_sync(args.odyn_url)
    return None


def _connect(args: argparse.Namespace, signer: SyncSigner | None) -> _Kms:
    chain = (args.chain_rpc, args.kms_registry, args.nova_app_registry)
    if args.node is not None:
        if any(chain):
            raise CliError("use either --node or --chain-rpc with the registries, not both")
        return BlockingClient.connect(
            args.node, signer=signer, expect_wallet=args.expect_wallet, timeout=args.timeout
        )
    if not all(chain):
        raise CliError(
            "give --node, or --chain-rpc, --kms-registry and --nova-app-registry to find the nodes"
        )
    if args.expect_wallet:
        raise CliError("--expect-wallet is for --node: the chain names every node's wallet")
    try:
        from novakms.client.blocking_cluster import BlockingClusterClient
        from novakms.client.cluster_core import ClusterSettings

        cluster = BlockingClusterClient.from_chain(
            args.chain_rpc,
            args.kms_registry,
            args.nova_app_registry,
            signer,
            block_tag=args.block_tag,
            settings=ClusterSettings(attempt_timeout=args.timeout),
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return cluster  # entered by the caller's with: reads the chain, probes the nodes


def _cmd_client(args: argparse.Namespace) -> int:
    signer = _client_signer(args)
    with _connect(args, signer) as client:
        if args.op == "health":
            print_json(dataclasses.asdict(client.health()))
        elif args.op == "status":
            print_json(client.status().document)
        elif args.op == "nodes":
            print_json(_nodes_json(client.nodes()))
        elif args.op == "derive":
            result = client.derive(args.path, context=args.context, length=args.length)
            print_json(
                {
                    "app_id": result.app_id,
                    "path": result.path,
                    "key": result.key,
                    "length": result.length,
                }
            )
        elif args.op == "kv" and args.kv_op == "get" and args.output != "json":
            _kv_value(client.kv_get(args.kv_key).value, args.output)
        elif args.op == "kv":
            print_json(_kv(client, args))
        elif args.op == "cert":
            _cert(client, args)
        elif args.op in ("keys", "sign"):
            print_json(_signing(client, args))
        elif args.op == "encrypt":
            _encrypt(client, args)
        elif args.op == "decrypt":
            opened = client.decrypt(_read_ciphertext(args), aad=_text_bytes(args.aad))
            if args.output == "json":
                print_json({"name": opened.name, "alg": opened.alg, "plaintext": opened.plaintext})
            else:
                _kv_value(opened.plaintext, args.output)
    return 0


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None


def _text_bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8")


def _public_json(key: PublicKey) -> dict[str, Any]:
    shown: dict[str, Any] = {"app_id": key.app_id, "name": key.name, "alg": key.alg}
    shown["public_key"] = "0x" + key.public_key.hex()
    if key.address is not None:
        shown["address"] = key.address
    return shown


def _signing(client: _Kms, args: argparse.Namespace) -> dict[str, Any]:
    if args.op == "keys" and args.keys_op == "public":
        return _public_json(client.keys_public(args.name, args.alg))
    if args.op == "keys":
        attested = client.keys_attest(args.name, args.alg)
        return {
            **_public_json(attested.key),
            "statement": attested.statement,
            "signature": "0x" + attested.signature.hex(),
            "signer": attested.signer,
            "issued_at": attested.issued_at,
        }
    signed = client.sign(args.name, args.alg, der=args.der, **_sign_payload(args))
    shown = {**_public_json(signed.key), "signature": "0x" + signed.signature.hex()}
    if signed.digest is not None:
        shown["digest"] = "0x" + signed.digest.hex()
    return shown


def _sign_payload(args: argparse.Namespace) -> dict[str, Any]:
    if args.eip191 is not None:
        return {"eip191": args.eip191}
    if args.digest is not None:
        try:
            digest = bytes.fromhex(args.digest.removeprefix("0x"))
        except ValueError:
            raise CliError("--digest must be hex") from None
        return {"digest": digest}
    if args.typed_data is not None:
        from eth_account.messages import encode_typed_data

        try:
            typed = encode_typed_data(full_message=json.loads(_read(args.typed_data)))
        except Exception as exc:  # eth-account raises many kinds for a bad document
            raise CliError(f"{args.typed_data} is not EIP-712 typed data: {exc}") from None
        return {"eip712": (bytes(typed.header), bytes(typed.body))}
    if args.message is not None:
        return {"message": args.message.encode("utf-8")}
    return {"message": _read(args.message_file)}


def _encrypt(client: _Kms, args: argparse.Namespace) -> None:
    plaintext = args.text.encode("utf-8") if args.text is not None else _read(args.in_file)
    sealed = client.encrypt(args.name, plaintext, aad=_text_bytes(args.aad))
    if args.out is None:
        print_json({"name": sealed.name, "alg": sealed.alg, "ciphertext": sealed.ciphertext})
        return
    try:
        Path(args.out).write_bytes(sealed.ciphertext)
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print_json({"name": sealed.name, "alg": sealed.alg, "out": args.out})


def _read_ciphertext(args: argparse.Namespace) -> bytes:
    if args.in_file is not None:
        return _read(args.in_file)
    try:
        return base64.b64decode(args.ciphertext, validate=True)
    except ValueError:
        raise CliError("--ciphertext must be base64") from None


def _nodes_json(nodes: Nodes) -> dict[str, Any]:
    return {"self": nodes.self_wallet, "nodes": [dataclasses.asdict(n) for n in nodes.nodes]}


def _kv_value(value: bytes, output: str) -> None:
    """``kv get --output text|raw``: the value alone on stdout, as it is."""
    if output == "text":
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise CliError("the value is not UTF-8 text; use --output raw or json") from None
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    sys.stdout.flush()
    sys.stdout.buffer.write(value)
    sys.stdout.buffer.flush()


def _kv(client: _Kms, args: argparse.Namespace) -> Any:
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
            "key": result.key,
            "version": result.version,
            "updated_at_ms": result.updated_at_ms,
            "acked": result.acked,
        }
    if args.kv_op == "delete":
        return dataclasses.asdict(client.kv_delete(args.kv_key, if_version=args.if_version))
    page = client.kv_list(prefix=args.prefix, limit=args.limit, cursor=args.cursor)
    return {"keys": list(page.keys), "cursor": page.cursor}


def _cert(client: _Kms, args: argparse.Namespace) -> None:
    if args.cert_op == "ca":
        sys.stdout.write(client.cert_ca(args.app_id))
        sys.stdout.flush()
        return
    try:
        csr = Path(args.csr).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.csr}: {exc.strerror or exc}") from None
    result = client.cert_sign(csr, days=args.days)
    if args.out is None:
        print_json({"certificate": result.certificate, "ca": result.ca})
        return
    chain = result.certificate.rstrip("\n") + "\n" + result.ca.rstrip("\n") + "\n"
    try:
        Path(args.out).write_text(chain)
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print_json(
        {
            "out": args.out,
            "app_id": result.app_id,
            "serial": result.serial,
            "not_before_ms": result.not_before_ms,
            "not_after_ms": result.not_after_ms,
        }
    )
