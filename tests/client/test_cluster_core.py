"""The pure decisions of the cluster clients: ranking, what is retried, the backoff, one call."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from novakms.client.cluster_core import (
    CallPlan,
    Member,
    NodeTable,
    RetryPolicy,
    Safety,
    TableSettings,
    backoff_delay,
    is_answer,
    judge,
    members,
    op_safety,
)
from novakms.errors import (
    ChainUnavailable,
    Conflict,
    Forbidden,
    HandshakeError,
    NetworkError,
    NotFound,
    NovaKMSError,
    ProtocolError,
    RateLimited,
    TransportTimeout,
    Unauthenticated,
    Unavailable,
)

SAFETIES: tuple[Safety, ...] = ("safe", "conditional", "unsafe")
A, B, C = (Member(f"127.0.0.1:{7400 + i}", f"0x{i:040x}") for i in range(3))


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


def test_op_safety() -> None:
    for op in ("health", "status", "nodes", "derive", "kv.get", "kv.list", "cert.ca"):
        assert op_safety(op) == "safe"
    assert op_safety("kv.put", if_version="v1") == "conditional"
    assert op_safety("kv.put", if_version="absent") == "conditional"
    assert op_safety("kv.delete", if_version="v1") == "conditional"
    for op in ("kv.put", "kv.delete", "cert.sign", "guardian.restore"):
        assert op_safety(op) == "unsafe"


@pytest.mark.parametrize("safety", SAFETIES)
@pytest.mark.parametrize(
    "error",
    [
        NetworkError("refused"),
        TransportTimeout("slow"),
        HandshakeError("wrong wallet"),
        ProtocolError("garbage"),
        Unavailable("full", reason="too_many_connections"),
        RateLimited("handshakes"),
    ],
)
def test_nothing_sent_is_tried_elsewhere_for_every_op(safety: Safety, error: NovaKMSError) -> None:
    verdict = judge(error, safety=safety, sent=False, answered=False)
    assert verdict.retry and verdict.node == "down" and not verdict.maybe_ran


@pytest.mark.parametrize("error", [Unauthenticated("bad sig"), Forbidden("unknown wallet")])
def test_a_refusal_of_the_caller_is_not_tried_elsewhere(error: NovaKMSError) -> None:
    verdict = judge(error, safety="safe", sent=False, answered=False)
    assert not verdict.retry and verdict.node == "fine"


def test_answered_unavailable_is_failed_over_when_safe_or_refused_before_running() -> None:
    syncing = Unavailable("catching up", reason="syncing")
    odd = Unavailable("?", reason="something_new")
    for safety in SAFETIES[:2]:
        verdict = judge(odd, safety=safety, sent=True, answered=True)
        assert verdict.retry and verdict.node == "not_ready" and not verdict.maybe_ran
    # A blind write is sent elsewhere only when the node said it did not run it.
    assert judge(syncing, safety="unsafe", sent=True, answered=True).retry
    worker = Unavailable("a stateless worker", reason="stateless_worker")  # kv.* refused
    assert judge(worker, safety="unsafe", sent=True, answered=True).retry
    assert not judge(odd, safety="unsafe", sent=True, answered=True).retry
    # acks_timeout: the write is stored; never again, whatever the op.
    stored = Unavailable("only 1 of 2", reason="acks_timeout")
    for safety in SAFETIES:
        verdict = judge(stored, safety=safety, sent=True, answered=True)
        assert not verdict.retry


@pytest.mark.parametrize("error", [NotFound("gone"), Conflict("version"), RateLimited("slow")])
def test_other_answers_are_the_result(error: NovaKMSError) -> None:
    verdict = judge(error, safety="safe", sent=True, answered=True)
    assert not verdict.retry and verdict.node == "fine"


def test_a_lost_answer_is_retried_only_for_ops_safe_to_repeat() -> None:
    lost = NetworkError("connection lost")
    assert judge(lost, safety="safe", sent=True, answered=False).retry
    conditional = judge(lost, safety="conditional", sent=True, answered=False)
    assert conditional.retry and conditional.maybe_ran
    blind = judge(lost, safety="unsafe", sent=True, answered=False)
    assert not blind.retry and blind.node == "down" and blind.maybe_ran


def test_is_answer() -> None:
    assert is_answer(NotFound("x"), connection_usable=True)
    assert is_answer(Unavailable("x", reason="syncing"), connection_usable=True)
    assert not is_answer(Unavailable("closing", reason="shutting_down"), connection_usable=False)
    assert not is_answer(TransportTimeout("slow"), connection_usable=True)
    assert not is_answer(ChainUnavailable("rpc"), connection_usable=True)
    assert not is_answer(ProtocolError("garbled"), connection_usable=True)


def test_backoff_is_full_jitter_capped() -> None:
    policy = RetryPolicy(backoff_base=0.1, backoff_cap=1.0)
    assert backoff_delay(0, policy, fixed(0.99)) == 0.0
    assert backoff_delay(1, policy, fixed(0.5)) == pytest.approx(0.05)
    assert backoff_delay(3, policy, fixed(0.5)) == pytest.approx(0.2)
    assert backoff_delay(50, policy, fixed(0.5)) == pytest.approx(0.5)
    assert backoff_delay(9999, policy, fixed(0.0)) == 0.0


def test_members_dedupe_and_lowercase() -> None:
    found = members([("h:1", "0xAB"), Member("h:2", "0xcd"), ("h:1", "0xef")])
    assert found == [Member("h:1", "0xab"), Member("h:2", "0xcd")]
    with pytest.raises(ValueError):
        members([("", "0xab")])


def test_ranking_prefers_ready_fast_and_idle_nodes() -> None:
    table = NodeTable([A, B, C], TableSettings(fast_factor=2.0, fast_slack=0.0))
    assert set(table.ranked(0.0, fixed(0.5))) == {A.address, B.address, C.address}
    table.probed(A.address, latency=0.010, ready=True)
    table.probed(B.address, latency=0.012, ready=True)
    table.probed(C.address, latency=0.100, ready=True)  # slow: after the fast ones
    ranked = table.ranked(0.0, fixed(0.5))
    assert ranked[2] == C.address and set(ranked[:2]) == {A.address, B.address}
    table.started(A.address)  # one call in flight on A: B first
    assert table.ranked(0.0, fixed(0.5))[:2] == [B.address, A.address]
    table.finished(A.address)
    # Not ready: after every ready node; down: last, whatever it was.
    table.probed(B.address, latency=0.001, ready=False)
    table.failed(A.address, now=0.0)
    assert table.ranked(0.0, fixed(0.5)) == [C.address, B.address, A.address]


def test_load_spreads_at_random_over_equally_fast_idle_nodes() -> None:
    table = NodeTable([A, B])
    table.probed(A.address, latency=0.01, ready=True)
    table.probed(B.address, latency=0.01, ready=True)
    draws = iter([0.9, 0.1, 0.1, 0.9])
    assert table.ranked(0.0, lambda: next(draws))[0] == B.address
    assert table.ranked(0.0, lambda: next(draws))[0] == A.address


def test_penalty_doubles_and_expires_and_a_success_clears_it() -> None:
    table = NodeTable([A, B], TableSettings(penalty=1.0, penalty_cap=3.0))
    for node in (A, B):
        table.probed(node.address, latency=0.01, ready=True)
    table.failed(A.address, now=10.0)
    assert table.ranked(10.5, fixed(0.5))[-1] == A.address
    assert A.address in table.ranked(11.0, fixed(0.5))[:2]
    table.failed(A.address, now=11.0)  # second in a row: 2 s
    view = {v.address: v for v in table.view(12.5)}
    assert view[A.address].down and view[A.address].failures == 2
    table.failed(A.address, now=13.0)
    table.failed(A.address, now=13.0)  # capped at 3 s
    assert table.view(15.9)[0].down and not table.view(16.0)[0].down
    table.succeeded(A.address)
    assert not table.view(13.0)[0].down and table.view(13.0)[0].failures == 0


def test_not_ready_demotes_until_a_probe_says_ready() -> None:
    table = NodeTable([A, B])
    table.probed(A.address, latency=0.001, ready=True)
    table.probed(B.address, latency=0.001, ready=True)
    table.not_ready(A.address, now=0.0)
    assert table.ranked(100.0, fixed(0.5)) == [B.address, A.address]
    table.probed(A.address, latency=0.001, ready=True)
    assert set(table.ranked(100.0, fixed(0.5))) == {A.address, B.address}


def test_latency_is_an_average() -> None:
    table = NodeTable([A], TableSettings(latency_weight=0.5))
    table.probed(A.address, latency=0.010, ready=True)
    table.probed(A.address, latency=0.030, ready=True)
    assert table.view(0.0)[0].latency == pytest.approx(0.020)


def test_membership_changes_keep_what_is_known() -> None:
    table = NodeTable([A, B])
    table.probed(A.address, latency=0.01, ready=True)
    moved = Member(B.address, "0x" + "ee" * 20)  # same address, another wallet
    added, removed = table.set_members([A, moved, C])
    assert set(added) == {moved, C} and removed == [B]
    assert table.member(B.address) == moved and A.address in table and len(table) == 3
    assert table.view(0.0)[0].ready is True  # A kept its probe
    added, removed = table.set_members([C])
    assert added == [] and set(removed) == {A, moved}
    assert table.members() == [C]
    table.failed(A.address, 0.0)  # a late report about a node that left is ignored
    table.finished(A.address)


def plan(safety: Safety = "safe", **policy: Any) -> CallPlan:
    return CallPlan(op="derive", safety=safety, policy=RetryPolicy(**policy), start=0.0)


def test_a_call_tries_every_node_once_per_round_then_backs_off() -> None:
    call = plan(max_attempts=5, backoff_base=0.1, deadline=10)
    order = [A.address, B.address, C.address]
    seen = []
    for _ in range(3):
        step = call.next(order, 0.0, fixed(0.5))
        assert step is not None and step.delay == 0.0
        seen.append(step.node)
        call.failed(step.node, NetworkError("x"), sent=True, answered=False)
    assert seen == order
    step = call.next(order, 0.0, fixed(0.5))
    assert step is not None and step.node == A.address and step.delay == pytest.approx(0.05)
    call.failed(step.node, NetworkError("x"), sent=True, answered=False)
    step = call.next([B.address, A.address, C.address], 0.0, fixed(0.5))
    assert step is not None and step.node == B.address and step.delay == 0.0
    call.failed(step.node, NetworkError("last"), sent=True, answered=False)
    assert call.next(order, 0.0, fixed(0.5)) is None  # 5 attempts
    error = call.error()
    assert isinstance(error, NetworkError) and error.message == "last"
    trace = call.trace()
    assert trace.nodes == (*order, A.address, B.address) and trace.answered_by is None


def test_a_call_ends_at_its_deadline() -> None:
    call = plan(deadline=1.0)
    assert call.next([A.address], 0.99, fixed(0.0)) is not None
    call.failed(A.address, NetworkError("x"), sent=True, answered=False)
    assert call.next([A.address], 1.0, fixed(0.0)) is None


def test_a_call_stops_at_a_final_answer_and_reports_who_answered() -> None:
    call = plan()
    step = call.next([A.address, B.address], 0.0, fixed(0.5))
    assert step is not None
    call.failed(A.address, NetworkError("x"), sent=False, answered=False)
    step = call.next([A.address, B.address], 0.0, fixed(0.5))
    assert step is not None and step.node == B.address
    missing = NotFound("no such key")
    assert not call.failed(B.address, missing, sent=True, answered=True).retry
    assert call.next([A.address, B.address], 0.0, fixed(0.5)) is None
    assert call.error() is missing
    assert call.trace().answered_by == B.address


def test_success_is_recorded() -> None:
    call = plan()
    call.next([A.address], 0.0, fixed(0.5))
    call.succeeded(A.address)
    trace = call.trace()
    assert trace.answered_by == A.address and trace.attempts[0].error is None


def test_no_nodes_is_unavailable() -> None:
    call = plan()
    assert call.next([], 0.0, fixed(0.5)) is None
    error = call.error()
    assert isinstance(error, Unavailable) and error.reason == "no_nodes"


def test_a_conditional_write_whose_first_answer_was_lost_says_its_outcome_is_unknown() -> None:
    call = plan("conditional")
    call.next([A.address, B.address], 0.0, fixed(0.5))
    assert call.failed(A.address, NetworkError("lost"), sent=True, answered=False).retry
    call.next([A.address, B.address], 0.0, fixed(0.5))
    conflict = Conflict("the key's version does not match if_version")
    assert not call.failed(B.address, conflict, sent=True, answered=True).retry
    error = call.error()
    assert isinstance(error, Conflict) and error.details["outcome"] == "unknown"
    assert "may have applied it" in error.message
    # Without a lost answer before, a conflict is just a conflict.
    clean = plan("conditional")
    clean.next([A.address], 0.0, fixed(0.5))
    clean.failed(A.address, conflict, sent=True, answered=True)
    assert clean.error() is conflict


def test_a_blind_write_whose_answer_was_lost_is_raised_as_is() -> None:
    call = plan("unsafe")
    call.next([A.address, B.address], 0.0, fixed(0.5))
    lost = NetworkError("lost")
    assert not call.failed(A.address, lost, sent=True, answered=False).retry
    assert call.next([A.address, B.address], 0.0, fixed(0.5)) is None
    assert call.error() is lost


def test_policy_is_checked() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(deadline=0)
    assert math.isfinite(RetryPolicy().deadline)
