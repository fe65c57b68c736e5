"""The ``cas.*`` conversation between peers (consensus on conditional writes), parsed strictly.

Pure (sans-I/O). The peer handlers (``novakms.server.ops.cluster.op_cas_*``) parse requests with
the ``parse_*_request`` functions, which raise :class:`~novakms.errors.BadRequest`; the
coordinator parses every answer with the ``parse_*_answer`` functions, which raise
:class:`~novakms.errors.ProtocolError` (that peer's answer is not counted). Records inside are
checked by the ``record`` function the caller passes (``replication.record_from_wire`` and
``check_decryptable``: :class:`~novakms.errors.InvalidRecord` on anything wrong), so an accepted
value is as strictly checked as a replicated one.

Wire forms (PROTOCOL.md §8 `cas.*`):

* a ballot is ``[counter, wallet, boot]`` (uint, lowercase 0x wallet, 16 bytes);
* an incarnation is ``[wallet, boot]``;
* a slot is ``app_id`` (uint >= 1) and ``key`` (the KV key rules).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from novakms.cluster.paxos import Ballot, Incarnation, Promise, Slot
from novakms.cluster.sync_messages import BOOT_BYTES
from novakms.crypto.eth import is_canonical_wallet
from novakms.errors import BadRequest, InvalidRecord, ProtocolError
from novakms.store.records import Record

__all__ = [
    "MAX_QUORUM",
    "AcceptAnswer",
    "AcceptRequest",
    "PrepareRequest",
    "RecoverAnswer",
    "RecoverEntry",
    "ballot_to_wire",
    "parse_accept_answer",
    "parse_accept_request",
    "parse_prepare_answer",
    "parse_prepare_request",
    "parse_recover_answer",
    "parse_recover_request",
]

MAX_QUORUM: Final = 255
"""Most incarnations an ``accept`` may list (as many as ``kv.put`` may wait acks for)."""

_UINT64_MAX: Final = (1 << 64) - 1

RecordParser = Callable[[object], Record]


@dataclass(frozen=True, slots=True)
class PrepareRequest:
    slot: Slot
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class AcceptRequest:
    slot: Slot
    ballot: Ballot
    value: Record | None
    quorum: tuple[Incarnation, ...]


@dataclass(frozen=True, slots=True)
class AcceptAnswer:
    ok: bool
    promised: Ballot | None
    boot: bytes


@dataclass(frozen=True, slots=True)
class RecoverEntry:
    slot: Slot
    promised: Ballot | None
    accepted: Ballot | None
    value: Record | None


@dataclass(frozen=True, slots=True)
class RecoverAnswer:
    entries: tuple[RecoverEntry, ...]
    next: Slot | None
    floor: Ballot | None
    voting: bool


def ballot_to_wire(ballot: Ballot | None) -> list[Any] | None:
    """``[counter, wallet, boot]`` (None stays None)."""
    return None if ballot is None else [ballot.counter, ballot.wallet, ballot.boot]


# -- shared checks (ValueError; each side turns it into its own error) -----------------------


def _uint(value: object, minimum: int = 0) -> TypeGuard[int]:
    return type(value) is int and minimum <= value <= _UINT64_MAX


def _boot(value: object) -> bytes:
    if type(value) is not bytes or len(value) != BOOT_BYTES:
        raise ValueError(f"a boot is {BOOT_BYTES} bytes")
    return value


def _wallet(value: object) -> str:
    if type(value) is not str or not is_canonical_wallet(value):
        raise ValueError("a wallet is a lowercase 0x-prefixed 40-hex string")
    return value


def _ballot(value: object) -> Ballot:
    if type(value) is not list or len(value) != 3 or not _uint(value[0]):
        raise ValueError("a ballot is [counter, wallet, boot]")
    return Ballot(value[0], _wallet(value[1]), _boot(value[2]))


def _optional_ballot(value: object) -> Ballot | None:
    return None if value is None else _ballot(value)


def _slot(app_id: object, key: object, max_key_bytes: int) -> Slot:
    if not _uint(app_id, 1):
        raise ValueError("app_id is an integer 1 .. 2**64-1")
    if type(key) is not str:
        raise ValueError("key is a text string")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("key is not valid UTF-8") from None
    if size == 0 or size > max_key_bytes or "\x00" in key:
        raise ValueError(f"key must be 1..{max_key_bytes} bytes of UTF-8 without NUL")
    return (app_id, key)


def _record(value: object, slot: Slot, record: RecordParser) -> Record | None:
    if value is None:
        return None
    parsed = record(value)
    if (parsed.app_id, parsed.key) != slot:
        raise ValueError("the record is of another key")
    return parsed


def _exact(args: Mapping[str, Any], keys: frozenset[str]) -> None:
    if set(args) != keys:
        raise ValueError(f"exactly the keys {sorted(keys)}")


# -- requests (the acceptor's side): BadRequest ------------------------------------------------

_PREPARE: Final = frozenset({"app_id", "key", "ballot"})
_ACCEPT: Final = frozenset({"app_id", "key", "ballot", "value", "quorum"})
_RECOVER: Final = frozenset({"boot", "after"})


def parse_prepare_request(args: Mapping[str, Any], *, max_key_bytes: int) -> PrepareRequest:
    """``cas.prepare {app_id, key, ballot}``."""
    try:
        _exact(args, _PREPARE)
        return PrepareRequest(
            _slot(args["app_id"], args["key"], max_key_bytes), _ballot(args["ballot"])
        )
    except ValueError as exc:
        raise BadRequest(f"cas.prepare: {exc}") from None


def parse_accept_request(
    args: Mapping[str, Any], *, max_key_bytes: int, record: RecordParser
) -> AcceptRequest:
    """``cas.accept {app_id, key, ballot, value, quorum}``."""
    try:
        _exact(args, _ACCEPT)
        slot = _slot(args["app_id"], args["key"], max_key_bytes)
        raw = args["quorum"]
        if type(raw) is not list or not 1 <= len(raw) <= MAX_QUORUM:
            raise ValueError(f"quorum is an array of 1..{MAX_QUORUM} [wallet, boot]")  # noqa: TRY301
        quorum: list[Incarnation] = []
        for item in raw:
            if type(item) is not list or len(item) != 2:
                raise ValueError("an incarnation is [wallet, boot]")  # noqa: TRY301
            quorum.append((_wallet(item[0]), _boot(item[1])))
        return AcceptRequest(
            slot, _ballot(args["ballot"]), _record(args["value"], slot, record), tuple(quorum)
        )
    except InvalidRecord as exc:
        raise BadRequest(f"cas.accept: the value is refused ({exc.reason})") from None
    except ValueError as exc:
        raise BadRequest(f"cas.accept: {exc}") from None


def parse_recover_request(
    args: Mapping[str, Any], *, max_key_bytes: int
) -> tuple[bytes, Slot | None]:
    """``cas.recover {boot, after}``: the recovering peer's boot, and where to resume."""
    try:
        _exact(args, _RECOVER)
        after = args["after"]
        resume = None
        if after is not None:
            if type(after) is not list or len(after) != 2:
                raise ValueError("after is null or [app_id, key]")  # noqa: TRY301
            resume = _slot(after[0], after[1], max_key_bytes)
        return _boot(args["boot"]), resume
    except ValueError as exc:
        raise BadRequest(f"cas.recover: {exc}") from None


