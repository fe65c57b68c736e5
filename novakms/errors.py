"""The one exception tree of novakms, and the stable wire error codes.

Every exception class of the package lives here, grouped (as httpcore groups its own) by what
the caller can do about it::

    Exception
    ├── NovaKMSError                      carries a wire ``code`` (protocol/PROTOCOL.md §7)
    │   ├── RequestError                  REMOTE: answered in a response; the connection lives
    │   │   ├── BadRequest                     └── InvalidRequest (a frame that is no request)
    │   │   ├── Unauthenticated, Forbidden, NotFound, Conflict, TooLarge, QuotaExceeded,
    │   │   │   RateLimited, UnsupportedVersion, UnknownOp, InternalError
    │   │   └── Unavailable               try again later or elsewhere; ``reason`` says why
    │   │       ├── ChainError            LOCAL: the chain cannot be read now  (reason chain)
    │   │       │   ├── ChainUnavailable       └── TransactionTimeout
    │   │       │   ├── RpcError          the chain node answered with a JSON-RPC error
    │   │       │   └── TransactionFailed a transaction reverted
    │   │       └── TransportError        LOCAL side of a link: lost, refused (reason transport)
    │   │           ├── TransportTimeout  no connection or answer in time (reason timeout)
    │   │           └── NetworkError      connect / read / write failed   (reason network)
    │   ├── ProtocolError                 REMOTE peer fault: the byte stream is broken, close it
    │   │   ├── FrameTooLarge
    │   │   └── ChannelError              a sealed frame failed to open
    │   └── HandshakeError                REMOTE: the peer did not prove what it must
    │       └── InvalidSignature
    └── LocalError                        LOCAL: no wire code (``code is None``), never sent
        ├── UsageError                    this process misused an API (a bug here, not there)
        │   └── LocalProtocolError        a state machine was driven out of order
        ├── SealError                     a stored sealed value does not open
        ├── InvalidInput (ValueError)     a pure core refused a value it was handed:
        │   ├── RegistryFormatError, GuardianSetError       registry files / chain data
        │   ├── GuardianShareError, ShamirError             shares and split parameters
        │   └── InvalidRecord, ShareRefused                 replicated records, offered shares
        ├── CliError                      what the user asked for cannot be done (exit code 2)
        └── AnvilError (RuntimeError)     the dev chain did not start  └── AnvilNotFound

Remote errors travel: request errors in a response's ``err`` map (:func:`error_from_wire`
rebuilds them), protocol and handshake errors in a close notice before the connection closes.
Local errors are never sent; the glue that caught one decides what, if anything, to answer
(e.g. a refused share is answered as ``bad_request`` with its ``reason``). ``LocalError`` is
deliberately *not* a :class:`NovaKMSError`: an ``except NovaKMSError`` that forwards or prints a
wire error never swallows a local bug.

Class and code tell the same story: a :class:`ChainError` and a :class:`TransportError` (with
its :class:`TransportTimeout` / :class:`NetworkError`, httpcore's timeout-vs-network split) *are*
:class:`Unavailable` (what a caller should do: retry later or elsewhere). They happen on this side
of a link and are never sent as such, so their ``reason`` is an attribute only (``chain``,
``transport``, ``timeout``, ``network``) and not part of :attr:`NovaKMSError.details`:
``to_wire()`` and the CLI's JSON stay exactly as they were.

Messages sent to a peer never carry secrets or stack traces; details stay in the local log.
Where callers catch a builtin (``ValueError``, ``RuntimeError``, ``FileNotFoundError``) it stays a
second base.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

__all__ = [
    "CODES",
    "WIRE_CODES",
    "AnvilError",
    "AnvilNotFound",
    "BadRequest",
    "ChainError",
    "ChainUnavailable",
    "ChannelError",
    "CliError",
    "Conflict",
    "Forbidden",
    "FrameTooLarge",
    "GuardianSetError",
    "GuardianShareError",
    "HandshakeError",
    "InternalError",
    "InvalidInput",
    "InvalidRecord",
    "InvalidRequest",
    "InvalidSignature",
    "ListenError",
    "LocalError",
    "LocalProtocolError",
    "NetworkError",
    "NotFound",
    "NovaKMSError",
    "ProtocolError",
    "QuotaExceeded",
    "RateLimited",
    "RegistryFormatError",
    "RequestError",
    "RpcError",
    "SealError",
    "ShamirError",
    "ShareRefused",
    "TooLarge",
    "TransactionFailed",
    "TransactionTimeout",
    "TransportError",
    "TransportTimeout",
    "Unauthenticated",
    "Unavailable",
    "UnknownOp",
    "UnsupportedVersion",
    "UsageError",
    "error_from_wire",
]

#: Every wire error code of PROTOCOL.md §7, in the order of its table.
WIRE_CODES = (
    "bad_request",
    "unauthenticated",
    "forbidden",
    "not_found",
    "conflict",
    "too_large",
    "quota_exceeded",
    "rate_limited",
    "unavailable",
    "unsupported_version",
    "unknown_op",
    "internal",
)


class NovaKMSError(Exception):
    """Base of every error that carries a wire code.

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


