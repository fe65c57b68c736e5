"""protocol/vectors/framing.json through the real decoder, and the vectors' freshness."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from novakms.errors import ProtocolError
from novakms.wire import cbor
from novakms.wire.framing import FrameDecoder
from tests.harness.registry import VECTORS, load_vectors

FRAMING: dict[str, Any] = load_vectors("framing.json")


def from_json(value: Any) -> Any:
    """Undo the vectors' JSON rendering (byte strings are {"$bytes": hex})."""
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return bytes.fromhex(value["$bytes"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def decode_frames(frame: bytes, max_frame: int, split: int | None = None) -> list[Any]:
    decoder = FrameDecoder(max_frame=max_frame)
    chunks = (
        [frame] if split is None else [frame[i : i + split] for i in range(0, len(frame), split)]
    )
    items = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (body := decoder.next_body()) is not None:
            items.append(cbor.decode(body))
    decoder.eof()
    return items


@pytest.mark.parametrize("case", FRAMING["valid"], ids=lambda c: c["name"])
def test_valid_frames(case: dict[str, Any]) -> None:
    frame = bytes.fromhex(case["frame"])
    expected = from_json(case["item"])
    assert decode_frames(frame, case["max_frame"]) == [expected]
    assert decode_frames(frame, case["max_frame"], split=1) == [expected]


@pytest.mark.parametrize("case", FRAMING["invalid"], ids=lambda c: c["name"])
def test_invalid_frames(case: dict[str, Any]) -> None:
    frame = bytes.fromhex(case["frame"])
    for split in (None, 1):
        with pytest.raises(ProtocolError) as info:
            decode_frames(frame, case["max_frame"], split)
        assert info.value.code == case["error"], case["why"]


def test_oversize_is_refused_on_the_header_alone() -> None:
    for case in FRAMING["invalid"]:
        if case["error"] == "too_large":
            decoder = FrameDecoder(max_frame=case["max_frame"])
            with pytest.raises(ProtocolError):
                decoder.feed(bytes.fromhex(case["frame"])[:4])
                decoder.next_body()


def test_vector_files_are_fresh() -> None:
    """The checked-in vectors are exactly what the independent generator produces."""
    out = subprocess.run(
        [sys.executable, str(VECTORS / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
