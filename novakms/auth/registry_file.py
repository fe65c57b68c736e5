"""The registry file: the JSON format of the ``static`` authorization source, parsed and
rendered purely (no store, no I/O beyond the bytes handed in).

:class:`novakms.auth.static.StaticRegistry` keeps the records; this module knows the document
and the rules of each field. JSON format (``StaticRegistry.from_json`` / ``load`` read it,
``to_json`` writes it)::

    {
      "kms_app_id": 1,                      # int >= 1 or null (optional, default null)
      "operators": ["0x…"],                 # KMSRegistry operator wallets (optional, default [])
      "apps": [                             # optional, default []
        {
          "app_id": 1,                      # int >= 1, unique
          "status": "ACTIVE",               # ACTIVE | INACTIVE | REVOKED
          "owner": "0x…",                   # optional, default the zero address
          "versions": [                     # optional, default []
            {"version_id": 1,               # int >= 1, unique within the app
             "status": "ENROLLED"}          # ENROLLED | DEPRECATED | REVOKED
          ]
        }
      ],
      "instances": [                        # optional, default []
        {
          "instance_id": 1,                 # int >= 1, unique
          "app_id": 1,                      # must name an app above
          "version_id": 1,                  # must name a version of that app
          "wallet": "0x…",                  # the instance's TEE wallet, unique
          "zk_verified": true,              # bool
          "status": "ACTIVE",               # ACTIVE | STOPPED | FAILED
          "instance_url": "http://…"        # optional, "" or http:// / https://, default ""
        }
      ],
      "guardians": {                        # optional (absent: no guardian set, version 0)
        "wallets": ["0x…"],                 # 1..16 distinct non-zero addresses
        "enc_keys": ["0x…"],                # X25519 HPKE public keys, 0x + 64 hex, non-zero,
                                            # one per wallet, same order
        "threshold": 2                      # int, 1..len(wallets)
      }
    }

Parsing is strict: unknown or missing keys, wrong JSON types (``true`` is not an int, ``1.0``
is not an int), status names outside the enums, duplicate ids or wallets, instances pointing at
missing apps / versions and malformed addresses are all rejected with a ``ValueError`` naming
the offending location. A guardian set follows KMSRegistry's ``setGuardians`` rules
(:mod:`novakms.auth.guardians`); when present it is version 1 (the file has no history), and
``set_guardians`` / ``clear_guardians`` bump the version like the contract does. Addresses
are ``0x`` + 40 hex digits in any case (checked with ``novakms.crypto.eth.normalize_wallet``,
EIP-55 checksum not enforced) and are stored in lowercase; ``to_json`` writes them in
lowercase and round-trips through ``from_json`` (a guardian set keeps its members and
threshold, not its version).

:func:`parse_document` yields the records in document order and the store adds each as it comes,
so a document with several faults reports the same first fault, with the same location, as
when parsing and adding were one loop.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from novakms.auth.guardians import GuardianSet, guardian_set, parse_enc_key
from novakms.auth.model import (
    ZERO_ADDRESS,
    App,
    AppStatus,
    AppVersion,
    Instance,
    InstanceStatus,
    VersionStatus,
)
from novakms.crypto.eth import normalize_wallet
from novakms.errors import GuardianSetError, RegistryFormatError

__all__ = [
    "Entry",
    "check_id",
    "check_status",
    "check_url",
    "check_wallet",
    "decode_document",
    "parse_document",
    "render_document",
]

_UINT256_MAX = 2**256 - 1

_E = TypeVar("_E", AppStatus, VersionStatus, InstanceStatus)

_TOP_KEYS = ("kms_app_id", "operators", "apps", "instances", "guardians")
_GUARDIAN_KEYS = ("wallets", "enc_keys", "threshold")
_APP_KEYS = ("app_id", "status", "owner", "versions")
_VERSION_KEYS = ("version_id", "status")


_INSTANCE_KEYS = (
    "instance_id",
    "app_id",
    "version_id",
    "wallet",
    "zk_verified",
    "status",
    "instance_url",
)


def check_wallet(value: object, what: str) -> str:
    """Check an address and return it in lowercase (``novakms.crypto.eth.normalize_wallet``).

    Args:
        value: the candidate address.
        what: how to name it in an error message.

    Returns:
        ``0x`` + 40 lowercase hex digits.

    Raises:
        RegistryFormatError: ``value`` is not a string of the form ``0x`` + 40 hex digits.
    """
    if isinstance(value, str):
        try:
            return normalize_wallet(value)
        except ValueError:
            pass
    raise RegistryFormatError(f"{what}: {value!r} is not an address (0x + 40 hex digits)")


def check_id(value: object, what: str) -> int:
    """Check a registry id (uint256, at least 1; 0 means "none" on chain).

    Args:
        value: the candidate id.
        what: how to name it in an error message.

    Returns:
        The id.

    Raises:
        ValueError: not an int (bools rejected), or outside ``1 .. 2**256 - 1``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise RegistryFormatError(f"{what}: expected an integer, got {type(value).__name__}")
    if not 1 <= value <= _UINT256_MAX:
        raise RegistryFormatError(f"{what}: {value} is out of range (1 .. 2**256-1)")
    return value