# -- remote: request errors (answered in a response) ------------------------------------------


class RequestError(NovaKMSError):
    """An error answered in a response; the connection stays usable."""


class BadRequest(RequestError):
    code = "bad_request"


class InvalidRequest(BadRequest):
    """A frame that is not a valid request; ``request_id`` is set when it carried a usable id."""

    def __init__(self, message: str, request_id: int | None) -> None:
        super().__init__(message)
        self.request_id = request_id


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


# -- unavailable on this side of a link: transport and chain ----------------------------------


class _LocalUnavailable(Unavailable):
    """An :class:`Unavailable` that arises on this side of a link and is never sent as such.

    ``reason`` is fixed per class and kept off ``details``, so ``to_wire()`` (and the CLI's
    JSON, which prints ``code``, ``message`` and ``details``) is what it was before these
    classes became :class:`Unavailable`.
    """

    local_reason: ClassVar[str] = "unknown"

    def __init__(self, message: str = "", **details: Any) -> None:
        NovaKMSError.__init__(self, message, **details)
        self.reason = self.local_reason


class TransportError(_LocalUnavailable):
    """This side of a link: the connection was lost, refused or timed out.

    Never sent (the link is gone); ``reason`` is fixed per class (``transport``, ``timeout``,
    ``network``) and kept off ``details``.
    """

    local_reason = "transport"


class TransportTimeout(TransportError):
    """No connection or answer within the deadline (reason ``timeout``)."""

    local_reason = "timeout"


class NetworkError(TransportError):
    """Connecting, reading or writing failed (reason ``network``)."""

    local_reason = "network"


class ChainError(_LocalUnavailable):
    """Base of every chain-access error: the node cannot decide from the chain right now."""

    local_reason = "chain"


class ChainUnavailable(ChainError):
    """No usable answer from the chain node (transport, timeout, status, malformed body)."""


_DATA_RE = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_REVERT_CODE = 3  # geth, anvil, reth, erigon: "execution reverted" with data


class RpcError(ChainError):
    """The node answered with a JSON-RPC error object.

    Args:
        message: the node's ``error.message``.
        rpc_code: the node's ``error.code``.
        data: the node's ``error.data`` (any JSON value), or None.
        method: the JSON-RPC method that failed (for ``str()``).

    Attributes:
        rpc_code: the JSON-RPC error code (``-32601`` method not found, ``3`` revert, …).
        data: ``error.data`` as received.
        method: the method that failed.
        revert_data: for an execution revert, the revert bytes (``b""`` when the node sent
            none); None when the error is not a revert.
    """

    def __init__(self, message: str, *, rpc_code: int, data: Any = None, method: str = "") -> None:
        super().__init__(message)
        self.rpc_code = rpc_code
        self.data = data
        self.method = method
        self.revert_data = _revert_data(rpc_code, message, data)

    @property
    def is_revert(self) -> bool:
        """Whether this error reports an EVM execution revert."""
        return self.revert_data is not None

    def __str__(self) -> str:
        prefix = f"{self.method}: " if self.method else ""
        return f"{prefix}{self.message} (JSON-RPC error {self.rpc_code})"


def _revert_data(rpc_code: int, message: str, data: Any) -> bytes | None:
    """The revert bytes of an error object, or None when it is not a revert.

    Nodes put the revert data in ``error.data`` as a hex string (geth, anvil) or nested as
    ``error.data.data`` (some providers).

    Args:
        rpc_code: ``error.code``.
        message: ``error.message``.
        data: ``error.data``.

    Returns:
        The revert bytes (``b""`` for a revert without usable data), or None.
    """
    if isinstance(data, dict):
        data = data.get("data")
    raw: bytes | None = None
    if isinstance(data, str) and _DATA_RE.fullmatch(data):
        raw = bytes.fromhex(data[2:])
    if rpc_code == _REVERT_CODE or "revert" in message.lower():
        return raw if raw is not None else b""
    return None


