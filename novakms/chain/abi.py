"""ABI encoding and decoding from the project's compiled artifacts (pure: no I/O beyond reading
the packaged artifact files).

Selectors, event topics and types all come from ``novakms/chain/artifacts/*.json``, which the
``contracts`` nox session generates from ``contracts/src``; nothing here is hand-written hex.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode

from novakms.auth.cache import ChainEvent
from novakms.auth.model import App, AppStatus, AppVersion, Instance, InstanceStatus, VersionStatus
from novakms.crypto.eth import keccak256

__all__ = [
    "Contract",
    "RevertError",
    "app_from_tuple",
    "decode_revert",
    "instance_from_tuple",
    "kms_registry",
    "nova_app_registry",
    "version_from_tuple",
]


def _type_string(param: dict[str, Any]) -> str:
    """The canonical type of an ABI parameter (tuples spelled out, array suffixes kept)."""
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_type_string(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


@dataclass(frozen=True, slots=True)
class _Function:
    name: str
    selector: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Event:
    name: str
    topic: bytes
    indexed: tuple[tuple[str, str], ...]  # (name, type) in order
    data: tuple[tuple[str, str], ...]


class Contract:
    """One contract's ABI (and bytecode, for deployment tooling).

    Args:
        name: contract name (for messages).
        abi: the ABI list.
        bytecode: creation bytecode, if known.
    """

    def __init__(self, name: str, abi: list[dict[str, Any]], bytecode: bytes = b"") -> None:
        self.name = name
        self.abi = abi
        self.bytecode = bytecode
        self._functions: dict[str, _Function] = {}
        self._events: dict[bytes, _Event] = {}
        self._errors: dict[bytes, tuple[str, tuple[str, ...]]] = {}
        for item in abi:
            if item.get("type") == "function":
                inputs = tuple(_type_string(p) for p in item["inputs"])
                outputs = tuple(_type_string(p) for p in item.get("outputs", []))
                signature = f"{item['name']}({','.join(inputs)})"
                self._functions[item["name"]] = _Function(
                    item["name"], keccak256(signature.encode())[:4], inputs, outputs
                )
            elif item.get("type") == "error":
                inputs = tuple(_type_string(p) for p in item["inputs"])
                signature = f"{item['name']}({','.join(inputs)})"
                self._errors[keccak256(signature.encode())[:4]] = (item["name"], inputs)
            elif item.get("type") == "event" and not item.get("anonymous"):
                params = item["inputs"]
                signature = f"{item['name']}({','.join(_type_string(p) for p in params)})"
                self._events[keccak256(signature.encode())] = _Event(
                    item["name"],
                    keccak256(signature.encode()),
                    tuple((p["name"], _type_string(p)) for p in params if p.get("indexed")),
                    tuple((p["name"], _type_string(p)) for p in params if not p.get("indexed")),
                )

    @classmethod
    def from_artifact(cls, name: str) -> Contract:
        """Load a packaged artifact (``novakms/chain/artifacts/<name>.json``)."""
        text = resources.files("novakms.chain").joinpath("artifacts", f"{name}.json").read_text()
        data = json.loads(text)
        return cls(
            name, data["abi"], bytes.fromhex(str(data.get("bytecode", "")).removeprefix("0x"))
        )

    def encode_call(self, function: str, *args: Any) -> bytes:
        """Calldata for ``function(*args)``.

        Raises:
            KeyError: no such function in the ABI.
        """
        fn = self._functions[function]
        return fn.selector + abi_encode(list(fn.inputs), list(args))

    def decode_result(self, function: str, data: bytes) -> tuple[Any, ...]:
        """Decode a call's return data.

        Raises:
            ValueError: the data does not decode as the ABI says (a garbage or wrong contract).
        """
        fn = self._functions[function]
        try:
            return tuple(abi_decode(list(fn.outputs), data, strict=False))
        except Exception as exc:  # eth_abi raises several unrelated types on bad input
            raise ValueError(f"{self.name}.{function} returned undecodable data") from exc

    @property
    def errors(self) -> dict[bytes, tuple[str, tuple[str, ...]]]:
        """This ABI's custom errors: selector -> (name, canonical argument types)."""
        return dict(self._errors)

    def describe_error(self, data: bytes | None) -> str | None:
        """A custom error of this contract as text, e.g. ``DuplicateGuardian(0xab…)``.

        Returns:
            ``Name(arg, …)`` (addresses lowercase, bytes as ``0x`` hex), or None when the data
            is not one of this ABI's errors.
        """
        if data is None or len(data) < 4 or bytes(data[:4]) not in self._errors:
            return None
        name, types = self._errors[bytes(data[:4])]
        decoded = _decode_error(name, types, bytes(data[4:]), (self.name,))
        return None if decoded is None else str(decoded)

    def encode_constructor(self, *args: Any) -> bytes:
        """Creation code with ABI-encoded constructor arguments appended."""
        ctor = next((i for i in self.abi if i.get("type") == "constructor"), None)
        types = [] if ctor is None else [_type_string(p) for p in ctor["inputs"]]
        return self.bytecode + (abi_encode(types, list(args)) if types else b"")

    def topics(self, *names: str) -> list[bytes]:
        """topic0 values of the named events (all events when no name is given)."""
        return [e.topic for e in self._events.values() if not names or e.name in names]

    def decode_log(self, log: dict[str, Any]) -> ChainEvent | None:
        """Decode one ``eth_getLogs`` entry; None for events this ABI does not know.

        Raises:
            ValueError: a known event whose data does not decode.
        """
        topics = [bytes.fromhex(str(t).removeprefix("0x")) for t in log.get("topics", [])]
        if not topics or topics[0] not in self._events:
            return None
        event = self._events[topics[0]]
        if len(topics) - 1 != len(event.indexed):
            raise ValueError(f"{event.name}: wrong number of indexed topics")
        args: dict[str, Any] = {}
        try:
            for (name, kind), topic in zip(event.indexed, topics[1:], strict=True):
                # Dynamic indexed values are hashed; the registries index only static types.
                args[name] = abi_decode([kind], topic)[0]
            data = bytes.fromhex(str(log.get("data", "0x")).removeprefix("0x"))
            values = abi_decode([k for _, k in event.data], data, strict=False)
        except Exception as exc:
            raise ValueError(f"{event.name}: undecodable log") from exc
        args.update({name: value for (name, _), value in zip(event.data, values, strict=True)})
        for key, value in args.items():
            if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
                args[key] = value.lower()
        return ChainEvent(
            name=event.name,
            args=args,
            block=int(str(log["blockNumber"]), 16),
            log_index=int(str(log.get("logIndex", "0x0")), 16),
        )


