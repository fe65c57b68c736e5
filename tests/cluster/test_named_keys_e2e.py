"""Named keys in a 3-node cluster on anvil: every node has the same keys, with no replication."""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct

from novakms.client.aio import Client
from tests.harness.world import APP, started


async def test_every_node_of_a_cluster_has_the_same_named_keys(world: Any) -> None:
    _, members, _ = await started(world)
    clients = [await Client.connect(f"127.0.0.1:{port}", signer=APP) for _, port in members]
    try:
        for alg in ("secp256k1", "ed25519", "p256"):
            keys = {(await kms.keys_public("main", alg)).public_key for kms in clients}
            assert len(keys) == 1, alg
        address = (await clients[0].keys_public("main", "secp256k1")).address
        for kms in clients:  # a signature from any node recovers to the one address
            signed = await kms.sign("main", "secp256k1", eip191="which node?")
            message = encode_defunct(text="which node?")
            assert Account.recover_message(message, signature=signed.signature).lower() == address
        # a ciphertext of one node opens on every other
        sealed = (await clients[0].encrypt("vault", b"shared", aad=b"a")).ciphertext
        for kms in clients[1:]:
            assert (await kms.decrypt(sealed, aad=b"a")).plaintext == b"shared"
    finally:
        for kms in clients:
            await kms.aclose()
