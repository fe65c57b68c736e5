"""What the ``novakms`` command modules share: the usage error and the exit codes, JSON
output, the argument types and checks more than one subcommand uses (addresses, limits, listen
addresses, enclave mode), reading a master secret file and writing a private file.

Kept apart from :mod:`novakms.cli.main` so that every command module (and the dev cluster,
:mod:`novakms.dev.cluster`) raises the same :class:`CliError` that ``novakms.cli.main``
catches, without importing the module that assembles them all.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from novakms.config import Limits, enclave_mode, parse_limit_overrides
from novakms.crypto.eth import normalize_wallet
from novakms.crypto.kdf import MASTER_SECRET_SIZE
from novakms.dev.env import in_nitro_enclave
from novakms.errors import CliError
from novakms.net.addresses import parse_address

__all__ = [
    "EXIT_ERROR",
    "EXIT_USAGE",
    "LIMIT_HELP",
    "address_type",
    "check_node_address",
    "fail",
    "fingerprint_bytes",
    "in_enclave",
    "jsonable",
    "listen_addresses",
    "parse_limits",
    "parse_master_secret",
    "print_json",
    "proxy_address_type",
    "read_master_secret",
    "write_private_file",
]

EXIT_ERROR = 1  # the node or the chain answered with an error
EXIT_USAGE = 2  # what the user asked for is wrong (CliError), as argparse's own exit code
LIMIT_HELP = "override a limit, e.g. --limit max_inflight=64 (see protocol/PROTOCOL.md §10)"
_MAX_SECRET_FILE_SIZE = 4096


def fail(code: str, message: str, exit_code: int = EXIT_ERROR, **details: Any) -> NoReturn:
    """Print ``{"error": {"code", "message", **details}}`` on stdout and exit with ``exit_code``."""
    print_json({"error": {"code": code, "message": message, **details}})
    sys.exit(exit_code)


def jsonable(value: Any) -> Any:
    """``value`` with bytes as base64 text, mappings and sequences converted recursively."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """Write ``value`` as one JSON line on stdout."""
    sys.stdout.write(json.dumps(jsonable(value), separators=(", ", ": ")) + "\n")
    sys.stdout.flush()


def read_master_secret(path: str) -> bytes:
    """Read a master secret file: 64 hex digits, optionally ``0x``, surrounding whitespace.

    Raises:
        CliError: the file cannot be read or does not hold a secret (the message names the
            path, never the content).
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_SECRET_FILE_SIZE + 1)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:  # its message would show a byte of the file
        raise CliError("the master secret must be 64 hex characters") from None
    return parse_master_secret(text)


def parse_master_secret(text: str) -> bytes:
    """Parse 64 hex digits (optionally ``0x``, surrounding whitespace) into the secret.

    Raises:
        CliError: anything else (the message never shows the text).
    """
    raw = text.strip().removeprefix("0x")
    if len(raw) != 2 * MASTER_SECRET_SIZE:
        raise CliError("the master secret must be 64 hex characters")
    try:
        return bytes.fromhex(raw)
    except ValueError:
        raise CliError("the master secret must be 64 hex characters") from None


def write_private_file(path: Path, data: bytes, *, exclusive: bool) -> None:
    """Write ``data`` to ``path`` with mode 0600 (refusing an existing file if ``exclusive``).

    Raises:
        CliError: the file exists (with ``exclusive``) or cannot be written.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise CliError(f"{path} exists; refusing to overwrite a key file") from None
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)  # also when an older file was readable
        handle.write(data)


def listen_addresses(args: argparse.Namespace, default: str) -> tuple[str, ...]:
    """The plain listen addresses: the default only when no listener of either kind is given."""
    if args.listen:
        return tuple(args.listen)
    return () if args.listen_proxy else (default,)


def parse_limits(items: Sequence[str]) -> Limits:
    """The ``--limit NAME=VALUE`` overrides as limits.

    Raises:
        CliError: an unknown name or a bad value.
    """
    try:
        return parse_limit_overrides(items)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def in_enclave(*, default: bool) -> bool:
    """Whether this command runs in enclave mode (:func:`~novakms.config.enclave_mode`: the NSM
    device first, then ``IN_ENCLAVE``, unset meaning ``default``).

    Raises:
        CliError: an unparsable ``IN_ENCLAVE``.
    """
    try:
        return enclave_mode(os.environ, nsm_present=in_nitro_enclave(), default=default)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def check_node_address(text: str) -> None:
    """Check a ``--node`` address before connecting.

    Raises:
        CliError: not ``HOST:PORT``, ``tcp://…``, ``unix:///path`` or ``vsock://CID:PORT``.
    """
    try:
        parse_address(text)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def address_type(text: str) -> str:
    """argparse type for contract addresses: 0x + 40 hex, any case; returned lowercase."""
    try:
        return normalize_wallet(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an address (0x + 40 hex digits)"
        ) from None


def proxy_address_type(text: str) -> str:
    """argparse type for a proxy address (any form :func:`parse_address` accepts), unchanged."""
    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def fingerprint_bytes(fingerprint: str) -> bytes:
    """The 32 bytes of a master secret fingerprint, ``0x`` + 64 hex as ``status`` reports it.

    Raises:
        CliError: anything else.
    """
    raw = fingerprint.removeprefix("0x")
    try:
        if len(raw) == 64:
            return bytes.fromhex(raw)
    except ValueError:
        pass
    raise CliError("a fingerprint is 0x + 64 hex (the fingerprint `status` reports)")
