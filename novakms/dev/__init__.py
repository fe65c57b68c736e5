"""Development only: the local anvil, the demo world on it, dev keys, the dev-cluster processes."""
