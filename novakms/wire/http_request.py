"""The metrics listener's HTTP/1.x exchange, sans-I/O: the request head in, one response out.

Pure. A scraper sends ``GET /metrics HTTP/1.1`` with a few headers and reads one response; the
listener answers exactly one request per connection and closes it (``Connection: close``), so
only the head is parsed: a request line ``METHOD SP TARGET SP HTTP/1.x`` of visible ASCII, and
header lines that are read up to the blank line and otherwise ignored. A body is never read
(a ``GET`` has none). The head is bounded by :data:`MAX_HEAD` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from novakms.errors import ProtocolError

__all__ = ["MAX_HEAD", "HttpRequest", "parse_head", "response"]

MAX_HEAD = 8192
"""The largest request head (request line and headers, with the blank line) accepted."""

_END = b"\r\n\r\n"
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A parsed request line."""

    method: str
    target: str
    version: str

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]


def parse_head(data: bytes) -> HttpRequest | None:
    """The request in ``data``, or None while its head is incomplete.

    Raises:
        ProtocolError: the head is longer than :data:`MAX_HEAD`, or its request line or a
            header line is malformed.
    """
    end = data.find(_END)
    if end < 0:
        if len(data) >= MAX_HEAD:
            raise ProtocolError(f"HTTP request head longer than {MAX_HEAD} bytes")
        return None
    if end + len(_END) > MAX_HEAD:
        raise ProtocolError(f"HTTP request head longer than {MAX_HEAD} bytes")
    try:
        text = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("HTTP request head is not ASCII") from None
    line, *headers = text.split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not all(part and part.isprintable() for part in parts):
        raise ProtocolError("malformed HTTP request line")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1") or not method.isalpha() or not method.isupper():
        raise ProtocolError("malformed HTTP request line")
    if not target.startswith("/"):
        raise ProtocolError("HTTP request target must be a path")
    for header in headers:
        name, colon, _ = header.partition(":")
        if not colon or not name or name != name.strip() or not name.isprintable():
            raise ProtocolError("malformed HTTP header line")
    return HttpRequest(method=method, target=target, version=version)


def response(status: int, body: bytes, *, content_type: str = "text/plain; charset=utf-8") -> bytes:
    """A complete ``HTTP/1.1`` response that closes the connection.

    Raises:
        KeyError: a status this module has no reason phrase for.
    """
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body
