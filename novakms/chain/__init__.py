"""Chain access: the read-only JSON-RPC client, registry views, dev-chain tooling."""
