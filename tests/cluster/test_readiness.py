"""The pure catch-up and safe-to-stop rules, and the holders bookkeeping."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from novakms.cluster import readiness
from novakms.cluster.readiness import Holders

A, B, C = "0xa", "0xb", "0xc"


def test_catch_up_verdicts() -> None:
    verdict = readiness.catch_up_verdict
    assert verdict({}) == ("serving", None)  # no peers: nothing to catch up from
    assert verdict({A: "caught_up", B: "partial"}) == ("serving", None)
    # Every peer was itself catching up (or none answered): what a node now gone held may be
    # missing.
    assert verdict({A: "partial", B: "partial"}) == ("degraded", "no_caught_up_peer")
    assert verdict({A: "unreachable", B: "unreachable"}) == ("degraded", "no_caught_up_peer")
    assert verdict({A: "partial", B: "unreachable"}) == ("degraded", "no_caught_up_peer")
    # A caught-up peer answered, another did not: what only that one holds is missing.
    assert verdict({A: "caught_up", B: "unreachable"}) == ("degraded", "peer_unreachable")


def test_a_degraded_node_is_confirmed_by_a_pass_against_every_current_peer() -> None:
    assert readiness.confirmed({A, B}, [A, B])
    assert readiness.confirmed({A, B, C}, [A, B])  # C left the peer set meanwhile
    assert not readiness.confirmed({A}, [A, B])
    assert readiness.confirmed(set(), [])


def test_stop_verdicts() -> None:
    def verdict(**kw: object) -> str | None:
        args: dict[str, object] = {
            "started": True,
            "state": "serving",
            "peer_states": [],
            "unconfirmed": 0,
        }
        return readiness.stop_verdict(**(args | kw))  # type: ignore[arg-type]

    assert verdict() is None
    assert verdict(started=False, state="syncing", unconfirmed=5) is None  # holds nothing
    assert verdict(state="syncing") == "syncing"
    assert verdict(state="degraded") is None  # its keys are checked one by one instead
    assert verdict(peer_states=["serving", "syncing"]) == "peer_syncing"
    assert verdict(peer_states=[None, "degraded"]) is None
    assert verdict(unconfirmed=1) == "unconfirmed"
    assert verdict(state="syncing", unconfirmed=1) == "syncing"  # the first reason found


def test_holders_follow_local_changes_evidence_and_restarts() -> None:
    holders = Holders()
    k1, k2, k3 = (1, "a"), (1, "b"), (2, "a")
    holders.changed_here(k1)  # a local write: nobody holds it yet
    holders.changed_from(k2, A)  # came from A
    assert holders.unconfirmed([k1, k2, k3], present=[A, B]) == 2  # k3 is not tracked at all
    holders.add(B, [k1, k3])  # B acknowledged k1, its digests showed k3
    assert holders.held_by(k1) == {B} and holders.held_by(k2) == {A}
    assert holders.unconfirmed([k1, k2, k3], present=[A, B]) == 0
    # Only peers connected now count.
    assert holders.unconfirmed([k1, k2, k3], present=[A]) == 2
    assert holders.unconfirmed([k1, k2, k3], present=[]) == 3
    # B restarted: it holds nothing any more.
    holders.forget_peer(B)
    assert holders.unconfirmed([k1, k2, k3], present=[A, B]) == 2
    # A newer local write of k2 replaces what A held.
    holders.changed_here(k2)
    assert holders.held_by(k2) == frozenset()
    holders.retain([k2])
    assert len(holders) == 1


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["here", "from", "add", "forget"]),
            st.integers(0, 5),
            st.sampled_from([A, B, C]),
        ),
        max_size=60,
    )
)
def test_holders_match_a_model_of_sets(ops: list[tuple[str, int, str]]) -> None:
    holders = Holders()
    model: dict[tuple[int, str], set[str]] = {}
    for op, n, peer in ops:
        slot = (1, str(n))
        if op == "here":
            holders.changed_here(slot)
            model[slot] = set()
        elif op == "from":
            holders.changed_from(slot, peer)
            model[slot] = {peer}
        elif op == "add":
            holders.add(peer, [slot])
            model.setdefault(slot, set()).add(peer)
        else:
            holders.forget_peer(peer)
            for peers in model.values():
                peers.discard(peer)
    slots = [(1, str(n)) for n in range(6)]
    for slot in slots:
        assert holders.held_by(slot) == model.get(slot, set())
    for present in ([], [A], [A, C], [A, B, C]):
        expected = sum(1 for s in slots if not model.get(s, set()) & set(present))
        assert holders.unconfirmed(slots, present) == expected
