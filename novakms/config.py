"""Frozen configuration: every limit of the service, parsed and validated here, documented once.

The defaults below are the single source of truth for the numbers in ``protocol/PROTOCOL.md``
§10. Nothing in this module performs I/O beyond reading the values it is handed.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_ODYN_URL",
    "ENCLAVE_ENV",
    "ChainSettings",
    "Limits",
    "Mode",
    "ServerConfig",
    "enclave_mode",
    "limits_from_mapping",
    "parse_in_enclave",
    "parse_limit_overrides",
]

ENCLAVE_ENV = "IN_ENCLAVE"
#: Where the enclave's Odyn API listens (the node's and an app's signer inside an enclave).
DEFAULT_ODYN_URL = "http://127.0.0.1:18000"
QUOTA_MODES = ("reject", "evict")


class Mode(enum.Enum):
    """How a node runs: with development inputs allowed, or sealed inside an enclave."""

    DEVELOPMENT = "development"
    ENCLAVE = "enclave"


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Every per-node limit. Field docs are the reference; PROTOCOL.md §10 lists the defaults.

    Attributes:
        max_frame: largest accepted frame body in bytes (checked on the 4-byte header).
        max_inflight: requests of one connection processed at once; beyond it the server stops
            reading that connection (backpressure, no queue).
        max_connections: open connections per node; more are refused with a close notice
            (after evicting an idle anonymous session, if there is one).
        max_connections_per_source: open connections of one source (IP, vsock CID, "unix";
            behind a PROXY-protocol listener, the client address the proxy reports).
        max_unproven_connections: connections that are handshaking or anonymous, together;
            the rest of ``max_connections`` is kept for authenticated apps and peers. When full,
            the least recently active idle anonymous session is evicted for a new connection.
            Capped at ``max_connections``.
        max_unproven_per_source: handshaking or anonymous connections of one source, so that one
            source cannot fill the unproven pool with handshakes it never finishes.
        handshake_timeout: seconds a connection may take to finish the handshake.
        idle_timeout: seconds without a received frame (and nothing in flight) before closing
            an authenticated session.
        anonymous_idle_timeout: the same for anonymous sessions.
        send_timeout: seconds one frame may take to be written; a client that does not read
            for that long is disconnected.
        max_queued_response_bytes: response bytes one connection may have produced but not yet
            written; further responses wait (within ``send_timeout``) and no new request of
            that connection is read meanwhile. One response larger than this is let through
            alone.
        max_handshake_frame: largest frame accepted before ``Ready`` (ClientHello, ClientAuth).
        max_anonymous_frame: largest frame accepted from an anonymous session.
        max_request_items: decode budget (CBOR items, §3) of one request from an app, or from
            a peer wallet not yet authorized on this connection.
        max_anonymous_items: decode budget of one request from an anonymous session.
            Requests of an authorized peer are bounded by ``max_frame`` alone.
        max_invalid_requests: malformed requests (§6.2) a connection may send before it is
            closed with ``bad_request``.
        drain_timeout: seconds in-flight requests get to finish on graceful shutdown.
        timestamp_window: allowed |now - ts| of a client's auth signature, in seconds.
        wallet_rate / wallet_burst: token bucket per authenticated wallet (requests/s, burst).
        handshake_rate / handshake_burst: token bucket per connection source (IP, CID, "unix").
        anonymous_rate / anonymous_burst: token bucket per source shared by its anonymous
            sessions and its wallets that are not (yet) authorized.
        max_path_bytes / max_context_bytes / max_derive_length: ``derive`` argument limits.
        max_key_bytes / max_value_bytes: KV key (UTF-8) and value sizes.
        app_quota_bytes: storage per app, counting key + value + ``record_overhead_bytes`` for
            every record (tombstones count key + overhead).
        global_quota_bytes: the same accounting across all apps on the node.
        record_overhead_bytes: what one record is charged beyond its key and value (384: what a
            record actually occupies in memory, measured by ``bench/bench_store.py``).
        quota_mode: ``reject`` (over quota → ``quota_exceeded``) or ``evict`` (least recently
            used records of the writing app are deleted to make room, leaving tombstones).
        max_list_limit: most keys one ``kv.list`` page returns.
        tombstone_retention: seconds a tombstone is kept before it may be forgotten.
        sweep_interval: seconds between purges of expired values and old tombstones.
        cert_default_days / cert_max_days: leaf certificate validity (requests are capped).
        bootstrap_interval: seconds between master-secret bootstrap rounds while the node has
            no secret.
        peer_timeout: seconds for one call to a peer (connect + handshake + answer).
        push_interval: seconds local writes are batched before being pushed to peers.
        anti_entropy_interval: seconds between digest comparisons with each peer.
        peer_backoff_max: the longest a failing peer link waits before the next attempt (the
            backoff is jittered exponential from 0.1 s, reset on success; a peer that comes
            back is served at once anyway).
        catch_up_timeout: seconds a joining node keeps retrying peers it could not reach before
            it serves ``degraded`` (``peer_unreachable``).
        flush_timeout: seconds a stopping node spends pushing its outboxes to its peers once its
            connections have drained.
        share_ttl: seconds a node that lost the secret keeps a guardian's recovery share.
        max_clock_skew_ms: replicated records stamped further in the future are rejected.
        max_clock_entries: most vector-clock entries of one record (one per KMS node that ever
            wrote the key); a replicated record with more is rejected (``clock_too_large``).
            Must be at least the number of KMS nodes of the cluster.
        ack_timeout: seconds ``kv.put`` with ``acks`` waits for the peer acknowledgements.
        cas_timeout: seconds a conditional write (``if_version``) may take to be decided by a
            majority (rounds, retries after contention); then ``unavailable``.
        tombstone_gc_delay: seconds after a delete before a tombstone that every current peer
            has acknowledged may be forgotten early (covers replication messages still in
            flight); unacknowledged tombstones wait for ``tombstone_retention``.
    """

    max_frame: int = 2_097_152
    max_inflight: int = 32
    max_connections: int = 1024
    max_connections_per_source: int = 256
    max_unproven_connections: int = 256
    max_unproven_per_source: int = 32
    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0
    anonymous_idle_timeout: float = 15.0
    send_timeout: float = 10.0
    max_queued_response_bytes: int = 1_048_576
    max_handshake_frame: int = 1024
    max_anonymous_frame: int = 4096
    max_request_items: int = 1024
    max_anonymous_items: int = 64
    max_invalid_requests: int = 16
    drain_timeout: float = 10.0
    timestamp_window: int = 120
    wallet_rate: float = 500.0
    wallet_burst: float = 1000.0
    handshake_rate: float = 50.0
    handshake_burst: float = 100.0
    anonymous_rate: float = 50.0
    anonymous_burst: float = 100.0
    max_path_bytes: int = 1024
    max_context_bytes: int = 1024
    max_derive_length: int = 1024
    max_key_bytes: int = 512
    max_value_bytes: int = 1_048_576
    app_quota_bytes: int = 10_485_760
    global_quota_bytes: int = 1_073_741_824
    record_overhead_bytes: int = 384
    quota_mode: str = "reject"
    max_list_limit: int = 1000
    tombstone_retention: float = 86_400.0
    sweep_interval: float = 1.0
    cert_default_days: int = 7
    cert_max_days: int = 90
    bootstrap_interval: float = 2.0
    peer_timeout: float = 5.0
    push_interval: float = 0.05
    anti_entropy_interval: float = 5.0
    peer_backoff_max: float = 2.0
    catch_up_timeout: float = 15.0
    flush_timeout: float = 5.0
    share_ttl: float = 600.0
    max_clock_skew_ms: int = 60_000
    max_clock_entries: int = 64
    ack_timeout: float = 5.0
    cas_timeout: float = 5.0
    tombstone_gc_delay: float = 60.0

    def __post_init__(self) -> None:
        if self.quota_mode not in QUOTA_MODES:
            raise ValueError(f"limit quota_mode must be one of {', '.join(QUOTA_MODES)}")
        for f in dataclasses.fields(self):
            if f.name == "quota_mode":
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"limit {f.name} must be a positive number, got {value!r}")
        if self.max_frame < 1024:
            raise ValueError("limit max_frame must be at least 1024 bytes")
        if not 256 <= self.max_handshake_frame <= self.max_frame:
            raise ValueError("limit max_handshake_frame must be in 256..max_frame")
        if not 1024 <= self.max_anonymous_frame <= self.max_frame:
            raise ValueError("limit max_anonymous_frame must be in 1024..max_frame")
        if self.max_derive_length > 8160:  # HKDF-SHA256 cannot produce more (255 * 32)
            raise ValueError("limit max_derive_length cannot exceed 8160")
        if min(self.wallet_burst, self.handshake_burst, self.anonymous_burst) < 1:
            raise ValueError("rate-limit bursts must be at least 1")
        if self.max_value_bytes + self.max_key_bytes + 4096 > self.max_frame:
            raise ValueError("limit max_frame must leave room for a full-size value and key")
        if self.cert_default_days > self.cert_max_days:
            raise ValueError("limit cert_default_days cannot exceed cert_max_days")


