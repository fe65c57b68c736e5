"""The chain fixtures (a fresh anvil per test) for the cluster tests."""

from tests.chain.conftest import anvil, start_anvil

__all__ = ["anvil", "start_anvil"]
