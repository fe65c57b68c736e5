"""Cluster coordination: the pure decision cores that the peer-network glue drives."""