# --- revert data -> error -------------------------------------------------------------------

_SOLIDITY_ERRORS: dict[bytes, tuple[str, tuple[str, ...]]] = {
    keccak256(b"Error(string)")[:4]: ("Error", ("string",)),  # require(…, "text"), revert("text")
    keccak256(b"Panic(uint256)")[:4]: ("Panic", ("uint256",)),  # assert, overflow, …
}


@dataclass(frozen=True, slots=True)
class RevertError:
    """A decoded revert: a packaged contract's custom error, or Solidity's ``Error(string)`` or
    ``Panic(uint256)``.

    Attributes:
        name: the error's name (``InvalidStatusTransition``, ``Error``, ``Panic``).
        types: the canonical argument types, in order (``("uint8", "uint8")``).
        args: the decoded arguments, in order (addresses lowercase ``0x`` text, ``bytesN`` as
            bytes, integers as int, strings as str).
        contracts: the artifacts that declare it (several may, e.g. ``ZeroAddress()``); empty
            for ``Error`` and ``Panic``.
    """

    name: str
    types: tuple[str, ...]
    args: tuple[Any, ...]
    contracts: tuple[str, ...] = ()

    @property
    def signature(self) -> str:
        """``Name(type,…)``, whose keccak256 starts with the selector."""
        return f"{self.name}({','.join(self.types)})"

    @property
    def is_custom(self) -> bool:
        """Whether this is a contract's custom error (not ``Error`` / ``Panic``)."""
        return bool(self.contracts)

    def __str__(self) -> str:
        """``Name(arg, …)``: bytes as ``0x`` hex, strings JSON-quoted, numbers in decimal."""

        def text(kind: str, value: Any) -> str:
            if isinstance(value, bytes):
                return "0x" + value.hex()
            if kind == "string":
                return json.dumps(value)
            return str(value)

        args = ", ".join(text(k, v) for k, v in zip(self.types, self.args, strict=True))
        return f"{self.name}({args})"


