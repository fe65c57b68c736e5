"""Authorization from the chain: the cache, on-demand lookups, and the poller that keeps it fresh.

* Requests read the :class:`~novakms.auth.cache.AuthCache`; a wallet (or app, version) not in
  it is fetched once — concurrent requests for the same record share one lookup
  (single-flight) — and cached, negatively for a short time when unknown.
* :meth:`ChainAuthorizationSource.run` is the poller: every ``poll_interval`` it reads the
  block at the configured tag, applies the registry events of the new blocks to the cache
  (exactly the affected records), and re-fetches records nearing their backstop TTL.
* The owner's guardian set (KMSRegistry ``guardians()``) is read on first use at the
  configured tag, then kept current by the ``GuardiansSet`` / ``GuardiansCleared`` events the
  poller applies (each carries the whole new set and its version).
* If the chain cannot be read, requests for identities whose records are still valid keep
  working; anything that would need the chain gets ``unavailable`` (reason ``auth_source``),
  and after the TTL the cached identities fail closed too. Nothing is ever authorized on a
  failed lookup. The poller recovers by itself when the RPC answers again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from novakms.auth import policy
from novakms.auth.cache import AuthCache
from novakms.auth.guardians import GuardianSet
from novakms.auth.model import App, AppVersion, Identity, Instance, peer_entry
from novakms.auth.source import peer_refusal
from novakms.chain.registry import RegistryReader
from novakms.config import ChainSettings
from novakms.crypto.eth import normalize_wallet
from novakms.errors import ChainError, Forbidden, NovaKMSError, Unavailable
from novakms.log import get_logger

__all__ = ["ChainAuthorizationSource", "ChainSettings"]

T = TypeVar("T")


class _Flight:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None
        self.error: Unavailable | None = None


class ChainAuthorizationSource:
    """An :class:`~novakms.auth.source.Registry` backed by the registries.

    Args:
        reader: the registry reader.
        settings: timing.
        clock: monotonic seconds (``trio.current_time`` inside trio).
    """

    name = "chain"

    def __init__(
        self,
        reader: RegistryReader,
        settings: ChainSettings | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.reader = reader
        self.settings = settings or ChainSettings()
        self.cache = AuthCache(ttl=self.settings.ttl, negative_ttl=self.settings.negative_ttl)
        self._clock = clock or trio.current_time
        self._flights: dict[Any, _Flight] = {}
        self._decisions = policy.AppDecisions()
        self._log = get_logger("novakms.chain")
        self.last_block: int | None = None
        self.last_block_time: int | None = None
        self.head_block: int | None = None
        self.last_poll_ok: float | None = None  # unix seconds
        self.last_error: str | None = None
        self.events_applied = 0
        self.polls = 0  # successful polls, for tests and status
        self.ready = trio.Event()

    # -- single-flight fetching --------------------------------------------------------------

    async def _once(self, key: Any, fetch: Callable[[], Awaitable[T]]) -> T:
        flight = self._flights.get(key)
        if flight is not None:
            await flight.done.wait()
            if flight.error is not None:
                raise flight.error.fresh()
            return flight.value  # type: ignore[no-any-return]
        flight = self._flights[key] = _Flight()
        try:
            flight.value = await fetch()
        except ChainError as exc:
            flight.error = Unavailable(
                f"cannot read the chain: {exc.message}", reason="auth_source"
            )
            raise flight.error from None
        finally:
            del self._flights[key]
            flight.done.set()
        return flight.value  # type: ignore[no-any-return]

    async def _instance(self, wallet: str) -> Instance | None:
        entry = self.cache.instance(wallet, self._clock())
        if entry is not None:
            return entry.instance

        async def fetch() -> Instance | None:
            instance = await self.reader.instance_by_wallet(wallet)
            self.cache.put_instance(wallet, instance, self._clock())
            return instance

        return await self._once(("wallet", wallet), fetch)

    async def _app(self, app_id: int) -> App | None:
        app = self.cache.app(app_id, self._clock())
        if app is not None:
            return app

        async def fetch() -> App | None:
            fetched = await self.reader.app(app_id)
            if fetched is not None:
                self.cache.put_app(fetched, self._clock())
            return fetched

        return await self._once(("app", app_id), fetch)

    async def _version(self, app_id: int, version_id: int) -> AppVersion | None:
        version = self.cache.version(app_id, version_id, self._clock())
        if version is not None:
            return version

        async def fetch() -> AppVersion | None:
            fetched = await self.reader.version(app_id, version_id)
            if fetched is not None:
                self.cache.put_version(fetched, self._clock())
            return fetched

        return await self._once(("version", app_id, version_id), fetch)

    async def _operators(self) -> frozenset[str]:
        operators = self.cache.operator_set(self._clock())
        if operators is not None:
            return operators

        async def fetch() -> frozenset[str]:
            fetched = await self.reader.operators()
            kms_app_id = await self.reader.kms_app_id() or None
            # Both are stored at once, after both reads: a caller finding the operator set
            # cached must also find the KMS app id (else a peer is refused as "not configured").
            self.cache.kms_app_id = kms_app_id
            self.cache.put_operators(fetched, self._clock())
            return frozenset(fetched)

        return await self._once(("operators",), fetch)

    async def _records(
        self, wallet: str
    ) -> tuple[str, Instance | None, App | None, AppVersion | None]:
        try:
            wallet = normalize_wallet(wallet)
        except ValueError:
            raise Forbidden("not a wallet", reason="unknown_wallet") from None
        instance = await self._instance(wallet)
        if instance is None:
            return wallet, None, None, None
        return (
            wallet,
            instance,
            await self._app(instance.app_id),
            await self._version(instance.app_id, instance.version_id),
        )

    # -- Registry ----------------------------------------------------------------

    async def authorize_app(self, wallet: str) -> Identity:
        """Authorize an app instance's wallet now (see DESIGN §3)."""
        wallet, instance, app, version = await self._records(wallet)
        return self._decisions.authorize_app(
            wallet=wallet,
            instance=instance,
            app=app,
            version=version,
            kms_app_id=self.cache.kms_app_id,
        )

    async def authorize_peer(self, wallet: str) -> Identity:
        """Authorize a KMS peer: an operator in KMSRegistry, with a valid KMS instance."""
        wallet, instance, app, version = await self._records(wallet)
        operators = await self._operators()
        return policy.authorize_peer(
            wallet=wallet,
            instance=instance,
            app=app,
            version=version,
            kms_app_id=self.cache.kms_app_id,
            is_operator=wallet in operators,
        )

    def pinned(self) -> str | None:
        """The pin as of the last poll (events applied), without reading the chain."""
        pin = self.cache.master_secret_hash
        return None if pin is None else "0x" + pin.hex()

    async def master_secret_pin(self) -> str | None:
        """The owner's pin of keccak256(master secret), read fresh from KMSRegistry.

        Raises:
            Unavailable: the chain cannot be read (the bootstrap waits; it never guesses).
        """
        try:
            pin = await self.reader.master_secret_hash()
        except ChainError as exc:
            raise Unavailable(f"cannot read the pin: {exc.message}", reason="auth_source") from None
        self.cache.master_secret_hash = pin
        return None if pin is None else "0x" + pin.hex()

    async def guardian_set(self) -> GuardianSet:
        """The owner's guardian set (KMSRegistry ``guardians()`` at the configured tag).

        Read from the chain on first use (concurrent callers share one read), then served from
        the cache, which the poller updates from ``GuardiansSet`` / ``GuardiansCleared``
        events: a change is seen within one poll interval of its block reaching the tag.

        Returns:
            The set; empty with version 0 when none was ever configured, empty with a higher
            version when the owner cleared it.

        Raises:
            Unavailable: ``reason="auth_source"``, the chain cannot be read or returned an
                invalid set (the caller must not guess).
        """
        cached = self.cache.guardians
        if cached is not None:
            return cached

        async def fetch() -> GuardianSet:
            fetched = await self.reader.guardians()
            self.cache.put_guardians(fetched)  # unless an event brought a newer one meanwhile
            return self.cache.guardians or fetched

        return await self._once(("guardians",), fetch)

    def describe(self) -> dict[str, object]:
        """Chain state for ``status`` (no secrets)."""
        now = time.time()
        return {
            "source": self.name,
            "block_tag": self.reader.block_tag,
            "last_block": self.last_block,
            "head_block": self.head_block,
            "lag_blocks": None
            if self.head_block is None or self.last_block is None
            else self.head_block - self.last_block,
            # Milliseconds as integers: the wire's CBOR subset has no floats.
            "last_block_age_ms": None
            if self.last_block_time is None
            else int((now - self.last_block_time) * 1000),
            "last_poll_age_ms": None
            if self.last_poll_ok is None
            else int((now - self.last_poll_ok) * 1000),
            "error": self.last_error,
            "events_applied": self.events_applied,
            "peers": None if self.cache.operators is None else len(self.cache.operators),
            "master_secret_pinned": self.cache.master_secret_hash is not None,
            # null until the set was first read (guardian_set()) or announced by an event
            "guardian_set_version": None
            if self.cache.guardians is None
            else self.cache.guardians.version,
            "cache": self.cache.sizes(),
        }

    async def peers(self) -> list[dict[str, Any]]:
        """The KMS operators from chain, each with its instance details (for ``nodes``)."""
        result = []
        for wallet in sorted(await self._operators()):
            refusal = await peer_refusal(self.authorize_peer, wallet)
            result.append(peer_entry(wallet, await self._instance(wallet), refusal))
        return result

    # -- the poller --------------------------------------------------------------------------

    @property
    def poll_interval(self) -> float:
        """Seconds between polls (``ChainSettings.poll_interval``)."""
        return self.settings.poll_interval

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll forever. ``task_status.started()`` fires at once; the first poll follows."""
        task_status.started()
        while True:
            try:
                await self.poll_once()
            except ChainError as exc:
                if self.last_error != exc.message:
                    self._log.warning("chain_poll_failed", error=exc.message)
                self.last_error = exc.message
            except NovaKMSError as exc:
                self._log.warning("chain_poll_failed", error=exc.message)
                self.last_error = exc.message
            except Exception:
                # A bug, or chain data the model does not expect (an unknown enum value, an
                # event of another shape): keep the node alive, keep failing closed, say so.
                self._log.exception("chain_poll_crashed")
                self.last_error = "internal error while polling (see the node's log)"
            await trio.sleep(self.settings.poll_interval)

    async def poll_once(self) -> None:
        """One poll: new blocks' events, then refresh what is about to expire.

        Raises:
            ChainError: the chain could not be read (nothing was half-applied: the block
                position only advances after its events were applied).
        """
        number, timestamp, latest = await self.reader.head()
        self.head_block = latest
        if self.last_block is None:
            # First poll: start following from here; records are fetched on demand.
            self.cache.master_secret_hash = await self.reader.master_secret_hash()
            self.last_block = number
        elif number > self.last_block:
            events = await self.reader.events(self.last_block + 1, number)
            for event in events:
                if self.cache.apply(event):
                    self._log.info("chain_event_applied", name=event.name, block=event.block)
                self.events_applied += 1
            self.last_block = number
        self.last_block_time = timestamp
        await self._refresh(self._clock())
        self.last_poll_ok = time.time()
        self.last_error = None
        self.polls += 1
        self.ready.set()

    async def _refresh(self, now: float) -> None:
        ahead = min(self.settings.refresh_ahead, self.settings.ttl / 2)
        wallets, apps, versions = self.cache.stale(now, within=ahead)
        for wallet in wallets:
            self.cache.put_instance(
                wallet, await self.reader.instance_by_wallet(wallet), self._clock()
            )
        for app_id in apps:
            app = await self.reader.app(app_id)
            if app is not None:
                self.cache.put_app(app, self._clock())
        for app_id, version_id in versions:
            version = await self.reader.version(app_id, version_id)
            if version is not None:
                self.cache.put_version(version, self._clock())
        if self.cache.operators is not None and self.cache.operators_expires_at <= now + ahead:
            self.cache.put_operators(await self.reader.operators(), self._clock())
