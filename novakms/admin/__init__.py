"""Operator tooling that writes to the chain (KMS nodes themselves never send transactions)."""
