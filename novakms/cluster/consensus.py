"""Conditional writes decided by a majority: the trio glue around :mod:`novakms.cluster.paxos`.

:class:`Consensus` is both sides of CASPaxos on this node:

* **coordinator** — ``kv.put`` / ``kv.delete`` with ``if_version`` call :meth:`Consensus.put`
  / :meth:`Consensus.delete`: ``cas.prepare`` to every member (this node's acceptor is called
  directly), the base from a majority of promises, the caller's check, ``cas.accept`` to the
  promisers, and the commit into this node's store (which replicates it like any local write)
  once a majority accepted. Refused ballots are retried above the refusing promise, after a
  short random pause, until ``cas_timeout``.
* **acceptor** — the ``cas.*`` peer ops (``novakms.server.ops.cluster``) call
  :meth:`Consensus.on_prepare`, :meth:`Consensus.on_accept` and :meth:`Consensus.on_recover`.
* **recovery** — a node whose acceptor does not vote yet (every start with peers: its memory
  of earlier promises is gone) copies the tables of :func:`~novakms.cluster.paxos.recovery_sources`
  other members (``cas.recover``, which fences its old incarnation first) and then votes.

Answers that cannot be decided are honest: ``unavailable`` / ``no_quorum`` when fewer than a
majority answered and nothing was accepted (nothing changed), ``outcome_unknown`` when an
accept may have reached some acceptors (the write may or may not take effect), ``contention``
when ``cas_timeout`` passed while other coordinators kept winning the key.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from novakms.cluster import cas_messages as msg
from novakms.cluster import replication
from novakms.cluster.paxos import (
    Acceptor,
    Ballot,
    Incarnation,
    Promise,
    Slot,
    choose_base,
    quorum_size,
    recovery_sources,
)
from novakms.cluster.sync_messages import BOOT_BYTES, frame_budget, new_boot
from novakms.config import Limits
from novakms.errors import BadRequest, Conflict, NovaKMSError, TransportTimeout, Unavailable
from novakms.log import get_logger
from novakms.server.keyring import Keyring
from novakms.server.store_gate import StoreGate
from novakms.store.kv import KVStore
from novakms.store.records import Record, clock_compare

if TYPE_CHECKING:
    from novakms.cluster.replicator import Replicator

__all__ = ["Consensus"]

T = TypeVar("T")

_BACKOFF_MS = 2.0  # first pause after a refused ballot; doubles per round, capped below
_BACKOFF_CAP_MS = 64.0
_COMPACT_INTERVAL = 1.0  # seconds between compaction passes


@dataclass
class _Counters:
    committed: int = 0
    refused: int = 0  # the check failed (conflict), decided by a majority
    rounds: int = 0
    preempted: int = 0  # rounds lost to a higher ballot
    no_quorum: int = 0
    outcome_unknown: int = 0
    contention: int = 0
    settled: int = 0  # keys decided again to commit a value its coordinator did not


class Consensus:
    """This node's coordinator and acceptor for conditional writes.

    Args:
        wallet: this node's wallet.
        limits: ``cas_timeout``, ``peer_timeout``, frame and key limits.
        keyring: the data keys (every value in a ``cas.*`` message must open under them).
        gate: the KV store.
        replicator: the peers (their links and proven channels); None on a lone node, whose
            acceptor votes at once and is the whole quorum.
        clock: unix seconds (the records' skew bound, TTLs).
    """

    def __init__(
        self,
        *,
        wallet: str,
        limits: Limits,
        keyring: Keyring,
        gate: StoreGate,
        replicator: Replicator | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.wallet = wallet
        self.limits = limits
        self._keyring = keyring
        self._gate = gate
        self._replicator = replicator
        self._clock = clock
        boot = (
            replicator.boot
            if replicator is not None
            else new_boot(time.time_ns(), os.urandom(BOOT_BYTES - 8))
        )
        self.acceptor = Acceptor(wallet=wallet, boot=boot, voting=replicator is None)
        self._counter = 0
        self._dot = 0
        self._busy: dict[Slot, trio.Lock] = {}  # one decision per key at a time on this node
        self._jitter = random.Random(os.urandom(8))  # retry pauses only  # noqa: S311
        self._nursery: trio.Nursery | None = None
        self.counters = _Counters()
        self.recovered_from: list[str] = []  # the sources of the last recovery
        self._log = get_logger("novakms.consensus", node=wallet)

    # -- what every side shares ---------------------------------------------------------------

    @property
    def boot(self) -> bytes:
        """This process lifetime's id (the acceptor's incarnation)."""
        return self.acceptor.boot

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def record_from_wire(self, item: object) -> Record:
        """A record from a ``cas.*`` message, as strictly checked as a replicated one.

        Raises:
            InvalidRecord: anything ``replication.record_from_wire`` or
                ``check_decryptable`` refuses.
        """
        record = replication.record_from_wire(
            item,
            limits=self.limits,
            now_ms=self._now_ms(),
            max_skew_ms=self.limits.max_clock_skew_ms,
        )
        replication.check_decryptable(record, self._keyring.data_key)
        return record

    def _stored(self, slot: Slot) -> Record | None:
        store = self._gate.store
        return None if store is None else store.record(*slot)

    def members(self) -> list[str]:
        """This node and its current peers (the acceptors a quorum is a majority of)."""
        peers = [] if self._replicator is None else sorted(self._replicator.links)
        return [self.wallet, *peers]

    def describe(self) -> dict[str, Any]:
        """``status.cas`` (no keys, no values)."""
        members = len(self.members())
        return {
            "voting": self.acceptor.voting,
            "members": members,
            "quorum": quorum_size(members),
            "entries": len(self.acceptor.entries),
            "recovered_from": list(self.recovered_from),
            **vars(self.counters),
        }

    # -- the acceptor's side (the cas.* peer ops) ---------------------------------------------

    def _require_voting(self) -> None:
        if not self.acceptor.voting:
            raise Unavailable(
                "this node restarted and is still copying its peers' consensus state",
                reason="cas_recovering",
            )

    def _note_boot(self, caller: str, boot: bytes) -> None:
        if not self.acceptor.note_boot(caller, boot):
            raise Unavailable(
                "a later process of the calling node has already been seen",
                reason="stale_boot",
            )

    def on_prepare(self, caller: str, request: msg.PrepareRequest) -> dict[str, Any]:
        """``cas.prepare`` from ``caller`` (whose wallet the ballot must carry)."""
        self._require_voting()
        ballot = request.ballot
        if ballot.wallet != caller:
            raise BadRequest("a ballot carries the caller's own wallet")
        self._note_boot(caller, ballot.boot)
        promise = self.acceptor.prepare(request.slot, ballot, self._stored(request.slot))
        return _promise_to_wire(promise, self.boot)

    def on_accept(self, caller: str, request: msg.AcceptRequest) -> dict[str, Any]:
        """``cas.accept`` from ``caller``."""
        self._require_voting()
        if request.ballot.wallet != caller:
            raise BadRequest("a ballot carries the caller's own wallet")
        ok, promised = self.acceptor.accept(
            request.slot, request.ballot, request.value, request.quorum
        )
        return {"ok": ok, "promised": msg.ballot_to_wire(promised), "boot": self.boot}

    def on_recover(self, caller: str, boot: bytes, after: Slot | None) -> dict[str, Any]:
        """``cas.recover``: fence ``caller``'s earlier incarnations, then a page of the table."""
        self._note_boot(caller, boot)  # before anything is read: the fence
        budget = frame_budget(self.limits.max_frame)
        entries: list[list[Any]] = []
        used = 0
        last: Slot | None = None
        for slot, entry in self.acceptor.table_after(after):
            value = self._stored(slot) if entry.settled else entry.value
            item = [
                slot[0],
                slot[1],
                msg.ballot_to_wire(entry.promised),
                msg.ballot_to_wire(entry.accepted),
                None if value is None else replication.record_to_wire(value),
            ]
            size = (
                200 + len(slot[1].encode()) + (0 if value is None else replication.wire_size(value))
            )
            if entries and used + size > budget:
                return self._recover_page(entries, last)
            entries.append(item)
            used += size
            last = slot
        return self._recover_page(entries, None)

    def _recover_page(self, entries: list[list[Any]], resume: Slot | None) -> dict[str, Any]:
        return {
            "entries": entries,
            "next": None if resume is None else list(resume),
            "floor": msg.ballot_to_wire(self.acceptor.floor),
            "voting": self.acceptor.voting,
        }

    # -- the coordinator's side ---------------------------------------------------------------

    async def put(
        self,
        app_id: int,
        key: str,
        value: bytes,
        *,
        ttl_ms: int | None,
        if_version: str,
    ) -> Record:
        """A conditional ``kv.put``, decided by a majority; the committed record.

        Raises:
            Conflict: ``if_version`` does not match the key's current (committed) version.
            Unavailable: ``no_quorum``, ``outcome_unknown``, ``contention``.
            BadRequest / TooLarge / QuotaExceeded: as for ``kv.put``.
        """
        store = self._gate.serving_store()
        return await self._write(
            (app_id, key),
            lambda base, now_ms: store.propose(
                base,
                app_id,
                key,
                value,
                now_ms,
                ttl_ms=ttl_ms,
                if_version=if_version,
                counter=self._next_dot(),
            ),
            store,
        )

    async def delete(self, app_id: int, key: str, *, if_version: str) -> Record:
        """A conditional ``kv.delete``; the committed tombstone (raises as :meth:`put`)."""
        store = self._gate.serving_store()
        return await self._write(
            (app_id, key),
            lambda base, now_ms: store.propose(
                base, app_id, key, None, now_ms, if_version=if_version, counter=self._next_dot()
            ),
            store,
        )

    async def _write(
        self, slot: Slot, change: Callable[[Record | None, int], Record], store: KVStore
    ) -> Record:
        record = await self._decide(slot, change, store)
        assert record is not None  # a change always makes a record
        return record

    async def settle(self, slot: Slot) -> None:
        """Decide ``slot`` once more, changing nothing: a value that a majority accepted but
        no store holds (its coordinator died between the two) is committed and replicated.

        Raises:
            Unavailable: as :meth:`put` (nothing is lost: the value stays accepted).
        """
        await self._decide(slot, lambda base, now_ms: None, self._gate.serving_store())

    def _next_dot(self) -> int:
        # Above every counter this process gave and, via the wall clock in ms, above those an
        # earlier process of this node gave (they started from the clock too).
        self._dot = max(self._dot + 1, self._now_ms())
        return self._dot

    def _ballot(self, above: Ballot | None = None) -> Ballot:
        self._counter = max(self._counter, 0 if above is None else above.counter) + 1
        return Ballot(self._counter, self.wallet, self.boot)

    async def _decide(
        self,
        slot: Slot,
        change: Callable[[Record | None, int], Record | None],
        store: KVStore,
    ) -> Record | None:
        # Conditional writes of one key wait for each other here rather than duel: a duel
        # between two of this node's own proposals could also not tell them apart.
        lock = self._busy.get(slot)
        if lock is None:
            lock = self._busy[slot] = trio.Lock()
        try:
            async with lock:
                return await self._run_rounds(slot, change, store)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._busy.pop(slot, None)

    async def _run_rounds(
        self,
        slot: Slot,
        change: Callable[[Record | None, int], Record | None],
        store: KVStore,
    ) -> Record | None:
        """Rounds until a majority accepted: ``change``'s record on top of the base (None from
        ``change``: the base itself, written back), or the refusal ``change`` raised."""
        deadline = trio.current_time() + self.limits.cas_timeout
        # Our proposals some acceptor may hold (accept sent, not refused by all): ballot -> value.
        ours: dict[Ballot, Record] = {}
        above: Ballot | None = None
        failure = "no_quorum"
        attempt = 0
        while True:
            if attempt:
                pause = min(_BACKOFF_CAP_MS, _BACKOFF_MS * 2 ** (attempt - 1))
                await trio.sleep(self._jitter.uniform(0, pause) / 1000)
            attempt += 1
            if trio.current_time() >= deadline:
                raise self._give_up(failure, ours)
            self.counters.rounds += 1
            need = quorum_size(len(self.members()))
            ballot = self._ballot(above)
            promises, refused = await self._prepare(slot, ballot, need, deadline)
            if len(promises) < need:
                if refused is not None:
                    above, failure = refused, "contention"
                    self.counters.preempted += 1
                else:
                    failure = "no_quorum"
                continue
            replies = [promise for promise, _ in promises.values()]
            base = choose_base(replies)
            won = self._ours_in(base, ours)
            # Otherwise none of ours was decided (a decided value is in every later base's
            # history), and once this round is accepted by a majority none ever can be.
            refusal: Conflict | None = None
            value: Record | None = base  # a refusal, or our earlier win, writes the base back
            changed = False
            if won is None:
                try:
                    proposal = change(base, self._now_ms())
                    if proposal is not None:
                        value, changed = proposal, True
                except Conflict as exc:
                    refusal = exc
                except NovaKMSError:
                    if ours:
                        raise self._give_up("outcome_unknown", ours) from None
                    raise
            quorum: list[Incarnation] = [(w, boot) for w, (_, boot) in promises.items()]
            accepted, maybe, refused = await self._accept(slot, ballot, value, promises, quorum)
            if accepted >= need:
                if value is not None:
                    store.commit(value)
                if refusal is not None:
                    self.counters.refused += 1
                    raise refusal
                self.counters.committed += 1
                return won if won is not None else value
            if maybe and changed and value is not None:
                ours[ballot] = value
            if refused is not None:
                above = refused
            failure = "contention" if refused is not None else "no_quorum"
            self.counters.preempted += 1

    def _ours_in(self, base: Record | None, ours: dict[Ballot, Record]) -> Record | None:
        """Which of our earlier proposals ``base`` is (None: none of them is in its history).

        Raises:
            Unavailable: ``outcome_unknown``, ``base`` descends from one of ours without being
                it: ours may have been decided and then overwritten, or not; nobody can tell.
        """
        if base is None or not ours:
            return None
        for value in ours.values():
            if base.order_key() == value.order_key():
                return value
        # Every proposal's clock is unique (``propose(counter=…)``) and every later value's
        # clock dominates a decided one's: a base whose clock does not cover ours is not after it.
        if any(clock_compare(base.clock, v.clock) in ("after", "equal") for v in ours.values()):
            raise self._give_up("outcome_unknown", ours)
        return None

    def _give_up(self, reason: str, ours: dict[Ballot, Record]) -> Unavailable:
        if ours or reason == "outcome_unknown":
            self.counters.outcome_unknown += 1
            return Unavailable(
                "the conditional write reached some nodes but was not confirmed by a majority "
                "in time: it may or may not take effect (read the key to find out)",
                reason="outcome_unknown",
            )
        if reason == "no_quorum":
            self.counters.no_quorum += 1
            members = len(self.members())
            return Unavailable(
                f"fewer than {quorum_size(members)} of the {members} KMS nodes answered: "
                "nothing was changed",
                reason="no_quorum",
            )
        self.counters.contention += 1
        return Unavailable(
            "other conditional writes of this key kept winning for "
            f"{self.limits.cas_timeout:g} s: nothing was changed",
            reason="contention",
        )

    async def _prepare(
        self, slot: Slot, ballot: Ballot, need: int, deadline: float
    ) -> tuple[dict[str, tuple[Promise, bytes]], Ballot | None]:
        """(the promises by wallet, with each acceptor's boot; the highest refusing promise)."""
        args = {"app_id": slot[0], "key": slot[1], "ballot": msg.ballot_to_wire(ballot)}

        def local() -> tuple[Promise, bytes]:
            self._require_voting()
            return self.acceptor.prepare(slot, ballot, self._stored(slot)), self.boot

        def parse(raw: Mapping[str, Any]) -> tuple[Promise, bytes]:
            return msg.parse_prepare_answer(
                raw, slot=slot, ballot=ballot, record=self.record_from_wire
            )

        answers = await self._ask(
            self.members(),
            local,
            "cas.prepare",
            args,
            parse,
            deadline,
            enough=lambda got: sum(1 for p, _ in got.values() if p.ok) >= need,
        )
        promises: dict[str, tuple[Promise, bytes]] = {}
        refused: Ballot | None = None
        for wallet, answer in answers.items():
            if isinstance(answer, Exception):
                continue
            promise = answer[0]
            if promise.ok:
                promises[wallet] = answer
            elif promise.promised is not None and (refused is None or promise.promised > refused):
                refused = promise.promised
        return promises, refused

    async def _accept(
        self,
        slot: Slot,
        ballot: Ballot,
        value: Record | None,
        promises: dict[str, tuple[Promise, bytes]],
        quorum: list[Incarnation],
    ) -> tuple[int, bool, Ballot | None]:
        """(acceptances counted, whether any acceptor may hold the value, the highest refusal)."""
        args = {
            "app_id": slot[0],
            "key": slot[1],
            "ballot": msg.ballot_to_wire(ballot),
            "value": None if value is None else replication.record_to_wire(value),
            "quorum": [[w, boot] for w, boot in quorum],
        }
        need = quorum_size(len(self.members()))

        def local() -> msg.AcceptAnswer:
            self._require_voting()
            ok, promised = self.acceptor.accept(slot, ballot, value, quorum)
            return msg.AcceptAnswer(ok, promised, self.boot)

        # Its own deadline: a decision under way is not cut short by the op's.
        answers = await self._ask(
            list(promises),
            local,
            "cas.accept",
            args,
            lambda raw: msg.parse_accept_answer(raw),
            trio.current_time() + self.limits.peer_timeout,
            enough=lambda got: sum(1 for a in got.values() if a.ok) >= need,
        )
        accepted = 0
        maybe = False
        refused: Ballot | None = None
        for wallet, (_, boot) in promises.items():
            answer = answers.get(wallet)
            if answer is None or isinstance(answer, Exception):
                maybe = True  # unanswered: it may have accepted
            elif answer.ok and answer.boot == boot:
                accepted += 1
                maybe = True
            elif answer.ok:
                maybe = True  # another incarnation took it: not counted
            elif answer.promised is not None and (refused is None or answer.promised > refused):
                refused = answer.promised
        return accepted, maybe, refused

    async def _ask(
        self,
        members: list[str],
        local: Callable[[], T],
        op: str,
        args: dict[str, Any],
        parse: Callable[[Mapping[str, Any]], T],
        deadline: float,
        *,
        enough: Callable[[dict[str, T]], bool],
    ) -> dict[str, T | Exception]:
        """Ask every member at once; return once ``enough`` answers are in, all are, or the
        deadline passed. Calls still running go on in the background (never cancelled in the
        middle of a frame) and their answers are dropped."""
        answers: dict[str, T | Exception] = {}
        good: dict[str, T] = {}
        send, receive = trio.open_memory_channel[tuple[str, T | Exception]](math.inf)

        async def remote(wallet: str) -> None:
            try:
                answer: T | Exception = parse(await self._call(wallet, op, args, deadline))
            except NovaKMSError as exc:
                answer = exc
            except trio.Cancelled:
                raise
            send.send_nowait((wallet, answer))

        pending = 0
        # Without run() (a node not started), the calls are waited for here instead.
        async with trio.open_nursery() as local_nursery:
            spawn = self._nursery or local_nursery
            for wallet in members:
                if wallet == self.wallet:
                    try:
                        answers[wallet] = good[wallet] = local()
                    except NovaKMSError as exc:
                        answers[wallet] = exc
                    continue
                pending += 1
                spawn.start_soon(remote, wallet)
            with trio.move_on_at(deadline):
                while pending and not enough(good):
                    wallet, answer = await receive.receive()
                    pending -= 1
                    answers[wallet] = answer
                    if not isinstance(answer, Exception):
                        good[wallet] = answer
        return answers

    async def _call(
        self, wallet: str, op: str, args: dict[str, Any], deadline: float
    ) -> Mapping[str, Any]:
        replicator = self._replicator
        assert replicator is not None  # a lone node has no remote member
        link = replicator.links.get(wallet)
        if link is None:
            raise Unavailable("no longer a peer", reason="not_a_peer")
        timeout = max(0.001, min(self.limits.peer_timeout, deadline - trio.current_time()))
        with trio.move_on_after(timeout):
            client = await replicator.channel(link)
            return await client.call(op, args, timeout=timeout)
        raise TransportTimeout(f"{op} to {wallet}: no channel within {timeout:g}s")

    # -- running: recovery and compaction -----------------------------------------------------

    async def run(self) -> None:
        """Recover (when there are peers), then compact the table, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if not self.acceptor.voting:
                nursery.start_soon(self._recover)
            nursery.start_soon(self._compact_loop)

    async def _compact_loop(self) -> None:
        waiting: set[tuple[Slot, Ballot]] = set()
        while True:
            await trio.sleep(_COMPACT_INTERVAL)
            entries = self.acceptor.entries
            if entries:
                self.acceptor.compact([(slot, self._stored(slot)) for slot in list(entries)])
            # A value accepted here that stayed out of the store for a whole interval: its
            # coordinator may have died before committing it. Decide the key again (a value
            # a majority accepted is the base of any later round, so it is what gets committed).
            unsettled = {
                (slot, entry.accepted)
                for slot, entry in entries.items()
                if not entry.settled and entry.accepted is not None and entry.value is not None
            }
            for slot, _ in unsettled & waiting:
                if slot not in self._busy and self._nursery is not None and self.acceptor.voting:
                    self._nursery.start_soon(self._settle, slot)
            waiting = unsettled

    async def _settle(self, slot: Slot) -> None:
        await trio.sleep(self._jitter.uniform(0, _COMPACT_INTERVAL))  # not every node at once
        try:
            await self.settle(slot)
            self.counters.settled += 1
        except NovaKMSError as exc:
            self._log.info("cas_settle_failed", error=exc.message)

    async def _recover(self) -> None:
        replicator = self._replicator
        assert replicator is not None
        while not self.acceptor.voting:
            if replicator.membership_known and self._gate.store is not None:
                await self._recover_once(replicator)
            if not self.acceptor.voting:
                await trio.sleep(self.limits.bootstrap_interval)

    async def _recover_once(self, replicator: Replicator) -> None:
        peers = sorted(replicator.links)
        need = recovery_sources(len(peers) + 1)
        if need <= 0:
            self.acceptor.voting = True
            self._log.info("cas_voting", sources=0)
            return
        tables: dict[str, msg.RecoverAnswer] = {}

        async def copy(wallet: str) -> None:
            with trio.move_on_after(self.limits.catch_up_timeout):
                try:
                    tables[wallet] = await self._copy_table(wallet)
                except NovaKMSError as exc:
                    self._log.info("cas_recover_failed", peer=wallet, error=exc.message)

        async with trio.open_nursery() as nursery:
            for wallet in peers:
                nursery.start_soon(copy, wallet)
        voting = [w for w in peers if w in tables and tables[w].voting]
        if len(voting) >= need:
            sources = voting
        elif len(tables) == len(peers):
            # Every member answered and fewer than needed still vote: most of the cluster lost
            # its memory at once. Take what is left (PROTOCOL §8 `cas.*`: decisions of the moments
            # before such a loss may be lost with it, like unreplicated data).
            sources = peers
            if any(tables[w].entries for w in peers):  # a fresh cluster has nothing to lose
                self._log.warning("cas_recovered_without_majority", voting=len(voting), need=need)
        else:
            return
        for wallet in sources:
            table = tables[wallet]
            self.acceptor.adopt_floor(table.floor)
            for entry in table.entries:
                self.acceptor.adopt(entry.slot, entry.promised, entry.accepted, entry.value)
        self.recovered_from = sources
        self.acceptor.voting = True
        self._log.info("cas_voting", sources=len(sources), entries=len(self.acceptor.entries))

    async def _copy_table(self, wallet: str) -> msg.RecoverAnswer:
        """A peer's whole table, page by page (the first page fences our old incarnation)."""
        after: Slot | None = None
        entries: list[msg.RecoverEntry] = []
        while True:
            deadline = trio.current_time() + self.limits.peer_timeout
            raw = await self._call(
                wallet,
                "cas.recover",
                {"boot": self.boot, "after": None if after is None else list(after)},
                deadline,
            )
            page = msg.parse_recover_answer(
                raw,
                after=after,
                max_key_bytes=self.limits.max_key_bytes,
                record=self.record_from_wire,
            )
            entries.extend(page.entries)
            if page.next is None:
                return msg.RecoverAnswer(tuple(entries), None, page.floor, page.voting)
            after = page.next


def _promise_to_wire(promise: Promise, boot: bytes) -> dict[str, Any]:
    return {
        "ok": promise.ok,
        "promised": msg.ballot_to_wire(promise.promised),
        "accepted": msg.ballot_to_wire(promise.accepted),
        "value": None if promise.value is None else replication.record_to_wire(promise.value),
        "stored": None if promise.stored is None else replication.record_to_wire(promise.stored),
        "boot": boot,
    }
