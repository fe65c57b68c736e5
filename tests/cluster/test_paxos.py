"""CASPaxos, the pure core (novakms.cluster.paxos): quorums, the acceptor's rules, compaction,
recovery, the base, and a model check of the safety property over random interleavings."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novakms.cluster.paxos import (
    Acceptor,
    Ballot,
    Entry,
    Incarnation,
    Promise,
    Slot,
    choose_base,
    highest_accepted,
    quorum_size,
    recovery_sources,
)
from novakms.store.records import Record, merge


def wallet(i: int) -> str:
    return "0x" + f"{i + 1:02x}" * 20


def boot(node: int, life: int = 1) -> bytes:
    return bytes([node, life]) + bytes(14)


A, B, C = wallet(0), wallet(1), wallet(2)
BOOT_A, BOOT_B, BOOT_C = boot(0), boot(1), boot(2)
SLOT: Slot = (1, "k")
OTHER: Slot = (1, "other")


def ballot(counter: int, who: str = B, incarnation: bytes = BOOT_B) -> Ballot:
    return Ballot(counter, who, incarnation)


def rec(
    *,
    gen: int = 0,
    hlc: int = 1,
    node: str = A,
    sealed: bytes | None = b"value",
    slot: Slot = SLOT,
) -> Record:
    return Record(
        app_id=slot[0],
        key=slot[1],
        sealed=sealed,
        clock=((node, 1),),
        hlc=hlc,
        node=node,
        gen=gen,
    )


def acceptor(who: str = A, incarnation: bytes = BOOT_A) -> Acceptor:
    return Acceptor(wallet=who, boot=incarnation, voting=True)


QUORUM: list[Incarnation] = [(A, BOOT_A), (B, BOOT_B)]


# -- quorums -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "quorum"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)]
)
def test_quorum_size(members: int, quorum: int) -> None:
    assert quorum_size(members) == quorum


@pytest.mark.parametrize(
    ("members", "sources"), [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3), (7, 4)]
)
def test_recovery_sources(members: int, sources: int) -> None:
    assert recovery_sources(members) == sources


def _meets_every_quorum_less_one(members: int, sources: int) -> bool:
    """Whether every ``sources`` others meet every quorum less the restarted node 0."""
    others = range(1, members)
    quorums = [
        set(q) - {0}
        for size in range(quorum_size(members), members + 1)
        for q in itertools.combinations(range(members), size)
    ]
    return all(
        not quorum or quorum & set(chosen)
        for chosen in itertools.combinations(others, sources)
        for quorum in quorums
    )


@pytest.mark.parametrize("members", range(1, 8))
def test_recovery_sources_meet_every_quorum_less_the_restarted_node(members: int) -> None:
    sources = recovery_sources(members)
    assert 0 <= sources <= members - 1
    assert _meets_every_quorum_less_one(members, sources)
    if sources:  # and it is the fewest that do
        assert not _meets_every_quorum_less_one(members, sources - 1)


# -- prepare -----------------------------------------------------------------------------------


def test_prepare_promises_a_higher_ballot_and_refuses_a_lower_or_equal_one() -> None:
    acc = acceptor()
    first = acc.prepare(SLOT, ballot(5), None)
    assert first == Promise(ok=True, promised=ballot(5), accepted=None, value=None, stored=None)
    assert acc.prepare(SLOT, ballot(5), None) == Promise(ok=False, promised=ballot(5))
    assert acc.prepare(SLOT, ballot(4, C, BOOT_C), None) == Promise(ok=False, promised=ballot(5))
    # The same counter from a greater wallet, or a greater boot, is a greater ballot.
    assert acc.prepare(SLOT, ballot(5, C, BOOT_C), None).ok
    assert acc.prepare(SLOT, Ballot(5, C, boot(2, 2)), None).ok
    assert acc.entries[SLOT].promised == Ballot(5, C, boot(2, 2))
    # Promises are per register.
    assert acc.prepare(OTHER, ballot(1), None).ok


def test_prepare_reports_the_accepted_value_and_the_stored_record() -> None:
    acc = acceptor()
    value = rec(gen=1, hlc=2)
    stored = rec(gen=0, hlc=1, node=C)
    assert acc.accept(SLOT, ballot(3), value, QUORUM) == (True, None)
    promise = acc.prepare(SLOT, ballot(4), stored)
    assert promise == Promise(
        ok=True, promised=ballot(4), accepted=ballot(3), value=value, stored=stored
    )
    assert acc.entries[SLOT] == Entry(promised=ballot(4), accepted=ballot(3), value=value)


def test_prepare_reports_the_stored_record_in_place_of_a_settled_value() -> None:
    acc = acceptor()
    value = rec(gen=1, hlc=2)
    acc.accept(SLOT, ballot(3), value, QUORUM)
    newer = rec(gen=1, hlc=9, node=C)
    assert acc.compact([(SLOT, newer)]) == (1, 0)
    assert acc.entries[SLOT] == Entry(
        promised=ballot(3), accepted=ballot(3), value=None, settled=True
    )
    promise = acc.prepare(SLOT, ballot(4), newer)
    assert promise == Promise(
        ok=True, promised=ballot(4), accepted=ballot(3), value=newer, stored=newer
    )


# -- accept ------------------------------------------------------------------------------------


def test_accept_refuses_below_the_promise_and_accepts_at_it() -> None:
    acc = acceptor()
    acc.prepare(SLOT, ballot(5), None)
    assert acc.accept(SLOT, ballot(4), rec(gen=1), QUORUM) == (False, ballot(5))
    assert acc.entries[SLOT] == Entry(promised=ballot(5))
    value = rec(gen=1, hlc=7)
    assert acc.accept(SLOT, ballot(5), value, QUORUM) == (True, None)
    assert acc.entries[SLOT] == Entry(promised=ballot(5), accepted=ballot(5), value=value)
    # Accepting above the promise (without a prepare here) is allowed too, and raises it.
    above = rec(gen=2, hlc=8)
    assert acc.accept(SLOT, ballot(6), above, QUORUM) == (True, None)
    assert acc.entries[SLOT] == Entry(promised=ballot(6), accepted=ballot(6), value=above)
    assert acc.prepare(SLOT, ballot(6), None) == Promise(ok=False, promised=ballot(6))


def test_accept_without_an_entry_creates_one() -> None:
    acc = acceptor()
    assert acc.accept(SLOT, ballot(1), None, QUORUM) == (True, None)
    assert acc.entries[SLOT] == Entry(promised=ballot(1), accepted=ballot(1), value=None)


def test_accept_refuses_a_quorum_counting_this_nodes_old_incarnation() -> None:
    acc = acceptor(A, boot(0, 2))
    acc.prepare(SLOT, ballot(5), None)
    assert acc.accept(SLOT, ballot(5), rec(gen=1), [(A, boot(0, 1)), (B, BOOT_B)]) == (
        False,
        ballot(5),
    )
    assert acc.entries[SLOT].accepted is None
    assert acc.accept(SLOT, ballot(5), rec(gen=1), [(A, boot(0, 2)), (B, BOOT_B)]) == (True, None)


def test_accept_refuses_a_quorum_counting_a_peers_dead_incarnation() -> None:
    acc = acceptor()
    acc.prepare(SLOT, ballot(5), None)
    quorum: list[Incarnation] = [(A, BOOT_A), (B, BOOT_B), (C, BOOT_C)]
    acc.note_boot(C, boot(2, 2))  # C restarted: its first life is dead
    assert acc.accept(SLOT, ballot(5), rec(gen=1), quorum) == (False, ballot(5))
    assert acc.entries[SLOT] == Entry(promised=ballot(5))
    # C's current life counts; B's boot was never noted, so it is not known to be dead.
    current: list[Incarnation] = [(A, BOOT_A), (B, BOOT_B), (C, boot(2, 2))]
    assert acc.accept(SLOT, ballot(5), rec(gen=1), current) == (True, None)
    acc.note_boot(B, BOOT_B)  # B's current boot: alive
    assert acc.accept(SLOT, ballot(6), rec(gen=2), current) == (True, None)
    acc.note_boot(B, boot(1, 2))
    assert acc.accept(SLOT, ballot(7), rec(gen=3), current) == (False, ballot(6))
    assert acc.entries[SLOT].accepted == ballot(6)


def test_note_boot_of_this_nodes_own_wallet_changes_nothing() -> None:
    acc = acceptor()
    acc.note_boot(A, boot(0, 9))
    assert acc.alive == {}
    assert acc.accept(SLOT, ballot(1), rec(gen=1), QUORUM) == (True, None)


def test_accept_after_compaction_unsettles_the_entry() -> None:
    acc = acceptor()
    acc.accept(SLOT, ballot(1), rec(gen=1), QUORUM)
    acc.compact([(SLOT, rec(gen=1))])
    assert acc.entries[SLOT].settled
    newer = rec(gen=2, hlc=5)
    assert acc.accept(SLOT, ballot(2), newer, QUORUM) == (True, None)
    assert acc.entries[SLOT] == Entry(promised=ballot(2), accepted=ballot(2), value=newer)
    assert acc.prepare(SLOT, ballot(3), rec(gen=1)).value == newer


# -- compaction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "settles"),
    [
        (rec(gen=1, hlc=5), True),  # the value itself
        (rec(gen=1, hlc=6), True),  # a newer record of the same generation
        (rec(gen=2, hlc=1), True),  # a later generation, whatever its hlc
        (rec(gen=1, hlc=4), False),  # older
        (rec(gen=0, hlc=99), False),  # an earlier generation, however late its hlc
        (None, False),  # the store does not hold it at all
    ],
)
def test_compact_settles_entries_the_store_holds(stored: Record | None, settles: bool) -> None:
    acc = acceptor()
    value = rec(gen=1, hlc=5)
    acc.accept(SLOT, ballot(2), value, QUORUM)
    assert acc.compact([(SLOT, stored)]) == ((1, 0) if settles else (0, 0))
    entry = acc.entries[SLOT]
    assert entry.settled is settles
    assert entry.value == (None if settles else value)
    assert (entry.promised, entry.accepted) == (ballot(2), ballot(2))


def test_compact_settles_an_entry_without_a_value_and_forgets_it_once_the_key_is_gone() -> None:
    acc = acceptor()
    acc.prepare(SLOT, ballot(3), None)  # promised, nothing accepted
    acc.prepare(OTHER, ballot(2), None)
    assert acc.compact([(SLOT, rec(gen=0))]) == (1, 0)
    assert acc.entries[SLOT].settled
    assert acc.floor is None
    assert acc.compact([(SLOT, None), (OTHER, None), ((9, "unknown"), None)]) == (1, 2)
    assert acc.entries == {}
    assert acc.floor == ballot(3)


def test_forgetting_raises_the_floor_so_no_promise_is_lowered() -> None:
    acc = acceptor()
    acc.accept(SLOT, ballot(7), rec(gen=1), QUORUM)
    acc.compact([(SLOT, rec(gen=1))])  # settled
    assert acc.compact([(SLOT, None)]) == (0, 1)  # the store forgot the key
    assert SLOT not in acc.entries
    assert acc.floor == ballot(7)
    # A forgotten slot is not a fresh one: the old promise stands.
    assert acc.prepare(SLOT, ballot(7), None) == Promise(ok=False, promised=ballot(7))
    assert acc.prepare(SLOT, ballot(6, C, BOOT_C), None) == Promise(ok=False, promised=ballot(7))
    assert acc.accept(SLOT, ballot(6), rec(gen=1), QUORUM) == (False, ballot(7))
    assert SLOT not in acc.entries  # refusals create nothing
    # The floor holds for every new entry (it cannot tell which key it came from).
    assert acc.prepare(OTHER, ballot(1), None) == Promise(ok=False, promised=ballot(7))
    promise = acc.prepare(SLOT, ballot(8), None)
    assert promise == Promise(ok=True, promised=ballot(8))
    assert acc.accept(OTHER, ballot(7), None, QUORUM) == (True, None)  # equal to the floor


def test_the_floor_never_goes_down() -> None:
    acc = acceptor()
    acc.prepare(SLOT, ballot(9), None)
    acc.prepare(OTHER, ballot(4), None)
    acc.compact([(SLOT, None)])
    assert acc.floor == ballot(9)
    acc.prepare(OTHER, ballot(10), None)  # above the floor (and OTHER's own promise)
    acc.compact([(OTHER, None)])  # forgetting a higher promise raises the floor
    assert acc.floor == ballot(10)
    acc.entries[(3, "y")] = Entry(promised=ballot(2), settled=True)
    acc.compact([((3, "y"), None)])  # forgetting a lower one keeps it
    assert (3, "y") not in acc.entries
    assert acc.floor == ballot(10)


def test_an_unsettled_entry_is_never_forgotten() -> None:
    acc = acceptor()
    value = rec(gen=1)
    acc.accept(SLOT, ballot(2), value, QUORUM)
    assert acc.compact([(SLOT, None)]) == (0, 0)
    assert acc.entries[SLOT] == Entry(promised=ballot(2), accepted=ballot(2), value=value)
    assert acc.floor is None


# -- recovery: table_after, adopt, adopt_floor -----------------------------------------------


def test_table_after_yields_entries_in_slot_order_and_resumes() -> None:
    acc = acceptor()
    slots: list[Slot] = [(2, "a"), (1, "b"), (10, "a"), (1, "a"), (2, "B")]
    for counter, slot in enumerate(slots, 1):
        acc.prepare(slot, ballot(counter), None)
    everything = list(acc.table_after(None))
    assert [slot for slot, _ in everything] == sorted(slots)
    assert [slot for slot, _ in everything] == [(1, "a"), (1, "b"), (2, "B"), (2, "a"), (10, "a")]
    assert everything[0][1] is acc.entries[(1, "a")]
    assert [slot for slot, _ in acc.table_after((1, "b"))] == [(2, "B"), (2, "a"), (10, "a")]
    assert [slot for slot, _ in acc.table_after((1, "c"))] == [(2, "B"), (2, "a"), (10, "a")]
    assert [slot for slot, _ in acc.table_after((10, "a"))] == []
    # Paging by the last slot seen walks the whole table once.
    seen: list[Slot] = []
    after: Slot | None = None
    while page := list(itertools.islice(acc.table_after(after), 2)):
        seen.extend(slot for slot, _ in page)
        after = page[-1][0]
    assert seen == sorted(slots)


def test_adopt_takes_the_higher_promise_and_the_higher_accepted_ballot() -> None:
    acc = acceptor(A, boot(0, 2))
    old, new = rec(gen=1, hlc=1), rec(gen=2, hlc=2)
    acc.adopt(SLOT, ballot(3), ballot(2), old)
    assert acc.entries[SLOT] == Entry(promised=ballot(3), accepted=ballot(2), value=old)
    acc.adopt(SLOT, ballot(5), None, None)  # a higher promise alone
    assert acc.entries[SLOT] == Entry(promised=ballot(5), accepted=ballot(2), value=old)
    acc.adopt(SLOT, ballot(4), ballot(1), rec(gen=0))  # lower on both: nothing changes
    assert acc.entries[SLOT] == Entry(promised=ballot(5), accepted=ballot(2), value=old)
    acc.adopt(SLOT, ballot(4), ballot(4), new)  # a higher accepted, a lower promise
    assert acc.entries[SLOT] == Entry(promised=ballot(5), accepted=ballot(4), value=new)
    acc.adopt(SLOT, None, ballot(4), old)  # the same accepted ballot: the first stays
    assert acc.entries[SLOT].value == new
    acc.adopt(SLOT, ballot(2), ballot(6), None)  # accepted above every promise raises it
    assert acc.entries[SLOT] == Entry(promised=ballot(6), accepted=ballot(6), value=None)


def test_adopt_of_a_higher_accepted_ballot_unsettles() -> None:
    acc = acceptor()
    acc.accept(SLOT, ballot(1), rec(gen=1), QUORUM)
    acc.compact([(SLOT, rec(gen=1))])
    acc.adopt(SLOT, ballot(1), ballot(1), rec(gen=1))
    assert acc.entries[SLOT].settled  # not higher: still settled
    newer = rec(gen=2, hlc=3)
    acc.adopt(SLOT, None, ballot(2), newer)
    assert acc.entries[SLOT] == Entry(promised=ballot(2), accepted=ballot(2), value=newer)


def test_adopt_of_nothing_makes_an_empty_entry() -> None:
    acc = acceptor()
    acc.adopt(SLOT, None, None, None)
    assert acc.entries[SLOT] == Entry()


def test_adopt_floor_keeps_the_highest() -> None:
    acc = acceptor()
    acc.adopt_floor(None)
    assert acc.floor is None
    acc.adopt_floor(ballot(4))
    acc.adopt_floor(ballot(3))
    acc.adopt_floor(None)
    assert acc.floor == ballot(4)
    acc.adopt_floor(ballot(4, C, BOOT_C))
    assert acc.floor == ballot(4, C, BOOT_C)
    assert not acc.prepare(SLOT, ballot(4), None).ok


# -- the base ----------------------------------------------------------------------------------


def promise(
    accepted: Ballot | None = None, value: Record | None = None, stored: Record | None = None
) -> Promise:
    return Promise(ok=True, promised=ballot(99), accepted=accepted, value=value, stored=stored)


def test_highest_accepted() -> None:
    low, high = rec(gen=5, hlc=5), rec(gen=1, hlc=1)
    assert highest_accepted([]) == (None, None)
    assert highest_accepted([promise(), promise()]) == (None, None)
    promises = [promise(ballot(2), low), promise(ballot(3), high), promise(), promise(ballot(1))]
    assert highest_accepted(promises) == (ballot(3), high)
    assert highest_accepted([promise(ballot(3), None), promise(ballot(2), low)]) == (
        ballot(3),
        None,
    )


def test_choose_base_is_the_value_of_the_highest_accepted_ballot() -> None:
    # Only the highest ballot's value counts, even if a lower ballot's value sorts later.
    winner = rec(gen=1, hlc=1)
    lower = rec(gen=3, hlc=3)
    assert choose_base([promise(ballot(2), lower), promise(ballot(4), winner)]) == winner
    assert choose_base([promise(ballot(4), winner), promise(ballot(2), lower), promise()]) == winner


def test_choose_base_prefers_a_newer_stored_record() -> None:
    accepted = rec(gen=1, hlc=5)
    later_hlc = rec(gen=1, hlc=6, node=C)
    later_gen = rec(gen=2, hlc=1, node=C)
    older = rec(gen=0, hlc=99, node=C)  # the generation comes first: older, however late
    assert choose_base([promise(ballot(3), accepted, stored=later_hlc)]) == later_hlc
    assert choose_base([promise(ballot(3), accepted), promise(stored=later_gen)]) == later_gen
    assert choose_base([promise(ballot(3), accepted), promise(stored=older)]) == accepted
    assert (
        choose_base([promise(stored=older), promise(stored=later_gen), promise(stored=later_hlc)])
        == later_gen
    )


def test_choose_base_of_nothing_is_none() -> None:
    assert choose_base([]) is None
    assert choose_base([promise(), promise()]) is None
    assert choose_base([promise(ballot(3), None)]) is None
    stored = rec(gen=0)
    assert choose_base([promise(ballot(3), None, stored=stored)]) == stored


# -- a known hazard: a stale boot un-fences a dead incarnation --------------------------------


def test_a_stale_boot_does_not_revive_a_fenced_incarnation() -> None:
    """Once a member was told a node's new boot, the node's old incarnation stays dead.

    ``Consensus.on_prepare`` calls ``note_boot(caller, ballot.boot)`` for every prepare; a
    prepare the old process sent before it died, handled after the new process's
    ``cas.recover``, must not make the old incarnation count again in an ``accept`` quorum.
    """
    a1, a2 = boot(0, 1), boot(0, 2)
    a_old = Acceptor(wallet=A, boot=a1, voting=True)
    b, c = acceptor(B, BOOT_B), acceptor(C, BOOT_C)
    # C proposes ballot 10; A (first life) and C promise; A accepts v.
    ten = Ballot(10, C, BOOT_C)
    assert a_old.prepare(SLOT, ten, None).ok
    assert c.prepare(SLOT, ten, None).ok
    v = rec(gen=1, hlc=1, node=C)
    quorum: list[Incarnation] = [(A, a1), (C, BOOT_C)]
    assert a_old.accept(SLOT, ten, v, quorum) == (True, None)
    # A restarts, fences B and C and copies their tables (neither holds v).
    a_new = Acceptor(wallet=A, boot=a2)
    for source in (b, c):
        source.note_boot(A, a2)
        a_new.adopt_floor(source.floor)
        for slot, entry in source.table_after(None):
            a_new.adopt(slot, entry.promised, entry.accepted, entry.value)
    a_new.voting = True
    # A prepare the old process sent before dying reaches C only now.
    c.note_boot(A, a1)
    # C's accept of ballot 10 would make v chosen (A's first life and C: a majority of 3) with
    # no copy of it in A's new table: it must be refused.
    assert c.accept(SLOT, ten, v, quorum)[0] is False, "the fence on A's old life was lifted"


# -- the model: random interleavings of proposers, acceptors, stores, restarts ---------------


def history(record: Record | None) -> list[bytes]:
    if record is None:
        return []
    assert record.sealed is not None
    return record.sealed.split(b"|")


@dataclass(frozen=True)
class Prepare:
    src: int
    dst: int
    ballot: Ballot


@dataclass(frozen=True)
class PromiseReply:
    dst: int
    src: str
    ballot: Ballot
    promise: Promise
    boot: bytes


@dataclass(frozen=True)
class Accept:
    src: int
    dst: int
    ballot: Ballot
    value: Record | None
    quorum: tuple[Incarnation, ...]


@dataclass(frozen=True)
class AcceptReply:
    dst: int
    src: str
    ballot: Ballot
    ok: bool
    promised: Ballot | None
    boot: bytes


Message = Prepare | PromiseReply | Accept | AcceptReply


@dataclass
class Proposer:
    counter: int = 0
    ballot: Ballot | None = None
    phase: str = "idle"  # "prepare", "accept", "idle"
    promises: dict[str, tuple[Promise, bytes]] = field(default_factory=dict)
    acks: set[str] = field(default_factory=set)
    value: Record | None = None
    above: Ballot | None = None


RecoverTable = tuple[list[tuple[Slot, Ballot | None, Ballot | None, Record | None]], Ballot | None]


@dataclass
class Node:
    index: int
    acceptor: Acceptor
    life: int = 1
    store: Record | None = None
    proposer: Proposer = field(default_factory=Proposer)
    copied: dict[int, RecoverTable] = field(default_factory=dict)


class Cluster:
    def __init__(self, members: int) -> None:
        self.members = members
        self.quorum = quorum_size(members)
        self.nodes = [
            Node(i, Acceptor(wallet=wallet(i), boot=boot(i), voting=True)) for i in range(members)
        ]
        self.network: list[Message] = []
        self.accepted_by: dict[Ballot, set[str]] = {}
        self.values: dict[Ballot, Record | None] = {}
        self.tick = 0
        self.committed: list[Record] = []

    def _next(self) -> int:
        self.tick += 1
        return self.tick

    def _ballot(self, node: Node) -> Ballot:
        proposer = node.proposer
        above = 0 if proposer.above is None else proposer.above.counter
        proposer.counter = max(proposer.counter, above) + 1
        return Ballot(proposer.counter, wallet(node.index), node.acceptor.boot)

    # -- proposer steps ------------------------------------------------------------------------

    def start(self, i: int) -> None:
        """Node ``i``'s proposer starts a round (abandoning any round under way)."""
        node = self.nodes[i]
        node.proposer.ballot = b = self._ballot(node)
        node.proposer.phase = "prepare"
        node.proposer.promises, node.proposer.acks, node.proposer.value = {}, set(), None
        self.network.extend(Prepare(i, j, b) for j in range(self.members))

    def _propose(self, node: Node, base: Record | None) -> Record:
        tick = self._next()
        me = wallet(node.index)
        return Record(
            app_id=SLOT[0],
            key=SLOT[1],
            sealed=b"|".join([*history(base), f"c{node.index}.{tick}".encode()]),
            clock=((me, tick),),
            hlc=tick,
            node=me,
            gen=(0 if base is None else base.gen) + 1,
        )

    def write(self, i: int) -> None:
        """An unconditional write on node ``i``'s store (keeps the generation)."""
        node = self.nodes[i]
        tick = self._next()
        me = wallet(i)
        record = Record(
            app_id=SLOT[0],
            key=SLOT[1],
            sealed=b"|".join([*history(node.store), f"u{i}.{tick}".encode()]),
            clock=((me, tick),),
            hlc=tick,
            node=me,
            gen=0 if node.store is None else node.store.gen,
        )
        node.store = record if node.store is None else merge(node.store, record)

    def replicate(self, i: int, j: int) -> None:
        source, target = self.nodes[i].store, self.nodes[j]
        if source is not None:
            target.store = source if target.store is None else merge(target.store, source)

    def compact(self, i: int) -> None:
        node = self.nodes[i]
        node.acceptor.compact([(slot, node.store) for slot in list(node.acceptor.entries)])

    # -- restarts and recovery -----------------------------------------------------------------

    def restart(self, i: int, *, stale_prepares: bool) -> None:
        node = self.nodes[i]
        node.life += 1
        node.acceptor = Acceptor(wallet=wallet(i), boot=boot(i, node.life), voting=False)
        node.proposer = Proposer()
        node.copied = {}
        if not stale_prepares:  # the dead process's prepares die with it
            self.network = [m for m in self.network if not (isinstance(m, Prepare) and m.src == i)]

    def recover(self, i: int, j: int) -> None:
        """Node ``i`` (not voting) fences itself at ``j`` and copies its table (atomic)."""
        node, source = self.nodes[i], self.nodes[j]
        source.acceptor.note_boot(wallet(i), node.acceptor.boot)
        table = [
            (slot, e.promised, e.accepted, source.store if e.settled else e.value)
            for slot, e in source.acceptor.table_after(None)
        ]
        node.copied[j] = (table, source.acceptor.floor)
        if len(node.copied) >= recovery_sources(self.members):
            for entries, floor in node.copied.values():
                node.acceptor.adopt_floor(floor)
                for slot, promised, accepted, value in entries:
                    node.acceptor.adopt(slot, promised, accepted, value)
            node.acceptor.voting = True

    # -- the network ---------------------------------------------------------------------------

    def deliver(self, index: int) -> int | None:
        """Deliver one message; the node that accepted a value by it, if any."""
        message = self.network.pop(index)
        if isinstance(message, Prepare):
            node = self.nodes[message.dst]
            if node.acceptor.voting:
                node.acceptor.note_boot(wallet(message.src), message.ballot.boot)
                answer = node.acceptor.prepare(SLOT, message.ballot, node.store)
                self.network.append(
                    PromiseReply(
                        message.src, wallet(node.index), message.ballot, answer, node.acceptor.boot
                    )
                )
        elif isinstance(message, Accept):
            node = self.nodes[message.dst]
            if node.acceptor.voting:
                ok, promised = node.acceptor.accept(
                    SLOT, message.ballot, message.value, message.quorum
                )
                if ok:
                    self.accepted_by.setdefault(message.ballot, set()).add(wallet(node.index))
                    previous = self.values.setdefault(message.ballot, message.value)
                    assert previous == message.value, "two values under one ballot"
                self.network.append(
                    AcceptReply(
                        message.src,
                        wallet(node.index),
                        message.ballot,
                        ok,
                        promised,
                        node.acceptor.boot,
                    )
                )
                return node.index if ok else None
        elif isinstance(message, PromiseReply):
            self._on_promise(message)
        else:
            self._on_accepted(message)
        return None

    def may_restart(self) -> bool:
        """Whether a node may restart: every recovering node can still find enough sources."""
        voting = sum(n.acceptor.voting for n in self.nodes)
        return voting - 1 >= recovery_sources(self.members)

    def _refused(self, proposer: Proposer, promised: Ballot | None) -> None:
        if promised is not None and (proposer.above is None or promised > proposer.above):
            proposer.above = promised

    def _on_promise(self, reply: PromiseReply) -> None:
        node = self.nodes[reply.dst]
        proposer = node.proposer
        if proposer.ballot != reply.ballot or proposer.phase != "prepare":
            return
        if not reply.promise.ok:
            self._refused(proposer, reply.promise.promised)
            return
        proposer.promises[reply.src] = (reply.promise, reply.boot)
        if len(proposer.promises) < self.quorum:
            return
        base = choose_base([p for p, _ in proposer.promises.values()])
        proposer.value = value = self._propose(node, base)
        proposer.phase = "accept"
        quorum = tuple((w, b) for w, (_, b) in proposer.promises.items())
        by_wallet = {wallet(n.index): n.index for n in self.nodes}
        self.network.extend(
            Accept(node.index, by_wallet[w], reply.ballot, value, quorum) for w in proposer.promises
        )

    def _on_accepted(self, reply: AcceptReply) -> None:
        node = self.nodes[reply.dst]
        proposer = node.proposer
        if proposer.ballot != reply.ballot or proposer.phase != "accept":
            return
        if not reply.ok:
            self._refused(proposer, reply.promised)
            return
        if reply.boot != proposer.promises[reply.src][1]:
            return  # another incarnation took it: not counted
        proposer.acks.add(reply.src)
        if len(proposer.acks) >= self.quorum:
            value = proposer.value
            assert value is not None
            node.store = value if node.store is None else merge(node.store, value)
            self.committed.append(value)
            proposer.phase = "idle"

    # -- the property --------------------------------------------------------------------------

    def chosen(self) -> list[tuple[Ballot, Record | None]]:
        return sorted(
            (b, self.values[b]) for b, ws in self.accepted_by.items() if len(ws) >= self.quorum
        )

    def check(self) -> None:
        chosen = self.chosen()
        gens = [0 if v is None else v.gen for _, v in chosen]
        assert len(set(gens)) == len(gens), f"two chosen values share a generation: {chosen}"
        for (b1, v1), (b2, v2) in itertools.combinations(chosen, 2):
            assert v1 is not None
            assert v2 is not None
            assert v2.gen > v1.gen, f"chosen at {b2} is not after chosen at {b1}"
            h1, h2 = history(v1), history(v2)
            assert h2[: len(h1)] == h1, f"chosen at {b2} ({h2}) lost chosen at {b1} ({h1})"
        chosen_values = {v for _, v in chosen}
        assert all(v in chosen_values for v in self.committed), "committed but not chosen"


