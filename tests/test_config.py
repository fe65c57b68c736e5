"""Configuration parsing: limits, overrides, and the IN_ENCLAVE mode decision."""

from __future__ import annotations

import pytest

from novakms.config import (
    Limits,
    ServerConfig,
    explicitly_in_enclave,
    in_enclave_from_env,
    parse_limit_overrides,
)


def test_defaults_match_the_protocol_document() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "protocol" / "PROTOCOL.md").read_text()
    limits = Limits()
    assert f"{limits.max_frame:,}" in doc
    assert f"`max_inflight` requests per connection | {limits.max_inflight}" in doc
    assert f"`max_connections` per node | {limits.max_connections}" in doc
    assert f"±{limits.timestamp_window} s" in doc
    assert f"{limits.wallet_rate:g}/s, burst {limits.wallet_burst:g}" in doc
    assert f"{limits.handshake_rate:g}/s, burst {limits.handshake_burst:g}" in doc


def test_overrides() -> None:
    limits = parse_limit_overrides(["max_inflight=8", "idle-timeout=2.5"])
    assert limits.max_inflight == 8 and limits.idle_timeout == 2.5
    for bad in (
        ["nope=1"],
        ["max_inflight"],
        ["max_inflight=x"],
        ["max_inflight=0"],
        ["max_frame=10"],
        ["max_derive_length=9000"],
        ["wallet_burst=0.5"],
    ):
        with pytest.raises(ValueError):
            parse_limit_overrides(bad)


@pytest.mark.parametrize(
    ("value", "enclave"),
    [
        (None, True),
        ("", True),
        ("garbage", True),
        ("true", True),
        ("1", True),
        ("TRUE", True),
        ("false", False),
        ("0", False),
        ("no", False),
        (" False ", False),
        ("off", False),
    ],
)
def test_in_enclave_parsing_is_safe_by_default(value: str | None, enclave: bool) -> None:
    env = {} if value is None else {"IN_ENCLAVE": value}
    assert in_enclave_from_env(env) is enclave


def test_explicit_enclave_flag_for_dev() -> None:
    assert explicitly_in_enclave({"IN_ENCLAVE": "true"})
    assert not explicitly_in_enclave({})
    assert not explicitly_in_enclave({"IN_ENCLAVE": "garbage"})


def test_server_config_needs_a_listener() -> None:
    with pytest.raises(ValueError):
        ServerConfig(listen=())
