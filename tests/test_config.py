"""Configuration parsing: limits, overrides, and the IN_ENCLAVE mode decision."""

from __future__ import annotations

import pytest

from novakms.config import (
    Limits,
    enclave_mode,
    parse_in_enclave,
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
    ("value", "parsed"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("true", True),
        ("1", True),
        (" TRUE ", True),
        ("on", True),
        ("false", False),
        ("0", False),
        (" False ", False),
        ("off", False),
    ],
)
def test_in_enclave_has_one_reading(value: str | None, parsed: bool | None) -> None:
    env = {} if value is None else {"IN_ENCLAVE": value}
    assert parse_in_enclave(env) is parsed


@pytest.mark.parametrize("value", ["garbage", "maybe", "tru", "2"])
def test_an_unparsable_in_enclave_is_refused_not_guessed(value: str) -> None:
    with pytest.raises(ValueError, match="IN_ENCLAVE must be one of"):
        parse_in_enclave({"IN_ENCLAVE": value})
    with pytest.raises(ValueError):
        enclave_mode({"IN_ENCLAVE": value}, nsm_present=True, default=True)


def test_the_nsm_device_wins_over_in_enclave_false() -> None:
    assert enclave_mode({"IN_ENCLAVE": "false"}, nsm_present=True, default=False)
    assert not enclave_mode({"IN_ENCLAVE": "false"}, nsm_present=False, default=True)
    assert enclave_mode({}, nsm_present=False, default=True)  # serve: unset is enclave
    assert not enclave_mode({}, nsm_present=False, default=False)  # dev tools


def test_every_limit_is_documented_in_protocol_section_10() -> None:
    import dataclasses
    import re
    from pathlib import Path

    from novakms.config import Limits

    doc = (Path(__file__).parent.parent / "protocol" / "PROTOCOL.md").read_text()
    section = doc[doc.index("## 10. Limits") : doc.index("## 11.")]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    named = {name for row in rows for name in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    missing = [f.name for f in dataclasses.fields(Limits) if f.name not in named]
    assert not missing, f"limits missing from PROTOCOL.md §10: {missing}"
