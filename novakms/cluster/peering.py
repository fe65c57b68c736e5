"""Getting the master secret from the cluster: the trio loop around :mod:`bootstrap`'s rules.

Each round: read the active KMS operators (from the authorization source, i.e. KMSRegistry +
NovaAppRegistry), ask every other one for its secret status over an authenticated ``peer``
channel (with a timeout; no answer = unreachable), read the owner's pin, and act on
:func:`~novakms.cluster.bootstrap.decide`: fetch from a peer (verifying the fingerprint and the
pin), generate (only the lowest instance id of a fully answering, fully fresh cluster), or wait
and retry. ``split_brain`` and ``secret_lost`` are reported by the node, never resolved by
picking a secret.

Also here: :class:`PeerConnector`, how this node dials a peer (its signer, the enclave's egress
proxy or an injected dialer), shared by the bootstrap and the replicator.

The bootstrap touches the node only through :class:`Bootstrap`'s collaborators: the
membership (operators, the pin), the keyring (install the secret, report ``not_ready``, record
the pin it decided on) and the connector.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from novakms.auth.model import peer_address
from novakms.auth.source import Membership
from novakms.client.aio import Client
from novakms.cluster.bootstrap import (
    Decision,
    PeerReport,
    accept_fetched,
    decide,
    generate_secret,
    unavailable_for,
)
from novakms.crypto.signer import Signer
from novakms.errors import NovaKMSError
from novakms.log import get_logger
from novakms.net.dial import Dialer
from novakms.server.keyring import Keyring
from novakms.wire.framing import DEFAULT_MAX_FRAME

__all__ = ["Bootstrap", "PeerConnector", "bootstrap_round", "peer_address", "run_bootstrap"]


@dataclass(frozen=True, kw_only=True)
class PeerConnector:
    """How this node opens an authenticated ``peer`` channel to another node.

    Attributes:
        signer: this node's wallet signer (the handshake).
        proxy: an HTTP CONNECT proxy (address) through which peers reachable over TCP are
            dialed — an enclave's egress proxy; None dials them directly.
        dial: opens the stream instead of the network (tests' in-memory network), or None.
        clock: the node's wall clock in unix seconds (handshake timestamps, and every time the
            replication layer stamps: record validation, queue and acknowledgement times).
    """

    signer: Signer
    proxy: str | None = None
    dial: Dialer | None = field(default=None, repr=False)
    clock: Callable[[], float] = field(default=time.time, repr=False)

    def now_ms(self) -> int:
        """Unix milliseconds now, by :attr:`clock`."""
        return int(self.clock() * 1000)

    async def connect(
        self,
        address: str,
        *,
        expect_wallet: str,
        timeout: float,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> Client:
        """Connect to the peer at ``address``, which must prove ``expect_wallet``.

        Raises:
            NovaKMSError: the connection or the handshake failed.
        """
        return await Client.connect(
            address,
            signer=self.signer,
            role="peer",
            expect_wallet=expect_wallet,
            timeout=timeout,
            proxy=self.proxy,
            dial=self.dial,
            max_frame=max_frame,
            clock=self.clock,
        )


@dataclass(frozen=True, kw_only=True)
class Bootstrap:
    """What the bootstrap works with (see the module docstring).

    Attributes:
        wallet: this node's wallet.
        membership: the operators and the owner's pin.
        keyring: where the secret goes.
        connector: dials the peers.
    """

    wallet: str
    membership: Membership
    keyring: Keyring
    connector: PeerConnector


async def _peer_call(
    node: Bootstrap, entry: Mapping[str, Any], op: str, timeout: float
) -> Mapping[str, Any]:
    client = await node.connector.connect(
        peer_address(str(entry["instance_url"])),
        expect_wallet=str(entry["wallet"]),
        timeout=timeout,
    )
    async with client:
        return await client.call(op, timeout=timeout)


async def _report(node: Bootstrap, entry: Mapping[str, Any], timeout: float) -> PeerReport:
    try:
        with trio.fail_after(timeout):
            status = await _peer_call(node, entry, "secret.status", timeout)
        initialized = status.get("initialized") is True
        fingerprint = status.get("fingerprint") if initialized else None
        return PeerReport(
            wallet=str(entry["wallet"]),
            instance_id=int(entry["instance_id"]),
            reachable=True,
            initialized=initialized,
            fingerprint=str(fingerprint) if fingerprint is not None else None,
        )
    except (NovaKMSError, ValueError, TypeError, trio.TooSlowError):
        return PeerReport(
            wallet=str(entry["wallet"]),
            instance_id=int(entry["instance_id"]),
            reachable=False,
            initialized=None,
            fingerprint=None,
        )


async def bootstrap_round(
    node: Bootstrap, *, timeout: float, random_bytes: Callable[[int], bytes]
) -> Decision:
    """One round of the bootstrap; installs the secret when the decision allows it.

    Args:
        node: the bootstrap's collaborators (``Node.bootstrap``).
        timeout: seconds for each peer's answer.
        random_bytes: the RNG a generated secret comes from.

    Returns:
        The round's decision.

    Raises:
        NovaKMSError: the membership could not be read (the caller retries).
    """
    log = get_logger("novakms.bootstrap", node=node.wallet)
    keyring = node.keyring
    entries = await node.membership.peers()
    me = next((e for e in entries if e["wallet"] == node.wallet), None)
    if me is None or me.get("authorized") is not True or me["instance_id"] is None:
        return Decision(action="wait", reason="this node is not an authorized KMS operator")
    # Only peers that pass the peer policy (the same as for their requests) are asked. An
    # operator refused by it (a revoked version, say) may still hold the cluster's secret: it
    # counts as unreachable, so that nobody generates a second secret beside it (DESIGN §6).
    others = [e for e in entries if e["wallet"] != node.wallet and e.get("authorized") is True]
    reports: list[PeerReport] = [
        PeerReport(
            wallet=str(e["wallet"]),
            instance_id=int(e["instance_id"]),
            reachable=False,
            initialized=None,
            fingerprint=None,
        )
        for e in entries
        if e["wallet"] != node.wallet
        and e.get("authorized") is not True
        and e["instance_id"] is not None
        and e["status"] == "ACTIVE"
    ]

    async def ask(entry: Mapping[str, Any]) -> None:
        reports.append(await _report(node, entry, timeout))

    async with trio.open_nursery() as nursery:
        for entry in others:
            nursery.start_soon(ask, entry)
    pin = await node.membership.master_secret_pin()
    keyring.check_pin(pin)  # the node's view of the pin is the one this round decides on
    decision = decide(
        self_wallet=node.wallet,
        self_instance_id=int(me["instance_id"]),
        own_fingerprint=None,
        pin=pin,
        peers=reports,
    )
    if decision.action == "generate":
        keyring.install_secret(generate_secret(random_bytes))
        log.info("secret_generated", fingerprint=keyring.fingerprint())
    elif decision.action == "fetch":
        assert decision.fingerprint is not None
        by_wallet = {e["wallet"]: e for e in others}
        for wallet in decision.fetch_from:  # every matching peer, not just the first
            try:
                with trio.fail_after(timeout):
                    answer = await _peer_call(node, by_wallet[wallet], "secret.get", timeout)
                secret: bytes = answer["secret"]  # type-checked by accept_fetched
                # accept_fetched checks type, length, fingerprint and pin (Unavailable otherwise).
                accept_fetched(secret=secret, expected_fingerprint=decision.fingerprint, pin=pin)
            except (NovaKMSError, ValueError, KeyError, trio.TooSlowError) as exc:
                log.warning(
                    "secret_fetch_failed",
                    peer=wallet,
                    error=getattr(exc, "message", type(exc).__name__),
                )
                continue
            # The cluster has data this node lacks: serve KV only once a snapshot arrived.
            keyring.install_secret(bytes(secret), syncing=True)
            log.info("secret_fetched", peer=wallet, fingerprint=keyring.fingerprint())
            break
    return decision


async def run_bootstrap(
    node: Bootstrap,
    *,
    interval: float,
    timeout: float,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> None:
    """Rounds until the node has a secret; the keyring reports each round's state meanwhile."""
    log = get_logger("novakms.bootstrap", node=node.wallet)
    keyring = node.keyring
    while not keyring.initialized:
        try:
            decision = await bootstrap_round(node, timeout=timeout, random_bytes=random_bytes)
        except NovaKMSError as exc:  # e.g. the chain cannot be read: try again later
            log.warning("bootstrap_round_failed", error=exc.message)
        else:
            error = unavailable_for(decision)
            if error is not None and not keyring.initialized:
                if error.reason != keyring.not_ready.reason:
                    log.info("bootstrap_state", action=decision.action, reason=decision.reason)
                keyring.set_not_ready(error)
        if not keyring.initialized:
            await trio.sleep(interval)
