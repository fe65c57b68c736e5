"""The pure halves of logging: value escaping (render) and flood sampling (sampling)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novakms.log.render import logfmt_key, logfmt_value, render_json, render_logfmt
from novakms.log.sampling import Sampler
from tests.test_observability import parse_logfmt


@given(st.text())
def test_any_text_value_round_trips_through_one_logfmt_field(text: str) -> None:
    line = render_logfmt({"event": "e", "op": text})
    assert "\n" not in line and "\r" not in line and line.isascii()
    assert parse_logfmt(line) == {"event": "e", "op": text}


@given(st.text())
def test_any_text_value_is_one_json_line(text: str) -> None:
    line = render_json({"event": "e", "op": text})
    assert line.isascii() and "\n" not in line and json.loads(line)["op"] == text


def test_values_of_other_types_and_keys_outside_the_alphabet() -> None:
    assert logfmt_value(None) == "null" and logfmt_value(True) == "true"
    assert logfmt_value(3) == "3" and logfmt_value("") == '""'
    assert logfmt_value(b"\x01\x02") == '"<2 bytes>"'  # never the bytes themselves
    assert logfmt_key("a b=c") == "a_b_c" and logfmt_key("") == "_"
    assert json.loads(render_json({"x": float("nan")}))["x"] == "nan"
    line = render_logfmt({"z": 1, "event": "e", "ts": "t", "level": "info", "logger": "n"})
    assert line == "ts=t level=info logger=n event=e z=1"


def test_the_sampler_writes_a_burst_per_window_then_reports_what_it_left_out() -> None:
    sampler = Sampler(burst=2, window=10.0)
    assert [sampler.admit("a", t) for t in (0.0, 1.0, 2.0, 3.0)] == [0, 0, None, None]
    assert sampler.admit("b", 3.0) == 0  # kinds are sampled apart
    assert sampler.pending() == {"a": 2}
    assert sampler.admit("a", 10.0) == 2  # the next window's first line says how many
    assert sampler.pending() == {}
    with pytest.raises(ValueError):
        Sampler(burst=0)


def test_the_sampler_remembers_a_bounded_number_of_kinds() -> None:
    sampler = Sampler(burst=1, window=10.0, max_kinds=2)
    for kind in ("a", "b", "c"):
        assert sampler.admit(kind, 0.0) == 0
    assert sampler.admit("a", 1.0) == 0  # "a" was forgotten: a fresh window
    assert len(sampler.pending()) == 0
