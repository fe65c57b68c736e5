"""App operations served from the master secret alone: ``derive``, ``cert.ca``, ``cert.sign``.

The dispatcher has already checked the caller (column ``app``; ``cert.ca`` is open) and that
the secret is held and, when required, pinned.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from novakms.crypto.certs import sign_csr
from novakms.errors import BadRequest
from novakms.server.ops.args import Args
from novakms.server.ops.context import OpContext

__all__ = ["op_cert_ca", "op_cert_sign", "op_derive"]


async def op_derive(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """A key derived for the caller's app from the master secret."""
    identity = ctx.identity
    a = Args(args, {"path", "context", "length"})
    limits = ctx.limits
    path = a.text("path", required=True, min_bytes=1, max_bytes=limits.max_path_bytes)
    assert path is not None  # required=True
    context = a.text("context", max_bytes=limits.max_context_bytes)
    length = a.uint("length", default=32, minimum=1, maximum=limits.max_derive_length)
    key = ctx.keyring.derive_app_key(
        app_id=identity.app_id, path=path, context=context, length=length
    )
    return {"app_id": identity.app_id, "path": path, "key": key, "length": length}


async def op_cert_ca(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Any app's CA certificate (public)."""
    a = Args(args, {"app_id"})
    app_id = a.optional_uint("app_id", minimum=0, maximum=2**64 - 1)
    if app_id is None:
        raise BadRequest("app_id is required")
    return {"app_id": app_id, "certificate": ctx.keyring.ca_pem(app_id)}


async def op_cert_sign(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """A certificate for the caller's CSR, issued by its app's CA."""
    identity = ctx.identity
    a = Args(args, {"csr", "days"})
    csr = args.get("csr")
    if not isinstance(csr, str | bytes):
        raise BadRequest("csr is required: PEM text or DER bytes")
    days = a.optional_uint("days", minimum=1, maximum=36500)
    issued = sign_csr(
        master_secret=ctx.keyring.require_secret(),
        app_id=identity.app_id,
        csr=csr,
        days=days,
        now=datetime.fromtimestamp(ctx.now, tz=UTC),
        serial_bytes=ctx.random_bytes,
        max_days=ctx.limits.cert_max_days,
        default_days=ctx.limits.cert_default_days,
    )
    return {
        "app_id": identity.app_id,
        "certificate": issued.certificate_pem,
        "ca": issued.ca_pem,
        "serial": format(issued.serial, "x"),
        "not_before_ms": int(issued.not_before.timestamp() * 1000),
        "not_after_ms": int(issued.not_after.timestamp() * 1000),
    }
