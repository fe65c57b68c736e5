"""Every error of the ``novakms`` command is the documented JSON object with a non-zero exit.

A sweep of bad inputs through every subcommand, run in process through ``main()`` (no server
is needed to refuse them): each prints exactly one ``{"error": {"code", "message"}}`` line on
stdout, exits 2 for a usage error (1 for an error of the node, the chain or the system) and
never a traceback. Also: busy ports are refused as JSON (``serve``, ``dev --chain static``,
``dev``), an unexpected exception is ``internal`` naming only its type, options may follow the
operation, ``--odyn`` takes no value, every option has help and shows its default, and the
client path does not import the Ethereum libraries.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from novakms.cli.main import COMMANDS, build_parser, main
from novakms.client.blocking import BlockingClient

WALLET = "0x" + "ab" * 20
REGISTRY = "0x" + "cd" * 20
FINGERPRINT = "0x" + "ef" * 32

Run = Callable[..., tuple[int, dict[str, Any], str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Iterator[Run]:
    """``novakms ARGS`` in process: (exit code, the one JSON line printed, stderr)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def run(*args: str, traceback: bool = False) -> tuple[int, dict[str, Any], str]:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out = capsys.readouterr()
        lines = out.out.strip().splitlines()
        assert len(lines) == 1, out
        assert "Traceback" not in out.out
        assert traceback or "Traceback" not in out.err
        return code, json.loads(lines[0]), out.err

    yield run
    # main() configures logging for the process; give pytest its handlers back.
    root.handlers[:] = handlers
    root.setLevel(level)


def _usage(*args: str) -> Any:
    return pytest.param(args, id=" ".join(args)[:70])


