"""The exception tree: wire codes, rebuilding errors from the wire, fresh copies."""

from __future__ import annotations

import ast
import re
import traceback
from pathlib import Path

import pytest

import novakms.errors as errors
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


# -- the tree: one home, codes that mean what the classes say ----------------------------------


_PACKAGE = Path(errors.__file__).parent
_PROTOCOL = _PACKAGE.parent / "protocol" / "PROTOCOL.md"


def _exception_classes() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, BaseException)
        if value.__module__ == errors.__name__
    }


def _documented_codes() -> set[str]:
    text = _PROTOCOL.read_text(encoding="utf-8")
    section = text.split("## 7. Error codes", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))


def test_every_exception_class_of_the_package_lives_in_errors() -> None:
    own = set(_exception_classes())
    elsewhere = []
    for path in sorted(_PACKAGE.rglob("*.py")):
        if path.name == "errors.py" and path.parent == _PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {
                b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
            }
            if bases & (own | {"Exception", "ValueError", "RuntimeError", "BaseException"}):
                elsewhere.append(f"{path.relative_to(_PACKAGE.parent)}:{node.lineno} {node.name}")
    assert elsewhere == [], "exception classes outside novakms/errors.py: " + ", ".join(elsewhere)


def test_wire_codes_are_the_documented_ones() -> None:
    assert set(errors.WIRE_CODES) == _documented_codes()


@pytest.mark.parametrize("name", sorted(_exception_classes()))
def test_every_class_has_a_documented_code_or_is_local(name: str) -> None:
    cls = _exception_classes()[name]
    if issubclass(cls, errors.NovaKMSError):
        assert not issubclass(cls, errors.LocalError)
        assert cls.code in errors.WIRE_CODES, f"{name}.code {cls.code!r} is not in §7"
    else:
        assert issubclass(cls, errors.LocalError), f"{name} is neither remote nor local"
        assert cls.code is None, f"local {name} must not carry a wire code"


@pytest.mark.parametrize("name", sorted(_exception_classes()))
def test_class_and_code_tell_the_same_story(name: str) -> None:
    cls = _exception_classes()[name]
    if not issubclass(cls, errors.NovaKMSError) or cls in (
        errors.NovaKMSError,
        errors.RequestError,
    ):
        return
    # The peer-fault groups (ProtocolError, HandshakeError) only borrow a code for the close
    # notice; the one documented exception is listed with its reason.
    if issubclass(cls, errors.ProtocolError | errors.HandshakeError):
        return
    expected = errors.Unavailable if cls.code == "unavailable" else errors.CODES[cls.code]
    assert issubclass(cls, expected), f"{name} is coded {cls.code!r} but is no {expected.__name__}"


def test_every_documented_code_round_trips_to_its_class() -> None:
    for code in errors.WIRE_CODES:
        rebuilt = error_from_wire({"code": code, "message": "m", "reason": "r"})
        assert rebuilt.code == code
        expected = errors.Unavailable if code == "unavailable" else errors.CODES[code]
        assert type(rebuilt) is expected


@pytest.mark.parametrize(
    ("cls", "reason"),
    [
        (errors.TransportError, "transport"),
        (errors.TransportTimeout, "timeout"),
        (errors.NetworkError, "network"),
        (errors.ChainError, "chain"),
        (errors.ChainUnavailable, "chain"),
    ],
)
def test_local_unavailability_keeps_its_reason_off_the_wire_map(
    cls: type[errors.NovaKMSError], reason: str
) -> None:
    error = cls("link lost", extra=1)
    assert getattr(error, "reason", None) == reason
    assert isinstance(error, Unavailable)  # class and code agree
    assert error.to_wire() == {"code": "unavailable", "message": "link lost", "extra": 1}
    copy = error.fresh()
    assert type(copy) is cls and copy.details == {"extra": 1}


def test_local_errors_keep_their_builtin_bases() -> None:
    assert issubclass(errors.RegistryFormatError, ValueError)
    assert issubclass(errors.ShamirError, ValueError)
    assert issubclass(errors.AnvilNotFound, FileNotFoundError)
    assert issubclass(errors.LocalProtocolError, RuntimeError)
    assert not issubclass(errors.CliError, errors.NovaKMSError)
