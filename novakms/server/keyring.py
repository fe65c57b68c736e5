"""The keyring: the node's master secret, its state, and everything derived from it.

Owner of: the secret (None until installed: by configuration, the bootstrap or a guardian
recovery), why it is missing (``not_ready``: the bootstrap's reason), the owner's pin as last
read and whether the held secret matches it, whether app operations require a pin, the
guardian-share recovery pool, the per-app data keys, the bounded memo of app-key extracts
(:class:`~novakms.crypto.kdf.AppKeys`) and the bounded CA-certificate cache.

Nobody else writes any of it: the bootstrap reports through :meth:`Keyring.set_not_ready` and
:meth:`Keyring.install_secret`, the pin watch through :meth:`Keyring.check_pin`. A secret's
arrival is announced to the subscribers (:meth:`Keyring.on_install`): the store gate opens the
KV store keyed by it.

No I/O, no clock: ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Callable

from novakms.cluster.recovery import RecoveryPool
from novakms.crypto import aead
from novakms.crypto.certs import ca_certificate_pem
from novakms.crypto.guardian_shares import GuardianShare
from novakms.crypto.kdf import MASTER_SECRET_SIZE, AppKeys, secret_fingerprint
from novakms.crypto.named_keys import NamedKey, derive_named_key
from novakms.errors import Unavailable

__all__ = ["Keyring"]

_CA_CACHE_SIZE = 1024
_APP_KEYS_CACHE_SIZE = 1024  # apps whose HKDF-Extract is kept (derive)
_NAMED_KEYS_CACHE_SIZE = 4096  # named keys kept ready (keys.*, sign, encrypt, decrypt)

#: Called with (secret, syncing) when a secret is installed.
InstallListener = Callable[[bytes, bool], None]


class Keyring:
    """The master secret and its serving state.

    Args:
        require_pin: serve app operations only under a secret the owner pinned
            (``KMSRegistry.masterSecretHash``).
        share_ttl: seconds a guardian share is kept in the recovery pool.
    """

    def __init__(self, *, require_pin: bool, share_ttl: float) -> None:
        self._secret: bytes | None = None
        self._app_keys: AppKeys | None = None
        self._require_pin = require_pin
        self._pin: str | None = None
        self._pin_mismatch = False
        self._not_ready = Unavailable("this node has no master secret yet", reason="not_ready")
        self._listeners: list[InstallListener] = []
        self._data_keys: dict[int, bytes] = {}
        self._ca_pems: dict[int, str] = {}
        self._named_keys: dict[tuple[int, str, str], NamedKey] = {}
        self.recovery: RecoveryPool[GuardianShare] = RecoveryPool(ttl=share_ttl)

    def __repr__(self) -> str:  # never the secret
        return f"Keyring(initialized={self.initialized}, pinned={self._pin is not None})"

    # -- read-only state ------------------------------------------------------------------------

    @property
    def initialized(self) -> bool:
        """Whether the node holds a master secret (matching the pin or not)."""
        return self._secret is not None

    @property
    def master_secret(self) -> bytes | None:
        """The secret itself, or None; for the node's own use (serving goes through
        :meth:`require_secret`, which also checks the pin)."""
        return self._secret

    @property
    def require_pin(self) -> bool:
        """Whether app operations wait for the owner's pin."""
        return self._require_pin

    @property
    def pin(self) -> str | None:
        """The owner's pin as last read (lowercase), or None when unset."""
        return self._pin

    @property
    def pin_mismatch(self) -> bool:
        """Whether the held secret's fingerprint differs from a set pin."""
        return self._pin_mismatch

    @property
    def not_ready(self) -> Unavailable:
        """Why the node has no secret (``not_ready``, ``split_brain``, ``secret_lost``)."""
        return self._not_ready

    @property
    def serving_apps(self) -> bool:
        """Whether app operations would be served now (secret held, matching, pinned if so)."""
        if self._secret is None or self._pin_mismatch:
            return False
        return not (self._require_pin and self._pin is None)

    def fingerprint(self) -> str | None:
        """Keccak-256 fingerprint of the master secret (safe to publish), or None."""
        return None if self._secret is None else secret_fingerprint(self._secret)

    # -- changes (their owners: the bootstrap, the pin watch, guardian.restore) --------------------

    def on_install(self, listener: InstallListener) -> None:
        """Call ``listener(secret, syncing)`` when a secret is installed."""
        self._listeners.append(listener)

    def install_secret(self, secret: bytes, *, syncing: bool = False) -> None:
        """Take the cluster master secret and tell the subscribers (the store gate).

        Args:
            secret: the 32-byte master secret.
            syncing: the secret came from the cluster, whose data this node must receive (a
                snapshot) before it serves the KV store.

        Raises:
            ValueError: not 32 bytes, or the node already has a (different) secret.
        """
        if len(secret) != MASTER_SECRET_SIZE:
            raise ValueError("the master secret must be 32 bytes")
        if self._secret is not None:
            raise ValueError("this node already has a master secret")
        self._secret = secret
        self._app_keys = AppKeys(secret, capacity=_APP_KEYS_CACHE_SIZE)
        for listener in self._listeners:
            listener(secret, syncing)

    def set_not_ready(self, error: Unavailable) -> None:
        """The bootstrap's verdict while the node has no secret (``status.reason``)."""
        self._not_ready = error

    def check_pin(self, pin: str | None) -> bool:
        """Compare the held secret with the owner's pin; return whether the verdict changed.

        Called on every poll of the chain (pin events included). While the fingerprint of the
        held secret differs from a set pin, the node serves no app operation and never gives
        the secret (or a proof of it) to a peer; once the pin matches again, or is reset, it
        serves again: the secret itself never changes (DESIGN §6).

        Args:
            pin: ``"0x"`` + 64 hex of ``KMSRegistry.masterSecretHash``, or None when unset.

        Returns:
            Whether ``pin_mismatch`` changed.
        """
        mismatch = (
            pin is not None
            and self._secret is not None
            and secret_fingerprint(self._secret) != pin.lower()
        )
        changed = mismatch != self._pin_mismatch
        self._pin_mismatch = mismatch
        self._pin = None if pin is None else pin.lower()
        return changed

    # -- serving --------------------------------------------------------------------------------

    def require_secret(self) -> bytes:
        """The master secret, for serving apps and peers.

        Raises:
            Unavailable: ``not_ready`` while the node has no secret (or the bootstrap's reason:
                ``split_brain``, ``secret_lost``); ``secret_mismatch`` while the secret it holds
                does not match the owner's pin (see :meth:`check_pin`).
        """
        if self._secret is None:
            raise self._not_ready.fresh()
        if self._pin_mismatch:
            raise Unavailable(
                "this node's master secret does not match the owner's pin (masterSecretHash); "
                "it serves nothing with it",
                reason="secret_mismatch",
            )
        return self._secret

    def require_pinned(self) -> None:
        """For app operations: the secret must be held and, when required, pinned by the owner.

        Raises:
            Unavailable: as :meth:`require_secret`; ``unpinned`` while the owner has not pinned
                the held secret's fingerprint (``status`` shows it; ``novakms admin
                pin-secret``), when ``require_pin``.
        """
        self.require_secret()
        if self._require_pin and self._pin is None:
            raise Unavailable(
                "the owner has not pinned this cluster's master secret yet "
                "(KMSRegistry.masterSecretHash); app operations wait for the pin",
                reason="unpinned",
                fingerprint=self.fingerprint(),
            )

    def derive_app_key(
        self, *, app_id: int, path: str, context: str | None = None, length: int = 32
    ) -> bytes:
        """An app key from the master secret (:func:`novakms.crypto.kdf.derive_app_key`).

        Raises:
            Unavailable: as :meth:`require_secret`.
        """
        self.require_secret()
        assert self._app_keys is not None  # installed with the secret
        return self._app_keys.derive(app_id=app_id, path=path, context=context, length=length)

    def data_key(self, app_id: int) -> bytes:
        """The app's internal data key (cached).

        Raises:
            Unavailable: as :meth:`require_secret` (when not cached yet).
        """
        key = self._data_keys.get(app_id)
        if key is None:
            key = self._data_keys[app_id] = aead.data_key(
                master_secret=self.require_secret(), app_id=app_id
            )
        return key

    def named_key(self, *, app_id: int, name: str, alg: str) -> NamedKey:
        """The app's named key (:mod:`novakms.crypto.named_keys`; cached, bounded).

        Raises:
            Unavailable: as :meth:`require_secret` (also when cached).
            ValueError: an unknown algorithm or a bad name.
        """
        secret = self.require_secret()
        index = (app_id, name, alg)
        key = self._named_keys.get(index)
        if key is None:
            key = derive_named_key(master_secret=secret, app_id=app_id, name=name, alg=alg)
            if len(self._named_keys) >= _NAMED_KEYS_CACHE_SIZE:  # any app may name any key
                del self._named_keys[next(iter(self._named_keys))]
            self._named_keys[index] = key
        return key

    def ca_pem(self, app_id: int) -> str:
        """The app's CA certificate in PEM (deterministic; cached, bounded).

        Raises:
            Unavailable: as :meth:`require_secret` (also when cached: the pin may have turned
                against the secret).
        """
        secret = self.require_secret()
        pem = self._ca_pems.get(app_id)
        if pem is None:
            pem = ca_certificate_pem(master_secret=secret, app_id=app_id)
            if len(self._ca_pems) >= _CA_CACHE_SIZE:  # anyone may ask for any app id: stay bounded
                del self._ca_pems[next(iter(self._ca_pems))]
            self._ca_pems[app_id] = pem
        return pem
