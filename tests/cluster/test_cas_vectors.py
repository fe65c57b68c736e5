"""The ``cas.*`` messages, boots, ballots and generation records match protocol/vectors/cas.json.

The vectors come from protocol/vectors/generate.py, which implements PROTOCOL.md without the
novakms package; here novakms parses them and re-encodes them byte for byte.
"""

from __future__ import annotations

from typing import Any

import pytest

from novakms.cluster import cas_messages as msg
from novakms.cluster import replication
from novakms.cluster.paxos import Ballot, quorum_size, recovery_sources
from novakms.cluster.sync_messages import new_boot
from novakms.config import Limits
from novakms.crypto.aead import data_key, open_value
from novakms.errors import InvalidRecord
from novakms.store.records import Record
from novakms.wire import cbor
from novakms.wire.messages import ok_response, parse_request, request_message
from tests.harness.registry import load_vectors

V = load_vectors("cas.json")
MASTER = bytes.fromhex(V["master_secret"])
SLOT = (7, "leader")


def record(item: object) -> Record:
    return replication.record_from_wire(
        item, limits=Limits(), now_ms=1_767_225_600_000, max_skew_ms=60_000
    )


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def test_boots_are_the_start_time_then_the_nonce_and_sort_in_start_order() -> None:
    boots = [new_boot(b["start_ns"], h(b["nonce"])) for b in V["boots"]]
    assert [b.hex() for b in boots] == [b["boot"] for b in V["boots"]]
    assert boots == sorted(boots)


def test_ballots_sort_as_the_vectors_say() -> None:
    decoded = [cbor.decode(h(b)) for b in V["ballots"]]
    ballots = [Ballot(c, w, boot) for c, w, boot in decoded]
    assert ballots == sorted(ballots)
    assert [cbor.encode(msg.ballot_to_wire(b)).hex() for b in ballots] == V["ballots"]


def test_quorums_and_recovery_sources() -> None:
    for row in V["quorums"]:
        assert quorum_size(row["members"]) == row["quorum"]
        assert recovery_sources(row["members"]) == row["recovery_sources"]


@pytest.mark.parametrize("name", ["base", "decided"])
def test_records_round_trip_and_open_under_the_data_key(name: str) -> None:
    vector = V["records"][name]
    parsed = record(cbor.decode(h(vector["wire"])))
    assert parsed.gen == vector["gen"]
    assert cbor.encode(replication.record_to_wire(parsed)).hex() == vector["wire"]
    assert parsed.sealed is not None
    key = data_key(master_secret=MASTER, app_id=parsed.app_id)
    opened = open_value(key=key, app_id=parsed.app_id, name=parsed.key, sealed=parsed.sealed)
    assert opened == h(vector["value"])


def test_the_decided_record_wins_the_merge_order() -> None:
    base = record(cbor.decode(h(V["records"]["base"]["wire"])))
    decided = record(cbor.decode(h(V["records"]["decided"]["wire"])))
    assert decided.order_key() > base.order_key()


@pytest.mark.parametrize("vector", V["bad_gen"], ids=lambda v: v["name"])
def test_records_with_a_bad_generation_are_rejected(vector: dict[str, Any]) -> None:
    with pytest.raises(InvalidRecord) as refused:
        record(cbor.decode(h(vector["wire"])))
    assert refused.value.reason == "bad_gen"


def test_requests_parse_and_re_encode_byte_for_byte() -> None:
    m = V["messages"]
    prepare = parse_request(cbor.decode(h(m["prepare_request"])))
    parsed = msg.parse_prepare_request(prepare.args, max_key_bytes=512)
    assert parsed.slot == SLOT
    args = {"app_id": 7, "key": "leader", "ballot": msg.ballot_to_wire(parsed.ballot)}
    assert cbor.encode(request_message(9, "cas.prepare", args)).hex() == m["prepare_request"]

    accept = parse_request(cbor.decode(h(m["accept_request"])))
    a = msg.parse_accept_request(accept.args, max_key_bytes=512, record=record)
    assert a.value is not None and a.value.gen == 2 and a.ballot == parsed.ballot
    args = {
        "app_id": 7,
        "key": "leader",
        "ballot": msg.ballot_to_wire(a.ballot),
        "value": replication.record_to_wire(a.value),
        "quorum": [[w, boot] for w, boot in a.quorum],
    }
    assert cbor.encode(request_message(9, "cas.accept", args)).hex() == m["accept_request"]

    recover = parse_request(cbor.decode(h(m["recover_request"])))
    boot, after = msg.parse_recover_request(recover.args, max_key_bytes=512)
    assert after is None and boot.hex() == V["boots"][1]["boot"]


def test_answers_parse_as_the_coordinator_does() -> None:
    m = V["messages"]
    ballot = msg.parse_prepare_request(
        parse_request(cbor.decode(h(m["prepare_request"]))).args, max_key_bytes=512
    ).ballot
    promise_raw = cbor.decode(h(m["prepare_promise"]))["ok"]
    promise, boot = msg.parse_prepare_answer(promise_raw, slot=SLOT, ballot=ballot, record=record)
    assert promise.ok and promise.promised == ballot and promise.stored is not None
    assert cbor.encode(ok_response(9, promise_raw)).hex() == m["prepare_promise"]
    refusal, _ = msg.parse_prepare_answer(
        cbor.decode(h(m["prepare_refusal"]))["ok"], slot=SLOT, ballot=ballot, record=record
    )
    assert not refusal.ok and refusal.promised is not None and refusal.promised > ballot
    accepted = msg.parse_accept_answer(cbor.decode(h(m["accept_answer"]))["ok"])
    assert accepted.ok and accepted.boot == boot
    page = msg.parse_recover_answer(
        cbor.decode(h(m["recover_answer"]))["ok"], after=None, max_key_bytes=512, record=record
    )
    (entry,) = page.entries
    assert entry.slot == SLOT and entry.accepted == ballot and page.voting
    assert page.next is None and page.floor is not None
