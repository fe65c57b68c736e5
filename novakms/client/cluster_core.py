"""The decisions of the cluster clients (pure: no I/O, no clock, no RNG).

:mod:`novakms.client.cluster` (trio) and :mod:`novakms.client.blocking_cluster` (blocking) are
thin loops around this module. ``now`` (monotonic seconds) and ``random`` (a function returning
a float in [0, 1)) are arguments, so every decision is reproducible in a test.

Theory of operation
-------------------

**The node table** (:class:`NodeTable`) holds one entry per KMS node: its address and the wallet
it must prove (both from the chain, or from the caller's static list), the latest probe (a
``health`` round trip, ``status`` readiness), recent failures and the calls in flight on it.
:meth:`NodeTable.ranked` orders the nodes for a call, in tiers:

1. up and ready (``status.ready`` and not ``syncing``): the *fast* ones (probe latency within
   ``fast_factor`` * the best + ``fast_slack``) first, fewest calls in flight first and ties
   broken at random, so that load spreads over every fast node; then the slower ones;
2. up, not probed yet;
3. up but not ready;
4. down (a failure within its penalty, which doubles with each consecutive failure up to
   ``penalty_cap``), soonest back first: a last resort, never skipped.

**One call** (:class:`CallPlan`) walks the ranking: each attempt goes to the best node not yet
tried in this round; once every node was tried, the next round starts after a jittered
exponential backoff (:func:`backoff_delay`, "full jitter"). A call ends after ``max_attempts``
attempts or once its ``deadline`` would pass, whichever comes first.

**What is retried** (:func:`judge`): an attempt failed

* *before anything was sent* (the dial, the handshake): always tried elsewhere, for every op —
  unless the node refused the caller itself (``unauthenticated``, ``forbidden``: every node
  would);
* *with an answer* (an error response; the connection lives): ``unavailable`` is tried
  elsewhere for ops that are safe to repeat; for the others only when its reason says the
  node refused before running the op (:data:`REFUSED_BEFORE_RUNNING`); ``acks_timeout`` never
  (the write is stored). Every other answer (``not_found``, ``conflict``, ``rate_limited``…)
  is the call's result;
* *without an answer* (connection lost, closed with a notice, timed out, a garbled answer): the
  request may have run. Only ops that are safe to repeat are tried again (:func:`op_safety`):
  ``derive``, ``kv.get``, ``kv.list``, ``cert.ca``, ``health``, ``status``, ``nodes``, and the
  *conditional* writes (``kv.put`` / ``kv.delete`` with ``if_version``). A blind ``kv.put``,
  ``kv.delete`` or a ``cert.sign`` is never sent twice: its error is raised as it is.

**Conditional writes and their duplicates.** Retrying ``kv.put(if_version=V)`` is safe because
a duplicate cannot apply a second, different change: on a node that already holds the first
attempt's write, the version no longer matches and the retry fails with ``conflict``. But the
caller then cannot tell "my write lost to another writer" from "my first attempt committed and
its answer was lost". So when a conditional write was retried after an attempt without an
answer and the retry reports ``conflict`` (or ``not_found``, for a delete), the error raised
carries ``details["outcome"] == "unknown"`` (and says so in its message): re-read the key to
find out. Note that the store's compare-and-set is local to the node that checks it (replicas
converge last-writer-wins, DESIGN §5): a retry that reaches a node which has not yet received
the first attempt's write can apply the same value a second time, with a newer version; the
value is the one the caller wrote either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from novakms.errors import (
    ChainError,
    Conflict,
    Forbidden,
    NotFound,
    NovaKMSError,
    RequestError,
    TransportError,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "REFUSED_BEFORE_RUNNING",
    "SAFE_OPS",
    "AttemptRecord",
    "CallPlan",
    "CallTrace",
    "ClusterSettings",
    "Member",
    "NodeTable",
    "NodeView",
    "RetryPolicy",
    "Safety",
    "Step",
    "TableSettings",
    "Verdict",
    "backoff_delay",
    "is_answer",
    "judge",
    "members",
    "op_safety",
]

Safety = Literal["safe", "conditional", "unsafe"]
Random = Callable[[], float]

SAFE_OPS = frozenset({"health", "status", "nodes", "derive", "kv.get", "kv.list", "cert.ca"})
"""Ops that change nothing: running one twice is running it once."""

REFUSED_BEFORE_RUNNING = frozenset(
    {
        "not_ready",
        "unpinned",
        "secret_mismatch",
        "secret_lost",
        "split_brain",
        "syncing",
        "not_enough_peers",
        "auth_source",
        "shutting_down",
        "stateless_worker",
    }
)
"""``unavailable`` reasons a node answers *instead of* running the op: nothing was written, so
even a blind write may be sent to another node. (``acks_timeout`` is not one: it is answered
after the write was stored.)"""


def op_safety(op: str, *, if_version: str | None = None) -> Safety:
    """How an op may be repeated once it may have been sent.

    Args:
        op: the op name.
        if_version: the ``if_version`` argument of a ``kv.put`` / ``kv.delete``.

    Returns:
        ``"safe"`` (repeat freely), ``"conditional"`` (repeat; a duplicate fails its version
        check) or ``"unsafe"`` (never repeat once sent).
    """
    if op in SAFE_OPS:
        return "safe"
    if op in ("kv.put", "kv.delete") and if_version is not None:
        return "conditional"
    return "unsafe"


@dataclass(frozen=True, slots=True)
class Member:
    """A KMS node: where to dial it and the wallet it must prove."""

    address: str
    wallet: str


def members(nodes: Iterable[tuple[str, str] | Member]) -> list[Member]:
    """Members from ``(address, wallet)`` pairs (wallets lowercased), keeping the first of
    each address.

    Raises:
        ValueError: an entry without an address or wallet.
    """
    found: dict[str, Member] = {}
    for node in nodes:
        address, wallet = (node.address, node.wallet) if isinstance(node, Member) else node
        if not address or not wallet:
            raise ValueError("every node needs an address and a wallet")
        found.setdefault(address, Member(address, wallet.lower()))
    return list(found.values())


# --- the node table ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TableSettings:
    """How nodes are ranked and penalized.

    Attributes:
        fast_factor, fast_slack: a ready node is *fast* when its probe latency is at most
            ``fast_factor`` * the best latency + ``fast_slack`` seconds.
        penalty, penalty_cap: seconds a node counts as down after a failure, doubled per
            consecutive failure up to the cap; a success (call or probe) clears it.
        latency_weight: weight of a new probe in the latency average (EWMA).
    """

    fast_factor: float = 2.0
    fast_slack: float = 0.002
    penalty: float = 0.5
    penalty_cap: float = 10.0
    latency_weight: float = 0.3


@dataclass(slots=True)
class _Entry:
    member: Member
    latency: float | None = None
    ready: bool | None = None
    failures: int = 0
    down_until: float = -math.inf
    inflight: int = 0


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the client knows of one node (:meth:`NodeTable.view`).

    Attributes:
        ready: the last probe's readiness; None before the first probe.
        latency: the average probe round trip in seconds; None before the first probe.
        down: a failure is within its penalty.
    """

    address: str
    wallet: str
    ready: bool | None
    latency: float | None
    down: bool
    failures: int
    inflight: int


