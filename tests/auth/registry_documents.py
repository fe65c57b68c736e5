"""A valid registry document for the static-registry tests (one shape, shared by the file
format's tests and the record store's)."""

from __future__ import annotations

from typing import Any

__all__ = ["APP_WALLET", "KMS_WALLET", "KMS_WALLET_2", "OWNER", "document"]

APP_WALLET = "0x" + "aa" * 20
KMS_WALLET = "0x" + "bb" * 20
KMS_WALLET_2 = "0x" + "cc" * 20
OWNER = "0x" + "11" * 20


def document() -> dict[str, Any]:
    """A valid registry: app 1 is the KMS (two nodes), app 2 a user app (one instance)."""
    return {
        "kms_app_id": 1,
        "operators": [KMS_WALLET, KMS_WALLET_2],
        "apps": [
            {
                "app_id": 1,
                "status": "ACTIVE",
                "owner": OWNER,
                "versions": [{"version_id": 1, "status": "ENROLLED"}],
            },
            {
                "app_id": 2,
                "status": "ACTIVE",
                "owner": OWNER,
                "versions": [
                    {"version_id": 1, "status": "DEPRECATED"},
                    {"version_id": 2, "status": "ENROLLED"},
                ],
            },
        ],
        "instances": [
            {
                "instance_id": 1,
                "app_id": 1,
                "version_id": 1,
                "wallet": KMS_WALLET,
                "zk_verified": True,
                "status": "ACTIVE",
                "instance_url": "http://kms-1.example:8000",
            },
            {
                "instance_id": 2,
                "app_id": 1,
                "version_id": 1,
                "wallet": KMS_WALLET_2,
                "zk_verified": True,
                "status": "ACTIVE",
                "instance_url": "https://kms-2.example",
            },
            {
                "instance_id": 3,
                "app_id": 2,
                "version_id": 2,
                "wallet": APP_WALLET,
                "zk_verified": True,
                "status": "ACTIVE",
                "instance_url": "",
            },
        ],
    }
