"""``novakms guardian``: offline tools for guardians of the master secret (PROTOCOL.md §9.3).

* ``keygen --out DIR`` writes a guardian's two key files, ``wallet.key`` (secp256k1, the
  format of every novakms key file) and ``enc.key`` (X25519, ``0x`` + 64 hex), mode 0600 in a
  0700 directory, and prints ``{"wallet", "enc_public_key"}``.
* ``split`` splits a master secret the owner brings (a 64-hex file) for a guardian set and
  writes one sealed share per guardian, ``DIR/share-<wallet>.bin``: exactly the HPKE output
  ``enc || ciphertext`` (binary, as a node would hand it out). The plaintexts are the ones
  :func:`~novakms.crypto.guardian_shares.make_shares` gives for the same set; the sealed
  bytes differ from run to run (a fresh HPKE ephemeral key each time).
* ``open`` opens a share file with a guardian's ``enc.key`` and prints its public fields, so
  a guardian can check what they hold; never the share value.

No network, no chain: these run on a guardian's own machine. Errors print the CLI's JSON
error (``{"error": {"code", "message", "reason"?}}``) and exit 2; nothing printed, logged or
raised ever contains a secret, a share value or a private key.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from novakms.cli.common import (
    address_type,
    node_address_type,
    print_json,
    read_master_secret,
    write_private_file,
)
from novakms.crypto import guardian_shares as gs
from novakms.crypto.eth import (
    format_private_key,
    generate_private_key,
    normalize_wallet,
    wallet_from_private_key,
)
from novakms.errors import CliError, GuardianShareError

__all__ = ["add_parser", "share_file_name"]

WALLET_KEY_FILE = "wallet.key"
ENC_KEY_FILE = "enc.key"
_MAX_KEY_FILE_SIZE = 4096


def _private_dir(path: str) -> Path:
    """Create ``path`` (and parents) if needed and make it 0700."""
    directory = Path(path)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # whatever the umask, and also an existing directory
    except OSError as exc:
        raise CliError(f"cannot use {path} as the output directory: {exc.strerror}") from None
    return directory


# --- keygen -----------------------------------------------------------------------------------


def _cmd_keygen(args: argparse.Namespace) -> int:
    directory = _private_dir(args.out)
    wallet_path, enc_path = directory / WALLET_KEY_FILE, directory / ENC_KEY_FILE
    for path in (wallet_path, enc_path):
        if path.exists():
            raise CliError(f"{path} exists; refusing to overwrite a key file")
    wallet_key = generate_private_key(os.urandom)
    enc_private, enc_public = gs.generate_enc_keypair()
    write_private_file(
        wallet_path, (format_private_key(wallet_key) + "\n").encode(), exclusive=True
    )
    write_private_file(enc_path, ("0x" + enc_private.hex() + "\n").encode(), exclusive=True)
    print_json(
        {"wallet": wallet_from_private_key(wallet_key), "enc_public_key": "0x" + enc_public.hex()}
    )
    return 0


# --- split ------------------------------------------------------------------------------------


def _hex32(text: str) -> bytes | None:
    raw = text.strip().removeprefix("0x").removeprefix("0X")
    if len(raw) != 2 * gs.ENC_KEY_SIZE:
        return None
    try:
        return bytes.fromhex(raw)
    except ValueError:
        return None


def _guardian(text: str) -> tuple[str, bytes]:
    """argparse type of ``--guardian WALLET:ENCPUBHEX``."""
    wallet, sep, public = text.partition(":")
    try:
        wallet = normalize_wallet(wallet)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected WALLET:ENCPUBHEX, WALLET being 0x + 40 hex digits"
        ) from None
    key = _hex32(public) if sep else None
    if key is None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected WALLET:ENCPUBHEX, ENCPUBHEX being 64 hex digits (0x optional)"
        )
    return wallet, key


def share_file_name(wallet: str) -> str:
    """The file ``split`` writes for a guardian: ``share-<wallet>.bin``."""
    return f"share-{wallet}.bin"


def _cmd_split(args: argparse.Namespace) -> int:
    secret = read_master_secret(args.secret_file)
    guardians: list[tuple[str, bytes]] = args.guardian
    try:
        guardian_set = gs.GuardianSet(
            tuple(wallet for wallet, _ in guardians),
            tuple(key for _, key in guardians),
            args.threshold,
            args.set_version,
        )
    except ValueError as exc:
        raise CliError(f"not a usable guardian set: {exc}") from None
    shares = gs.make_shares(secret, guardian_set)
    sealed = []
    for share, key in zip(shares, guardian_set.enc_public_keys, strict=True):
        try:
            sealed.append(gs.seal_share(share, key))
        except GuardianShareError as exc:
            raise CliError(
                f"guardian {share.wallet}: its encryption key is unusable", reason=exc.reason
            ) from None
    directory = _private_dir(args.out)
    listed = []
    for share, data in zip(shares, sealed, strict=True):
        path = directory / share_file_name(share.wallet)
        write_private_file(path, data, exclusive=False)
        listed.append({"wallet": share.wallet, "file": str(path.resolve())})
    print_json(
        {
            "fingerprint": shares[0].fingerprint,
            "threshold": guardian_set.threshold,
            "set_version": guardian_set.version,
            "shares": listed,
        }
    )
    return 0


# --- open -------------------------------------------------------------------------------------


def _read_enc_key(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_KEY_FILE_SIZE + 1)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        key = _hex32(raw.decode("ascii")) if len(raw) <= _MAX_KEY_FILE_SIZE else None
    except UnicodeDecodeError:
        key = None
    if key is None:
        raise CliError(f"{path}: not an encryption key file (expected '0x' + 64 hex digits)")
    return key


def _read_share_file(path: str) -> bytes:
    """A sealed share file's bytes (at most one byte past the largest share: open refuses it)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(gs.MAX_SEALED_SIZE + 1)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None


