"""What the ``novakms`` command and its command modules share: the usage error, JSON output,
and reading a master secret file.

Kept apart from :mod:`novakms.cli.main` so that command modules (e.g. :mod:`novakms.cli.guardian`)
can raise the same :class:`CliError` that ``novakms.cli.main`` catches, also when ``cli`` runs
as ``python -m novakms.cli.main`` (where importing it back would create a second copy).
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Mapping
from typing import Any

from novakms.crypto.kdf import MASTER_SECRET_SIZE
from novakms.errors import CliError

__all__ = ["CliError", "jsonable", "parse_master_secret", "print_json", "read_master_secret"]

_MAX_SECRET_FILE_SIZE = 4096


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
