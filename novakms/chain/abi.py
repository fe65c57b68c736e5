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
    "app_from_tuple",
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

    def describe_error(self, data: bytes | None) -> str | None:
        """A custom error of this contract as text, e.g. ``DuplicateGuardian(0xab…)``.

        Returns:
            ``Name(arg, …)`` (addresses lowercase, bytes as ``0x`` hex), or None when the data
            is not one of this ABI's errors.
        """
        if data is None or len(data) < 4 or bytes(data[:4]) not in self._errors:
            return None
        name, types = self._errors[bytes(data[:4])]
        try:
            values = abi_decode(list(types), bytes(data[4:]))
        except Exception:  # eth_abi raises several unrelated types on bad input
            return None

        def text(value: Any) -> str:
            if isinstance(value, bytes):
                return "0x" + value.hex()
            if isinstance(value, str) and value.startswith("0x"):
                return value.lower()
            return str(value)

        return f"{name}({', '.join(text(v) for v in values)})"

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
