"""Per-key consensus for conditional KV writes: CASPaxos (Rystsov, 2018) among the KMS nodes.

Pure (sans-I/O): no trio, sockets, clock or RNG. :mod:`novakms.cluster.consensus` carries the
messages over the peer channels and owns every timing decision.

Theory of operation (PROTOCOL.md §8 `cas.*`):

* **The register.** Every ``(app_id, key)`` is one CASPaxos register whose value is a KV
  :class:`~novakms.store.records.Record` (or nothing). A conditional ``kv.put`` / ``kv.delete``
  is a change function: the coordinator (*proposer*) sends ``prepare(ballot)`` to every member,
  and once a majority promised, computes the **base** (:func:`choose_base`), checks the
  caller's ``if_version`` against it, and sends ``accept(ballot, new value)``; the write is
  committed once a majority accepted it, and only then reaches the KV store (and replication).
  A refused check (``conflict``) writes the base back the same way, so that a refusal is as
  linearizable as a success.
* **The base** is the value accepted under the highest ballot the promises report, or the
  greatest (LWW order) store record they report if that is newer: a store holds only committed
  conditional writes and unconditional writes made on top of them, so the base is never older
  than anything committed, and unconditional writes that reached the quorum are seen.
* **Ballots** are ``(counter, wallet, boot)``: unique across proposers and across restarts of
  one proposer (its new ``boot``), totally ordered. A boot begins with its process's start
  time, so one node's boots sort in start order.
* **Restarts.** Acceptor state lives in memory only. A restarted node (a new ``boot``) is a
  new acceptor that votes only after :class:`Acceptor` *recovery*: it fences and then copies
  the acceptor tables of enough other members (:func:`recovery_sources`). Fencing tells a
  member its new boot; from then on that member refuses every ``accept`` whose promise quorum
  counts the node's old incarnation, so nothing the lost memory took part in can still be
  decided without the member — and what was decided before is in the copied tables, since the
  sources intersect every quorum. A proposer counts an ``accept`` only from an incarnation
  that promised, and lists those incarnations in the ``accept`` itself.
* **Compaction.** Once the store holds the accepted value (or a newer record of the key) an
  entry keeps only its ballots (``settled``); once the store has forgotten the key, the entry
  is forgotten and its promise raised into :attr:`Acceptor.floor`, which every new entry starts
  from, so forgetting never lowers a promise.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from novakms.store.records import Record

__all__ = [
    "Acceptor",
    "Ballot",
    "Entry",
    "Incarnation",
    "Promise",
    "Slot",
    "choose_base",
    "highest_accepted",
    "quorum_size",
    "recovery_sources",
]

Slot = tuple[int, str]
"""``(app_id, key)``: one register."""

Incarnation = tuple[str, bytes]
"""``(wallet, boot)``: one process lifetime of one node."""


class Ballot(NamedTuple):
    """A proposal number: ordered by counter, then wallet, then boot."""

    counter: int
    wallet: str
    boot: bytes


def quorum_size(members: int) -> int:
    """The majority of ``members`` acceptors."""
    return members // 2 + 1


def recovery_sources(members: int) -> int:
    """How many *other* members a restarted acceptor copies before it votes.

    ``members - quorum + 1`` others meet every quorum less the restarted node itself (their
    sizes add up to more than the ``members - 1`` others), capped at the others there are.
    """
    return min(members - quorum_size(members) + 1, members - 1)


@dataclass(slots=True)
class Entry:
    """One register's acceptor state.

    Attributes:
        promised: the highest ballot promised (prepare) or accepted.
        accepted: the ballot of the accepted value, None when nothing was accepted.
        value: the accepted value (None: nothing, or absent).
        settled: the store holds ``value`` or a newer record of the key, so ``value`` was
            dropped; a promise reports the store's record in its place.
    """

    promised: Ballot | None = None
    accepted: Ballot | None = None
    value: Record | None = None
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Promise:
    """An acceptor's answer to ``prepare``.

    Attributes:
        ok: the promise was given.
        promised: on refusal, the ballot already promised (the proposer goes above it).
        accepted: the ballot of the accepted value, if any.
        value: the accepted value (a settled entry reports the stored record).
        stored: the acceptor's store record of the key (live, expired or tombstone), or None.
    """

    ok: bool
    promised: Ballot | None
    accepted: Ballot | None = None
    value: Record | None = None
    stored: Record | None = None


def highest_accepted(promises: Iterable[Promise]) -> tuple[Ballot | None, Record | None]:
    """The highest accepted ballot among ``promises`` and its value."""
    best: tuple[Ballot | None, Record | None] = (None, None)
    for promise in promises:
        if promise.accepted is not None and (best[0] is None or promise.accepted > best[0]):
            best = (promise.accepted, promise.value)
    return best


def choose_base(promises: Sequence[Promise]) -> Record | None:
    """The register's current value as a quorum of promises shows it (module docstring)."""
    _, value = highest_accepted(promises)
    candidates = [value, *(p.stored for p in promises)]
    return max((c for c in candidates if c is not None), key=lambda r: r.order_key(), default=None)