class NodeTable:
    """The nodes of a cluster client and what it knows about each.

    Args:
        nodes: the initial members.
        settings: ranking and penalties.
    """

    def __init__(self, nodes: Iterable[Member], settings: TableSettings | None = None) -> None:
        self.settings = settings or TableSettings()
        self._entries: dict[str, _Entry] = {}
        self.set_members(nodes)

    def __contains__(self, address: object) -> bool:
        return address in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def member(self, address: str) -> Member | None:
        """The member at ``address``, or None when it is not (or no longer) one."""
        entry = self._entries.get(address)
        return None if entry is None else entry.member

    def members(self) -> list[Member]:
        """Every member, in address order."""
        return [self._entries[a].member for a in sorted(self._entries)]

    def set_members(self, nodes: Iterable[Member]) -> tuple[list[Member], list[Member]]:
        """Replace the membership, keeping what is known of the nodes that stay.

        A node whose wallet changed counts as removed and added (its connection proved the
        old wallet).

        Returns:
            (added, removed).
        """
        new = {m.address: m for m in nodes}
        removed = [e.member for a, e in self._entries.items() if a not in new or new[a] != e.member]
        gone = {m.address for m in removed}
        added = [m for a, m in new.items() if a not in self._entries or a in gone]
        for member in removed:
            del self._entries[member.address]
        for member in added:
            self._entries[member.address] = _Entry(member)
        return added, removed

    def probed(self, address: str, *, latency: float, ready: bool) -> None:
        """A probe answered: its round trip (seconds) and the node's readiness."""
        entry = self._entries.get(address)
        if entry is None:
            return
        weight = self.settings.latency_weight
        entry.latency = (
            latency if entry.latency is None else (1 - weight) * entry.latency + weight * latency
        )
        entry.ready = ready
        entry.failures = 0
        entry.down_until = -math.inf

    def failed(self, address: str, now: float) -> None:
        """A call or probe failed on the node (transport, timeout, ``unavailable``)."""
        entry = self._entries.get(address)
        if entry is None:
            return
        entry.failures += 1
        s = self.settings
        entry.down_until = now + min(s.penalty_cap, s.penalty * 2 ** min(entry.failures - 1, 30))

    def not_ready(self, address: str, now: float) -> None:
        """The node answered ``unavailable``: it is up, but not ready (until a probe says so)."""
        entry = self._entries.get(address)
        if entry is not None:
            entry.ready = False
            self.failed(address, now)

    def succeeded(self, address: str) -> None:
        """A call was answered: the node is up."""
        entry = self._entries.get(address)
        if entry is not None:
            entry.failures = 0
            entry.down_until = -math.inf

    def started(self, address: str) -> None:
        """A call is sent to the node."""
        entry = self._entries.get(address)
        if entry is not None:
            entry.inflight += 1

    def finished(self, address: str) -> None:
        """A call to the node ended (whatever its outcome)."""
        entry = self._entries.get(address)
        if entry is not None and entry.inflight > 0:
            entry.inflight -= 1

    def ranked(self, now: float, random: Random) -> list[str]:
        """Every member's address, best first (see the module docstring)."""
        up = [e for e in self._entries.values() if e.down_until <= now]
        ready = [e for e in up if e.ready is True]
        known = [e.latency for e in ready if e.latency is not None]
        limit = (
            math.inf
            if not known
            else min(known) * self.settings.fast_factor + self.settings.fast_slack
        )
        fast = [e for e in ready if e.latency is None or e.latency <= limit]
        slow = sorted((e for e in ready if e not in fast), key=lambda e: e.latency or 0.0)
        jitter = {e.member.address: random() for e in fast}
        fast.sort(key=lambda e: (e.inflight, jitter[e.member.address]))
        unknown = [e for e in up if e.ready is None]
        unready = [e for e in up if e.ready is False]
        down = sorted(
            (e for e in self._entries.values() if e.down_until > now), key=lambda e: e.down_until
        )
        return [e.member.address for e in (*fast, *slow, *unknown, *unready, *down)]

    def view(self, now: float) -> tuple[NodeView, ...]:
        """What is known of every node, in address order."""
        return tuple(
            NodeView(
                address=e.member.address,
                wallet=e.member.wallet,
                ready=e.ready,
                latency=e.latency,
                down=e.down_until > now,
                failures=e.failures,
                inflight=e.inflight,
            )
            for _, e in sorted(self._entries.items())
        )


