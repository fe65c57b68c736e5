"""A node's metrics in the Prometheus text format (prometheus-client), one registry per node.

Two kinds of series:

* **events**, counted by the server as they happen: requests by op and result code, request
  latency by op, handshakes (``ok`` or refused by code), connections refused at admission by
  reason, log lines left out by sampling;
* **state**, read from the node when scraped (:class:`_NodeCollector`): readiness and the
  secret's state, open connections by role, the store (bytes and records, and per app for the
  largest :data:`TOP_APPS` apps), replication per peer (lag, queue, pushed, acknowledged),
  the joiner's snapshot progress, and the chain source's head and lag.

No label carries a secret or an unbounded value a client chose: an op outside the op table is
``op="unknown"``, codes and reasons are the error tree's, roles are the handshake's, peers are
the registry's KMS operators and apps are the chain's ids of the few largest apps. The metrics
listener (:mod:`novakms.net.metrics_http`) serves :meth:`NodeMetrics.exposition`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from novakms.server.node import Node
from novakms.server.ops.dispatch import OPS

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "ROLES", "TOP_APPS", "NodeMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# No `*_created` series (a creation timestamp beside every counter and histogram): they double
# the page and Prometheus does not use them. A process-wide switch of prometheus-client.
disable_created_metrics()  # type: ignore[no-untyped-call]
#: Apps with their own store series (the largest by bytes); the rest are only in the totals.
TOP_APPS = 10
#: Seconds: a derive takes ~0.1 ms, a replicated put waits for a peer's acknowledgement.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
#: ``novakms_connections_open`` roles: ``handshaking`` until the handshake names one.
ROLES = ("handshaking", "app", "peer", "guardian")


#: The ``le`` label of each bucket, as prometheus-client writes it.
_BOUNDS = tuple(str(floatToGoString(bound)) for bound in LATENCY_BUCKETS)  # type: ignore[no-untyped-call]


def op_label(op: str) -> str:
    """``op`` when it is an operation of the table, else ``unknown`` (clients choose ``op``)."""
    return op if op in OPS else "unknown"


class NodeMetrics:
    """The series of one node.

    Args:
        node: the node whose state is read on each scrape.
        roles: the roles of the open connections now (the server's connection table).
    """

    def __init__(self, node: Node, roles: Callable[[], Iterable[str]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = _RequestTally()
        self.registry.register(self._requests)
        self._handshakes = Counter(
            "novakms_handshakes",
            "Handshakes finished (result ok) or refused (result refused, reason the code).",
            ["result", "reason"],
            registry=self.registry,
        )
        self._refused = Counter(
            "novakms_connections_refused",
            "Connections refused before the handshake, by reason (admission, rate limit, "
            "PROXY header, handshake timeout).",
            ["reason"],
            registry=self.registry,
        )
        self._suppressed = Counter(
            "novakms_log_lines_suppressed",
            "Log lines left out by sampling (a flood of refusals), by event.",
            ["event"],
            registry=self.registry,
        )
        # Label children by their labels, made on first use (a series appears once counted).
        self._handshake_children: dict[str | None, Any] = {}
        self._refused_children: dict[str, Any] = {}
        self.registry.register(_NodeCollector(node, roles))

    def request(self, op: str, code: str, seconds: float) -> None:
        """Count one answered request of ``op`` with result ``code`` that took ``seconds``."""
        self._requests.count(op_label(op), code, seconds)

    def handshake(self, refused: str | None = None) -> None:
        """Count a finished handshake, or one refused with the code ``refused``."""
        child = self._handshake_children.get(refused)
        if child is None:
            labels = ("ok", "") if refused is None else ("refused", refused)
            child = self._handshake_children[refused] = self._handshakes.labels(*labels)
        child.inc()

    def connection_refused(self, reason: str) -> None:
        """Count a connection refused before its handshake."""
        child = self._refused_children.get(reason)
        if child is None:
            child = self._refused_children[reason] = self._refused.labels(reason)
        child.inc()

    def suppressed(self, event: str) -> None:
        """Count a log line the sampler left out."""
        self._suppressed.labels(event).inc()

    def exposition(self) -> bytes:
        """Every series in the text format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


def _gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        yield GaugeMetricFamily(name, doc, value=value)


def _int(mapping: Mapping[str, Any], key: str) -> int | None:
    value = mapping.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _RequestTally(Collector):
    """``novakms_requests`` and ``novakms_request_duration_seconds``, tallied in plain ints.

    The same series a prometheus-client ``Counter`` and ``Histogram`` would expose, at a tenth
    of the cost per request (theirs take a lock per sample): they are counted on the serving
    path, once per answer, and only the one trio thread counts.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        # Per op: the count in each bucket (the last one is +Inf, not cumulative), and the sum.
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def count(self, op: str, code: str, seconds: float) -> None:
        key = (op, code)
        self._counts[key] = self._counts.get(key, 0) + 1
        buckets = self._buckets.get(op)
        if buckets is None:
            buckets = self._buckets[op] = [0] * (len(LATENCY_BUCKETS) + 1)
            self._sums[op] = 0.0
        buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # le: the first bound >= seconds
        self._sums[op] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "novakms_requests",
            "Requests answered, by op and result code (ok or the error code).",
            labels=["op", "code"],
        )
        for (op, code), total in self._counts.items():
            requests.add_metric([op, code], total)
        yield requests
        latency = HistogramMetricFamily(
            "novakms_request_duration_seconds",
            "Time from a request read to its answer built, by op.",
            labels=["op"],
        )
        bounds = [*_BOUNDS, "+Inf"]
        for op, buckets in self._buckets.items():
            latency.add_metric(
                [op], list(zip(bounds, accumulate(buckets), strict=True)), self._sums[op]
            )
        yield latency


class _NodeCollector(Collector):
    """The node's state, read at scrape time (nothing is stored between scrapes)."""

    def __init__(self, node: Node, roles: Callable[[], Iterable[str]]) -> None:
        self._node = node
        self._roles = roles

    def collect(self) -> Iterator[Metric]:
        node = self._node
        yield from self._identity(node)
        yield from self._connections()
        yield from self._store(node)
        yield from self._replication(node)
        yield from self._chain(node)

    def _identity(self, node: Node) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "novakms_node_info", "The node (value 1).", labels=["wallet", "version", "mode"]
        )
        info.add_metric([node.wallet, node.version, node.mode.value], 1)
        yield info
        keyring = node.keyring
        yield from _gauge(
            "novakms_ready", "1 when app operations are served.", float(keyring.serving_apps)
        )
        yield from _gauge(
            "novakms_secret_initialized",
            "1 when the node holds the master secret.",
            float(keyring.initialized),
        )
        yield from _gauge(
            "novakms_secret_pinned",
            "1 when the owner pinned a secret.",
            float(keyring.pin is not None),
        )
        yield from _gauge(
            "novakms_secret_matches_pin",
            "0 when the held secret is not the pinned one.",
            float(not keyring.pin_mismatch),
        )
        yield from _gauge(
            "novakms_store_syncing", "1 while the joiner's catch-up runs.", float(node.gate.syncing)
        )
        yield from _gauge(
            "novakms_store_degraded",
            "1 when the node has not confirmed it holds what its peers hold.",
            float(node.gate.degraded is not None),
        )

    def _connections(self) -> Iterator[Metric]:
        counts = dict.fromkeys(ROLES, 0)
        for role in self._roles():
            counts[role] = counts.get(role, 0) + 1
        family = GaugeMetricFamily(
            "novakms_connections_open", "Open connections by role.", labels=["role"]
        )
        for role, count in counts.items():
            family.add_metric([role], count)
        yield family

    def _store(self, node: Node) -> Iterator[Metric]:
        store = node.gate.store
        if store is None:
            return
        stats = store.stats()
        yield from _gauge("novakms_store_bytes", "Bytes charged to all apps.", stats.used_bytes)
        records = GaugeMetricFamily(
            "novakms_store_records", "Stored records by state.", labels=["state"]
        )
        records.add_metric(["live"], stats.live)
        records.add_metric(["tombstone"], stats.tombstones)
        yield records
        yield from _gauge("novakms_store_apps", "Apps with stored records.", stats.apps)
        app_bytes = GaugeMetricFamily(
            "novakms_store_app_bytes",
            f"Bytes charged to each of the {TOP_APPS} largest apps.",
            labels=["app"],
        )
        app_records = GaugeMetricFamily(
            "novakms_store_app_records",
            f"Live records of each of the {TOP_APPS} largest apps.",
            labels=["app"],
        )
        for usage in store.largest_apps(TOP_APPS):
            app_bytes.add_metric([str(usage.app_id)], usage.used_bytes)
            app_records.add_metric([str(usage.app_id)], usage.live)
        yield app_bytes
        yield app_records
        yield CounterMetricFamily(
            "novakms_replicated_records_rejected",
            "Replicated records refused by validation.",
            value=node.gate.rejected,
        )

    def _replication(self, node: Node) -> Iterator[Metric]:
        replicator = node.replicator
        if replicator is None:
            return
        peers = replicator.describe(int(node.clock() * 1000))
        lag = GaugeMetricFamily(
            "novakms_replication_lag_seconds",
            "Age of the oldest change not yet acknowledged by the peer.",
            labels=["peer"],
        )
        queue = GaugeMetricFamily(
            "novakms_replication_queue_records",
            "Changes waiting to be pushed to the peer.",
            labels=["peer"],
        )
        present = GaugeMetricFamily(
            "novakms_peer_present", "1 while the peer is connected.", labels=["peer"]
        )
        counters = {
            key: CounterMetricFamily(f"novakms_replication_{key}", doc, labels=["peer"])
            for key, doc in (
                ("pushed", "Records pushed to the peer."),
                ("acked", "Records the peer acknowledged."),
                ("pulled", "Records pulled from the peer."),
                ("protocol_errors", "Protocol errors on the peer's link."),
            )
        }
        for peer in peers:
            wallet = str(peer["wallet"])
            lag_ms = _int(peer, "lag_ms")
            if lag_ms is not None:
                lag.add_metric([wallet], lag_ms / 1000)
            queue.add_metric([wallet], _int(peer, "pending") or 0)
            present.add_metric([wallet], float(bool(peer.get("present"))))
            for key, family in counters.items():
                family.add_metric([wallet], _int(peer, key) or 0)
        yield from (lag, queue, present, *counters.values())
        snapshot = replicator.snapshot_status()
        state = GaugeMetricFamily(
            "novakms_snapshot_state", "The joiner's snapshot state (value 1).", labels=["state"]
        )
        state.add_metric([str(snapshot["state"])], 1)
        yield state
        for key, doc in (
            ("records", "Records received in the snapshot."),
            ("chunks", "Snapshot chunks received."),
            ("resumed", "Times the snapshot resumed after a failure."),
        ):
            yield CounterMetricFamily(
                f"novakms_snapshot_{key}", doc, value=_int(snapshot, key) or 0
            )
        yield from _gauge(
            "novakms_snapshot_total_records",
            "Records the serving peer holds (the snapshot's goal), once known.",
            _int(snapshot, "total"),
        )
        yield CounterMetricFamily(
            "novakms_tombstones_collected",
            "Tombstones forgotten because every peer acknowledged them.",
            value=replicator.tombstones_collected,
        )

    def _chain(self, node: Node) -> Iterator[Metric]:
        described = node.registry.describe()
        for key, name, doc in (
            ("head_block", "novakms_chain_head_block", "The chain's latest block number."),
            ("last_block", "novakms_chain_block", "The block the registry view was read at."),
            ("lag_blocks", "novakms_chain_lag_blocks", "Blocks between the head and the view."),
        ):
            yield from _gauge(name, doc, _int(described, key))
        age = _int(described, "last_poll_age_ms")
        yield from _gauge(
            "novakms_chain_last_poll_age_seconds",
            "Seconds since the last successful registry poll.",
            None if age is None else age / 1000,
        )
        events = _int(described, "events_applied")
        if events is not None:
            yield CounterMetricFamily(
                "novakms_chain_events_applied", "Registry events applied.", value=events
            )
