"""Test harness: an in-memory network, in-process servers and clusters, virtual clocks.

Shared between test modules (tests never import each other): :mod:`.memory` (the network),
:mod:`.clock` (unix-seconds clocks driven by trio's clock), :mod:`.cluster` (a static-registry
cluster over the memory network), :mod:`.world` (the anvil world: real sockets, a real chain).
Every ``Node`` / ``Server`` the harness builds is constructed in :mod:`.build`, one place.
"""
