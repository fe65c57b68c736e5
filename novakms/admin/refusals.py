"""A registry's refusal as the error it means: the revert decoded and mapped to a wire code.

``novakms admin`` reports a transaction the contract refused as the error code that says what
the operator can do about it, not as ``unavailable``: the key is not allowed (``forbidden``),
the thing already exists (``conflict``), is not there (``not_found``) or the argument or the
status change is invalid (``bad_request``). Every custom error of the packaged ABIs
(``contracts/src``: KMSRegistry and DevNovaAppRegistry) is mapped explicitly in
:data:`REVERT_CODES`; a test checks that the table and the artifacts agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from novakms.chain import abi
from novakms.errors import (
    BadRequest,
    ChainError,
    Conflict,
    Forbidden,
    NotFound,
    NovaKMSError,
    RequestError,
    TransactionFailed,
)

__all__ = ["REVERT_CODES", "refusal_error"]

#: Custom error name -> the error raised for it; None keeps the revert ``unavailable`` (a retry
#: may succeed: it says nothing about the request). Names shared by both contracts
#: (``ZeroAddress``) mean the same in each.
REVERT_CODES: Mapping[str, type[RequestError] | None] = {
    # --- KMSRegistry
    "NotOwner": Forbidden,  # onlyOwner: the key is not the registry's owner
    "NotNovaAppRegistry": Forbidden,  # callbacks: only the NovaAppRegistry may call
    "KmsAppIdAlreadySet": Conflict,  # setKmsAppId is possible once
    "KmsAppIdNotSet": NotFound,  # callbacks before setKmsAppId: there is no KMS app yet
    "WrongApp": BadRequest,  # a callback for another app than the KMS app
    "ZeroAppId": BadRequest,
    "ZeroAddress": BadRequest,
    "ZeroHash": BadRequest,
    "IndexOutOfRange": NotFound,  # operatorAt(index): no such operator
    "GuardianLengthMismatch": BadRequest,
    "GuardianCountOutOfRange": BadRequest,
    "ThresholdOutOfRange": BadRequest,
    "ZeroGuardianWallet": BadRequest,
    "ZeroGuardianEncKey": BadRequest,
    "DuplicateGuardian": Conflict,
    "DuplicateGuardianEncKey": Conflict,
    # --- DevNovaAppRegistry
    "NotAuthorized": Forbidden,  # neither the app's owner nor the registry's
    "AppNotFound": NotFound,
    "VersionNotFound": NotFound,
    "InstanceNotFound": NotFound,
    "AppNotActive": BadRequest,  # a status that does not allow the change
    "VersionNotEnrolled": BadRequest,
    "InvalidStatusTransition": BadRequest,
    "InvalidPcrLength": BadRequest,
    "InvalidInstanceUrl": BadRequest,
    "InvalidTeePubkey": BadRequest,
    "WalletAlreadyRegistered": Conflict,
    "CodeMeasurementMismatch": BadRequest,
    "InsufficientGasForCallback": None,  # the gas limit, not the request: retry with more gas
}


def refusal_error(exc: TransactionFailed) -> NovaKMSError:
    """The error to report for a reverted transaction.

    Args:
        exc: the failure (:class:`~novakms.admin.tx.TxSender` has already named the error in
            its message).

    Returns:
        For a packaged contract's custom error, the class of :data:`REVERT_CODES` with the
        message and ``revert`` (``Name(arg, …)``) and, when it was mined, ``tx``; for
        ``Error(string)``, ``Panic(uint256)`` and errors mapped to None, a :class:`ChainError`
        (``unavailable``) with the same details; ``exc`` itself when the data does not decode.
    """
    decoded = abi.decode_revert(exc.revert_data)
    if decoded is None:
        return exc
    details: dict[str, Any] = {"revert": str(decoded)}
    if exc.tx_hash is not None:
        details["tx"] = exc.tx_hash
    cls = REVERT_CODES.get(decoded.name) if decoded.is_custom else None
    if cls is None:
        return ChainError(exc.message, **details)
    return cls(exc.message, **details)
