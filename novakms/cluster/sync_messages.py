"""The ``sync.*`` conversation between peers: typed requests and answers, parsed strictly.

Pure (sans-I/O): no trio, sockets, clock or RNG. Both ends go through this module: the peer
handlers (``novakms.server.ops.cluster.op_sync_*``) parse requests with the ``parse_*_request``
functions, which raise :class:`~novakms.errors.BadRequest` (answered, the connection stays);
the replicator parses every answer with the ``parse_*_answer`` functions, which raise
:class:`~novakms.errors.ProtocolError` — a proven peer that answers out of protocol is broken
or hostile, and the replicator drops that link, backs off and counts it
(``status.cluster.peers[].protocol_errors``), never crashes.

Parsing is exact: the answer is a map with exactly the documented keys, integers are ``int``
(never ``bool``), byte strings have their documented length, indexes are in range, and every
answer that continues a conversation (``sync.pull`` ``remaining``, ``sync.snapshot`` ``next``)
makes progress, so a peer cannot keep a link in an endless loop. Records inside answers are
left to :func:`novakms.cluster.replication.record_from_wire`, which refuses them one by one.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

from novakms.errors import BadRequest, ProtocolError

__all__ = [
    "DIGEST_BYTES",
    "ENVELOPE_BYTES",
    "PEER_STATES",
    "SYNC_BUCKETS",
    "BucketsAnswer",
    "DigestsAnswer",
    "ForgetAnswer",
    "ForgetRequest",
    "HelloAnswer",
    "KeysAnswer",
    "KeysRequest",
    "PeerInfo",
    "PullAnswer",
    "PullRequest",
    "PushAnswer",
    "ResumePoint",
    "SnapshotAnswer",
    "TombstoneId",
    "frame_budget",
    "parse_app_request",
    "parse_buckets_answer",
    "parse_digests_answer",
    "parse_digests_request",
    "parse_forget_answer",
    "parse_forget_request",
    "parse_hello_answer",
    "parse_hello_request",
    "parse_keys_answer",
    "parse_keys_request",
    "parse_pull_answer",
    "parse_pull_request",
    "parse_push_answer",
    "parse_push_request",
    "parse_snapshot_answer",
    "parse_snapshot_request",
    "parse_store_total",
]

SYNC_BUCKETS: Final = 64
"""Anti-entropy buckets per app (``sync.buckets`` answers exactly this many digests)."""

ENVELOPE_BYTES: Final = 1024
"""Bytes of a frame reserved for the message around a batch (op, id, app id, resume key)."""

DIGEST_BYTES: Final = 32
PROOF_BYTES: Final = 32
BOOT_BYTES: Final = 16
PEER_STATES: Final = frozenset({"syncing", "degraded", "serving"})
"""What a node tells its peers about its own data (``status.catch_up.state``)."""
_UINT64_MAX: Final = (1 << 64) - 1

ResumePoint = tuple[int, str]
TombstoneId = tuple[int, str, int, str]


def new_boot(start_ns: int, nonce: bytes) -> bytes:
    """A process lifetime's ``boot``: its start time (ns, big-endian), then random bytes.

    One node's boots sort in start order, which the consensus fence relies on (PROTOCOL §8 `cas.*`).
    """
    if len(nonce) != BOOT_BYTES - 8:
        raise ValueError(f"a boot nonce is {BOOT_BYTES - 8} bytes")
    return start_ns.to_bytes(8, "big") + nonce


def frame_budget(max_frame: int) -> int:
    """Bytes of one frame available for the items of a ``sync.*`` message (requests and answers).

    Raises:
        ValueError: ``max_frame`` leaves no room beyond :data:`ENVELOPE_BYTES`.
    """
    budget = max_frame - ENVELOPE_BYTES
    if budget < 1:
        raise ValueError(f"max_frame must exceed the {ENVELOPE_BYTES}-byte envelope allowance")
    return budget


# --------------------------------------------------------------------------------------------
# Typed answers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What a peer says about itself in ``sync.hello`` and ``sync.digests``.

    ``boot`` identifies the peer's process lifetime (random per start: a new one means the peer
    restarted and lost its memory); ``state`` is its catch-up state. Both are None from a node
    that predates them (rolling upgrades); ``boot`` is None in ``sync.digests``.
    """

    boot: bytes | None
    state: str | None