@dataclass(eq=False)
class Acceptor:
    """One node's acceptor: an entry per register, the peers' current boots, the floor.

    Args:
        wallet: this node's wallet.
        boot: this process lifetime's id.
        voting: whether it takes part in quorums now (False until recovery, after a restart).
    """

    wallet: str
    boot: bytes
    voting: bool = False
    entries: dict[Slot, Entry] = field(default_factory=dict)
    alive: dict[str, bytes] = field(default_factory=dict)  # wallet -> current boot, as told
    floor: Ballot | None = None  # promises of forgotten entries; every new entry starts here

    # -- incarnations ------------------------------------------------------------------------

    def note_boot(self, wallet: str, boot: bytes) -> bool:
        """``wallet``'s process is now ``boot``: its earlier incarnations are dead.

        Boots sort in start order (they begin with the start time), and only a later boot
        counts: a message of a dead process that arrives late never revives it.

        Returns:
            False when ``boot`` is older than one already known (a dead incarnation).
        """
        if wallet == self.wallet:
            return True
        known = self.alive.get(wallet)
        if known is not None and boot < known:
            return False
        self.alive[wallet] = boot
        return True

    def _dead(self, incarnation: Incarnation) -> bool:
        wallet, boot = incarnation
        if wallet == self.wallet:
            return boot != self.boot
        known = self.alive.get(wallet)
        return known is not None and known != boot

    # -- the two phases ----------------------------------------------------------------------

    def _promised(self, entry: Entry | None) -> Ballot | None:
        promised = None if entry is None else entry.promised
        if self.floor is not None and (promised is None or promised < self.floor):
            return self.floor
        return promised

    def prepare(self, slot: Slot, ballot: Ballot, stored: Record | None) -> Promise:
        """Promise ``ballot`` (strictly above any promise) and report what was accepted.

        ``stored`` is this node's store record of the key; it also stands in for the value
        of a settled entry.
        """
        entry = self.entries.get(slot)
        promised = self._promised(entry)
        if promised is not None and ballot <= promised:
            return Promise(ok=False, promised=promised)
        if entry is None:
            entry = self.entries[slot] = Entry()
        entry.promised = ballot
        value = stored if entry.settled else entry.value
        return Promise(
            ok=True, promised=ballot, accepted=entry.accepted, value=value, stored=stored
        )

    def accept(
        self, slot: Slot, ballot: Ballot, value: Record | None, quorum: Sequence[Incarnation]
    ) -> tuple[bool, Ballot | None]:
        """Accept ``value`` under ``ballot`` unless a higher ballot was promised, or the
        proposer's promise quorum counts an incarnation known to be dead.

        Returns:
            (accepted, the ballot promised when refused).
        """
        entry = self.entries.get(slot)
        promised = self._promised(entry)
        if promised is not None and ballot < promised:
            return False, promised
        if any(self._dead(incarnation) for incarnation in quorum):
            return False, promised
        if entry is None:
            entry = self.entries[slot] = Entry()
        entry.promised = entry.accepted = ballot
        entry.value = value
        entry.settled = False
        return True, None

    # -- compaction --------------------------------------------------------------------------

    def compact(self, stored: Iterable[tuple[Slot, Record | None]]) -> tuple[int, int]:
        """Settle entries whose value the store holds; forget those whose key it forgot.

        Args:
            stored: ``(slot, the store's record of it or None)`` for the slots to look at.

        Returns:
            (entries settled, entries forgotten).
        """
        settled = forgotten = 0
        for slot, record in stored:
            entry = self.entries.get(slot)
            if entry is None:
                continue
            if not entry.settled and (
                entry.value is None
                or (record is not None and record.order_key() >= entry.value.order_key())
            ):
                entry.settled, entry.value = True, None
                settled += 1
            if entry.settled and record is None:
                if entry.promised is not None and (
                    self.floor is None or entry.promised > self.floor
                ):
                    self.floor = entry.promised
                del self.entries[slot]
                forgotten += 1
        return settled, forgotten

    # -- recovery ----------------------------------------------------------------------------

    def table_after(self, after: Slot | None) -> Iterator[tuple[Slot, Entry]]:
        """The entries in slot order after ``after`` (a recovering peer copies them)."""
        for slot in sorted(self.entries):
            if after is None or slot > after:
                yield slot, self.entries[slot]

    def adopt(
        self, slot: Slot, promised: Ballot | None, accepted: Ballot | None, value: Record | None
    ) -> None:
        """Take over one entry of a recovery source: the higher promise, the higher accepted
        ballot with its value (every pair adopted was genuinely accepted at its ballot)."""
        entry = self.entries.get(slot)
        if entry is None:
            entry = self.entries[slot] = Entry()
        if promised is not None and (entry.promised is None or promised > entry.promised):
            entry.promised = promised
        if accepted is not None and (entry.accepted is None or accepted > entry.accepted):
            entry.accepted, entry.value, entry.settled = accepted, value, False
            if entry.promised is None or accepted > entry.promised:
                entry.promised = accepted

    def adopt_floor(self, floor: Ballot | None) -> None:
        """Take over a source's floor (promises of entries it forgot)."""
        if floor is not None and (self.floor is None or floor > self.floor):
            self.floor = floor
