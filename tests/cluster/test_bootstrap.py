"""The anti-split-brain bootstrap decision (DESIGN §6): hand cases per rule, then properties."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novakms.cluster.bootstrap import (
    Decision,
    PeerReport,
    accept_fetched,
    decide,
    generate_secret,
    unavailable_for,
)
from novakms.crypto.kdf import secret_fingerprint
from novakms.errors import Unavailable

SECRET_A = bytes([0xA1]) * 32
SECRET_B = bytes([0xB2]) * 32
SECRET_C = bytes([0xC3]) * 32
FP_A = secret_fingerprint(SECRET_A)
FP_B = secret_fingerprint(SECRET_B)
FP_C = secret_fingerprint(SECRET_C)
FP_NOBODY = secret_fingerprint(bytes([0xDD]) * 32)


def wallet(n: int) -> str:
    return "0x" + f"{n:040x}"


ME = wallet(0xFFFF)


def down(i: int) -> PeerReport:
    return PeerReport(
        wallet=wallet(i), instance_id=i, reachable=False, initialized=None, fingerprint=None
    )


def fresh(i: int) -> PeerReport:
    return PeerReport(
        wallet=wallet(i), instance_id=i, reachable=True, initialized=False, fingerprint=None
    )


def has(i: int, fp: str) -> PeerReport:
    return PeerReport(
        wallet=wallet(i), instance_id=i, reachable=True, initialized=True, fingerprint=fp
    )


def run(
    peers: list[PeerReport],
    *,
    me: int = 5,
    own: str | None = None,
    pin: str | None = None,
) -> Decision:
    return decide(self_wallet=ME, self_instance_id=me, own_fingerprint=own, pin=pin, peers=peers)


# --- rule 1: this node holds a secret -----------------------------------------------------


def test_own_secret_without_pin_is_served() -> None:
    d = run([has(1, FP_B), has(2, FP_C)], own=FP_A)
    assert d.action == "have"
    assert d.fingerprint == FP_A
    assert d.fetch_from == ()
    assert unavailable_for(d) is None


def test_own_secret_matching_pin_is_served() -> None:
    d = run([down(1)], own=FP_A, pin=FP_A)
    assert d.action == "have"


def test_own_secret_mismatching_pin_is_secret_lost() -> None:
    d = run([has(1, FP_B)], own=FP_A, pin=FP_B)
    assert d.action == "secret_lost"
    assert d.fetch_from == ()
    err = unavailable_for(d)
    assert isinstance(err, Unavailable)
    assert err.reason == "secret_lost"


def test_pin_comparison_ignores_hex_case() -> None:
    d = run([], own=FP_A, pin="0x" + FP_A[2:].upper())
    assert d.action == "have"


# --- rule 2: a pin is set ------------------------------------------------------------------


def test_pin_fetches_only_from_matching_peers() -> None:
    d = run([has(3, FP_A), has(1, FP_B), has(2, FP_A), fresh(4), down(6)], pin=FP_A)
    assert d.action == "fetch"
    assert d.fingerprint == FP_A
    assert d.fetch_from == (wallet(2), wallet(3))


def test_pin_nobody_matching_all_answered_is_secret_lost() -> None:
    d = run([has(1, FP_B), fresh(2)], pin=FP_A)
    assert d.action == "secret_lost"
    assert d.fingerprint is None


def test_pin_nobody_has_anything_is_secret_lost_not_generate() -> None:
    d = run([fresh(7), fresh(8)], me=1, pin=FP_A)
    assert d.action == "secret_lost"


def test_pin_alone_without_secret_is_secret_lost() -> None:
    assert run([], me=1, pin=FP_A).action == "secret_lost"


def test_pin_nobody_matching_some_unreachable_waits() -> None:
    d = run([has(1, FP_B), down(2)], pin=FP_A)
    assert d.action == "wait"
    err = unavailable_for(d)
    assert isinstance(err, Unavailable)
    assert err.reason == "not_ready"


# --- rule 3: no pin, some peer holds a secret ----------------------------------------------


def test_fetch_from_exactly_the_peers_holding_it() -> None:
    d = run([fresh(1), has(9, FP_A), down(2), has(3, FP_A)])
    assert d.action == "fetch"
    assert d.fingerprint == FP_A
    assert d.fetch_from == (wallet(3), wallet(9))
    err = unavailable_for(d)
    assert isinstance(err, Unavailable)
    assert err.reason == "not_ready"


def test_fetch_even_when_this_node_is_lowest_and_peers_are_down() -> None:
    assert run([has(9, FP_A), down(2)], me=1).action == "fetch"


def test_two_fingerprints_without_pin_is_split_brain() -> None:
    d = run([has(1, FP_A), has(2, FP_B), fresh(3)])
    assert d.action == "split_brain"
    assert d.fetch_from == ()
    assert d.fingerprint is None
    assert FP_A in d.reason
    assert FP_B in d.reason
    err = unavailable_for(d)
    assert isinstance(err, Unavailable)
    assert err.reason == "split_brain"
    assert err.to_wire()["reason"] == "split_brain"


# --- rule 4: nobody has a secret ----------------------------------------------------------


def test_alone_generates() -> None:
    d = run([], me=42)
    assert d.action == "generate"
    assert d.fetch_from == ()
    assert d.fingerprint is None
    err = unavailable_for(d)
    assert isinstance(err, Unavailable)
    assert err.reason == "not_ready"


def test_three_fresh_nodes_only_the_lowest_generates() -> None:
    ids = [7, 3, 12]
    actions = {}
    for me in ids:
        peers = [fresh(i) for i in ids if i != me]
        actions[me] = decide(
            self_wallet=wallet(me), self_instance_id=me, own_fingerprint=None, pin=None, peers=peers
        ).action
    assert actions == {3: "generate", 7: "wait", 12: "wait"}


def test_unreachable_peer_means_wait_even_for_the_lowest() -> None:
    d = run([fresh(5), down(9)], me=1)
    assert d.action == "wait"
    assert "unreachable" in d.reason


def test_not_lowest_waits_for_the_lowest() -> None:
    d = run([fresh(2), fresh(9)], me=5)
    assert d.action == "wait"
    assert "2" in d.reason


# --- input handling -----------------------------------------------------------------------


def test_entry_for_self_is_ignored() -> None:
    self_entry = PeerReport(
        wallet=ME.upper().replace("0X", "0x"),
        instance_id=1,
        reachable=True,
        initialized=True,
        fingerprint=FP_B,
    )
    assert run([self_entry, fresh(9)], me=5).action == "generate"
    assert run([self_entry], me=5).action == "generate"


def test_peer_report_normalizes_wallet_and_fingerprint() -> None:
    p = PeerReport(
        wallet="0X" + "AB" * 20,
        instance_id=1,
        reachable=True,
        initialized=True,
        fingerprint="0x" + FP_A[2:].upper(),
    )
    assert p.wallet == "0x" + "ab" * 20
    assert p.fingerprint == FP_A


@pytest.mark.parametrize(
    "kwargs",
    [
        {"wallet": "0x1234", "instance_id": 1, "reachable": True, "initialized": False},
        {"wallet": wallet(1), "instance_id": 0, "reachable": True, "initialized": False},
        {"wallet": wallet(1), "instance_id": -3, "reachable": True, "initialized": False},
        {"wallet": wallet(1), "instance_id": 1, "reachable": False, "initialized": False},
        {"wallet": wallet(1), "instance_id": 1, "reachable": False, "fingerprint": FP_A},
        {"wallet": wallet(1), "instance_id": 1, "reachable": True, "initialized": True},
        {
            "wallet": wallet(1),
            "instance_id": 1,
            "reachable": True,
            "initialized": False,
            "fingerprint": FP_A,
        },
        {
            "wallet": wallet(1),
            "instance_id": 1,
            "reachable": True,
            "initialized": True,
            "fingerprint": FP_A[:-1],
        },
        {
            "wallet": wallet(1),
            "instance_id": 1,
            "reachable": True,
            "initialized": True,
            "fingerprint": FP_A[2:] + "00",
        },
    ],
)
def test_peer_report_rejects_malformed(kwargs: dict[str, object]) -> None:
    full: dict[str, object] = {"initialized": None, "fingerprint": None, **kwargs}
    with pytest.raises(ValueError):
        PeerReport(**full)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"instance_id": True, "reachable": True, "initialized": False},
        {"instance_id": 1, "reachable": 1, "initialized": False},
        {"instance_id": 1, "reachable": True, "initialized": None},
    ],
)
def test_peer_report_rejects_wrong_types(kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        PeerReport(wallet=wallet(1), fingerprint=None, **kwargs)  # type: ignore[arg-type]


def test_decide_rejects_duplicate_wallets() -> None:
    twin = PeerReport(
        wallet=wallet(1).upper().replace("0X", "0x"),
        instance_id=2,
        reachable=True,
        initialized=False,
        fingerprint=None,
    )
    with pytest.raises(ValueError, match="duplicate peer wallet"):
        run([fresh(1), twin])


def test_decide_rejects_duplicate_instance_ids() -> None:
    other = PeerReport(
        wallet=wallet(99), instance_id=1, reachable=True, initialized=False, fingerprint=None
    )
    with pytest.raises(ValueError, match="duplicate instance id"):
        run([fresh(1), other])
    with pytest.raises(ValueError, match="duplicate instance id"):
        run([fresh(5)], me=5)


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"self_wallet": "nope"}, ValueError),
        ({"self_instance_id": 0}, ValueError),
        ({"self_instance_id": True}, TypeError),
        ({"own_fingerprint": "0x12"}, ValueError),
        ({"pin": "deadbeef"}, ValueError),
        ({"pin": "0x" + "00" * 32}, ValueError),
        ({"peers": [object()]}, TypeError),
    ],
)
def test_decide_rejects_bad_inputs(kwargs: dict[str, object], exc: type[Exception]) -> None:
    full: dict[str, object] = {
        "self_wallet": ME,
        "self_instance_id": 1,
        "own_fingerprint": None,
        "pin": None,
        "peers": [],
        **kwargs,
    }
    with pytest.raises(exc):
        decide(**full)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"action": "explode", "reason": "x"},
        {"action": "fetch", "reason": "x", "fingerprint": FP_A},
        {"action": "fetch", "reason": "x", "fetch_from": (wallet(1),)},
        {"action": "wait", "reason": "x", "fetch_from": (wallet(1),)},
        {"action": "have", "reason": "x"},
        {"action": "have", "reason": "x", "fingerprint": "0xabc"},
    ],
)
def test_decision_rejects_inconsistent_fields(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Decision(**kwargs)  # type: ignore[arg-type]


def test_decision_is_frozen() -> None:
    d = run([])
    with pytest.raises(AttributeError):
        d.action = "have"  # type: ignore[misc]


# --- accept_fetched -----------------------------------------------------------------------


def test_accept_fetched_accepts_the_expected_secret() -> None:
    accept_fetched(secret=SECRET_A, expected_fingerprint=FP_A, pin=None)
    accept_fetched(secret=SECRET_A, expected_fingerprint=FP_A, pin=FP_A)
    upper = "0x" + FP_A[2:].upper()
    accept_fetched(secret=bytearray(SECRET_A), expected_fingerprint=upper, pin=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("secret", "expected", "pin", "words"),
    [
        (SECRET_B, FP_A, None, "expected fingerprint"),
        (SECRET_B, FP_A, FP_A, "expected fingerprint"),
        (SECRET_A, FP_A, FP_B, "pin"),
        (SECRET_A[:31], FP_A, None, "32 bytes"),
        (SECRET_A + b"\x00", FP_A, None, "32 bytes"),
        (b"", FP_A, None, "32 bytes"),
        ("a" * 32, FP_A, None, "32 bytes"),
    ],
)
def test_accept_fetched_rejects(secret: bytes, expected: str, pin: str | None, words: str) -> None:
    with pytest.raises(Unavailable) as info:
        accept_fetched(secret=secret, expected_fingerprint=expected, pin=pin)
    err = info.value
    assert err.reason == "secret_mismatch"
    assert words in err.message
    text = repr(err) + str(err) + repr(err.to_wire())
    if isinstance(secret, bytes) and secret:
        assert secret.hex() not in text
        assert repr(secret) not in text


def test_accept_fetched_rejects_malformed_expectations() -> None:
    with pytest.raises(ValueError):
        accept_fetched(secret=SECRET_A, expected_fingerprint="0x12", pin=None)
    with pytest.raises(ValueError):
        accept_fetched(secret=SECRET_A, expected_fingerprint=FP_A, pin="0x" + "00" * 32)


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_accept_fetched_accepts_exactly_the_matching_secret(mine: bytes, other: bytes) -> None:
    fp = secret_fingerprint(mine)
    accept_fetched(secret=mine, expected_fingerprint=fp, pin=fp)
    if other != mine:
        with pytest.raises(Unavailable):
            accept_fetched(secret=other, expected_fingerprint=fp, pin=None)


# --- generate_secret ----------------------------------------------------------------------


def test_generate_secret_uses_the_injected_rng() -> None:
    calls: list[int] = []

    def rng(n: int) -> bytes:
        calls.append(n)
        return bytes(range(1, n + 1))

    assert generate_secret(rng) == bytes(range(1, 33))
    assert calls == [32]

    def bytearray_rng(n: int) -> bytes:
        return bytearray(b"\x07" * n)  # type: ignore[return-value]

    assert generate_secret(bytearray_rng) == b"\x07" * 32


@pytest.mark.parametrize("output", [b"\x01" * 31, b"\x01" * 33, b"", bytes(32), "x" * 32])
def test_generate_secret_rejects_broken_rng(output: bytes) -> None:
    with pytest.raises(ValueError) as info:
        generate_secret(lambda n: output)
    assert "01" * 8 not in str(info.value)


# --- unavailable_for ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decision", "reason"),
    [
        (Decision(action="have", fingerprint=FP_A, reason="r"), None),
        (
            Decision(action="fetch", fetch_from=(wallet(1),), fingerprint=FP_A, reason="r"),
            "not_ready",
        ),
        (Decision(action="generate", reason="r"), "not_ready"),
        (Decision(action="wait", reason="r"), "not_ready"),
        (Decision(action="split_brain", reason="r"), "split_brain"),
        (Decision(action="secret_lost", reason="r"), "secret_lost"),
    ],
)
def test_unavailable_for(decision: Decision, reason: str | None) -> None:
    err = unavailable_for(decision)
    if reason is None:
        assert err is None
    else:
        assert isinstance(err, Unavailable)
        assert err.reason == reason
        assert err.code == "unavailable"
        assert "r" in err.message


# --- properties ---------------------------------------------------------------------------

FP_POOL = [FP_A, FP_B, FP_C]
PIN_POOL = [*FP_POOL, FP_NOBODY]


@dataclass(frozen=True)
class Scenario:
    self_wallet: str
    self_id: int
    own: str | None
    pin: str | None
    peers: list[PeerReport]

    def decide(self, peers: list[PeerReport] | None = None) -> Decision:
        return decide(
            self_wallet=self.self_wallet,
            self_instance_id=self.self_id,
            own_fingerprint=self.own,
            pin=self.pin,
            peers=self.peers if peers is None else peers,
        )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 6))
    ids = draw(st.lists(st.integers(1, 30), min_size=n + 1, max_size=n + 1, unique=True))
    wallets = draw(
        st.lists(st.integers(1, 2**160 - 1), min_size=n + 1, max_size=n + 1, unique=True)
    )
    peers = []
    for pid, pw in zip(ids[1:], wallets[1:], strict=True):
        state = draw(st.sampled_from(["down", "fresh", "has"]))
        fp = draw(st.sampled_from(FP_POOL)) if state == "has" else None
        peers.append(
            PeerReport(
                wallet=wallet(pw),
                instance_id=pid,
                reachable=state != "down",
                initialized=None if state == "down" else state == "has",
                fingerprint=fp,
            )
        )
    return Scenario(
        self_wallet=wallet(wallets[0]),
        self_id=ids[0],
        own=draw(st.none() | st.sampled_from(PIN_POOL)),
        pin=draw(st.none() | st.sampled_from(PIN_POOL)),
        peers=peers,
    )


@given(scenarios())
def test_generate_only_when_everyone_answered_and_nobody_has_a_secret(s: Scenario) -> None:
    d = s.decide()
    everyone_fresh = all(p.reachable and not p.initialized for p in s.peers)
    lowest = all(s.self_id < p.instance_id for p in s.peers)
    if d.action == "generate":
        assert s.own is None
        assert s.pin is None
        assert everyone_fresh
        assert lowest
    if s.own is None and s.pin is None and everyone_fresh and lowest:
        assert d.action == "generate"


@given(scenarios())
def test_fetch_only_from_peers_reporting_the_chosen_fingerprint(s: Scenario) -> None:
    d = s.decide()
    if d.action != "fetch":
        assert d.fetch_from == ()
        return
    assert s.own is None
    assert d.fingerprint is not None
    if s.pin is not None:
        assert d.fingerprint == s.pin
    by_wallet = {p.wallet: p for p in s.peers}
    chosen = [by_wallet[w] for w in d.fetch_from]
    assert chosen
    for p in chosen:
        assert p.reachable
        assert p.initialized
        assert p.fingerprint == d.fingerprint
    # Every holder of that fingerprint is listed, lowest instance id first.
    holders = sorted(
        (p for p in s.peers if p.fingerprint == d.fingerprint), key=lambda p: p.instance_id
    )
    assert chosen == holders


@given(scenarios())
def test_pin_and_split_brain_invariants(s: Scenario) -> None:
    d = s.decide()
    holder_fps = {p.fingerprint for p in s.peers if p.initialized}
    if s.pin is not None:
        assert d.action not in ("generate", "split_brain")
        if d.action == "have":
            assert s.own == s.pin
    else:
        assert d.action != "secret_lost"
    if d.action == "have":
        assert s.own is not None
        assert d.fingerprint == s.own
    if s.own is not None:
        assert d.action in ("have", "secret_lost")
    if d.action == "split_brain":
        assert s.pin is None
        assert len(holder_fps) > 1
    if s.own is None and s.pin is None and len(holder_fps) > 1:
        assert d.action == "split_brain"


@given(st.data())
def test_decide_is_deterministic_and_ignores_peer_order(data: st.DataObject) -> None:
    s = data.draw(scenarios())
    first = s.decide()
    assert s.decide() == first
    shuffled = data.draw(st.permutations(s.peers))
    assert s.decide(list(shuffled)) == first
    # An entry for this node itself, anywhere in the list, changes nothing.
    self_entry = PeerReport(
        wallet=s.self_wallet,
        instance_id=data.draw(st.integers(1, 40)),
        reachable=True,
        initialized=True,
        fingerprint=data.draw(st.sampled_from(PIN_POOL)),
    )
    at = data.draw(st.integers(0, len(shuffled)))
    with_self = [*shuffled[:at], self_entry, *shuffled[at:]]
    assert s.decide(with_self) == first


@given(st.lists(st.integers(1, 1000), min_size=1, max_size=7, unique=True))
def test_all_fresh_all_reachable_cluster_has_exactly_one_generator(ids: list[int]) -> None:
    generators = []
    for me in ids:
        view = [fresh(i) for i in ids if i != me]
        d = decide(
            self_wallet=wallet(me), self_instance_id=me, own_fingerprint=None, pin=None, peers=view
        )
        assert d.action in ("generate", "wait")
        if d.action == "generate":
            generators.append(me)
    assert generators == [min(ids)]


@given(st.data())
def test_cluster_simulation_never_generates_twice_nor_splits(data: st.DataObject) -> None:
    """Nodes start fresh; each round, every node decides on a random (asymmetric) view."""
    ids = data.draw(st.lists(st.integers(1, 50), min_size=1, max_size=6, unique=True))
    held: dict[int, str | None] = dict.fromkeys(ids)
    generated = 0
    for round_no in range(data.draw(st.integers(1, 6))):
        decisions = {}
        for me in ids:
            view = []
            for other in ids:
                if other == me:
                    continue
                if data.draw(st.booleans(), label=f"r{round_no}:{me}->{other}"):
                    fp = held[other]
                    view.append(has(other, fp) if fp is not None else fresh(other))
                else:
                    view.append(down(other))
            decisions[me] = decide(
                self_wallet=wallet(me),
                self_instance_id=me,
                own_fingerprint=held[me],
                pin=None,
                peers=view,
            )
        for me, d in decisions.items():  # apply all at once: a synchronous round
            assert d.action not in ("split_brain", "secret_lost")
            if d.action == "generate":
                generated += 1
                held[me] = secret_fingerprint(me.to_bytes(32, "big"))
            elif d.action == "fetch":
                assert d.fingerprint is not None
                held[me] = d.fingerprint
        assert generated <= 1
        assert len({fp for fp in held.values() if fp is not None}) <= 1


@given(st.lists(st.integers(1, 1000), min_size=1, max_size=7, unique=True))
def test_pinned_fresh_cluster_never_generates(ids: list[int]) -> None:
    for me in ids:
        view = [fresh(i) for i in ids if i != me]
        d = decide(
            self_wallet=wallet(me), self_instance_id=me, own_fingerprint=None, pin=FP_A, peers=view
        )
        assert d.action == "secret_lost"


# --- purity -------------------------------------------------------------------------------


def test_module_loads_no_io() -> None:
    code = (
        "import sys, novakms.cluster.bootstrap;"
        "print(','.join(m for m in ('trio','socket','random','asyncio','httpx','anyio')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_module_source_reads_no_clock_or_rng() -> None:
    source = inspect.getsource(importlib.import_module("novakms.cluster.bootstrap"))
    for needle in ("import time", "from time", "os.urandom(", "import random", "import trio"):
        assert needle not in source