def check_status(enum: type[_E], value: object, what: str) -> _E:
    """Accept a status as an enum member or as its exact name.

    Args:
        enum: the status enum.
        value: a member of ``enum``, or a member name such as ``"ACTIVE"``.
        what: how to name it in an error message.

    Returns:
        The enum member.

    Raises:
        ValueError: ``value`` is neither a member of ``enum`` nor one of its names.
    """
    if isinstance(value, enum):
        return value
    if isinstance(value, str) and value in enum.__members__:
        return enum.__members__[value]
    names = ", ".join(enum.__members__)
    raise RegistryFormatError(f"{what}: {value!r} is not a {enum.__name__} (one of {names})")


def check_url(value: object, what: str) -> str:
    """Check an instance URL: empty, or starting with ``http://`` / ``https://``.

    Args:
        value: the candidate URL.
        what: how to name it in an error message.

    Returns:
        The URL.

    Raises:
        ValueError: not a string, or a non-empty string with another scheme.
    """
    if not isinstance(value, str):
        raise RegistryFormatError(f"{what}: expected a string, got {type(value).__name__}")
    if value and not value.startswith(("http://", "https://")):
        raise RegistryFormatError(f"{what}: {value!r} must start with http:// or https://")
    return value


def _object(
    data: object, where: str, required: tuple[str, ...], allowed: tuple[str, ...]
) -> dict[str, object]:
    """Check that ``data`` is a JSON object with exactly the allowed keys.

    Args:
        data: the parsed JSON value.
        where: its location, for error messages.
        required: keys that must be present.
        allowed: every key that may be present (including ``required``).

    Returns:
        ``data`` as a dict.

    Raises:
        ValueError: not an object, an unknown key, or a missing required key.
    """
    if not isinstance(data, dict):
        raise RegistryFormatError(f"{where}: expected an object, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            raise RegistryFormatError(
                f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})"
            )
    for key in required:
        if key not in data:
            raise RegistryFormatError(f"{where}: missing key {key!r}")
    return {str(k): v for k, v in data.items()}