KINDS = (
    ("deliver",) * 16
    + ("start",) * 2
    + ("drop",) * 2
    + ("recover",) * 4
    + ("compact", "replicate", "write", "restart")
)


def run_model(data: st.DataObject, *, stale_prepares: bool) -> Cluster:
    members = data.draw(st.sampled_from([3, 5]), label="members")
    cluster = Cluster(members)
    nodes = st.integers(0, members - 1)
    for _ in range(data.draw(st.integers(1, 250), label="steps")):
        kind = data.draw(st.sampled_from(KINDS))
        if kind in ("deliver", "drop"):
            if cluster.network:
                index = data.draw(st.integers(0, len(cluster.network) - 1))
                if kind == "deliver":
                    took = cluster.deliver(index)
                    # The riskiest moment to lose an acceptor: right after it accepted.
                    if (
                        took is not None
                        and cluster.may_restart()
                        and data.draw(st.integers(0, 5), label="crash") == 0
                    ):
                        cluster.restart(took, stale_prepares=stale_prepares)
                else:
                    cluster.network.pop(index)
        elif kind == "start":
            cluster.start(data.draw(nodes))
        elif kind == "compact":
            cluster.compact(data.draw(nodes))
        elif kind == "replicate":
            cluster.replicate(data.draw(nodes), data.draw(nodes))
        elif kind == "write":
            cluster.write(data.draw(nodes))
        elif kind == "restart":
            if cluster.may_restart():
                cluster.restart(data.draw(nodes), stale_prepares=stale_prepares)
        else:
            waiting = [n.index for n in cluster.nodes if not n.acceptor.voting]
            if waiting:
                i = data.draw(st.sampled_from(waiting))
                # One source at a time, or (as quickly as it can be) all it needs at once.
                at_once = data.draw(st.booleans(), label="at once")
                while not cluster.nodes[i].acceptor.voting:
                    sources = [
                        n.index
                        for n in cluster.nodes
                        if n.acceptor.voting and n.index not in cluster.nodes[i].copied
                    ]
                    if not sources:
                        break
                    cluster.recover(i, data.draw(st.sampled_from(sources)))
                    if not at_once:
                        break
        cluster.check()
    return cluster