# --- one call ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Bounds of one call.

    Attributes:
        max_attempts: attempts in all (over every node and round).
        deadline: seconds from the call's start after which no attempt or wait starts.
        backoff_base, backoff_cap: the wait before round ``r`` (r >= 1, every node tried
            ``r`` times) is uniform in [0, min(cap, base * 2^(r-1))).
    """

    max_attempts: int = 6
    deadline: float = 30.0
    backoff_base: float = 0.05
    backoff_cap: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not self.deadline > 0 or self.backoff_base < 0 or self.backoff_cap < 0:
            raise ValueError("deadline must be > 0, backoff values >= 0")


def backoff_delay(round_: int, policy: RetryPolicy, random: Random) -> float:
    """The jittered wait before round ``round_`` (0 for the first round).

    Args:
        round_: 0 for the first pass over the nodes, 1 for the second, …
        policy: the bounds.
        random: a float in [0, 1).

    Returns:
        Seconds: ``random() * min(cap, base * 2^(round_-1))``.
    """
    if round_ <= 0:
        return 0.0
    ceiling = min(policy.backoff_cap, policy.backoff_base * 2.0 ** min(round_ - 1, 60))
    return float(random() * ceiling)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do after a failed attempt.

    Attributes:
        retry: try again (another node, or the same after a backoff).
        node: what the failure says of the node: ``"down"`` (penalize it), ``"not_ready"``
            (it answered ``unavailable``) or ``"fine"`` (the answer is the call's result).
        maybe_ran: the request may have run on the node (sent, and no answer came back).
    """

    retry: bool
    node: Literal["down", "not_ready", "fine"]
    maybe_ran: bool