# (argv, a fragment of the message); every one is a usage error: bad_request, exit 2.
USAGE_ERRORS = [
    # global options, before and after the command
    (["--log-level", "bogus", "client", "health"], "is not a log level"),
    (["client", "--log-level", "loud", "health"], "is not a log level"),
    (["--log-format", "xml", "client", "health"], "is not a log format"),
    (["bogus-command"], "invalid choice"),
    ([], "required: COMMAND"),
    # client
    (["client", "--node", "127.0.0.1:1", "--expect-wallet", "0x1234", "health"], "not an address"),
    (["client", "--node", "127.0.0.1:1", "--timeout", "-1", "health"], "> 0"),
    (["client", "--node", "127.0.0.1:1", "health", "--timeout", "nan"], "> 0"),
    (["client", "--node", "127.0.0.1:1", "--timeout", "soon", "health"], "number of seconds"),
    (["client", "--node", "nowhere", "health"], "expected HOST:PORT"),
    (["client", "--node", "tcp://h:99999", "health"], "--node"),
    (["client", "--chain-rpc", "ftp://x", "nodes"], "http(s) URL"),
    (["client", "--kms-registry", "0x12", "nodes"], "not an address"),
    (["client", "--block-tag", "pending", "nodes"], "invalid choice"),
    (["client", "--odyn-url", "localhost", "--odyn", "health"], "http(s) URL"),
    (["client", "--node", "127.0.0.1:1"], "required: OP"),
    (["client", "--node", "127.0.0.1:1", "sing"], "invalid choice"),
    (["client", "--node", "127.0.0.1:1", "derive"], "--path"),
    (["client", "--node", "127.0.0.1:1", "derive", "--path", "p", "--length", "x"], "int"),
    (["client", "--node", "127.0.0.1:1", "kv", "get"], "KEY"),
    (["client", "--node", "127.0.0.1:1", "kv", "put", "k"], "--value"),
    (
        ["client", "--node", "127.0.0.1:1", "kv", "put", "k", "--value", "v", "--value-file", "f"],
        "not allowed with",
    ),
    (["client", "--node", "127.0.0.1:1", "kv", "get", "k", "--output", "xml"], "invalid choice"),
    (["client", "--node", "127.0.0.1:1", "cert", "ca"], "--app-id"),
    (["client", "--node", "127.0.0.1:1", "--key", "k", "--odyn", "health"], "either --key"),
    (["client", "health"], "give --node"),
    (["client", "--node", "127.0.0.1:1", "--chain-rpc", "http://x", "health"], "either --node"),
    (["client", "--node", "127.0.0.1:1", "--key", "/nonexistent/app.key", "health"], "app.key"),
    # admin
    (["admin", "--rpc", "localhost:8545", "deploy"], "http(s) URL"),
    (["admin", "--rpc-timeout", "0", "deploy"], "> 0"),
    (["admin", "deploy"], "needs --rpc and --key"),
    (["admin", "--rpc", "http://127.0.0.1:1", "deploy"], "needs --key"),
    (["admin", "pin-secret", "--kms-registry", REGISTRY, "--fingerprint", "0xzz"], "fingerprint"),
    (["admin", "pin-secret", "--kms-registry", REGISTRY, "--fingerprint", "0x12"], "fingerprint"),
    (["admin", "pin-secret", "--kms-registry", REGISTRY], "one of the arguments"),
    (["admin", "pin-secret", "--kms-registry", REGISTRY, "--from-node", "x"], "HOST:PORT"),
    (["admin", "reset-pin", "--kms-registry", "0x1234"], "not an address"),
    (["admin", "set-app-id", "--kms-registry", REGISTRY, "--app-id", "one"], "int"),
    (
        ["admin", "app-status", "--registry", REGISTRY, "--app-id", "1", "--status", "X"],
        "invalid choice",
    ),
    (["admin", "guardian-set", "--kms-registry", REGISTRY], "needs --rpc"),
    (
        [
            "admin",
            "set-guardians",
            "--kms-registry",
            REGISTRY,
            "--threshold",
            "1",
            "--guardian",
            "0x12:0x34",
        ],
        "needs --rpc and --key",
    ),
    (["admin", "wait-safe", "--node", "nowhere"], "HOST:PORT"),
    (["admin", "wait-safe", "--node", "127.0.0.1:1", "--timeout", "-1"], ">= 0"),
    (["admin", "wait-safe", "--node", "127.0.0.1:1", "--interval", "0"], "> 0"),
    # dev (refused before anything starts)
    (["dev", "--port", "70000"], "a port is 0..65535"),
    (["dev", "--port", "-1"], "a port is 0..65535"),
    (["dev", "--chain-port", "x"], "not a port number"),
    (["dev", "--poll-interval", "0"], "> 0"),
    (["dev", "--restart-delay", "-1"], ">= 0"),
    (["dev", "--restart-delay", "inf"], ">= 0"),
    (["dev", "--nodes", "0"], "--nodes must be"),
    (["dev", "--chain", "ropsten"], "invalid choice"),
    (["dev", "--guardians", "99"], "--guardians must be"),
    (["dev", "--limit", "max_inflight=many"], "max_inflight"),
    (["dev", "--master-secret", "00"], "--master-secret is gone"),
    # serve
    (["serve", "--check", "--limit", "no_such_limit=1"], "no_such_limit"),
    (["serve", "--check", "--peer-proxy", "nowhere"], "HOST:PORT"),
    (["serve", "--check", "--listen", "nowhere"], "nowhere"),
    (["serve", "--check", "--metrics", "nowhere"], "listen address"),
    (["serve", "--check", "--config", "/nonexistent/novakms.toml"], "cannot read"),
    # guardian
    (["guardian"], "required"),
    (["guardian", "split", "--secret-file", "s", "--threshold", "2", "--out", "o"], "--guardian"),
    (
        [
            "guardian",
            "open",
            "--enc-key",
            "k",
            "--share",
            "s",
            "--wallet",
            "0x12",
            "--set-version",
            "1",
        ],
        "0x12",
    ),
    (["guardian", "status"], "--node"),
    # bridge
    (["bridge", "--listen", "nowhere", "--to", "vsock://16:7400"], "HOST:PORT"),
    (
        ["bridge", "--listen", "127.0.0.1:0", "--to", "vsock://16:7400", "--max-connections", "x"],
        "int",
    ),
]