def parse_limit_overrides(items: Iterable[str], base: Limits | None = None) -> Limits:
    """Apply ``NAME=VALUE`` overrides (as given on the command line) to a :class:`Limits`.

    Raises:
        ValueError: unknown limit name, malformed item or invalid value.
    """
    base = base or Limits()
    types = {f.name: f.type for f in dataclasses.fields(Limits)}
    changes: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in types:
            known = ", ".join(sorted(types))
            raise ValueError(f"unknown limit {item!r}; known limits: {known}")
        try:
            if types[name] in (str, "str"):
                changes[name] = raw.strip()
            else:
                changes[name] = int(raw) if types[name] in (int, "int") else float(raw)
        except ValueError:
            raise ValueError(f"limit {name} needs a number, got {raw!r}") from None
    return dataclasses.replace(base, **changes)


def limits_from_mapping(data: Mapping[str, object]) -> Limits:
    """Build :class:`Limits` from a JSON-like mapping (unknown keys are errors)."""
    return parse_limit_overrides(f"{k}={v}" for k, v in data.items())


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_in_enclave(environ: Mapping[str, str]) -> bool | None:
    """The one reading of ``IN_ENCLAVE`` shared by every command.

    Returns:
        True or False for an explicit value (``1/true/yes/on``, ``0/false/no/off``, any case,
        surrounding spaces ignored), None when unset or empty.

    Raises:
        ValueError: any other value. A misspelt switch between development and enclave mode
            is refused, never guessed.
    """
    raw = environ.get(ENCLAVE_ENV, "").strip().lower()
    if not raw:
        return None
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(
        f"{ENCLAVE_ENV} must be one of {', '.join(_TRUE + _FALSE)} (or unset), got {raw!r}"
    )


