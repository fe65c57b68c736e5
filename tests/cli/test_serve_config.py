"""``novakms serve --config FILE``: every option from a TOML file, the environment or flags.

The merge itself is pure (:mod:`novakms.cli.settings`) and tested on the real serve parser;
then ``novakms serve --check`` runs as a process to show what a node would start with, and a
node started from a config file alone serves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from novakms.cli.main import build_parser
from novakms.cli.settings import Setting, parse_file, resolve, settings_of
from novakms.errors import CliError

KMS = "0x" + "ab" * 20
NOVA = "0x" + "cd" * 20


def serve_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    serve: argparse.ArgumentParser = commands.choices["serve"]
    return serve


# As serve.py takes them (the global options the parser repeats after `serve` are not settings).
SETTINGS = settings_of(serve_parser(), skip=("config", "check", "log_level", "log_format"))


def by_key() -> dict[str, Setting]:
    return {s.key: s for s in SETTINGS}


def test_every_serve_option_has_a_file_key_and_a_variable() -> None:
    longs = {
        s[2:]
        for action in serve_parser()._actions
        for s in action.option_strings
        if s.startswith("--") and not s.startswith("--no-")  # --no-require-pin: the flag's off form
    } - {"help", "config", "check", "log-level", "log-format"}  # global options
    keys = by_key()
    assert set(keys) == (longs - {"limit"}) | {"limits"}
    assert keys["chain-rpc"].env == "NOVAKMS_CHAIN_RPC"
    assert keys["listen-proxy"].env == "NOVAKMS_LISTEN_PROXY" and keys["listen"].kind == "list"
    assert keys["limits"].env == "NOVAKMS_LIMITS" and keys["require-pin"].kind == "flag"


def test_a_file_sets_options_converted_as_on_the_command_line() -> None:
    values = parse_file(
        f"""
        listen = ["vsock://4294967295:7400", "tcp://127.0.0.1:7401"]
        listen-proxy = "tcp://0.0.0.0:7402"
        kms-registry = "{KMS.upper().replace("X", "x")}"
        poll-interval = 1
        block-tag = "latest"
        require-pin = true
        [limits]
        max_inflight = 64
        quota_mode = "evict"
        """,
        SETTINGS,
        name="n.toml",
    )
    assert values == {
        "listen": ["vsock://4294967295:7400", "tcp://127.0.0.1:7401"],
        "listen_proxy": ["tcp://0.0.0.0:7402"],
        "kms_registry": KMS,  # normalized by the option's own type
        "poll_interval": 1.0,
        "block_tag": "latest",
        "require_pin": True,
        "limit": ["max_inflight=64", "quota_mode=evict"],
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listen = [", "not valid TOML"),
        ('chain_rpc = "http://x"', "unknown key 'chain_rpc'"),  # the option's name is chain-rpc
        ('poll-interval = "2"', "'poll-interval' must be a number"),
        ("poll-interval = true", "'poll-interval' must be a number"),
        ("chain-rpc = 5", "'chain-rpc' must be a text"),
        ('require-pin = "yes"', "'require-pin' must be true or false"),
        ("listen = [1]", "'listen' must be a text or an array of texts"),
        ('block-tag = "pending"', "'pending' is not one of finalized, safe, latest"),
        ('kms-registry = "0x1234"', "is not an address"),
        ('peer-proxy = "ftp://x:1"', "unknown scheme"),
        ("limits = 5", "must be a table"),
        ("[limits]\nmax_inflight = true", "limit 'max_inflight' must be a number"),
    ],
)
def test_a_bad_file_is_refused_naming_the_key(text: str, message: str) -> None:
    with pytest.raises(CliError, match=r"config n\.toml") as info:
        parse_file(text, SETTINGS, name="n.toml")
    assert message in str(info.value)


def test_command_line_beats_environment_beats_file_beats_default() -> None:
    file_values = {
        "chain_rpc": "http://file",
        "rpc_timeout": 1.0,
        "poll_interval": 7.0,
        "listen": ["tcp://file:1", "tcp://file:2"],
        "limit": ["max_inflight=8", "max_frame=4096"],
    }
    environ = {
        "NOVAKMS_CHAIN_RPC": "http://env",
        "NOVAKMS_POLL_INTERVAL": "3",
        "NOVAKMS_LISTEN": "tcp://env:1",
        "NOVAKMS_LIMITS": "max_frame=8192, max_connections=10",
        "NOVAKMS_REQUIRE_PIN": "yes",
        "NOVAKMS_BLOCK_TAG": "",  # empty: not set
    }
    given = {"chain_rpc": "http://flag", "limit": ["max_connections=20"]}
    resolved = resolve(
        SETTINGS,
        given,
        environ=environ,
        file_values=file_values,
        defaults={"block_tag": "finalized", "rpc_timeout": 5.0, "poll_interval": 2.0},
    )
    assert resolved["chain_rpc"] == "http://flag"  # flag > env > file
    assert resolved["poll_interval"] == 3.0  # env > file > default
    assert resolved["rpc_timeout"] == 1.0  # file > default
    assert resolved["block_tag"] == "finalized"  # default
    assert resolved["listen"] == ["tcp://env:1"]  # a list is replaced, not appended to
    assert resolved["listen_proxy"] == [] and resolved["require_pin"] is True
    # Limits merge per name, the higher source winning (later items win).
    assert resolved["limit"] == [
        "max_inflight=8",
        "max_frame=4096",
        "max_frame=8192",
        "max_connections=10",
        "max_connections=20",
    ]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("NOVAKMS_POLL_INTERVAL", "soon", "NOVAKMS_POLL_INTERVAL"),
        ("NOVAKMS_REQUIRE_PIN", "maybe", "NOVAKMS_REQUIRE_PIN must be"),
        ("NOVAKMS_KMS_REGISTRY", "0x12", "is not an address"),
    ],
)
def test_a_bad_variable_is_refused_naming_it(variable: str, value: str, message: str) -> None:
    with pytest.raises(CliError, match=message):
        resolve(SETTINGS, {}, environ={variable: value}, file_values={}, defaults={})


# --- the command --------------------------------------------------------------------------


def serve(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOVAKMS_")}
    return subprocess.run(
        [sys.executable, "-m", "novakms.cli", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
        cwd=cwd,
    )


def one_json_line(out: subprocess.CompletedProcess[str]) -> Any:
    lines = out.stdout.splitlines()
    assert len(lines) == 1, out.stdout + out.stderr
    return json.loads(lines[0])


ENCLAVE_FILE = f"""
listen-proxy = ["vsock://4294967295:7400"]
nova-app-registry = "{NOVA}"
kms-registry = "{KMS}"
peer-proxy = "vsock://3:18001"
[limits]
max_connections = 512
"""


def test_check_prints_what_an_enclave_node_would_start_with(tmp_path: Path) -> None:
    (tmp_path / "kms.toml").write_text(ENCLAVE_FILE)
    out = serve("--config", "kms.toml", "--check", env={"IN_ENCLAVE": "1"}, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert one_json_line(out) == {
        "ok": True,
        "mode": "enclave",
        "config": "kms.toml",
        "listen": [],
        "listen_proxy": ["vsock://4294967295:7400"],
        "metrics": [],
        "access_log": False,
        "reuse_port": False,
        "wallet": None,
        "registry": None,
        "chain": {
            "rpc": "http://127.0.0.1:18545",  # the in-enclave light client
            "nova_app_registry": NOVA,
            "kms_registry": KMS,
            "block_tag": "finalized",
            "poll_interval": 2.0,
            "auth_ttl": 300.0,
            "rpc_timeout": 5.0,
        },
        "odyn_url": "http://127.0.0.1:18000",
        "peer_proxy": "vsock://3:18001",
        "require_pin": True,
        "master_secret_file": False,
        "limits": {"max_connections": 512},
    }


def test_the_environment_and_flags_override_the_file(tmp_path: Path) -> None:
    (tmp_path / "kms.toml").write_text(ENCLAVE_FILE)
    env = {
        "IN_ENCLAVE": "1",
        "NOVAKMS_CONFIG": "kms.toml",  # the file from the environment
        "NOVAKMS_LISTEN_PROXY": "vsock://4294967295:7500",
        "NOVAKMS_LIMITS": "max_connections=600,max_inflight=16",
        "NOVAKMS_BLOCK_TAG": "safe",
    }
    out = serve(
        "--check", "--limit", "max_inflight=8", "--block-tag", "latest", env=env, cwd=tmp_path
    )
    check = one_json_line(out)
    assert check["listen_proxy"] == ["vsock://4294967295:7500"]
    assert check["limits"] == {"max_connections": 600, "max_inflight": 8}
    assert check["chain"]["block_tag"] == "latest"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("listen = 7400", {}, "'listen' must be a text or an array of texts"),
        ('mode = "enclave"', {}, "unknown key 'mode'"),
        (f'kms-registry = "{KMS}"', {}, "needs --nova-app-registry and --kms-registry"),
        ('key-file = "node.key"', {}, "--key-file is a development input"),
        ('listen = ["tcp://x"]\n' + ENCLAVE_FILE, {}, "listen address 'tcp://x'"),
        (ENCLAVE_FILE, {"NOVAKMS_RPC_TIMEOUT": "0"}, "--rpc-timeout must be more than 0"),
        (ENCLAVE_FILE, {"NOVAKMS_CHAIN_RPC": "ws://x"}, "is not an http(s) URL"),
        (ENCLAVE_FILE + "max_nonsense = 1\n", {}, "unknown limit"),
    ],
)
def test_a_misconfiguration_is_one_json_line_and_exit_2(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    (tmp_path / "kms.toml").write_text(text)
    out = serve("--config", "kms.toml", env={"IN_ENCLAVE": "1", **env}, cwd=tmp_path)
    assert out.returncode == 2
    error = one_json_line(out)["error"]
    assert error["code"] == "bad_request" and message in error["message"], error
    assert "Traceback" not in out.stderr


def test_a_missing_config_file_is_refused(tmp_path: Path) -> None:
    out = serve("--config", "nope.toml", env={"IN_ENCLAVE": "1"}, cwd=tmp_path)
    assert out.returncode == 2
    assert "cannot read the config nope.toml" in one_json_line(out)["error"]["message"]


def test_a_flag_turned_on_below_is_turned_off_by_its_no_form() -> None:
    args = serve_parser().parse_args(["--no-require-pin"])
    given = {s.dest: getattr(args, s.dest) for s in SETTINGS}
    resolved = resolve(
        SETTINGS,
        given,
        environ={"NOVAKMS_REQUIRE_PIN": "1"},
        file_values={"require_pin": True},
        defaults={},
    )
    assert resolved["require_pin"] is False
    unset = serve_parser().parse_args([])
    assert unset.require_pin is None  # not given: the lower sources decide
