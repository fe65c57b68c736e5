"""The nemesis: rolling restarts of a real `novakms dev --restart` cluster under writes.

Every node is its own `novakms serve` process on a real anvil. Writers put unique keys on every
node, with ``acks=1`` and ``acks=0``, while the cluster is restarted node by node, twice, the
way docs/operations.md says (``novakms admin wait-safe``, SIGTERM, restart, wait until it
serves); between its wait-safe and its SIGTERM each node also takes a burst of
``acks=0`` writes, which only the graceful shutdown's drain delivers. At the end every
acknowledged write is on every node and every node lists the same
keys. The driver is ``bench/rolling.py`` (shared with ``bench/bench_rolling.py``).
"""

from __future__ import annotations

from pathlib import Path

from bench.rolling import FAST_LIMITS, dev_cluster, rolling_restart

#: Pushes batched for a second, so that the burst of acks=0 writes each node takes just before
#: its SIGTERM is still in its outbox then: only the shutdown's drain can deliver it.
LIMITS = (*FAST_LIMITS, "push_interval=1.0")


async def test_rolling_restarts_twice_lose_no_acknowledged_write(tmp_path: Path) -> None:
    with dev_cluster(tmp_path, limits=LIMITS) as cluster:
        result = await rolling_restart(cluster, rounds=2, rate=25.0, burst_before_stop=20)
    assert len(result.steps) == 6
    # Every restarted node caught up from a caught-up peer: none ended degraded.
    assert [s.degraded for s in result.steps] == [None] * 6
    assert result.verdict["rolling/burst"]["acknowledged"] == 6 * 20
    for prefix, verdict in result.verdict.items():
        # Writes were acknowledged throughout (on the nodes that were up).
        assert verdict["acknowledged"] >= 50, (prefix, verdict)
        assert verdict["lost"] == dict.fromkeys(cluster.addresses, 0), verdict
        assert verdict["wrong_value"] == dict.fromkeys(cluster.addresses, 0), verdict
        assert verdict["same_keys_everywhere"], verdict
