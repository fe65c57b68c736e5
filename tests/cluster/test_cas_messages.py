"""The strict ``cas.*`` parsers (novakms.cluster.cas_messages): the wire forms the coordinator
and the acceptors build parse back; every malformation is BadRequest (a request, the acceptor's
side) or ProtocolError (an answer, the coordinator's side), never anything else."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from novakms.cluster import cas_messages as msg
from novakms.cluster import replication
from novakms.cluster.paxos import Ballot, Promise, Slot
from novakms.config import Limits
from novakms.errors import BadRequest, InvalidRecord, ProtocolError
from novakms.store.records import Record

A, B = "0x" + "01" * 20, "0x" + "02" * 20
BOOT_A, BOOT_B = bytes([0, 1]) + bytes(14), bytes([1, 1]) + bytes(14)
SLOT: Slot = (7, "k")
BALLOT = Ballot(5, B, BOOT_B)
MAX_KEY = Limits().max_key_bytes
NOW_MS = 1_767_225_600_000
MISSING = object()


def rec(slot: Slot = SLOT) -> Record:
    return Record(
        app_id=slot[0], key=slot[1], sealed=bytes(40), clock=((A, 1),), hlc=NOW_MS << 16, node=A
    )


def record(item: object) -> Record:
    return replication.record_from_wire(item, limits=Limits(), now_ms=NOW_MS, max_skew_ms=60_000)


def refuse(item: object) -> Record:
    raise InvalidRecord("bad_value", "refused by the test")


def wire(value: Ballot | Record | None) -> Any:
    if isinstance(value, Record):
        return replication.record_to_wire(value)
    return msg.ballot_to_wire(value)


def changed(base: dict[str, Any], **fields: object) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for name, value in fields.items():
        if value is MISSING:
            del out[name]
        else:
            out[name] = value
    return out


def ballot_of(counter: int, who: str = A, boot: bytes = BOOT_A) -> Any:
    return wire(Ballot(counter, who, boot))


BAD_BALLOTS: dict[str, object] = {
    "bool-counter": [True, B, BOOT_B],
    "negative-counter": [-1, B, BOOT_B],
    "counter-2**64": [2**64, B, BOOT_B],
    "uppercase-wallet": [5, "0x" + "AB" * 20, BOOT_B],
    "short-wallet": [5, "0x" + "ab" * 19, BOOT_B],
    "boot-15": [5, B, bytes(15)],
    "boot-17": [5, B, bytes(17)],
    "boot-str": [5, B, BOOT_B.hex()],
    "two-items": [5, B],
    "map": {"counter": 5},
}
BAD_APP_IDS: dict[str, object] = {"0": 0, "bool": True, "-1": -1, "2**64": 2**64, "str": "7"}
BAD_KEYS: dict[str, object] = {
    "empty": "",
    "nul": "a\x00b",
    "over-max": "x" * (MAX_KEY + 1),
    "over-max-utf8": "é" * (MAX_KEY // 2 + 1),
    "lone-surrogate": "\ud800",
    "bytes": b"k",
}
BAD_BOOTS: dict[str, object] = {"15": bytes(15), "17": bytes(17), "str": BOOT_A.hex()}


def cases(prefix: str, field: str, bad: dict[str, object]) -> dict[str, dict[str, object]]:
    return {f"{prefix}-{name}": {field: value} for name, value in bad.items()}


def refusals(table: dict[str, Any]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("change", list(table.values()), ids=list(table))


# -- requests ----------------------------------------------------------------------------------

PREPARE: dict[str, Any] = {"app_id": 7, "key": "k", "ballot": wire(BALLOT)}
ACCEPT: dict[str, Any] = {**PREPARE, "value": wire(rec()), "quorum": [[A, BOOT_A], [B, BOOT_B]]}


@pytest.mark.parametrize(
    ("change", "slot", "ballot"),
    [
        ({}, SLOT, BALLOT),
        ({"ballot": [0, B, BOOT_B]}, SLOT, Ballot(0, B, BOOT_B)),
        ({"ballot": [2**64 - 1, B, BOOT_B]}, SLOT, Ballot(2**64 - 1, B, BOOT_B)),
        (
            {"app_id": 2**64 - 1, "key": "é" * (MAX_KEY // 2)},
            (2**64 - 1, "é" * (MAX_KEY // 2)),
            BALLOT,
        ),
    ],
)
def test_prepare_request_round_trips(change: dict[str, Any], slot: Slot, ballot: Ballot) -> None:
    parsed = msg.parse_prepare_request(changed(PREPARE, **change), max_key_bytes=MAX_KEY)
    assert parsed == msg.PrepareRequest(slot, ballot)


def test_accept_request_round_trips() -> None:
    parsed = msg.parse_accept_request(ACCEPT, max_key_bytes=MAX_KEY, record=record)
    assert parsed == msg.AcceptRequest(SLOT, BALLOT, rec(), ((A, BOOT_A), (B, BOOT_B)))
    args = changed(ACCEPT, value=None, quorum=[[A, BOOT_A]] * msg.MAX_QUORUM)
    parsed = msg.parse_accept_request(args, max_key_bytes=MAX_KEY, record=refuse)
    assert parsed == msg.AcceptRequest(SLOT, BALLOT, None, ((A, BOOT_A),) * msg.MAX_QUORUM)


@pytest.mark.parametrize("op", ["prepare", "accept"])
@refusals(
    {
        "extra-key": {"extra": 1},
        "missing-ballot": {"ballot": MISSING},
        "missing-key": {"key": MISSING},
        "missing-app_id": {"app_id": MISSING},
        **cases("ballot", "ballot", {**BAD_BALLOTS, "null": None}),
        **cases("app_id", "app_id", BAD_APP_IDS),
        **cases("key", "key", BAD_KEYS),
    }
)
def test_prepare_and_accept_requests_refuse(op: str, change: dict[str, Any]) -> None:
    with pytest.raises(BadRequest, match=rf"^cas\.{op}: "):
        if op == "prepare":
            msg.parse_prepare_request(changed(PREPARE, **change), max_key_bytes=MAX_KEY)
        else:
            msg.parse_accept_request(
                changed(ACCEPT, **change), max_key_bytes=MAX_KEY, record=record
            )


@refusals(
    {
        "missing-value": {"value": MISSING},
        "missing-quorum": {"quorum": MISSING},
        "quorum-empty": {"quorum": []},
        "quorum-over-max": {"quorum": [[A, BOOT_A]] * (msg.MAX_QUORUM + 1)},
        "quorum-null": {"quorum": None},
        "item-of-one": {"quorum": [[A]]},
        "item-of-three": {"quorum": [[A, BOOT_A, 1]]},
        "item-not-a-list": {"quorum": [A]},
        "item-uppercase-wallet": {"quorum": [["0x" + "AB" * 20, BOOT_A]]},
        **{f"item-boot-{n}": {"quorum": [[A, boot]]} for n, boot in BAD_BOOTS.items()},
        "value-of-another-key": {"value": wire(rec((7, "other")))},
        "value-of-another-app": {"value": wire(rec((8, "k")))},
        "value-malformed": {"value": {"a": 7}},
    }
)
def test_accept_request_refuses(change: dict[str, Any]) -> None:
    with pytest.raises(BadRequest, match=r"^cas\.accept: "):
        msg.parse_accept_request(changed(ACCEPT, **change), max_key_bytes=MAX_KEY, record=record)


def test_accept_request_refuses_a_value_the_record_check_refuses() -> None:
    with pytest.raises(BadRequest, match=r"the value is refused \(bad_value\)"):
        msg.parse_accept_request(ACCEPT, max_key_bytes=MAX_KEY, record=refuse)


RECOVER: dict[str, Any] = {"boot": BOOT_A, "after": None}


@pytest.mark.parametrize(("after", "resume"), [(None, None), ([7, "k"], SLOT)])
def test_recover_request_round_trips(after: Any, resume: Slot | None) -> None:
    args = changed(RECOVER, after=after)
    assert msg.parse_recover_request(args, max_key_bytes=MAX_KEY) == (BOOT_A, resume)


@refusals(
    {
        "missing-after": {"after": MISSING},
        "missing-boot": {"boot": MISSING},
        "extra-key": {"x": 1},
        **cases("boot", "boot", BAD_BOOTS),
        "after-of-one": {"after": [7]},
        "after-of-three": {"after": [7, "k", 1]},
        "after-str": {"after": "k"},
        **{f"after-app_id-{n}": {"after": [a, "k"]} for n, a in BAD_APP_IDS.items()},
        **{f"after-key-{n}": {"after": [7, k]} for n, k in BAD_KEYS.items()},
    }
)
def test_recover_request_refuses(change: dict[str, Any]) -> None:
    with pytest.raises(BadRequest, match=r"^cas\.recover: "):
        msg.parse_recover_request(changed(RECOVER, **change), max_key_bytes=MAX_KEY)


# -- answers -----------------------------------------------------------------------------------

PROMISED: dict[str, Any] = {
    "ok": True,
    "promised": wire(BALLOT),
    "accepted": None,
    "value": None,
    "stored": None,
    "boot": BOOT_A,
}


@pytest.mark.parametrize(
    ("change", "promise"),
    [
        ({}, Promise(ok=True, promised=BALLOT)),
        (
            {"accepted": ballot_of(4), "value": wire(rec()), "stored": wire(rec())},
            Promise(True, BALLOT, accepted=Ballot(4, A, BOOT_A), value=rec(), stored=rec()),
        ),
        ({"ok": False}, Promise(ok=False, promised=BALLOT)),  # a refusal at the ballot
        ({"ok": False, "promised": ballot_of(9)}, Promise(ok=False, promised=Ballot(9, A, BOOT_A))),
    ],
)
def test_prepare_answer_round_trips(change: dict[str, Any], promise: Promise) -> None:
    answer = changed(PROMISED, **change)
    parsed = msg.parse_prepare_answer(answer, slot=SLOT, ballot=BALLOT, record=record)
    assert parsed == (promise, BOOT_A)


@refusals(
    {
        "promise-of-another-ballot": {"promised": ballot_of(6)},
        "promise-of-another-boot": {"promised": wire(Ballot(5, B, BOOT_A))},
        "promise-of-null": {"promised": None},
        "refusal-below": {"ok": False, "promised": ballot_of(4, B, BOOT_B)},
        "refusal-null": {"ok": False, "promised": None},
        "accepted-above": {"accepted": ballot_of(6)},
        "ok-int": {"ok": 1},
        "ok-null": {"ok": None},
        "extra-key": {"extra": 1},
        "missing-stored": {"stored": MISSING},
        "value-of-another-key": {"value": wire(rec((7, "other")))},
        "stored-of-another-app": {"stored": wire(rec((8, "k")))},
        "value-malformed": {"value": {"a": 7}},
        **cases("promised", "promised", BAD_BALLOTS),
        **cases("accepted", "accepted", BAD_BALLOTS),
        **cases("boot", "boot", BAD_BOOTS),
    }
)
def test_prepare_answer_refuses(change: dict[str, Any]) -> None:
    answer = changed(PROMISED, **change)
    with pytest.raises(ProtocolError, match=r"^cas\.prepare answer"):
        msg.parse_prepare_answer(answer, slot=SLOT, ballot=BALLOT, record=record)


@pytest.mark.parametrize("answer", [None, [], [True, None, BOOT_A]])
def test_prepare_answer_that_is_no_map_is_refused(answer: object) -> None:
    with pytest.raises(ProtocolError):
        msg.parse_prepare_answer(answer, slot=SLOT, ballot=BALLOT, record=record)


def test_prepare_answer_refuses_a_record_the_record_check_refuses() -> None:
    answer = changed(PROMISED, stored=wire(rec()))
    with pytest.raises(ProtocolError, match="bad_value"):
        msg.parse_prepare_answer(answer, slot=SLOT, ballot=BALLOT, record=refuse)


ACCEPTED: dict[str, Any] = {"ok": True, "promised": None, "boot": BOOT_A}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, msg.AcceptAnswer(True, None, BOOT_A)),
        (
            {"ok": False, "promised": ballot_of(9)},
            msg.AcceptAnswer(False, Ballot(9, A, BOOT_A), BOOT_A),
        ),
        ({"ok": False}, msg.AcceptAnswer(False, None, BOOT_A)),  # a dead incarnation, no entry
    ],
)
def test_accept_answer_round_trips(change: dict[str, Any], expected: msg.AcceptAnswer) -> None:
    assert msg.parse_accept_answer(changed(ACCEPTED, **change)) == expected


@refusals(
    {
        "acceptance-naming-a-promise": {"promised": wire(BALLOT)},
        "ok-int": {"ok": 1},
        "extra-key": {"extra": 1},
        "missing-boot": {"boot": MISSING},
        **{f"refusal-promised-{n}": {"ok": False, "promised": b} for n, b in BAD_BALLOTS.items()},
        **cases("boot", "boot", BAD_BOOTS),
    }
)
def test_accept_answer_refuses(change: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match=r"^cas\.accept answer"):
        msg.parse_accept_answer(changed(ACCEPTED, **change))


def entry(slot: Slot, value: Record | None = None) -> list[Any]:
    return [slot[0], slot[1], wire(BALLOT), None if value is None else ballot_of(4), wire(value)]


PAGE: dict[str, Any] = {
    "entries": [entry((7, "b"), rec((7, "b"))), entry((8, "a"))],
    "next": [8, "a"],
    "floor": ballot_of(2),
    "voting": False,
}


def parse_page(
    answer: object, after: Slot | None = (7, "a"), record: msg.RecordParser = record
) -> msg.RecoverAnswer:
    return msg.parse_recover_answer(answer, after=after, max_key_bytes=MAX_KEY, record=record)


def test_recover_answer_round_trips() -> None:
    first = msg.RecoverEntry((7, "b"), BALLOT, Ballot(4, A, BOOT_A), rec((7, "b")))
    second = msg.RecoverEntry((8, "a"), BALLOT, None, None)
    floor = Ballot(2, A, BOOT_A)
    assert parse_page(PAGE) == msg.RecoverAnswer((first, second), (8, "a"), floor, False)
    assert parse_page(PAGE, after=None) == parse_page(PAGE)
    last = changed(PAGE, next=None)  # the last page
    assert parse_page(last) == msg.RecoverAnswer((first, second), None, floor, False)
    empty: dict[str, Any] = {"entries": [], "next": None, "floor": None, "voting": True}
    assert parse_page(empty) == msg.RecoverAnswer((), None, None, True)


@refusals(
    {
        "out-of-order": {"entries": [entry((8, "a")), entry((7, "b"))]},
        "duplicate": {"entries": [entry((7, "b")), entry((7, "b"))], "next": [7, "b"]},
        "at-after": {"entries": [entry((7, "a"))], "next": [7, "a"]},
        "before-after": {"entries": [entry((6, "z"))], "next": [6, "z"]},
        "next-not-last": {"next": [7, "b"]},
        "next-beyond-last": {"next": [9, "a"]},
        "next-on-empty-page": {"entries": [], "next": [8, "a"]},
        "next-of-one": {"next": [8]},
        "entry-of-four": {"entries": [entry((8, "a"))[:4]]},
        "entry-of-six": {"entries": [[*entry((8, "a")), None]]},
        "entry-not-a-list": {"entries": ["x"]},
        "entries-null": {"entries": None},
        "entry-app_id-0": {"entries": [entry((0, "a"))], "next": [0, "a"]},
        "entry-key-empty": {"entries": [entry((8, ""))], "next": [8, ""]},
        "entry-bad-ballot": {"entries": [[8, "a", [True, B, BOOT_B], None, None]]},
        "entry-value-of-another-key": {"entries": [[8, "a", None, None, wire(rec((8, "b")))]]},
        "voting-int": {"voting": 1},
        "floor-malformed": {"floor": [1, B]},
        "extra-key": {"extra": 1},
        "missing-floor": {"floor": MISSING},
    }
)
def test_recover_answer_refuses(change: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match=r"^cas\.recover answer"):
        parse_page(changed(PAGE, **change))


def test_recover_answer_refuses_a_record_the_record_check_refuses() -> None:
    with pytest.raises(ProtocolError, match="bad_value"):
        parse_page(PAGE, record=refuse)
