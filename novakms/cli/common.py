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
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from novakms.config import Limits, enclave_mode, parse_limit_overrides
from novakms.crypto.eth import normalize_wallet
from novakms.crypto.kdf import MASTER_SECRET_SIZE
from novakms.dev.env import in_nitro_enclave
from novakms.errors import CliError
from novakms.log import LEVELS
from novakms.net.addresses import parse_address

__all__ = [
    "EXIT_ERROR",
    "EXIT_USAGE",
    "LIMIT_HELP",
    "HelpFormatter",
    "Option",
    "Parser",
    "add_options",
    "address_type",
    "fail",
    "fingerprint_bytes",
    "fingerprint_type",
    "http_url_type",
    "in_enclave",
    "jsonable",
    "leaf_parsers",
    "listen_addresses",
    "log_level_type",
    "node_address_type",
    "non_negative_seconds",
    "parse_limits",
    "parse_master_secret",
    "port_type",
    "positive_seconds",
    "print_json",
    "read_master_secret",
    "write_private_file",
]

EXIT_ERROR = 1  # the node or the chain answered with an error
EXIT_USAGE = 2  # what the user asked for is wrong (CliError), as argparse's own exit code
LIMIT_HELP = "override a limit, e.g. --limit max_inflight=64 (see protocol/PROTOCOL.md §10)"
_MAX_SECRET_FILE_SIZE = 4096


_MAX_PORT = 65535


def _shows_default(text: str | None, default: Any) -> bool:
    """Whether help ``text`` should end with ``default``: there is help, it does not name a
    default itself, and the default is a value worth showing."""
    return (
        text is not None
        and "default" not in text.lower()
        and default not in (None, False, argparse.SUPPRESS)
        and default != []
    )


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written (examples keep their lines); every option's help
    ends with its default unless it names one itself or has none worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.option_strings and _shows_default(action.help, action.default):
            return f"{action.help} (default: %(default)s)"
        return action.help


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are the documented JSON error: on stdout
    ``{"error": {"code": "bad_request", "message": …}}`` and exit 2, with the usage on stderr
    (argparse's own :meth:`error` prints text and no JSON). Its subparsers are Parsers too and
    every one formats help with :class:`HelpFormatter`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        fail("bad_request", f"{self.prog}: {message}", EXIT_USAGE)


@dataclasses.dataclass(frozen=True)
class Option:
    """An option several parsers share (``add_argument``'s arguments)."""

    flags: tuple[str, ...]
    kwargs: Mapping[str, Any]


def add_options(
    parsers: Iterable[argparse.ArgumentParser], options: Sequence[Option], *, repeated: bool
) -> None:
    """Add ``options`` to every parser of ``parsers``.

    Args:
        parsers: where to add them.
        options: the options.
        repeated: the parsers are subcommands of the parser that owns the options (so the
            options may also follow the subcommand): no default there, which would overwrite
            a value given before the subcommand.
    """
    for parser in parsers:
        for option in options:
            kwargs = dict(option.kwargs)
            if repeated:  # the help still names the default, which argparse would drop
                text, default = kwargs.get("help"), kwargs.get("default")
                if text is not None:
                    text = text.replace("%(default)s", str(default))
                    if _shows_default(text, default):
                        text = f"{text} (default: {default})"
                    kwargs["help"] = text
                kwargs["default"] = argparse.SUPPRESS
            parser.add_argument(*option.flags, **kwargs)


def leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of ``parser``'s innermost subcommands (``parser`` itself if it has none)."""
    subparsers = [
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ]
    if not subparsers:
        return [parser]
    return [
        leaf
        for action in subparsers
        for child in action.choices.values()
        for leaf in leaf_parsers(child)
    ]


def _checked(convert: Callable[[str], Any], text: str, what: str) -> Any:
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds more than 0."""
    value = _checked(float, text, "a number of seconds")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number of seconds > 0")
    return float(value)


def non_negative_seconds(text: str) -> float:
    """argparse type: a finite number of seconds, 0 or more."""
    value = _checked(float, text, "a number of seconds")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number of seconds >= 0")
    return float(value)


def port_type(text: str) -> int:
    """argparse type: a TCP port, 0..65535 (0: the system picks a free one)."""
    value = _checked(int, text, "a port number")
    if not 0 <= value <= _MAX_PORT:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is 0..{_MAX_PORT}")
    return int(value)


def log_level_type(text: str) -> str:
    """argparse type: one of :data:`novakms.log.LEVELS`, any case; returned upper case."""
    level = text.strip().upper()
    if level not in LEVELS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a log level (one of {', '.join(LEVELS)})"
        )
    return level


def node_address_type(text: str) -> str:
    """argparse type: a node address (``HOST:PORT``, ``tcp://…``, ``unix:///path``,
    ``vsock://CID:PORT``), unchanged."""
    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def http_url_type(text: str) -> str:
    """argparse type: an ``http://`` or ``https://`` URL with a host, unchanged."""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest.split("/", 1)[0]:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s) URL")
    return text


def fingerprint_type(text: str) -> str:
    """argparse type: a master secret fingerprint (0x + 64 hex); returned lowercase."""
    try:
        fingerprint_bytes(text)
    except CliError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return "0x" + text.removeprefix("0x").lower()


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


def address_type(text: str) -> str:
    """argparse type for addresses (contracts, wallets): 0x + 40 hex, any case; returned
    lowercase."""
    try:
        return normalize_wallet(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an address (0x + 40 hex digits)"
        ) from None


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