def enclave_mode(environ: Mapping[str, str], *, nsm_present: bool, default: bool) -> bool:
    """Whether a command runs in enclave mode.

    The Nitro Security Module device decides first: where it exists the command is in an
    enclave whatever ``IN_ENCLAVE`` says. Otherwise :func:`parse_in_enclave` decides, and an
    unset variable means ``default`` (``novakms serve``: enclave, the safe side; the
    development commands: not in an enclave).

    Raises:
        ValueError: an unparsable ``IN_ENCLAVE``.
    """
    explicit = parse_in_enclave(environ)
    if nsm_present:
        return True
    return default if explicit is None else explicit


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """What one node needs to serve.

    Attributes:
        listen: addresses to listen on (``tcp://HOST:PORT``, ``unix:///path``, ``vsock://CID:PORT``);
            may be empty when the server is handed pre-opened listeners (``serve(listeners=)``).
        listen_proxy: more addresses to listen on, where every connection must start with a
            PROXY protocol v2 header (PROTOCOL.md §2.1): for listeners behind a proxy, such as
            the parent instance's forwarder of an enclave.
        mode: development or enclave.
        limits: all limits.
        metrics: addresses of metrics listeners (Prometheus text format at ``/metrics``).
        access_log: write one ``novakms.access`` line per answered request.
        reuse_port: open the ``listen`` and ``listen_proxy`` listeners (TCP only) with
            ``SO_REUSEPORT``, so that several worker processes share their ports
            (docs/scaling.md); never the metrics listeners, which each worker has its own of.
    """

    listen: tuple[str, ...] = ()
    listen_proxy: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    access_log: bool = False
    reuse_port: bool = False
    mode: Mode = Mode.DEVELOPMENT
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainSettings:
    """Timing of the chain source.

    Attributes:
        poll_interval: seconds between polls (a revocation is enforced within one interval of
            the block reaching the configured tag).
        ttl: backstop seconds a fetched record stays valid without a re-fetch.
        negative_ttl: seconds an unknown wallet is remembered as unknown.
        refresh_ahead: re-fetch records this many seconds before they expire.
    """

    poll_interval: float = 2.0
    ttl: float = 300.0
    negative_ttl: float = 5.0
    refresh_ahead: float = 60.0
