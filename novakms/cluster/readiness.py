"""When a node may serve its store, and when it may be stopped: catch-up and safe-to-stop.

Pure (sans-I/O): no trio, sockets, clock or RNG. The replicator feeds it what it learns over
peer channels and asks it for verdicts.

Theory of operation (DESIGN.md §6 "Replication"; PROTOCOL.md §8 "Catch-up" and "Safe to stop"):

* **Catch-up.** A node whose memory is new (it fetched the secret from the cluster: a joiner,
  which includes every restarted node) streams a snapshot from one peer, then runs one
  anti-entropy pass against *every* current peer, so that it holds what each of them holds —
  not just what one of them held. :func:`catch_up_verdict` then says whether it may serve as
  ``serving``, or only as ``degraded``: when no peer it merged from was itself caught up
  (``no_caught_up_peer``: every peer was still catching up, or none answered), data that only a
  node now gone held may be missing; when a peer could not be reached (``peer_unreachable``),
  what only that peer holds is missing until it answers. A degraded node serves (availability),
  says so on every KV answer, and becomes ``serving`` once an anti-entropy pass has succeeded
  against every current peer (:func:`confirmed`).
* **Holders.** For every key of its store a node tracks which peers are known to hold its
  current record of that key (or a newer one): the peer that sent it, a peer that acknowledged
  its push, a peer whose anti-entropy digests (app, bucket or key) were equal to ours. A local
  write starts with no holder. A peer that restarted (a new ``boot`` in ``sync.hello``) holds
  nothing any more, so it is forgotten everywhere. Peers are bits of a small integer per key, so
  the bookkeeping costs one dict entry per key.
* **Safe to stop.** :func:`stop_verdict`: a node may be stopped without losing anything it was
  told (an acknowledged write, or an unacknowledged one it holds) when it is not catching up
  itself, no peer is catching up (possibly from it), and every key it holds is held by at
  least one peer that is connected to it now. The rolling-restart procedure waits for this
  before stopping each node (``novakms admin wait-safe``, docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Final, Literal

__all__ = [
    "DEGRADED_REASONS",
    "STOP_REASONS",
    "CatchUpOutcome",
    "Holders",
    "Slot",
    "State",
    "catch_up_verdict",
    "confirmed",
    "stop_verdict",
]

Slot = tuple[int, str]
"""A key of the store: (app id, key)."""

State = Literal["syncing", "degraded", "serving"]
"""A node's catch-up state, as ``status.catch_up.state`` and peers (``sync.hello``) see it."""

CatchUpOutcome = Literal["caught_up", "partial", "unreachable"]
"""How catching up from one peer went: merged everything it holds, and it was itself caught up
(``serving``); merged everything it holds, but it was still catching up or degraded; or it could
not be reached."""

DEGRADED_REASONS: Final = ("no_caught_up_peer", "peer_unreachable")
STOP_REASONS: Final = ("not_started", "syncing", "peer_syncing", "unconfirmed")


def catch_up_verdict(outcomes: Mapping[str, CatchUpOutcome]) -> tuple[State, str | None]:
    """The state a joiner serves in once its catch-up ended, with the reason when degraded.

    Args:
        outcomes: per current peer. No peers at all: nothing to catch up from, ``serving``.
    """
    if not outcomes:
        return "serving", None
    values = set(outcomes.values())
    if "caught_up" not in values:
        return "degraded", "no_caught_up_peer"
    if "unreachable" in values:
        return "degraded", "peer_unreachable"
    return "serving", None


def confirmed(succeeded: Collection[str], current: Iterable[str]) -> bool:
    """Whether an anti-entropy pass confirmed a degraded node holds what all its peers hold.

    True when the pass succeeded against every current peer (then each of them had nothing this
    node lacks, or it pulled it).
    """
    return all(peer in succeeded for peer in current)


def stop_verdict(
    *, started: bool, state: State, peer_states: Iterable[str | None], unconfirmed: int
) -> str | None:
    """Why this node is not safe to stop now, or None when it is.

    Args:
        started: the node has its secret and store (a node without holds nothing).
        state: its own catch-up state. ``syncing`` blocks (what it has so far may be the only
            copy of what it received); ``degraded`` does not (its keys are checked one by one).
        peer_states: what each current peer last said about itself (None: unknown, e.g. an
            older node). A ``syncing`` peer may be catching up from this node.
        unconfirmed: keys of this node that no connected peer is known to hold.
    """
    if not started:
        return None
    if state == "syncing":
        return "syncing"
    if any(s == "syncing" for s in peer_states):
        return "peer_syncing"
    if unconfirmed:
        return "unconfirmed"
    return None


class Holders:
    """Which peers are known to hold this node's current record of each key (or a newer one).

    Methods take what the replicator observed; none of them checks record order, which the
    caller does (evidence about an older record than the current one is not passed in).
    """

    __slots__ = ("_bits", "_masks")

    def __init__(self) -> None:
        self._bits: dict[str, int] = {}
        self._masks: dict[Slot, int] = {}

    def _bit(self, peer: str) -> int:
        bit = self._bits.get(peer)
        if bit is None:
            bit = self._bits[peer] = 1 << len(self._bits)
        return bit

    def changed_here(self, slot: Slot) -> None:
        """A local write or delete: no peer holds it yet."""
        self._masks[slot] = 0

    def changed_from(self, slot: Slot, peer: str) -> None:
        """The current record came from ``peer`` (it replaced an older one here)."""
        self._masks[slot] = self._bit(peer)

    def add(self, peer: str, slots: Iterable[Slot]) -> None:
        """``peer`` holds the current record of each of these keys."""
        bit = self._bit(peer)
        masks = self._masks
        for slot in slots:
            masks[slot] = masks.get(slot, 0) | bit

    def forget_peer(self, peer: str) -> None:
        """``peer`` lost its memory (it restarted): it holds nothing it held before."""
        bit = self._bits.get(peer)
        if bit is None:
            return
        clear = ~bit
        masks = self._masks
        for slot, mask in masks.items():
            if mask & bit:
                masks[slot] = mask & clear

    def held_by(self, slot: Slot) -> frozenset[str]:
        """The peers known to hold the current record of ``slot``."""
        mask = self._masks.get(slot, 0)
        return frozenset(peer for peer, bit in self._bits.items() if mask & bit)

    def unconfirmed(self, slots: Iterable[Slot], present: Iterable[str]) -> int:
        """How many of ``slots`` no peer in ``present`` is known to hold."""
        wanted = 0
        for peer in present:
            wanted |= self._bits.get(peer, 0)
        masks = self._masks
        return sum(1 for slot in slots if not masks.get(slot, 0) & wanted)

    def retain(self, slots: Iterable[Slot]) -> None:
        """Keep bookkeeping only for these keys (the store's current ones)."""
        keep = set(slots)
        for slot in [s for s in self._masks if s not in keep]:
            del self._masks[slot]

    def __len__(self) -> int:
        return len(self._masks)
