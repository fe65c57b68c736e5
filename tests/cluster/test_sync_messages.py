"""Fuzzing the sync.* parsers: valid answers round-trip, anything else is only ProtocolError."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novakms.cluster import sync_messages as msg
from novakms.errors import BadRequest, ProtocolError

uint = st.integers(0, 2**64 - 1)
app_ids = st.integers(1, 2**64 - 1)
digests = st.binary(min_size=32, max_size=32)
keys = st.text(min_size=1, max_size=8)
wallets = st.from_regex(r"0x[0-9a-f]{40}", fullmatch=True)
tombstones = st.tuples(app_ids, keys, uint, wallets)
boots = st.binary(min_size=16, max_size=16)
states = st.sampled_from(sorted(msg.PEER_STATES))

# Anything the CBOR subset can carry (and a little more: floats, negative ints, bools).
anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)

Parser = Callable[[object], object]


@st.composite
def push_case(draw: st.DrawFn) -> tuple[dict[str, Any], Parser, object]:
    batch = draw(st.integers(0, 20))
    fate = draw(st.lists(st.sampled_from("ard"), min_size=batch, max_size=batch))
    rejected = [i for i, f in enumerate(fate) if f == "r"]
    deferred = [i for i, f in enumerate(fate) if f == "d"]
    accepted = fate.count("a")
    answer = {"accepted": accepted, "rejected": rejected, "deferred": deferred}
    return (
        answer,
        lambda a: msg.parse_push_answer(a, batch=batch),
        msg.PushAnswer(accepted, tuple(rejected), tuple(deferred)),
    )


@st.composite
def digests_case(draw: st.DrawFn) -> tuple[dict[str, Any], Parser, object]:
    apps = sorted(draw(st.dictionaries(app_ids, digests, max_size=5)).items())
    answer: dict[str, Any] = {"apps": [[a, d] for a, d in apps]}
    state = draw(st.none() | states)
    if state is not None or draw(st.booleans()):
        answer["state"] = state  # absent (an older node) and null mean the same
    return answer, msg.parse_digests_answer, msg.DigestsAnswer(tuple(apps), state)


@st.composite
def buckets_case(draw: st.DrawFn) -> tuple[dict[str, Any], Parser, object]:
    buckets = draw(st.lists(digests, min_size=msg.SYNC_BUCKETS, max_size=msg.SYNC_BUCKETS))
    return {"buckets": buckets}, msg.parse_buckets_answer, msg.BucketsAnswer(tuple(buckets))


@st.composite
def keys_case(draw: st.DrawFn) -> tuple[dict[str, Any], Parser, object]:
    entries = sorted(draw(st.dictionaries(keys, digests, max_size=5)).items())
    truncated = draw(st.booleans())
    return (
        {"keys": [[k, d] for k, d in entries], "truncated": truncated},
        msg.parse_keys_answer,
        msg.KeysAnswer(tuple(entries), truncated),
    )


@st.composite
def pull_case(draw: st.DrawFn) -> tuple[dict[str, Any], Parser, object]:
    requested = draw(st.lists(keys, min_size=1, max_size=6, unique=True))
    cut = draw(st.integers(1, len(requested)))
    remaining = requested[cut:]
    records = draw(st.lists(anything, max_size=3))
    return (
        {"records": records, "remaining": remaining},
        lambda a: msg.parse_pull_answer(a, requested=requested),
        msg.PullAnswer(tuple(records), tuple(remaining)),
    )


@st.composite
def snapshot_case(draw: st.DrawFn) -> tuple[dict[str, Any], Parser, object]:
    after = draw(st.none() | st.tuples(app_ids, keys))
    records = draw(st.lists(anything, min_size=1, max_size=3))
    following: tuple[int, str] | None = draw(
        st.none() | st.tuples(app_ids, keys).filter(lambda p: after is None or p > after)
    )
    return (
        {"records": records, "next": None if following is None else list(following)},
        lambda a: msg.parse_snapshot_answer(a, after=after),
        msg.SnapshotAnswer(tuple(records), following),
    )


@st.composite
def forget_case(draw: st.DrawFn) -> tuple[dict[str, Any], Parser, object]:
    sent = draw(st.lists(tombstones, max_size=5, unique=True))
    kept = [t for t in sent if draw(st.booleans())]
    forgotten = draw(st.integers(0, len(sent)))
    return (
        {"forgotten": forgotten, "kept": [list(t) for t in kept]},
        lambda a: msg.parse_forget_answer(a, sent=sent),
        msg.ForgetAnswer(forgotten, tuple(kept)),
    )


@st.composite
def hello_case(draw: st.DrawFn) -> tuple[dict[str, Any], Parser, object]:
    proof = draw(st.binary(min_size=32, max_size=32))
    if draw(st.booleans()):  # an older node: the proof alone
        return {"proof": proof}, msg.parse_hello_answer, msg.HelloAnswer(proof)
    boot, state = draw(boots), draw(states)
    return (
        {"proof": proof, "boot": boot, "state": state},
        msg.parse_hello_answer,
        msg.HelloAnswer(proof, msg.PeerInfo(boot, state)),
    )


cases = st.one_of(
    hello_case(),
    push_case(),
    digests_case(),
    buckets_case(),
    keys_case(),
    pull_case(),
    snapshot_case(),
    forget_case(),
)


@given(cases)
def test_valid_answers_round_trip(case: tuple[dict[str, Any], Parser, object]) -> None:
    answer, parse, expected = case
    assert parse(answer) == expected


@given(cases, anything)
def test_random_answers_raise_only_protocol_error(
    case: tuple[dict[str, Any], Parser, object], garbage: object
) -> None:
    _, parse, _ = case
    with contextlib.suppress(ProtocolError):
        parse(garbage)


def _paths(value: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, (*prefix, i))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> tuple[object, Parser]:
    answer, parse, _ = draw(cases)
    value: Any = copy.deepcopy(answer)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(value) if p]
        kind = draw(st.sampled_from(["replace", "bool", "drop", "extra", "whole"]))
        if kind == "whole" or not paths or not isinstance(value, dict):
            value = draw(anything)
            continue
        path = draw(st.sampled_from(paths))
        parent: Any = value
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        if kind == "replace":
            parent[last] = draw(anything)
        elif kind == "bool":
            parent[last] = draw(st.booleans())
        elif kind == "drop":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=5))] = draw(anything)
        else:
            parent.append(draw(anything))
    return value, parse


@given(mutated())
def test_mutated_answers_raise_only_protocol_error(case: tuple[object, Parser]) -> None:
    value, parse = case
    with contextlib.suppress(ProtocolError):
        parse(value)


@pytest.mark.parametrize(
    ("parse", "answer"),
    [
        (msg.parse_digests_answer, {}),
        (msg.parse_digests_answer, {"apps": [[True, b"\0" * 32]]}),  # bool is not an app id
        (msg.parse_digests_answer, {"apps": [], "extra": 1}),
        (msg.parse_buckets_answer, {"buckets": [b"\0" * 32] * 63}),
        (msg.parse_keys_answer, {"keys": [], "truncated": 0}),
        (
            lambda a: msg.parse_push_answer(a, batch=2),
            {"accepted": 1, "rejected": [2], "deferred": []},
        ),
        (
            lambda a: msg.parse_push_answer(a, batch=2),
            {"accepted": True, "rejected": [1], "deferred": []},
        ),
        (
            lambda a: msg.parse_push_answer(a, batch=2),
            {"accepted": 1, "rejected": [1], "deferred": [1]},
        ),
        (lambda a: msg.parse_push_answer(a, batch=2), {"accepted": 1, "rejected": []}),
        (lambda a: msg.parse_pull_answer(a, requested=["a"]), {"records": [], "remaining": ["a"]}),
        (
            lambda a: msg.parse_snapshot_answer(a, after=(1, "b")),
            {"records": [{}], "next": [1, "a"]},  # backwards: would loop forever
        ),
        (
            lambda a: msg.parse_forget_answer(a, sent=[]),
            {"forgotten": 0, "kept": [[1, "k", 1, "0x" + "0" * 40]]},
        ),
        (msg.parse_hello_answer, {"proof": b"short"}),
        (msg.parse_hello_answer, {"proof": b"\0" * 32, "boot": b"\0" * 15, "state": "serving"}),
        (msg.parse_hello_answer, {"proof": b"\0" * 32, "boot": b"\0" * 16, "state": "ready"}),
        (msg.parse_hello_answer, {"proof": b"\0" * 32, "boot": b"\0" * 16}),  # both or neither
        (msg.parse_digests_answer, {"apps": [], "state": True}),
    ],
)
def test_specific_malformed_answers_are_protocol_errors(parse: Parser, answer: object) -> None:
    with pytest.raises(ProtocolError):
        parse(answer)


@given(anything)
def test_request_parsers_raise_only_bad_request(garbage: object) -> None:
    parsers: list[Callable[[Any], object]] = [
        msg.parse_hello_request,
        msg.parse_digests_request,
        msg.parse_push_request,
        msg.parse_snapshot_request,
        msg.parse_forget_request,
        lambda a: msg.parse_app_request("sync.buckets", a),
        msg.parse_keys_request,
        msg.parse_pull_request,
    ]
    args = garbage if isinstance(garbage, dict) else {"x": garbage}
    for parse in parsers:
        with contextlib.suppress(BadRequest):
            parse(args)


def test_requests_refuse_bool_for_int() -> None:
    with pytest.raises(BadRequest):
        msg.parse_keys_request({"app_id": True, "buckets": [0]})
    with pytest.raises(BadRequest):
        msg.parse_keys_request({"app_id": 1, "buckets": [msg.SYNC_BUCKETS]})
    assert msg.parse_keys_request({"app_id": 1, "buckets": [0, 63]}) == msg.KeysRequest(1, (0, 63))


def test_frame_budget() -> None:
    assert msg.frame_budget(msg.ENVELOPE_BYTES + 1) == 1
    with pytest.raises(ValueError):
        msg.frame_budget(msg.ENVELOPE_BYTES)


def test_a_push_answer_without_deferred_is_from_an_older_node() -> None:
    answer = msg.parse_push_answer({"accepted": 1, "rejected": [1]}, batch=2)
    assert answer == msg.PushAnswer(1, (1,), ())


def test_hello_and_digests_requests_carry_boot_and_state() -> None:
    proof, boot = b"\1" * 32, b"\2" * 16
    assert msg.parse_hello_request({"proof": proof}) == (proof, msg.PeerInfo(None, None))
    assert msg.parse_hello_request({"proof": proof, "boot": boot, "state": "syncing"}) == (
        proof,
        msg.PeerInfo(boot, "syncing"),
    )
    for bad in ({"boot": boot}, {"boot": b"x", "state": "serving"}, {"boot": boot, "state": 1}):
        with pytest.raises(BadRequest):
            msg.parse_hello_request({"proof": proof, **bad})
    assert msg.parse_digests_request({}) is None
    assert msg.parse_digests_request({"state": "degraded"}) == "degraded"
    with pytest.raises(BadRequest):
        msg.parse_digests_request({"state": "lost"})


def test_sync_hello_and_digests_match_the_vectors() -> None:
    from novakms.cluster.proof import cluster_proof, verify_cluster_proof
    from novakms.wire import cbor
    from novakms.wire.channel import SecureChannel
    from novakms.wire.framing import encode_frame
    from novakms.wire.messages import ok_response, parse_request, request_message
    from tests.harness.registry import load_vectors

    peer = load_vectors("handshake.json")["peer"]

    def h(name: str) -> bytes:
        return bytes.fromhex(peer[name])

    secret, th = h("master_secret"), h("transcript_hash")
    proof = cluster_proof(master_secret=secret, transcript_hash=th, direction="c2s")
    assert proof == h("cluster_proof_c2s")
    # The dialer's request, parsed as the handler does.
    request = parse_request(cbor.decode(h("sync_hello_plaintext")))
    assert request.op == "sync.hello"
    sent, info = msg.parse_hello_request(request.args)
    assert verify_cluster_proof(
        master_secret=secret, transcript_hash=th, direction="c2s", proof=sent
    )
    assert info.state == "syncing" and info.boot is not None and len(info.boot) == 16
    # Encoded and sealed byte for byte as the vectors say (c2s counter 1, after ClientAuth).
    plaintext = cbor.encode(
        request_message(1, "sync.hello", {"proof": proof, "boot": info.boot, "state": "syncing"})
    )
    assert plaintext == h("sync_hello_plaintext")
    dialer = SecureChannel(send_key=h("k_c2s"), recv_key=h("k_s2c"))
    dialer.seal({})  # counter 0: ClientAuth
    assert encode_frame(dialer.seal_plaintext(plaintext)) == h("sync_hello_frame")
    # The answer, as the dialer parses it.
    answer = cbor.decode(h("sync_hello_answer_plaintext"))["ok"]
    parsed = msg.parse_hello_answer(answer)
    s2c = cluster_proof(master_secret=secret, transcript_hash=th, direction="s2c")
    assert parsed.proof == s2c == h("cluster_proof_s2c")
    assert parsed.info.state == "serving" and parsed.info.boot is not None
    assert cbor.encode(ok_response(1, answer)) == h("sync_hello_answer_plaintext")
    # sync.digests carries the caller's state, and the answer the other side's.
    digests = parse_request(cbor.decode(h("sync_digests_plaintext")))
    assert msg.parse_digests_request(digests.args) == "syncing"
    got = msg.parse_digests_answer(cbor.decode(h("sync_digests_answer_plaintext"))["ok"])
    assert got == msg.DigestsAnswer((), "serving")