def _cmd_open(args: argparse.Namespace) -> int:
    key = _read_enc_key(args.enc_key)
    sealed = _read_share_file(args.share)
    try:
        share = gs.open_share(sealed, key, wallet=args.wallet, set_version=args.set_version)
    except GuardianShareError as exc:
        raise CliError(f"{args.share}: {exc}", reason=exc.reason) from None
    print_json(
        {
            "wallet": share.wallet,
            "set_version": share.set_version,
            "x": share.x,
            "threshold": share.threshold,
            "count": share.count,
            "fingerprint": share.fingerprint,
        }
    )
    return 0


# --- online: a guardian and a node ------------------------------------------------------------


def _connect(args: argparse.Namespace) -> Any:
    from novakms.client.blocking import BlockingClient
    from novakms.crypto.signer import LocalSigner

    try:
        signer = LocalSigner.from_file(args.key)
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the guardian wallet key {args.key}: {exc}") from None
    return BlockingClient.connect(
        args.node, signer=signer, role="guardian", expect_wallet=args.expect_wallet, timeout=30
    )


def _cmd_fetch(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        answer = client.call("guardian.share")
    sealed = answer["share"]
    if not isinstance(sealed, bytes) or len(sealed) > gs.MAX_SEALED_SIZE:
        raise CliError("the node's answer carries no sealed share")
    write_private_file(Path(args.out), sealed, exclusive=False)
    print_json(
        {
            "node": args.node,
            "file": args.out,
            **{k: answer[k] for k in ("set_version", "x", "threshold", "count", "fingerprint")},
        }
    )
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    key = _read_enc_key(args.enc_key)
    sealed = _read_share_file(args.share)
    with _connect(args) as client:
        version = client.status().document.get("guardians", {}).get("set_version")
        if not isinstance(version, int):
            raise CliError(f"{args.node} reports no guardian set")
        wallet = client.wallet
        try:
            share = gs.open_share(sealed, key, wallet=wallet, set_version=version)
        except GuardianShareError as exc:
            raise CliError(f"{args.share}: {exc}", reason=exc.reason) from None
        answer = client.call("guardian.restore", {"share": gs.encode_share(share)})
    print_json({"node": args.node, **answer})
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from novakms.client.blocking import BlockingClient

    with BlockingClient.connect(args.node, timeout=30) as client:
        status = client.status()
    print_json(
        {
            "node": args.node,
            "ready": status.ready,
            "reason": status.reason,
            "fingerprint": status.secret.fingerprint,
            "guardians": status.document.get("guardians"),
        }
    )
    return 0


# --- parser -----------------------------------------------------------------------------------


def _set_version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 2**64 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a set version (0 .. 2**64-1)")
    return value


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``novakms guardian keygen | split | open | fetch | restore | status``.

    Args:
        commands: the top-level subparsers of ``novakms``.
    """
    guardian = commands.add_parser(
        "guardian",
        help="offline guardian tools: key files, splitting a secret into sealed shares, "
        "checking a share",
        description=__doc__,
    )
    ops = guardian.add_subparsers(dest="guardian_op", required=True)

    keygen = ops.add_parser(
        "keygen",
        help=f"write {WALLET_KEY_FILE} and {ENC_KEY_FILE} (0600) into a new 0700 directory",
        description=f"Write a guardian's {WALLET_KEY_FILE} (secp256k1) and {ENC_KEY_FILE} "
        '(X25519) into DIR; print {"wallet", "enc_public_key"}. Existing key files are '
        "never overwritten.",
    )
    keygen.add_argument(
        "--out", required=True, metavar="DIR", help="the new directory for the two key files"
    )
    keygen.set_defaults(func=_cmd_keygen)

    split = ops.add_parser(
        "split",
        help="split a master secret file into one sealed share per guardian",
        description="Split the 64-hex master secret in FILE for a guardian set (guardians in "
        "on-chain order) and write DIR/share-<wallet>.bin per guardian: the sealed share, "
        'binary (HPKE enc || ciphertext). Prints {"fingerprint", "threshold", "set_version", '
        '"shares": [{"wallet", "file"}]}.',
    )
    split.add_argument(
        "--secret-file", required=True, metavar="FILE", help="the master secret file (64 hex)"
    )
    split.add_argument(
        "--threshold", type=int, required=True, metavar="K", help="shares needed to recover"
    )
    split.add_argument(
        "--guardian",
        type=_guardian,
        action="append",
        required=True,
        metavar="WALLET:ENCPUBHEX",
        help="a guardian, in on-chain order (repeat for each)",
    )
    split.add_argument(
        "--set-version",
        type=_set_version,
        default=1,
        metavar="V",
        help="the guardian set's version in KMSRegistry",
    )
    split.add_argument(
        "--out", required=True, metavar="DIR", help="where the share files are written"
    )
    split.set_defaults(func=_cmd_split)

    open_ = ops.add_parser(
        "open",
        help="open a sealed share and print its public fields (never the share value)",
        description='Open a share file with an enc.key; print {"wallet", "set_version", "x", '
        '"threshold", "count", "fingerprint"}.',
    )
    open_.add_argument(
        "--enc-key", required=True, metavar="FILE", help="the guardian's enc.key file"
    )
    open_.add_argument("--share", required=True, metavar="FILE", help="the sealed share file")
    open_.add_argument(
        "--wallet", type=address_type, required=True, help="the guardian's wallet the share names"
    )
    open_.add_argument(
        "--set-version",
        type=_set_version,
        required=True,
        metavar="V",
        help="the guardian set's version the share is for",
    )
    open_.set_defaults(func=_cmd_open)

    def online(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = ops.add_parser(name, help=help_text, description=help_text)
        parser.add_argument(
            "--node",
            required=True,
            type=node_address_type,
            help="HOST:PORT, unix:///path or vsock://CID:PORT",
        )
        parser.add_argument("--key", required=True, help="the guardian's wallet key file")
        parser.add_argument(
            "--expect-wallet",
            type=address_type,
            help="refuse a node that does not prove this wallet (check it is a KMS operator)",
        )
        return parser

    fetch = online(
        "fetch",
        "fetch this guardian's share from a node that holds the pinned secret; it stays "
        "sealed to the guardian's encryption key in SHARE_FILE",
    )
    fetch.add_argument(
        "--out", required=True, metavar="SHARE_FILE", help="where the sealed share is written"
    )
    fetch.set_defaults(func=_cmd_fetch)
    restore = online(
        "restore",
        "open SHARE_FILE with the encryption key and hand the share to a node that reports "
        "secret_lost, over the node's sealed channel",
    )
    restore.add_argument(
        "--enc-key", required=True, metavar="ENC_KEY", help="the guardian's enc.key file"
    )
    restore.add_argument(
        "--share", required=True, metavar="SHARE_FILE", help="the sealed share file"
    )
    restore.set_defaults(func=_cmd_restore)
    status = ops.add_parser(
        "status", help="a node's guardian set and recovery progress (shares received / k)"
    )
    status.add_argument(
        "--node",
        required=True,
        type=node_address_type,
        help="HOST:PORT, unix:///path or vsock://CID:PORT",
    )
    status.set_defaults(func=_cmd_status)
