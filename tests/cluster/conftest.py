"""Fixtures of the cluster tests: a memory cluster under a MockClock, and the anvil world."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
import trio
import trio.testing

from novakms.dev.anvil import AnvilProcess
from tests.chain.conftest import anvil, start_anvil
from tests.harness.clock import follow_trio_clock, unix_clock
from tests.harness.cluster import MemoryCluster
from tests.harness.world import World, open_world, signer
from tests.net.connectproxy import ConnectProxy, connect_proxy

__all__ = ["anvil", "memory_cluster", "proxies", "start_anvil", "world"]


@pytest.fixture
async def memory_cluster(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> MemoryCluster:
    """Three registered (not started) operators over a memory network, on virtual time."""
    clock = unix_clock()
    follow_trio_clock(monkeypatch, clock)
    return MemoryCluster(nursery, clock)


@pytest.fixture
async def world(nursery: trio.Nursery, anvil: AnvilProcess) -> AsyncIterator[World]:
    """The registries on a fresh anvil: three operators (not started) and the app."""
    async with open_world(nursery, anvil, app_wallets=[signer("app").wallet]) as opened:
        yield opened


@pytest.fixture
async def proxies() -> AsyncIterator[list[ConnectProxy]]:
    """Four HTTP CONNECT proxies on loopback (a node's egress, in the partition tests)."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(connect_proxy()) for _ in range(4)]
