"""Guardian operations: ``guardian.share`` (a sealed share of the pinned secret) and
``guardian.restore`` (shares pooled until the secret is recovered, checked against the pin).

The dispatcher has already checked the caller: a ``guardian`` session whose wallet is in the
owner's current guardian set (``OpContext.guardians``). Shares are never logged or answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from novakms.cluster.recovery import check_share
from novakms.crypto import guardian_shares
from novakms.errors import BadRequest, GuardianShareError, ShareRefused, Unavailable
from novakms.log import get_logger
from novakms.server.ops.args import Args
from novakms.server.ops.context import OpContext

__all__ = ["op_guardian_restore", "op_guardian_share"]


def _guardian_wallet(ctx: OpContext) -> str:
    wallet = ctx.session.wallet
    assert wallet is not None  # the guardian column admits authenticated wallets only
    return wallet


async def op_guardian_share(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's share of the pinned secret, sealed to its encryption key."""
    wallet, guardians = _guardian_wallet(ctx), ctx.guardians
    keyring = ctx.keyring
    Args(args, set())
    secret = keyring.require_secret()
    if keyring.pin is None:
        # Backing up a secret the owner has not pinned would let it come back unapproved.
        raise Unavailable(
            "the owner has not pinned this cluster's master secret; no share is handed out",
            reason="unpinned",
            fingerprint=keyring.fingerprint(),
        )
    index = guardians.wallets.index(wallet)
    share = guardian_shares.make_shares(secret, guardians)[index]
    sealed = guardian_shares.seal_share(share, guardians.enc_keys[index])
    get_logger("novakms.guardians", node=ctx.wallet).info(
        "share_handed_out", guardian=wallet, set_version=guardians.version
    )
    return {
        "share": sealed,
        "set_version": guardians.version,
        "x": share.x,
        "threshold": share.threshold,
        "count": share.count,
        "fingerprint": share.fingerprint,
    }


async def op_guardian_restore(ctx: OpContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Pool the caller's share; install the secret once enough of them recover it."""
    wallet, guardians = _guardian_wallet(ctx), ctx.guardians
    keyring = ctx.keyring
    now = ctx.now
    raw = Args(args, {"share"}).blob("share", required=True)
    assert raw is not None  # required=True
    try:
        share = guardian_shares.parse_share(raw)
    except GuardianShareError as exc:
        raise BadRequest(f"not a guardian share: {exc}", reason=exc.reason) from None
    if keyring.initialized and not keyring.pin_mismatch:
        return {"recovered": True, "received": 0, "threshold": guardians.threshold}
    pin = keyring.pin
    if pin is None or keyring.initialized or keyring.not_ready.reason != "secret_lost":
        raise Unavailable(
            "this node is not waiting for a recovery (it accepts shares in secret_lost only)",
            reason="not_secret_lost",
        )
    try:
        check_share(
            share,
            sender=wallet,
            wallets=guardians.wallets,
            threshold=guardians.threshold,
            set_version=guardians.version,
            pin=pin,
        )
    except ShareRefused as exc:
        raise BadRequest(str(exc), reason=exc.reason) from None
    log = get_logger("novakms.guardians", node=ctx.wallet)
    recovery = keyring.recovery
    recovery.add(wallet, share, now)
    log.info("share_received", guardian=wallet, held=len(recovery))
    received = len(recovery.senders(now))  # before a recovery forgets them
    secret = recovery.try_recover(
        now,
        lambda shares: guardian_shares.recover(
            shares, threshold=guardians.threshold, pin_fingerprint=pin
        ),
    )
    if secret is not None and not keyring.initialized:
        keyring.install_secret(secret)
        log.warning(
            "secret_recovered", fingerprint=keyring.fingerprint(), guardians=guardians.threshold
        )
    return {
        "recovered": keyring.initialized,
        "received": received,
        "threshold": guardians.threshold,
    }
