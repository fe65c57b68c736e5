"""``novakms``: serve a node, run a development KMS, talk to a node as a client, forward
connections to an enclave (``novakms bridge``), and the offline guardian tools (``novakms
guardian``, in :mod:`novakms.cli.guardian`).

Machine-readable output goes to stdout as JSON; logs go to stderr. Client errors print
``{"error": {"code": …, "message": …}}`` and exit 1; usage errors exit 2.
"""

# This module's docstring is also the top-level --help text. It assembles the subcommands,
# each in its own module (serve, dev, client, admin, guardian, bridge: every one adds its parser and
# its command function), and maps errors to JSON and exit codes in one place, main().

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from novakms import __version__
from novakms.cli import admin, bridge, client, dev, guardian, serve
from novakms.cli.common import EXIT_USAGE, fail
from novakms.errors import CliError, NovaKMSError
from novakms.log import FORMATS, configure

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``novakms`` argument parser: the global options and every subcommand.

    Returns:
        The parser; each subcommand sets ``func``, the function that runs it.
    """
    parser = argparse.ArgumentParser(prog="novakms", description=__doc__)
    parser.add_argument("--version", action="version", version=f"novakms {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("NOVAKMS_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=os.environ.get("NOVAKMS_LOG_FORMAT", "logfmt"),
        help="log lines on stderr as logfmt or JSON, one record per line (env "
        "NOVAKMS_LOG_FORMAT; default: %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (serve, dev, client, admin, guardian, bridge):
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``novakms`` command.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0, or 130 after Ctrl-C. Errors do not return: a :class:`CliError`
        prints a ``bad_request`` error and exits 2, a :class:`NovaKMSError` prints its code
        and exits 1 (argparse itself exits 2 on a malformed command line).
    """
    args = build_parser().parse_args(argv)
    configure(args.log_level, args.log_format)
    try:
        return int(args.func(args))
    except CliError as exc:
        fail("bad_request", str(exc), EXIT_USAGE, **exc.details)
    except NovaKMSError as exc:
        fail(exc.code, exc.message, **exc.details)
    except KeyboardInterrupt:
        return 130
