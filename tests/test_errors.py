"""The exception tree: wire codes, rebuilding errors from the wire, fresh copies."""

from __future__ import annotations

import traceback

import pytest

from novakms.errors import (
    CODES,
    Forbidden,
    InternalError,
    RateLimited,
    Unavailable,
    error_from_wire,
)


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_round_trips_through_the_wire(code: str) -> None:
    error = CODES[code]("message", extra=1)
    rebuilt = error_from_wire(error.to_wire())
    assert (
        type(rebuilt) is CODES[code]
        and rebuilt.message == "message"
        and rebuilt.details == {"extra": 1}
    )


def test_unavailable_keeps_its_reason_and_unknown_codes_are_internal() -> None:
    rebuilt = error_from_wire(Unavailable("busy", reason="split_brain").to_wire())
    assert isinstance(rebuilt, Unavailable) and rebuilt.reason == "split_brain"
    assert isinstance(error_from_wire({"code": "nope", "message": "x"}), InternalError)
    assert isinstance(error_from_wire({"code": 5}), InternalError)
    assert error_from_wire({"code": "forbidden", "message": 7}).message == "forbidden"


def test_fresh_copies_do_not_accumulate_tracebacks() -> None:
    stored = RateLimited("slow down", retry_after_ms=5)
    depths = []
    for _ in range(5):
        with pytest.raises(RateLimited) as info:
            raise stored.fresh()
        assert info.value.details == {"retry_after_ms": 5}
        depths.append(len(traceback.extract_tb(info.value.__traceback__)))
    assert len(set(depths)) == 1
    assert stored.__traceback__ is None
    assert Forbidden("no", reason="app_not_active").fresh().details["reason"] == "app_not_active"
    fresh = Unavailable("x", reason="not_ready").fresh()
    assert isinstance(fresh, Unavailable) and fresh.reason == "not_ready"
