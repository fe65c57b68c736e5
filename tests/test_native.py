"""The compiled hot modules (``scripts/native``, mypyc) against their own sources.

The whole suite runs against whatever this checkout imports: compiled modules where
``scripts/setup`` could build them (CI), the sources elsewhere. This file checks that a build
is current (a module edited after it would otherwise keep running its old compiled self), and
that each compiled module behaves as its source, loaded beside it under another name, on
generated inputs: same values, same exceptions with the same messages.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novakms import native
from novakms.wire import cbor, channel, framing, messages
from tests.wire.test_cbor import value_and_loose_encoding
from tests.wire.test_cbor_fast import budgets, decoded, depths, subset_values, values_with_faults

loose_encodings = value_and_loose_encoding().map(lambda pair: pair[1])
COMPILED = native.compiled()
needs_build = pytest.mark.skipif(
    not all(COMPILED.values()),
    reason="the modules run as source in this checkout (no scripts/native build)",
)


def test_a_build_is_current_and_whole() -> None:
    # Either nothing is compiled, or every module is, from its current source.
    assert len(set(COMPILED.values())) == 1, COMPILED
    assert native.stale() == [], "a source changed after the build: run scripts/native build"
    if all(COMPILED.values()):
        built = json.loads(native.MANIFEST.read_text(encoding="utf-8"))
        assert built == native.source_digests()


def test_the_build_command_line() -> None:
    assert native.main(["bogus"]) == 2
    assert native.main([]) == 2
    assert native.main(["status"]) == 0


def _source_module(module: str) -> ModuleType:
    path = Path(native.__file__).parent.parent.joinpath(*module.split(".")).with_suffix(".py")
    name = "source_of_" + module.replace(".", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded  # dataclasses look their module up
    spec.loader.exec_module(loaded)
    return loaded


@pytest.fixture(scope="module")
def source() -> Iterator[dict[str, ModuleType]]:
    modules = {m.rpartition(".")[2]: _source_module(m) for m in native.MODULES}
    yield modules
    for m in native.MODULES:
        sys.modules.pop("source_of_" + m.replace(".", "_"), None)


def test_the_source_modules_are_not_the_compiled_ones(source: dict[str, ModuleType]) -> None:
    assert source["cbor"].__file__ is not None and source["cbor"].__file__.endswith(".py")
    assert source["cbor"].decode is not cbor.decode


def _outcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        return ("ok", repr(fn()))
    except Exception as exc:  # any difference counts, whatever it is
        return ("raised", type(exc), str(exc))


@needs_build
@given(subset_values | values_with_faults)
def test_compiled_encode_is_the_source(source: dict[str, ModuleType], value: Any) -> None:
    src = source["cbor"]
    assert _outcome(lambda: cbor.encode(value)) == _outcome(lambda: src.encode(value))
    assert _outcome(lambda: cbor.encode_reference(value)) == _outcome(
        lambda: src.encode_reference(value)
    )


@needs_build
@given(
    value_and_loose_encoding().map(lambda pair: pair[1]) | st.binary(max_size=64), depths, budgets
)
def test_compiled_decode_is_the_source(
    source: dict[str, ModuleType], data: bytes, max_depth: int, max_items: int | None
) -> None:
    src = source["cbor"]
    for name in ("decode", "decode_reference"):
        ours, theirs = getattr(cbor, name), getattr(src, name)
        assert decoded(partial(ours, data, max_depth=max_depth, max_items=max_items)) == decoded(
            partial(theirs, data, max_depth=max_depth, max_items=max_items)
        )
    assert _outcome(lambda: cbor.decode_byte_string(data)) == _outcome(
        lambda: src.decode_byte_string(data)
    )


@needs_build
@given(
    st.lists(st.binary(min_size=0, max_size=40), max_size=8),
    st.lists(st.integers(1, 30), min_size=1, max_size=6),
    st.integers(1, 48),
)
def test_compiled_frame_decoder_is_the_source(
    source: dict[str, ModuleType], bodies: list[bytes], cuts: list[int], max_frame: int
) -> None:
    """The same frames (empty and oversize ones included) fed in the same pieces."""
    stream = b"".join(len(b).to_bytes(4, "big") + b for b in bodies)
    runs = []
    for module in (framing, source["framing"]):
        decoder = module.FrameDecoder(max_frame=max_frame)
        seen: list[tuple[Any, ...]] = []
        pos, i = 0, 0
        while pos < len(stream):
            piece = stream[pos : pos + cuts[i % len(cuts)]]
            pos, i = pos + len(piece), i + 1
            seen.append(_outcome(lambda d=decoder, p=piece: d.feed(p)))  # type: ignore[misc]
            seen.append(_outcome(decoder.next_body))
            seen.append(_outcome(decoder.next_body))
        seen.append(_outcome(decoder.eof))
        runs.append(seen)
    assert runs[0] == runs[1]


@needs_build
@given(
    st.dictionaries(
        st.sampled_from(["id", "op", "args", "x"]),
        st.none()
        | st.integers(-1, 2**64)
        | st.text(max_size=3)
        | st.dictionaries(st.text(max_size=2), st.integers()),
        max_size=4,
    )
    | st.integers()
    | st.text()
)
def test_compiled_request_parsing_is_the_source(source: dict[str, ModuleType], item: Any) -> None:
    def parse(module: ModuleType) -> tuple[Any, ...]:
        try:
            request = module.parse_request(item)
            return ("ok", request.id, request.op, request.args)
        except Exception as exc:
            return ("raised", type(exc), str(exc), getattr(exc, "request_id", None))

    assert parse(messages) == parse(source["messages"])


@needs_build
@given(st.lists(subset_values, min_size=1, max_size=5))
def test_compiled_channel_talks_to_the_source(
    source: dict[str, ModuleType], items: list[Any]
) -> None:
    a, b = bytes(range(32)), bytes(range(32, 64))
    ours = channel.SecureChannel(send_key=a, recv_key=b)
    theirs = source["channel"].SecureChannel(send_key=b, recv_key=a)
    twin = source["channel"].SecureChannel(send_key=a, recv_key=b)
    for item in items:
        try:
            body = ours.seal(item)
        except (TypeError, ValueError):
            continue  # the value is outside the subset (a tuple, an enum…): sealed by neither
        assert body == twin.seal(item)  # same keys, same counter: same bytes
        assert repr(theirs.open(body)) == repr(cbor.decode(cbor.encode(item)))
        assert repr(ours.open(theirs.seal(item))) == repr(cbor.decode(cbor.encode(item)))