def _array(data: object, where: str) -> list[object]:
    """Check that ``data`` is a JSON array.

    Args:
        data: the parsed JSON value.
        where: its location, for error messages.

    Returns:
        ``data`` as a list.

    Raises:
        ValueError: ``data`` is not a list.
    """
    if not isinstance(data, list):
        raise RegistryFormatError(f"{where}: expected an array, got {type(data).__name__}")
    return data


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json`` object hook: refuse objects that repeat a key.

    Args:
        pairs: the object's key/value pairs in document order.

    Returns:
        The object as a dict.

    Raises:
        ValueError: a key occurs twice.
    """
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise RegistryFormatError(f"duplicate JSON key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    """``json`` hook: refuse ``NaN`` / ``Infinity`` literals.

    Args:
        name: the literal.

    Returns:
        Never returns.

    Raises:
        ValueError: always.
    """
    raise RegistryFormatError(f"JSON literal {name} is not allowed")


@dataclass(frozen=True, slots=True)
class Entry:
    """One record of a registry document and where it stands in the file.

    Attributes:
        where: its JSON location (``apps[0].versions[1]``), the prefix of any error about it.
        record: an operator wallet (lowercase), an app, a version, an instance, or the
            guardian set (version 1).
    """

    where: str
    record: str | App | AppVersion | Instance | GuardianSet


def decode_document(raw: bytes) -> object:
    """Decode the bytes of a registry file into JSON values, strictly.

    Args:
        raw: the file's bytes (UTF-8 JSON).

    Returns:
        The parsed JSON value.

    Raises:
        ValueError: not UTF-8, not JSON, a repeated key, or a ``NaN`` / ``Infinity`` literal.
    """
    return json.loads(
        raw.decode("utf-8"),
        object_pairs_hook=_reject_duplicate_keys,
        parse_constant=_reject_constant,
    )


def parse_document(data: object) -> tuple[int | None, Iterator[Entry]]:
    """Check the top of a parsed document; the records follow lazily, in document order.

    Args:
        data: the parsed JSON document.

    Returns:
        ``(kms_app_id, entries)``: the KMS app id (None when absent), and an iterator over the
        operators, apps (each followed by its versions), instances and, last, the guardian set.

    Raises:
        RegistryFormatError: the top level is not the documented object, or ``kms_app_id`` is
            not an id; while iterating, a record that does not follow the format (the message
            names the location).
    """
    top = _object(data, "registry", (), _TOP_KEYS)
    raw_kms = top.get("kms_app_id")
    kms_app_id = None if raw_kms is None else check_id(raw_kms, "kms_app_id")
    return kms_app_id, _entries(top)


def _entries(top: Mapping[str, object]) -> Iterator[Entry]:
    for i, item in enumerate(_array(top.get("operators", []), "operators")):
        where = f"operators[{i}]"
        yield Entry(where, check_wallet(item, where))

    for i, item in enumerate(_array(top.get("apps", []), "apps")):
        where = f"apps[{i}]"
        fields = _object(item, where, ("app_id", "status"), _APP_KEYS)
        app_id = check_id(fields["app_id"], f"{where}.app_id")
        yield Entry(
            where,
            App(
                app_id=app_id,
                status=_json_status(AppStatus, fields["status"], f"{where}.status"),
                owner=check_wallet(fields.get("owner", ZERO_ADDRESS), f"{where}.owner"),
            ),
        )
        for j, vitem in enumerate(_array(fields.get("versions", []), f"{where}.versions")):
            vwhere = f"{where}.versions[{j}]"
            vfields = _object(vitem, vwhere, _VERSION_KEYS, _VERSION_KEYS)
            yield Entry(
                vwhere,
                AppVersion(
                    app_id=app_id,
                    version_id=check_id(vfields["version_id"], f"{vwhere}.version_id"),
                    status=_json_status(VersionStatus, vfields["status"], f"{vwhere}.status"),
                ),
            )

    for i, item in enumerate(_array(top.get("instances", []), "instances")):
        where = f"instances[{i}]"
        fields = _object(item, where, _INSTANCE_KEYS[:-1], _INSTANCE_KEYS)
        zk = fields["zk_verified"]
        if not isinstance(zk, bool):
            raise RegistryFormatError(
                f"{where}.zk_verified: expected a bool, got {type(zk).__name__}"
            )
        yield Entry(
            where,
            Instance(
                instance_id=check_id(fields["instance_id"], f"{where}.instance_id"),
                app_id=check_id(fields["app_id"], f"{where}.app_id"),
                version_id=check_id(fields["version_id"], f"{where}.version_id"),
                wallet=check_wallet(fields["wallet"], f"{where}.wallet"),
                zk_verified=zk,
                status=_json_status(InstanceStatus, fields["status"], f"{where}.status"),
                instance_url=check_url(fields.get("instance_url", ""), f"{where}.instance_url"),
            ),
        )

    if "guardians" in top:
        yield Entry("guardians", _json_guardians(top["guardians"]))


def render_document(
    *,
    kms_app_id: int | None,
    operators: Iterable[str],
    apps: Iterable[App],
    versions: Iterable[AppVersion],
    instances: Iterable[Instance],
    guardians: GuardianSet,
) -> dict[str, Any]:
    """Render records in the format :func:`parse_document` reads.

    Args:
        kms_app_id: the KMS app id, or None.
        operators: the operator wallets.
        apps: the apps.
        versions: the versions (of those apps).
        instances: the instances.
        guardians: the guardian set (written without its version; an empty set is left out).

    Returns:
        A JSON-able dict; ids sorted, addresses lowercase, statuses by name.
    """
    by_app: dict[int, list[AppVersion]] = {}
    for version in sorted(versions, key=lambda v: (v.app_id, v.version_id)):
        by_app.setdefault(version.app_id, []).append(version)
    doc: dict[str, Any] = {
        "kms_app_id": kms_app_id,
        "operators": sorted(operators),
        "apps": [
            {
                "app_id": app.app_id,
                "status": app.status.name,
                "owner": app.owner,
                "versions": [
                    {"version_id": v.version_id, "status": v.status.name}
                    for v in by_app.get(app.app_id, [])
                ],
            }
            for app in sorted(apps, key=lambda a: a.app_id)
        ],
        "instances": [
            {
                "instance_id": inst.instance_id,
                "app_id": inst.app_id,
                "version_id": inst.version_id,
                "wallet": inst.wallet,
                "zk_verified": inst.zk_verified,
                "status": inst.status.name,
                "instance_url": inst.instance_url,
            }
            for inst in sorted(instances, key=lambda i: i.instance_id)
        ],
    }
    if not guardians.empty:  # the file keeps no version (nor a cleared set)
        doc["guardians"] = {
            "wallets": list(guardians.wallets),
            "enc_keys": ["0x" + key.hex() for key in guardians.enc_keys],
            "threshold": guardians.threshold,
        }
    return doc


def _json_status(enum: type[_E], value: object, where: str) -> _E:
    """Parse a JSON status: its exact name as a string (numbers are not accepted in JSON).

    Args:
        enum: the status enum.
        value: the JSON value.
        where: its location, for error messages.

    Returns:
        The enum member.

    Raises:
        ValueError: not a string, or not one of the enum's names.
    """
    if not isinstance(value, str):
        raise RegistryFormatError(f"{where}: expected a status name, got {type(value).__name__}")
    return check_status(enum, value, where)


def _json_guardians(data: object) -> GuardianSet:
    """Parse the ``"guardians"`` object (version 1: the file has no history).

    Args:
        data: the JSON value.

    Returns:
        The guardian set.

    Raises:
        ValueError: not the documented object, or a set KMSRegistry would refuse.
    """
    fields = _object(data, "guardians", _GUARDIAN_KEYS, _GUARDIAN_KEYS)
    wallets = [
        check_wallet(item, f"guardians.wallets[{i}]")
        for i, item in enumerate(_array(fields["wallets"], "guardians.wallets"))
    ]
    keys = []
    for i, item in enumerate(_array(fields["enc_keys"], "guardians.enc_keys")):
        try:
            keys.append(parse_enc_key(item))
        except GuardianSetError as exc:
            raise RegistryFormatError(f"guardians.enc_keys[{i}]: {exc}") from exc
    threshold = fields["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise RegistryFormatError(
            f"guardians.threshold: expected an integer, got {type(threshold).__name__}"
        )
    try:
        return guardian_set(
            wallets=wallets, enc_keys=keys, threshold=threshold, version=1, allow_empty=False
        )
    except GuardianSetError as exc:
        raise RegistryFormatError(f"guardians: {exc}") from exc
