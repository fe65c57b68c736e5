"""Endpoint addresses: ``tcp://HOST:PORT`` (or ``HOST:PORT``), ``unix:///path``, ``vsock://CID:PORT``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Address", "parse_address"]

Scheme = Literal["tcp", "unix", "vsock"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Address:
    """A parsed endpoint: ``host``/``port`` (tcp), ``path`` (unix), ``cid``/``port`` (vsock)."""

    scheme: Scheme
    host: str = ""
    port: int = 0
    path: str = ""
    cid: int = 0

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        if self.scheme == "vsock":
            return f"vsock://{self.cid}:{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ValueError(f"{what}: port must be 0..65535")
    return int(text)


def parse_address(text: str) -> Address:
    """Parse an endpoint address.

    Raises:
        ValueError: malformed address (the message names it).
    """
    raw = text.strip()
    if raw.startswith("unix://"):
        path = raw[len("unix://") :]
        if not path.startswith("/") and not path.startswith("."):
            raise ValueError(f"{text!r}: unix socket path must be absolute or ./relative")
        return Address(scheme="unix", path=path)
    if raw.startswith("vsock://"):
        cid, sep, port = raw[len("vsock://") :].partition(":")
        if not sep or not cid.isdigit():
            raise ValueError(f"{text!r}: expected vsock://CID:PORT")
        return Address(scheme="vsock", cid=int(cid), port=_port(port, text))
    if raw.startswith("tcp://"):
        raw = raw[len("tcp://") :]
    elif "://" in raw:
        raise ValueError(f"{text!r}: unknown scheme (use tcp://, unix:// or vsock://)")
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected [IPv6]:PORT")
        port = rest[1:]
    else:
        host, sep, port = raw.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r}: expected HOST:PORT")
    if not host:
        raise ValueError(f"{text!r}: missing host")
    return Address(scheme="tcp", host=host, port=_port(port, text))