def judge(error: NovaKMSError, *, safety: Safety, sent: bool, answered: bool) -> Verdict:
    """Decide on one failed attempt (see the module docstring).

    Args:
        error: what the attempt raised.
        safety: the op's :func:`op_safety`.
        sent: the request may have left this process (False: the dial or handshake failed,
            or the connection was known broken before the call).
        answered: the node answered the request with an error and the connection lives.

    Returns:
        The verdict.
    """
    if not sent:
        # Nothing left this process: any other node may do. Only a refusal of the caller
        # itself (its wallet, its app) would be the same everywhere.
        caller_refused = isinstance(error, Unauthenticated | Forbidden)
        return Verdict(
            retry=not caller_refused, node="fine" if caller_refused else "down", maybe_ran=False
        )
    if answered:
        if not isinstance(error, Unavailable) or error.reason == "acks_timeout":
            return Verdict(retry=False, node="fine", maybe_ran=False)
        retry = safety != "unsafe" or error.reason in REFUSED_BEFORE_RUNNING
        return Verdict(retry=retry, node="not_ready", maybe_ran=False)
    return Verdict(retry=safety != "unsafe", node="down", maybe_ran=True)


def is_answer(error: NovaKMSError, *, connection_usable: bool) -> bool:
    """Whether an error raised by a call is the node's answer to it.

    Args:
        error: what the call raised.
        connection_usable: the connection still works (a close notice or a lost connection
            makes it unusable: then no answer to this request came).

    Returns:
        True for an error response (a :class:`RequestError` other than this side's transport
        and chain errors) on a connection that lives.
    """
    local = isinstance(error, TransportError | ChainError)
    return connection_usable and isinstance(error, RequestError) and not local


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of a call.

    Attributes:
        node: the node's address.
        error: what it raised; None when it returned the call's result.
        sent: the request may have left this process.
        answered: the node answered (a result, or an error response).
    """

    node: str
    error: NovaKMSError | None
    sent: bool
    answered: bool


@dataclass(frozen=True, slots=True)
class CallTrace:
    """How one call went: its attempts, in order.

    Attributes:
        op: the op name.
        attempts: every attempt (empty when no node could be tried).
    """

    op: str
    attempts: tuple[AttemptRecord, ...]

    @property
    def answered_by(self) -> str | None:
        """The node whose answer (result or error response) the call returned or raised;
        None when the last attempt had no answer."""
        if not self.attempts or not self.attempts[-1].answered:
            return None
        return self.attempts[-1].node

    @property
    def nodes(self) -> tuple[str, ...]:
        """The nodes tried, in order (a node may appear once per round)."""
        return tuple(a.node for a in self.attempts)


@dataclass(frozen=True, slots=True)
class Step:
    """The next attempt: the node, after waiting ``delay`` seconds."""

    node: str
    delay: float


@dataclass(slots=True)
class CallPlan:
    """The attempts of one call.

    Args:
        op: the op name.
        safety: the op's :func:`op_safety`.
        policy: the bounds.
        start: the call's start (monotonic seconds).
    """

    op: str
    safety: Safety
    policy: RetryPolicy
    start: float
    _attempts: list[AttemptRecord] = field(default_factory=list)
    _tried: set[str] = field(default_factory=set)
    _round: int = 0
    _maybe_ran: bool = False
    _error: NovaKMSError | None = None
    _done: bool = False

    def next(self, ranked: Sequence[str], now: float, random: Random) -> Step | None:
        """The next attempt, or None when the call must end (then raise :meth:`error`).

        Args:
            ranked: the members, best first (:meth:`NodeTable.ranked`).
            now: monotonic seconds.
            random: a float in [0, 1), for the backoff.
        """
        if self._done or not ranked or len(self._attempts) >= self.policy.max_attempts:
            return None
        fresh = [a for a in ranked if a not in self._tried]
        delay = 0.0
        if not fresh:
            self._round += 1
            self._tried.clear()
            fresh = list(ranked)
            delay = backoff_delay(self._round, self.policy, random)
        if now + delay >= self.start + self.policy.deadline:
            return None
        self._tried.add(fresh[0])
        return Step(node=fresh[0], delay=delay)

    def failed(self, node: str, error: NovaKMSError, *, sent: bool, answered: bool) -> Verdict:
        """Record a failed attempt; the verdict says whether to go on."""
        verdict = judge(error, safety=self.safety, sent=sent, answered=answered)
        self._attempts.append(AttemptRecord(node, error, sent, answered))
        self._maybe_ran = self._maybe_ran or verdict.maybe_ran
        self._error = error
        self._done = not verdict.retry
        return verdict

    def succeeded(self, node: str) -> None:
        """Record the attempt that returned the call's result."""
        self._attempts.append(AttemptRecord(node, None, True, True))
        self._error = None
        self._done = True

    def error(self) -> NovaKMSError:
        """The error the call raises: the last attempt's (see the module docstring for
        ``outcome: unknown``), or ``unavailable`` / ``no_nodes`` when no node was tried."""
        error = self._error
        if error is None:
            return Unavailable(f"{self.op}: no KMS node to call", reason="no_nodes")
        lost = isinstance(error, Conflict | NotFound)
        if self._maybe_ran and self.safety == "conditional" and lost:
            message = (
                f"{error.message} (an earlier attempt of this {self.op}, whose answer was lost,"
                " may have applied it: read the key to know)"
            )
            return type(error)(message, **{**error.details, "outcome": "unknown"})
        return error

    def trace(self) -> CallTrace:
        """The attempts so far."""
        return CallTrace(self.op, tuple(self._attempts))


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSettings:
    """Timing of a cluster client (both the trio and the blocking one).

    Attributes:
        attempt_timeout: seconds for one dial (connect + handshake) and for one attempt of a
            call; a paused node costs a call at most this before it goes elsewhere.
        probe_interval: seconds between probes of every node (``health`` latency, ``status``
            readiness).
        membership_interval: seconds between reads of the membership from the chain (a
            static list is never re-read).
        retry: the bounds of one call.
        table: ranking and penalties.
    """

    attempt_timeout: float = 5.0
    probe_interval: float = 5.0
    membership_interval: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    table: TableSettings = field(default_factory=TableSettings)

    def __post_init__(self) -> None:
        for name in ("attempt_timeout", "probe_interval", "membership_interval"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