UNKNOWN_PEER: Final = PeerInfo(None, None)


@dataclass(frozen=True, slots=True)
class HelloAnswer:
    proof: bytes
    info: PeerInfo = UNKNOWN_PEER


@dataclass(frozen=True, slots=True)
class PushAnswer:
    accepted: int
    rejected: tuple[int, ...]  # ascending indexes into the pushed batch: invalid, dropped
    deferred: tuple[int, ...]  # ascending indexes: over the receiver's quota, to be resent


@dataclass(frozen=True, slots=True)
class DigestsAnswer:
    apps: tuple[tuple[int, bytes], ...]  # ascending app ids
    state: str | None = None  # the peer's catch-up state (None from an older node)


@dataclass(frozen=True, slots=True)
class BucketsAnswer:
    buckets: tuple[bytes, ...]  # exactly SYNC_BUCKETS digests


@dataclass(frozen=True, slots=True)
class KeysAnswer:
    keys: tuple[tuple[str, bytes], ...]
    truncated: bool


@dataclass(frozen=True, slots=True)
class PullAnswer:
    records: tuple[object, ...]  # each checked by replication.record_from_wire
    remaining: tuple[str, ...]  # a strict suffix of the requested keys


@dataclass(frozen=True, slots=True)
class SnapshotAnswer:
    records: tuple[object, ...]
    next: ResumePoint | None  # after the request's resume point


@dataclass(frozen=True, slots=True)
class ForgetAnswer:
    forgotten: int
    kept: tuple[TombstoneId, ...]  # a subset of the sent tombstones


# --------------------------------------------------------------------------------------------
# Shared checks
# --------------------------------------------------------------------------------------------


def _uint(value: object, minimum: int = 0) -> TypeGuard[int]:
    # ``type is int`` also refuses bool, an int subclass.
    return type(value) is int and minimum <= value <= _UINT64_MAX


def _digest(value: object) -> TypeGuard[bytes]:
    return type(value) is bytes and len(value) == DIGEST_BYTES