def _decode_error(
    name: str, types: tuple[str, ...], payload: bytes, contracts: tuple[str, ...]
) -> RevertError | None:
    try:
        values = abi_decode(list(types), payload)
    except Exception:  # eth_abi raises several unrelated types on bad input
        return None
    args = tuple(
        v.lower() if t == "address" and isinstance(v, str) else v
        for t, v in zip(types, values, strict=True)
    )
    return RevertError(name, types, args, contracts)


@cache
def _packaged_errors() -> dict[bytes, tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """selector -> (name, types, declaring artifacts) over every packaged artifact."""
    table: dict[bytes, tuple[str, tuple[str, ...], tuple[str, ...]]] = {}
    folder = resources.files("novakms.chain").joinpath("artifacts")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        contract = Contract.from_artifact(entry.name.removesuffix(".json"))
        for selector, (name, types) in contract.errors.items():
            _, _, declared = table.get(selector, (name, types, ()))
            table[selector] = (name, types, (*declared, contract.name))
    return table


def decode_revert(data: bytes | None) -> RevertError | None:
    """Decode revert data by the packaged contract ABIs (``novakms/chain/artifacts``).

    Args:
        data: the revert bytes (a 4-byte selector and the ABI-encoded arguments).

    Returns:
        The error: a custom error of any packaged contract, ``Error(string)`` or
        ``Panic(uint256)``; None for empty data, an unknown selector, or arguments that do not
        decode as the ABI says.
    """
    if data is None or len(data) < 4:
        return None
    selector, payload = bytes(data[:4]), bytes(data[4:])
    if selector in _SOLIDITY_ERRORS:
        name, types = _SOLIDITY_ERRORS[selector]
        return _decode_error(name, types, payload, ())
    known = _packaged_errors().get(selector)
    if known is None:
        return None
    name, types, contracts = known
    return _decode_error(name, types, payload, contracts)


@cache
def nova_app_registry() -> Contract:
    """The (development) NovaAppRegistry ABI; its views and events match the platform's."""
    return Contract.from_artifact("DevNovaAppRegistry")


@cache
def kms_registry() -> Contract:
    """The KMSRegistry ABI."""
    return Contract.from_artifact("KMSRegistry")


# --- registry structs -> model records (field order per shared/NOVA_APP_REGISTRY.md) ----------


def app_from_tuple(t: tuple[Any, ...]) -> App | None:
    """An App struct (later platform versions append ``appWallet``: extra fields are ignored)."""
    app_id, owner, status = int(t[0]), str(t[1]).lower(), int(t[7])
    return None if app_id == 0 else App(app_id=app_id, owner=owner, status=AppStatus(status))


def version_from_tuple(app_id: int, t: tuple[Any, ...]) -> AppVersion | None:
    """An AppVersion struct (versionId 0 means "no such version")."""
    version_id, status = int(t[0]), int(t[7])
    return (
        None
        if version_id == 0
        else AppVersion(app_id=app_id, version_id=version_id, status=VersionStatus(status))
    )


def instance_from_tuple(t: tuple[Any, ...]) -> Instance | None:
    """A RuntimeInstance struct (instanceId 0 means "no such instance")."""
    instance_id = int(t[0])
    if instance_id == 0:
        return None
    return Instance(
        instance_id=instance_id,
        app_id=int(t[1]),
        version_id=int(t[2]),
        wallet=str(t[6]).lower(),
        zk_verified=bool(t[7]),
        status=InstanceStatus(int(t[8])),
        instance_url=str(t[4]),
    )
