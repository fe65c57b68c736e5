"""The one exception tree of novakms, and the stable wire error codes.

Every error the service can report is a :class:`NovaKMSError` carrying a stable ``code`` string
(see ``protocol/PROTOCOL.md`` §7). The classes are grouped by what the caller can do:

* request errors (``BadRequest`` … ``InternalError``) travel in a response's ``err`` map and
  leave the connection usable;
* :class:`ProtocolError` and :class:`ChannelError` mean the byte stream itself is broken: the
  connection is closed (after a close notice where one can still be sent);
* :class:`TransportError` is raised by clients when the connection is lost or times out.

Messages sent to a peer never carry secrets or stack traces; details stay in the local log.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "CODES",
    "BadRequest",
    "ChannelError",
    "Conflict",
    "Forbidden",
    "FrameTooLarge",
    "HandshakeError",
    "InternalError",
    "InvalidSignature",
    "NotFound",
    "NovaKMSError",
    "ProtocolError",
    "QuotaExceeded",
    "RateLimited",
    "RequestError",
    "TooLarge",
    "TransportError",
    "Unauthenticated",
    "Unavailable",
    "UnknownOp",
    "UnsupportedVersion",
    "error_from_wire",
]


class NovaKMSError(Exception):
    """Base of every novakms error.

    Args:
        message: human-readable text; safe to send to a peer (never secrets).
        **details: extra machine-readable fields sent with the error (e.g. ``reason``).
    """

    code: ClassVar[str] = "internal"

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details: dict[str, Any] = details

    def fresh(self) -> NovaKMSError:
        """A new instance with the same type, message and details.

        Raise this instead of re-raising a stored error: every ``raise`` of one instance
        extends its ``__traceback__``, which grows without bound when done per request.
        """
        return type(self)(self.message, **self.details)

    def to_wire(self) -> dict[str, Any]:
        """The ``err`` map for this error: ``{"code", "message", **details}``."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        body.update(self.details)
        return body


class RequestError(NovaKMSError):
    """An error answered in a response; the connection stays usable."""


class BadRequest(RequestError):
    code = "bad_request"


class Unauthenticated(RequestError):
    code = "unauthenticated"


class Forbidden(RequestError):
    code = "forbidden"


class NotFound(RequestError):
    code = "not_found"


class Conflict(RequestError):
    code = "conflict"


class TooLarge(RequestError):
    code = "too_large"


class QuotaExceeded(RequestError):
    code = "quota_exceeded"


class RateLimited(RequestError):
    code = "rate_limited"


class Unavailable(RequestError):
    """The node cannot decide or serve right now; ``reason`` says why (machine-readable)."""

    code = "unavailable"

    def __init__(self, message: str = "", *, reason: str, **details: Any) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


class UnsupportedVersion(RequestError):
    code = "unsupported_version"


class UnknownOp(RequestError):
    code = "unknown_op"


class InternalError(RequestError):
    code = "internal"


class ProtocolError(NovaKMSError):
    """The peer broke the wire protocol (framing, CBOR, message shape). Connection-fatal."""

    code = "bad_request"


class FrameTooLarge(ProtocolError):
    """A frame's declared length exceeds the configured maximum."""

    code = "too_large"


class HandshakeError(NovaKMSError):
    """The secure-channel handshake failed (bad signature, stale timestamp, wrong wallet…)."""

    code = "unauthenticated"


class ChannelError(ProtocolError):
    """A sealed frame failed to open (tag failure, replay, reorder, counter exhausted)."""


class TransportError(NovaKMSError):
    """Client side: the connection was lost, refused or timed out."""

    code = "unavailable"


CODES: dict[str, type[RequestError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        TooLarge,
        QuotaExceeded,
        RateLimited,
        UnsupportedVersion,
        UnknownOp,
        InternalError,
    )
}


def error_from_wire(err: dict[str, Any]) -> NovaKMSError:
    """Rebuild a typed error from a received ``err`` map (unknown codes become InternalError)."""
    code = err.get("code")
    raw_message = err.get("message")
    message = raw_message if isinstance(raw_message, str) else ""
    details = {k: v for k, v in err.items() if k not in ("code", "message")}
    if code == Unavailable.code:
        reason = details.pop("reason", "unknown")
        return Unavailable(message, reason=str(reason), **details)
    cls = CODES.get(code) if isinstance(code, str) else None
    if cls is None:
        return InternalError(message or f"unknown error code {code!r}", **details)
    return cls(message, **details)


class InvalidSignature(HandshakeError):
    """A signature is malformed or does not recover to the claimed wallet."""