# -- answers (the coordinator's side): ProtocolError -------------------------------------------

_PREPARE_ANSWER: Final = frozenset({"ok", "promised", "accepted", "value", "stored", "boot"})
_ACCEPT_ANSWER: Final = frozenset({"ok", "promised", "boot"})
_RECOVER_ANSWER: Final = frozenset({"entries", "next", "floor", "voting"})


def _map(op: str, answer: object, keys: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(answer, Mapping) or set(answer) != keys:
        raise ValueError(f"{op} answer must be a map with exactly the keys {sorted(keys)}")
    return answer


def _bool(value: object) -> bool:
    if type(value) is not bool:
        raise ValueError("ok / voting are booleans")
    return value


def parse_prepare_answer(
    answer: object, *, slot: Slot, ballot: Ballot, record: RecordParser
) -> tuple[Promise, bytes]:
    """A promise (or its refusal) and the acceptor's boot.

    A refusal must name a promise at or above ``ballot``; a promise must be of ``ballot``.
    """
    try:
        a = _map("cas.prepare", answer, _PREPARE_ANSWER)
        ok, promised = _bool(a["ok"]), _optional_ballot(a["promised"])
        accepted = _optional_ballot(a["accepted"])
        if ok and promised != ballot:
            raise ValueError("a promise is of the ballot asked for")  # noqa: TRY301
        if not ok and (promised is None or promised < ballot):
            raise ValueError("a refusal names a promise at or above the ballot")  # noqa: TRY301
        if accepted is not None and accepted > ballot:
            raise ValueError("an accepted ballot above the one promised")  # noqa: TRY301
        promise = Promise(
            ok=ok,
            promised=promised,
            accepted=accepted,
            value=_record(a["value"], slot, record),
            stored=_record(a["stored"], slot, record),
        )
        return promise, _boot(a["boot"])
    except (ValueError, InvalidRecord) as exc:
        raise ProtocolError(f"cas.prepare answer out of protocol: {exc}") from None


def parse_accept_answer(answer: object) -> AcceptAnswer:
    """Whether the value was accepted; on refusal the promise that refused it."""
    try:
        a = _map("cas.accept", answer, _ACCEPT_ANSWER)
        ok, promised = _bool(a["ok"]), _optional_ballot(a["promised"])
        if ok and promised is not None:
            raise ValueError("an acceptance names no promise")  # noqa: TRY301
        return AcceptAnswer(ok, promised, _boot(a["boot"]))
    except ValueError as exc:
        raise ProtocolError(f"cas.accept answer out of protocol: {exc}") from None


def parse_recover_answer(
    answer: object, *, after: Slot | None, max_key_bytes: int, record: RecordParser
) -> RecoverAnswer:
    """One page of a recovery source's acceptor table; ``next`` always moves forward."""
    try:
        a = _map("cas.recover", answer, _RECOVER_ANSWER)
        raw = a["entries"]
        if type(raw) is not list:
            raise ValueError("entries is an array")  # noqa: TRY301
        entries: list[RecoverEntry] = []
        last = after
        for item in raw:
            if type(item) is not list or len(item) != 5:
                raise ValueError("an entry is [app_id, key, promised, accepted, value]")  # noqa: TRY301
            slot = _slot(item[0], item[1], max_key_bytes)
            if last is not None and slot <= last:
                raise ValueError("entries are in slot order, after the resume point")  # noqa: TRY301
            last = slot
            entries.append(
                RecoverEntry(
                    slot,
                    _optional_ballot(item[2]),
                    _optional_ballot(item[3]),
                    _record(item[4], slot, record),
                )
            )
        resume = None
        if a["next"] is not None:
            nxt = a["next"]
            if type(nxt) is not list or len(nxt) != 2:
                raise ValueError("next is null or [app_id, key]")  # noqa: TRY301
            resume = _slot(nxt[0], nxt[1], max_key_bytes)
            if not entries or resume != last:
                raise ValueError("next is the last entry of a non-empty page")  # noqa: TRY301
        return RecoverAnswer(
            tuple(entries), resume, _optional_ballot(a["floor"]), _bool(a["voting"])
        )
    except (ValueError, InvalidRecord) as exc:
        raise ProtocolError(f"cas.recover answer out of protocol: {exc}") from None