@pytest.mark.parametrize(
    ("argv", "fragment"), USAGE_ERRORS, ids=[" ".join(a)[:60] for a, _ in USAGE_ERRORS]
)
def test_every_usage_error_is_one_json_line_and_exit_2(
    run: Run, argv: list[str], fragment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IN_ENCLAVE", raising=False)
    monkeypatch.setenv("IN_ENCLAVE", "false")
    code, answer, _ = run(*argv)
    assert code == 2, answer
    assert set(answer) == {"error"} and answer["error"]["code"] == "bad_request", answer
    assert fragment in answer["error"]["message"], answer


def test_the_sweep_covers_every_subcommand() -> None:
    swept = {argv[0] for argv, _ in USAGE_ERRORS if argv and argv[0] in COMMANDS}
    assert swept == set(COMMANDS)


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("NOVAKMS_LOG_LEVEL", "chatty", "is not a log level"),
        ("NOVAKMS_LOG_FORMAT", "yaml", "is not a log format"),
    ],
)
def test_log_settings_from_the_environment_are_checked(
    run: Run, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(variable, value)
    code, answer, _ = run("client", "--node", "127.0.0.1:1", "health")
    assert code == 2 and fragment in answer["error"]["message"]
    monkeypatch.setenv("NOVAKMS_LOG_LEVEL", "debug")  # any case
    monkeypatch.setenv("NOVAKMS_LOG_FORMAT", "json")
    assert build_parser("client").parse_args(["client", "health"]).log_level == "DEBUG"


def test_an_unreachable_node_is_unavailable_exit_1(run: Run) -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        code, answer, _ = run("client", "--node", f"127.0.0.1:{port}", "--timeout", "5", "health")
    assert code == 1 and answer["error"]["code"] == "unavailable"


def test_an_unexpected_exception_is_internal_and_names_only_its_type(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_: Any, **__: Any) -> Any:
        raise RuntimeError("do not print me: 5a5a5a5a")

    monkeypatch.setattr(BlockingClient, "connect", explode)
    code, answer, stderr = run("client", "--node", "127.0.0.1:1", "health")
    assert code == 1
    assert answer["error"]["code"] == "internal"
    assert "RuntimeError" in answer["error"]["message"]
    assert "5a5a" not in answer["error"]["message"] and "5a5a" not in stderr
    # With DEBUG logging the traceback goes to the log (stderr), for whoever debugs it.
    argv = ["--log-level", "debug", "client", "--node", "127.0.0.1:1", "health"]
    code, _, stderr = run(*argv, traceback=True)
    assert code == 1 and "unexpected_error" in stderr and "explode" in stderr


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port held open, the port before it free when checked (the anvil case starts there)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            port = sock.getsockname()[1]
            with socket.socket() as before:
                try:
                    before.bind(("127.0.0.1", port - 1))
                except OSError:
                    continue  # another process has it: the anvil case would fail on it
            yield port
            return
    raise AssertionError("no free port with a free port before it")


def test_serve_on_a_busy_port_is_a_json_error(
    run: Run, busy_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from novakms.dev.env import prepare_state

    state = prepare_state(tmp_path / "state", nodes=1)
    monkeypatch.setenv("IN_ENCLAVE", "false")
    common = ["serve", "--key-file", str(state.node_key_file), "--registry"]
    common.append(str(state.registry_file))
    code, answer, _ = run(*common, "--listen", f"127.0.0.1:{busy_port}")
    assert code == 2 and answer["error"]["reason"] == "listen"
    assert f"cannot listen on 127.0.0.1:{busy_port}" in answer["error"]["message"]
    # The metrics listener's port, too.
    code, answer, _ = run(*common, "--listen", "127.0.0.1:0", "--metrics", f"127.0.0.1:{busy_port}")
    assert code == 2 and f"127.0.0.1:{busy_port}" in answer["error"]["message"]


@pytest.mark.parametrize("chain", ["static", "anvil"])
def test_dev_on_a_busy_port_is_a_json_error_and_no_ready_line(
    run: Run, busy_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chain: str
) -> None:
    monkeypatch.setenv("IN_ENCLAVE", "false")
    # The anvil cluster's nodes use --port and the ports after it: the second one is taken.
    port = busy_port if chain == "static" else busy_port - 1
    argv = ["dev", "--chain", chain, "--port", str(port), "--state-dir", str(tmp_path / "s")]
    code, answer, _ = run(*argv)  # exactly one stdout line: the error, no ready line
    assert code == 2, answer
    assert answer["error"]["reason"] == "listen"
    assert f"127.0.0.1:{busy_port}" in answer["error"]["message"]


def test_options_may_follow_the_operation() -> None:
    parser = build_parser()
    before = parser.parse_args(
        ["client", "--node", "h:1", "--timeout", "3", "kv", "get", "k", "--output", "raw"]
    )
    after = parser.parse_args(
        ["client", "kv", "get", "k", "--node", "h:1", "--output", "raw", "--timeout", "3"]
    )
    assert vars(before) == vars(after)
    assert after.node == "h:1" and after.timeout == 3.0 and after.kv_key == "k"
    # Not given after the operation: the value given before it (or the default) stands.
    args = parser.parse_args(["client", "--timeout", "4", "--node", "h:1", "health"])
    assert args.timeout == 4.0 and args.block_tag == "finalized"
    admin = parser.parse_args(
        ["admin", "reset-pin", "--kms-registry", REGISTRY, "--rpc", "http://x", "--key", "k"]
    )
    assert admin.rpc == "http://x" and admin.key == "k" and admin.rpc_timeout == 30.0
    assert parser.parse_args(["client", "health", "--log-level", "debug"]).log_level == "DEBUG"


def test_odyn_does_not_swallow_the_operation() -> None:
    args = build_parser().parse_args(["client", "--odyn", "health"])
    assert args.op == "health" and args.odyn is True
    assert args.odyn_url == "http://127.0.0.1:18000"
    args = build_parser().parse_args(["client", "--odyn", "--odyn-url", "http://o:1", "status"])
    assert args.op == "status" and args.odyn_url == "http://o:1"


def _parsers(
    parser: argparse.ArgumentParser, path: str = "novakms"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{path} {name}")


#: Options hidden on purpose: refused with an explanation (a secret on the command line).
HIDDEN = {("novakms dev", "--master-secret")}


def test_every_option_has_help_and_shows_its_default() -> None:
    walked = list(_parsers(build_parser()))
    assert len(walked) > 30
    for path, parser in walked:
        text = parser.format_help()  # every help string formats (no stray %)
        for action in parser._actions:
            if isinstance(
                action,
                argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction,
            ):
                continue
            name = action.option_strings[0] if action.option_strings else action.dest
            if (path, name) in HIDDEN:
                assert action.help == argparse.SUPPRESS
                continue
            assert action.help, f"{path} {name} has no help"
            default = action.default
            if action.option_strings and default not in (None, False, argparse.SUPPRESS, []):
                line = text[text.index(f"\n  {name}") + 1 :]
                end = line.find("\n  -")
                shown = line if end < 0 else line[:end]
                assert "default" in shown.lower(), f"{path} {name}: no default shown"
                assert str(default) in shown, f"{path} {name}: default {default} not shown"


@pytest.mark.parametrize("command", ["", "serve", "dev", "client", "admin"])
def test_help_has_examples(command: str) -> None:
    parser = build_parser()
    helps = dict(_parsers(parser))
    text = helps[f"novakms {command}".strip()].format_help()
    assert "examples:" in text
    assert f"novakms {command}".strip() in text.split("examples:")[1]


def test_the_client_path_does_not_load_the_chain_or_the_server() -> None:
    code = (
        "import sys\n"
        "from novakms.cli.main import main\n"
        "try:\n"
        "    main(['client', '--node', '127.0.0.1:1', 'health'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('eth_account', 'eth_abi', 'eth_utils', 'trio', 'novakms.server', "
        "'novakms.chain.abi', 'novakms.dev.cluster')\n"
        "print(','.join(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout)["error"]["code"] == "unavailable"  # it did run the call
    assert out.stderr.strip().splitlines()[-1:] in ([], [""]), out.stderr
