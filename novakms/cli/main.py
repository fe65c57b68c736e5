"""``novakms``: serve a node, run a development KMS, talk to a node as a client, forward
connections to an enclave (``novakms bridge``), and the offline guardian tools (``novakms
guardian``, in :mod:`novakms.cli.guardian`).

Machine-readable output goes to stdout as JSON; logs go to stderr. Every error prints
``{"error": {"code": …, "message": …}}`` on stdout: a usage error (a bad option or value)
exits 2, an error of the node, the chain or the system exits 1. The global options may also
follow the command.
"""

# This module's docstring is also the top-level --help text. It assembles the subcommands,
# each in its own module (serve, dev, client, admin, guardian, bridge: every one adds its parser and
# its command function), and maps errors to JSON and exit codes in one place, main(). Only the
# module of the command being run is imported (the others are heavy: the server, the chain
# libraries), so that `novakms client …` starts fast; --help and a bare `novakms` load them all.

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from novakms import __version__
from novakms.cli.common import (
    EXIT_USAGE,
    Option,
    Parser,
    add_options,
    fail,
    leaf_parsers,
    log_level_type,
)
from novakms.errors import CliError, ListenError, NovaKMSError
from novakms.log import FORMATS, LEVELS, configure, get_logger

__all__ = ["COMMANDS", "build_parser", "main"]

#: The subcommands, in --help order, and the module that adds each one's parser.
COMMANDS = {
    name: f"novakms.cli.{name}"
    for name in ("serve", "dev", "client", "admin", "guardian", "bridge")
}

_EPILOG = """examples:
  novakms dev                                   # a local cluster on anvil; one JSON ready line
  novakms client --node 127.0.0.1:7400 health
  novakms client --node 127.0.0.1:7400 --key app.key derive --path app/db
  novakms serve --config /etc/novakms/novakms.toml
  novakms admin --rpc URL --key admin.key reset-pin --kms-registry 0x…
  novakms <command> --help                      # each command's options and examples
"""

_log = get_logger(__name__)


def _log_format_type(text: str) -> str:
    if text not in FORMATS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a log format (one of {', '.join(FORMATS)})"
        )
    return text


def _global_options() -> tuple[Option, ...]:
    """The global options, their defaults read from the environment now."""
    return (
        Option(
            ("--log-level",),
            {
                "type": log_level_type,
                "default": os.environ.get("NOVAKMS_LOG_LEVEL", "INFO"),
                "metavar": "LEVEL",
                "help": f"log on stderr from this level on: {', '.join(LEVELS)}, any case "
                "(env NOVAKMS_LOG_LEVEL; default: %(default)s)",
            },
        ),
        Option(
            ("--log-format",),
            {
                "type": _log_format_type,
                "default": os.environ.get("NOVAKMS_LOG_FORMAT", "logfmt"),
                "metavar": "{" + ",".join(FORMATS) + "}",
                "help": "log lines on stderr as logfmt or JSON, one record per line (env "
                "NOVAKMS_LOG_FORMAT; default: %(default)s)",
            },
        ),
    )


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``novakms`` argument parser: the global options and the subcommands.

    Args:
        command: build only this subcommand's parser (the others are placeholders that
            accept nothing); None builds every one, as ``--help`` shows them.

    Returns:
        The parser; each subcommand sets ``func``, the function that runs it.
    """
    parser = Parser(prog="novakms", description=__doc__, epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"novakms {__version__}")
    options = _global_options()
    add_options([parser], options, repeated=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(module).add_parser(commands)
        else:
            commands.add_parser(name)
    for sub in commands.choices.values():  # also after the command and its subcommands
        add_options({id(p): p for p in (sub, *leaf_parsers(sub))}.values(), options, repeated=True)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` runs (its first word that names one), or None when there is
    none or the top-level help comes first (it lists every subcommand)."""
    for word in argv:
        if word in ("-h", "--help"):
            return None
        if word in COMMANDS:
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``novakms`` command.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0, or 130 after Ctrl-C. Errors do not return: they print the JSON
        error and exit, 2 for a usage error (argparse's or a :class:`CliError`), 1 for a
        :class:`NovaKMSError` (its code) and 1 with code ``internal`` for anything else (its
        type only; the traceback is logged at DEBUG).
    """
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command_of(words)).parse_args(words)
    configure(args.log_level, args.log_format)
    try:
        return int(args.func(args))
    except BaseException as exc:
        return _report(exc)


def _sole(exc: BaseException) -> BaseException:
    """The one error inside nested exception groups (trio's nurseries wrap them), or ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _report(caught: BaseException) -> int:
    exc = _sole(caught)
    if isinstance(exc, SystemExit):
        raise exc
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, CliError):
        fail("bad_request", str(exc), EXIT_USAGE, **exc.details)
    if isinstance(exc, ListenError):  # the address asked for is taken (or not ours)
        fail("bad_request", str(exc), EXIT_USAGE, reason="listen")
    if isinstance(exc, NovaKMSError):
        fail(exc.code, exc.message, **exc.details)
    if isinstance(exc, Exception):
        _log.debug("unexpected_error", exc_info=caught)
        fail(
            "internal",
            f"unexpected {type(exc).__name__}; --log-level DEBUG logs the traceback",
        )
    raise caught