class TransactionFailed(ChainError):
    """A transaction reverted (when mined, or already when its gas was estimated).

    Args:
        message: what failed.
        tx_hash: the transaction hash, or None when it was not sent (estimation reverted).
        receipt: the receipt of the mined transaction, or None.
        revert_data: the revert bytes when obtainable, else None.
        reason: the decoded ``Error(string)`` / ``Panic(uint256)`` reason, if any (the sender
            decodes it: this module knows no ABI).

    Attributes:
        tx_hash, receipt, revert_data, reason: as given.
    """

    def __init__(
        self,
        message: str,
        *,
        tx_hash: str | None = None,
        receipt: dict[str, Any] | None = None,
        revert_data: bytes | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.tx_hash = tx_hash
        self.receipt = receipt
        self.revert_data = revert_data
        # Shadows the class-level ``reason`` ("chain") on purpose: for a revert the decoded
        # reason is what a caller wants; the code is still ``unavailable``.
        self.reason = reason  # type: ignore[assignment]


class TransactionTimeout(ChainUnavailable):
    """A sent transaction was not mined (no receipt) within the timeout.

    Attributes:
        tx_hash: the transaction hash.
    """

    def __init__(self, message: str, *, tx_hash: str) -> None:
        super().__init__(message)
        self.tx_hash = tx_hash


# -- remote: the peer broke the protocol (connection-fatal) -----------------------------------


class ProtocolError(NovaKMSError):
    """The peer broke the wire protocol (framing, CBOR, message shape). Connection-fatal."""

    code = "bad_request"


class FrameTooLarge(ProtocolError):
    """A frame's declared length exceeds the configured maximum."""

    code = "too_large"


class ChannelError(ProtocolError):
    """A sealed frame failed to open (tag failure, replay, reorder, counter exhausted)."""


class HandshakeError(NovaKMSError):
    """The secure-channel handshake failed (bad signature, stale timestamp, wrong wallet…)."""

    code = "unauthenticated"


class InvalidSignature(HandshakeError):
    """A signature is malformed or does not recover to the claimed wallet."""


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


# -- local: never sent ------------------------------------------------------------------------


class LocalError(Exception):
    """Base of the errors that have no wire code: this process, its files, its own input.

    ``code`` is None: the class is never sent. The glue that catches one decides what to answer.
    """

    code: ClassVar[None] = None


class UsageError(LocalError, RuntimeError):
    """This process called an API wrongly (a bug on this side, not a fault of the peer)."""


class LocalProtocolError(UsageError):
    """A protocol state machine was driven out of order (a method called in the wrong state,
    twice, or after a failure). The state is left as it was."""


class SealError(LocalError):
    """A sealed value failed to open (wrong app, wrong key name, wrong data key, tampering)."""


class InvalidInput(LocalError, ValueError):
    """A pure core refused a value it was handed (a file, chain data, a record, a share)."""


class RegistryFormatError(InvalidInput):
    """Invalid registry data (JSON document or records); a ``ValueError``."""


class GuardianSetError(InvalidInput):
    """A guardian set that breaks the rules (KMSRegistry would refuse it); a ``ValueError``."""


class GuardianShareError(InvalidInput):
    """A share, a sealed share or a sealing input that is not acceptable.

    ``reason`` is a stable machine-readable code (PROTOCOL.md §9.3): for plaintexts
    ``too_large``, ``not_cbor``, ``not_a_map``, ``keys``, ``version``, ``x``, ``y``,
    ``threshold``, ``count``, ``set_version``, ``fingerprint``, ``wallet``, ``not_canonical``;
    for sealed shares ``truncated``, ``too_large``, ``bad_key``, ``decrypt``, ``wrong_wallet``,
    ``wrong_set``. Messages never contain a share value, a secret or a key.

    Args:
        reason: the code.
        message: human-readable text.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class ShamirError(InvalidInput):
    """Shares or split parameters that cannot work (messages never contain share values)."""


class InvalidRecord(InvalidInput):
    """A replicated record was refused.

    Args:
        reason: a stable code for logs and metrics (``novakms.cluster.replication.Reason``).
        detail: more for the local log only, never for the peer.

    Attributes:
        reason: the code.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class ShareRefused(InvalidInput):
    """A share this node does not keep. ``reason`` is a stable code for the answer and logs."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CliError(LocalError):
    """A problem with what the user asked for; printed as an error and exit code 2.

    Args:
        message: what went wrong (never a secret).
        **details: extra machine-readable fields of the error (e.g. ``reason``).
    """

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = details


class ListenError(LocalError, OSError):
    """An address cannot be listened on (in use, not permitted, no such interface, no vsock).

    An :class:`OSError` too, for callers that handle any socket error. The message names the
    address and the system's reason.
    """


class AnvilError(LocalError, RuntimeError):
    """Anvil could not be started, did not answer, or did not stop cleanly."""


class AnvilNotFound(AnvilError, FileNotFoundError):
    """No anvil binary: run ``scripts/setup``."""