def _answer(op: str, answer: object, keys: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(answer, Mapping):
        raise ProtocolError(f"{op} answer is not a map")
    if set(answer) != keys:
        raise ProtocolError(f"{op} answer must have exactly the keys {sorted(keys)}")
    return answer


def _list(op: str, name: str, value: object) -> list[Any]:
    if type(value) is not list:
        raise ProtocolError(f"{op} answer: {name} must be an array")
    return value


def _resume(value: object) -> ResumePoint | None:
    """``[app_id, key]`` or None; raises ValueError when neither."""
    if value is None:
        return None
    if type(value) is list and len(value) == 2 and _uint(value[0], 1) and type(value[1]) is str:
        return (value[0], value[1])
    raise ValueError("a resume point is null or [app_id, key]")


def _tombstone(value: object) -> TombstoneId:
    """``[app_id, key, hlc, writer]``; raises ValueError otherwise."""
    if (
        type(value) is list
        and len(value) == 4
        and _uint(value[0], 1)
        and type(value[1]) is str
        and _uint(value[2])
        and type(value[3]) is str
    ):
        return (value[0], value[1], value[2], value[3])
    raise ValueError("a tombstone is [app_id, key, hlc, writer]")


# --------------------------------------------------------------------------------------------
# Answers (the replicator's side): ProtocolError on anything out of protocol
# --------------------------------------------------------------------------------------------


def _peer_info(args: Mapping[str, Any]) -> PeerInfo:
    """``boot`` and ``state`` (both or neither); raises ValueError when out of shape."""
    if "boot" not in args and "state" not in args:
        return UNKNOWN_PEER  # a node that predates them
    boot, state = args.get("boot"), args.get("state")
    if type(boot) is not bytes or len(boot) != BOOT_BYTES:
        raise ValueError(f"boot must be {BOOT_BYTES} bytes")
    return PeerInfo(boot, _state(state))


def _state(value: object) -> str:
    if type(value) is not str or value not in PEER_STATES:
        raise ValueError(f"state must be one of {sorted(PEER_STATES)}")
    return value


def parse_hello_answer(answer: object) -> HelloAnswer:
    if isinstance(answer, Mapping) and set(answer) == {"proof"}:
        answer = {**answer, "boot": None, "state": None}  # a node that predates them
    body = _answer("sync.hello", answer, frozenset({"proof", "boot", "state"}))
    proof = body["proof"]
    if type(proof) is not bytes or len(proof) != PROOF_BYTES:
        raise ProtocolError(f"sync.hello answer: proof must be {PROOF_BYTES} bytes")
    if body["boot"] is None and body["state"] is None:
        return HelloAnswer(proof)
    try:
        info = _peer_info(body)
    except ValueError as exc:
        raise ProtocolError(f"sync.hello answer: {exc}") from None
    return HelloAnswer(proof, info)


def parse_push_answer(answer: object, *, batch: int) -> PushAnswer:
    """The acknowledgement of a batch of ``batch`` records."""
    if isinstance(answer, Mapping) and "deferred" not in answer:
        # A node from before quotas applied to merges (rolling upgrades): nothing deferred.
        answer = {**answer, "deferred": []}
    body = _answer("sync.push", answer, frozenset({"accepted", "rejected", "deferred"}))
    lists: list[list[int]] = []
    for name in ("rejected", "deferred"):
        indexes = _list("sync.push", name, body[name])
        if not all(_uint(i) and i < batch for i in indexes):
            raise ProtocolError(f"sync.push answer: {name} indexes must be in 0..{batch - 1}")
        if any(a >= b for a, b in itertools.pairwise(indexes)):
            raise ProtocolError(f"sync.push answer: {name} indexes must ascend without repeats")
        lists.append(indexes)
    rejected, deferred = lists
    if set(rejected) & set(deferred):
        raise ProtocolError("sync.push answer: a record is both rejected and deferred")
    accepted = body["accepted"]
    if not _uint(accepted) or accepted != batch - len(rejected) - len(deferred):
        raise ProtocolError("sync.push answer: accepted must count the other records")
    return PushAnswer(accepted, tuple(rejected), tuple(deferred))


def parse_digests_answer(answer: object) -> DigestsAnswer:
    if isinstance(answer, Mapping) and set(answer) == {"apps"}:
        answer = {**answer, "state": None}  # a node that predates it
    body = _answer("sync.digests", answer, frozenset({"apps", "state"}))
    state = None
    if body["state"] is not None:
        try:
            state = _state(body["state"])
        except ValueError as exc:
            raise ProtocolError(f"sync.digests answer: {exc}") from None
    apps: list[tuple[int, bytes]] = []
    for entry in _list("sync.digests", "apps", body["apps"]):
        if not (type(entry) is list and len(entry) == 2 and _uint(entry[0], 1)):
            raise ProtocolError("sync.digests answer: an entry is [app_id, digest]")
        if not _digest(entry[1]):
            raise ProtocolError(f"sync.digests answer: digests are {DIGEST_BYTES} bytes")
        if apps and entry[0] <= apps[-1][0]:
            raise ProtocolError("sync.digests answer: app ids must ascend without repeats")
        apps.append((entry[0], entry[1]))
    return DigestsAnswer(tuple(apps), state)


def parse_buckets_answer(answer: object) -> BucketsAnswer:
    body = _answer("sync.buckets", answer, frozenset({"buckets"}))
    buckets = _list("sync.buckets", "buckets", body["buckets"])
    if len(buckets) != SYNC_BUCKETS or not all(_digest(b) for b in buckets):
        raise ProtocolError(
            f"sync.buckets answer: buckets are {SYNC_BUCKETS} digests of {DIGEST_BYTES} bytes"
        )
    return BucketsAnswer(tuple(buckets))


def parse_keys_answer(answer: object) -> KeysAnswer:
    body = _answer("sync.keys", answer, frozenset({"keys", "truncated"}))
    truncated = body["truncated"]
    if type(truncated) is not bool:
        raise ProtocolError("sync.keys answer: truncated must be a boolean")
    keys: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for entry in _list("sync.keys", "keys", body["keys"]):
        if not (type(entry) is list and len(entry) == 2 and type(entry[0]) is str):
            raise ProtocolError("sync.keys answer: an entry is [key, digest]")
        if not _digest(entry[1]):
            raise ProtocolError(f"sync.keys answer: digests are {DIGEST_BYTES} bytes")
        if entry[0] in seen:
            raise ProtocolError("sync.keys answer: a key is listed twice")
        seen.add(entry[0])
        keys.append((entry[0], entry[1]))
    return KeysAnswer(tuple(keys), truncated)


def parse_pull_answer(answer: object, *, requested: Sequence[str]) -> PullAnswer:
    """The answer to ``sync.pull`` of ``requested`` keys (``remaining`` must be a strict suffix,
    so that every pull makes progress)."""
    body = _answer("sync.pull", answer, frozenset({"records", "remaining"}))
    records = _list("sync.pull", "records", body["records"])
    remaining = _list("sync.pull", "remaining", body["remaining"])
    if remaining and (
        len(remaining) >= len(requested) or remaining != list(requested[-len(remaining) :])
    ):
        raise ProtocolError("sync.pull answer: remaining must be a strict suffix of the keys")
    return PullAnswer(tuple(records), tuple(remaining))


def parse_snapshot_answer(answer: object, *, after: ResumePoint | None) -> SnapshotAnswer:
    """The answer to ``sync.snapshot`` after ``after`` (``next`` must lie beyond it)."""
    body = _answer("sync.snapshot", answer, frozenset({"records", "next"}))
    records = _list("sync.snapshot", "records", body["records"])
    try:
        following = _resume(body["next"])
    except ValueError:
        raise ProtocolError("sync.snapshot answer: next must be null or [app_id, key]") from None
    if following is not None and (not records or (after is not None and following <= after)):
        raise ProtocolError("sync.snapshot answer: next must follow the resume point")
    return SnapshotAnswer(tuple(records), following)


def parse_store_total(answer: object) -> int:
    """How many records a peer's ``status`` says it stores (live, expired and tombstones).

    The joiner reads it before its snapshot, as the snapshot's expected size (progress only).
    """
    store = answer.get("store") if isinstance(answer, Mapping) else None
    if not isinstance(store, Mapping):
        raise ProtocolError("status answer: store must be a map")
    counts = [store.get("live"), store.get("tombstones")]
    if not all(type(count) is int and count >= 0 for count in counts):
        raise ProtocolError("status answer: store.live and store.tombstones must be uints")
    return sum(counts)  # type: ignore[arg-type]


def parse_forget_answer(answer: object, *, sent: Sequence[TombstoneId]) -> ForgetAnswer:
    """The answer to ``sync.forget`` of the ``sent`` tombstones (``kept`` must be among them)."""
    body = _answer("sync.forget", answer, frozenset({"forgotten", "kept"}))
    forgotten = body["forgotten"]
    if not _uint(forgotten) or forgotten > len(sent):
        raise ProtocolError("sync.forget answer: forgotten must be 0..the tombstones sent")
    known = set(sent)
    kept: list[TombstoneId] = []
    for entry in _list("sync.forget", "kept", body["kept"]):
        try:
            tid = _tombstone(entry)
        except ValueError as exc:
            raise ProtocolError(f"sync.forget answer: {exc}") from None
        if tid not in known:
            raise ProtocolError("sync.forget answer: kept a tombstone that was not sent")
        kept.append(tid)
    return ForgetAnswer(forgotten, tuple(kept))


# --------------------------------------------------------------------------------------------
# Requests (the handlers' side): BadRequest on anything out of protocol
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeysRequest:
    app_id: int
    buckets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PullRequest:
    app_id: int
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ForgetRequest:
    tombstones: tuple[TombstoneId, ...]
    dry_run: bool


def _request(op: str, args: Mapping[str, Any], required: set[str], optional: set[str]) -> None:
    unknown = set(args) - required - optional
    if unknown:
        raise BadRequest(f"unknown arguments: {sorted(unknown)}")
    missing = required - set(args)
    if missing:
        raise BadRequest(f"{op}: missing arguments {sorted(missing)}")


def _app_id(args: Mapping[str, Any]) -> int:
    app_id = args["app_id"]
    if not _uint(app_id, 1):
        raise BadRequest("app_id must be an integer in 1..18446744073709551615")
    return app_id


def parse_hello_request(args: Mapping[str, Any]) -> tuple[bytes, PeerInfo]:
    """The dialer's proof, and what it says about itself."""
    _request("sync.hello", args, {"proof"}, {"boot", "state"})
    proof = args["proof"]
    if type(proof) is not bytes:
        raise BadRequest("proof must be bytes")
    try:
        return proof, _peer_info(args)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def parse_digests_request(args: Mapping[str, Any]) -> str | None:
    """The caller's catch-up state (None from a node that predates it)."""
    _request("sync.digests", args, set(), {"state"})
    if "state" not in args:
        return None
    try:
        return _state(args["state"])
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def parse_push_request(args: Mapping[str, Any]) -> list[object]:
    """The pushed records (each checked by ``replication.record_from_wire``)."""
    _request("sync.push", args, {"records"}, set())
    records = args["records"]
    if type(records) is not list:
        raise BadRequest("records must be an array")
    return records


def parse_snapshot_request(args: Mapping[str, Any]) -> ResumePoint | None:
    _request("sync.snapshot", args, set(), {"after"})
    try:
        return _resume(args.get("after"))
    except ValueError:
        raise BadRequest("after must be null or [app_id, key]") from None


def parse_forget_request(args: Mapping[str, Any]) -> ForgetRequest:
    _request("sync.forget", args, {"tombstones"}, {"dry_run"})
    raw = args["tombstones"]
    if type(raw) is not list:
        raise BadRequest("tombstones must be an array")
    try:
        ids = tuple(_tombstone(item) for item in raw)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    dry_run = args.get("dry_run", False)
    if type(dry_run) is not bool:
        raise BadRequest("dry_run must be a boolean")
    return ForgetRequest(ids, dry_run)


def parse_app_request(op: str, args: Mapping[str, Any]) -> int:
    """``sync.buckets``: the app id."""
    _request(op, args, {"app_id"}, set())
    return _app_id(args)


def parse_keys_request(args: Mapping[str, Any]) -> KeysRequest:
    _request("sync.keys", args, {"app_id", "buckets"}, set())
    app_id = _app_id(args)
    wanted = args["buckets"]
    if type(wanted) is not list or not all(_uint(b) and b < SYNC_BUCKETS for b in wanted):
        raise BadRequest(f"buckets must be an array of integers in 0..{SYNC_BUCKETS - 1}")
    return KeysRequest(app_id, tuple(wanted))


def parse_pull_request(args: Mapping[str, Any]) -> PullRequest:
    _request("sync.pull", args, {"app_id", "keys"}, set())
    app_id = _app_id(args)
    keys = args["keys"]
    if type(keys) is not list or not all(type(k) is str for k in keys):
        raise BadRequest("keys must be an array of texts")
    return PullRequest(app_id, tuple(keys))