@given(st.data())
def test_model_chosen_values_form_a_chain(data: st.DataObject) -> None:
    """CASPaxos safety: every value chosen (accepted by a majority under one ballot) at a
    higher ballot is built on every value chosen at a lower one.

    Messages are lost and reordered at random, nodes restart (losing their acceptor) and
    recover, stores take unconditional writes, replicate and compact the acceptor tables. A
    dead process's undelivered prepares die with it here: that a late one breaks the fence is
    test_a_stale_boot_does_not_revive_a_fenced_incarnation.
    """
    run_model(data, stale_prepares=False)


def _decide(cluster: Cluster, i: int) -> Record:
    """Node ``i`` proposes, over a perfect network, until its proposal is committed."""
    committed = len(cluster.committed)
    for _ in range(10):
        cluster.start(i)
        while cluster.network:
            cluster.deliver(0)
        cluster.check()
        if len(cluster.committed) > committed:
            return cluster.committed[-1]
    raise AssertionError("no decision")


@pytest.mark.parametrize("members", [3, 5])
def test_model_makes_progress(members: int) -> None:
    """The model is not vacuous: one proposer at a time over a perfect network decides."""
    cluster = Cluster(members)
    decided = [_decide(cluster, r % members) for r in range(4)]
    assert [v.gen for v in decided] == [1, 2, 3, 4]
    assert [v for _, v in cluster.chosen()] == decided
    # Every node restarts and recovers in turn; the decisions survive.
    for i in range(members):
        cluster.restart(i, stale_prepares=False)
        for j in range(members):
            if j != i and not cluster.nodes[i].acceptor.voting:
                cluster.recover(i, j)
        assert cluster.nodes[i].acceptor.voting
        assert len(cluster.nodes[i].copied) == recovery_sources(members)
    last = _decide(cluster, 0)
    assert last.gen == 5
    assert history(last)[:4] == history(decided[3])
