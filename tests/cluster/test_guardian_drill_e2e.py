"""The recovery drill: every node loses the secret, two of three guardians bring it back.

Real nodes on a real anvil, real guardians on their own authenticated channels, real HPKE and
Shamir. Nothing is mocked; assertions are on answers and state, never on elapsed time.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from novakms.client.aio import Client
from novakms.client.results import RestoreResult
from novakms.crypto import guardian_shares
from novakms.crypto.guardian_shares import GuardianShare
from novakms.crypto.kdf import derive_app_key, secret_fingerprint
from novakms.crypto.signer import LocalSigner
from novakms.dev.anvil import AnvilProcess
from novakms.dev.world import set_guardians
from novakms.errors import BadRequest, Forbidden, Unavailable
from tests.harness.world import Cluster, open_world, signer, until

APPS = [signer("drill app 1"), signer("drill app 2")]
GUARDIANS = [signer(f"drill guardian {i}") for i in range(3)]
ENC_KEYS = [
    guardian_shares.derive_enc_keypair(hashlib.sha256(f"drill enc {i}".encode()).digest())
    for i in range(3)
]
THRESHOLD = 2
PATHS = [("disk", None), ("db/key", "ctx")]


@pytest.fixture
async def drill(
    nursery: trio.Nursery, anvil: AnvilProcess
) -> AsyncIterator[tuple[Cluster, list[tuple[LocalSigner, int]]]]:
    wallets = [a.wallet for a in APPS]
    async with open_world(nursery, anvil, app_wallets=wallets, label="drill node ") as opened:
        cluster, _ = opened
        await set_guardians(
            cluster.admin,
            cluster.chain.kms_registry,
            [g.wallet for g in GUARDIANS],
            [public for _, public in ENC_KEYS],
            THRESHOLD,
        )
        yield opened


async def keys_and_cas(port: int) -> list[Any]:
    """Derived keys of both apps and both CA certificates, as this node serves them."""
    found: list[Any] = []
    for app_id, app in enumerate(APPS, start=1):
        async with await Client.connect(f"127.0.0.1:{port}", signer=app) as kms:
            for path, context in PATHS:
                found.append((await kms.derive(path, context=context)).key)
            found.append(await kms.cert_ca(app_id))
    return found


async def as_guardian(port: int, index: int) -> Client:
    return await Client.connect(f"127.0.0.1:{port}", signer=GUARDIANS[index], role="guardian")


async def test_two_of_three_guardians_restore_every_key_after_a_total_loss(drill: Any) -> None:
    cluster, members = drill
    nodes = [await cluster.start(s, port, require_pin=True) for s, port in members]
    await until(lambda: all(n.master_secret is not None and not n.syncing for n in nodes))
    fingerprint = nodes[0].fingerprint()
    assert fingerprint is not None
    await cluster.pin(bytes.fromhex(fingerprint[2:]))
    await until(lambda: all(n.serving_apps for n in nodes))
    before = await keys_and_cas(members[0][1])
    # The keys are the compatible derivation of the secret (computed independently here).
    secret = nodes[0].master_secret
    assert secret is not None
    assert before[0] == derive_app_key(master_secret=secret, app_id=1, path="disk")

    # Each guardian fetches its share (sealed to its own key) and opens it at home.
    shares: list[GuardianShare] = []
    for i in range(3):
        async with await as_guardian(members[i][1], i) as kms:
            answer = await kms.guardian_share()
        assert answer.fingerprint == fingerprint and answer.threshold == THRESHOLD
        shares.append(
            guardian_shares.open_share(
                answer.share,
                ENC_KEYS[i][0],
                wallet=GUARDIANS[i].wallet,
                set_version=answer.set_version,
            )
        )
    # Every node hands out the same shares (deterministic split).
    async with await as_guardian(members[2][1], 0) as kms:
        again = await kms.guardian_share()
    reopened = guardian_shares.open_share(
        again.share, ENC_KEYS[0][0], wallet=GUARDIANS[0].wallet, set_version=1
    )
    assert reopened == shares[0]
    # An app cannot ask for shares, and a non-guardian wallet cannot either.
    async with await Client.connect(
        f"127.0.0.1:{members[0][1]}", signer=APPS[0], role="guardian"
    ) as kms:
        with pytest.raises(Forbidden) as refused:
            await kms.guardian_share()
        assert refused.value.details["reason"] == "not_guardian"

    # Total loss: every node dies and comes back empty.
    for node in nodes:
        cluster.stop(node)
    nodes = [await cluster.start(s, port, require_pin=True) for s, port in members]
    await until(lambda: all(n.not_ready.reason == "secret_lost" for n in nodes), seconds=60)
    assert all(n.master_secret is None for n in nodes)  # pinned: nobody generates a new one
    target = members[1][1]

    # A guardian sending another guardian's share is refused before anything is kept.
    async with await as_guardian(target, 0) as kms:
        with pytest.raises(BadRequest) as bad:
            await kms.guardian_restore(guardian_shares.encode_share(shares[1]))
        assert bad.value.details["reason"] == "not_your_share"
        # A forged share (its value altered) is kept but leads nowhere on its own...
        forged = GuardianShare(
            x=shares[0].x,
            y=bytes(b ^ 0xFF for b in shares[0].y),
            threshold=shares[0].threshold,
            count=shares[0].count,
            set_version=shares[0].set_version,
            fingerprint=shares[0].fingerprint,
            wallet=shares[0].wallet,
        )
        restored = await kms.guardian_restore(guardian_shares.encode_share(forged))
        assert restored == RestoreResult(recovered=False, received=1, threshold=THRESHOLD)
    async with await Client.connect(f"127.0.0.1:{target}") as kms:
        progress = (await kms.call("status"))["guardians"]["recovery"]
    assert progress == {"received": 1, "from": [GUARDIANS[0].wallet], "threshold": THRESHOLD}

    # ...and with one good share it still does not install a wrong secret.
    async with await as_guardian(target, 1) as kms:
        restored = await kms.guardian_restore(guardian_shares.encode_share(shares[1]))
    assert restored.recovered is False and restored.received == 2
    assert nodes[1].master_secret is None

    # The second good share restores it; the other nodes fetch it from there.
    started = time.perf_counter()
    async with await as_guardian(target, 2) as kms:
        restored = await kms.guardian_restore(guardian_shares.encode_share(shares[2]))
    assert restored == RestoreResult(recovered=True, received=3, threshold=THRESHOLD)
    await until(lambda: all(n.serving_apps and not n.syncing for n in nodes), seconds=60)
    print(f"second good share -> every node serving: {time.perf_counter() - started:.2f} s")
    assert {n.fingerprint() for n in nodes} == {fingerprint}
    assert secret_fingerprint(nodes[1].master_secret or b"") == fingerprint
    for _, port in members:
        assert await keys_and_cas(port) == before  # byte-identical keys and CA certificates

    # A node that holds the secret has nothing to restore.
    async with await as_guardian(target, 0) as kms:
        restored = await kms.guardian_restore(guardian_shares.encode_share(shares[0]))
        assert restored.recovered is True


async def test_a_node_that_holds_an_unpinned_secret_hands_out_no_share(drill: Any) -> None:
    cluster, members = drill
    nodes = [await cluster.start(s, port) for s, port in members]
    await until(lambda: all(n.master_secret is not None and not n.syncing for n in nodes))
    async with await as_guardian(members[0][1], 0) as kms:
        with pytest.raises(Unavailable) as info:
            await kms.guardian_share()
        assert info.value.reason == "unpinned"
        # A node that is not in secret_lost takes no shares either.
        with pytest.raises(BadRequest):
            await kms.guardian_restore(b"not a share")


def reference_derive(master: bytes, app_id: int, path: str, context: str | None) -> bytes:
    """The Nova KMS app-key derivation (PROTOCOL.md §9.1), computed here independently."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    info = path if not context else f"{path}:{context}"
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=f"nova-kms:app:{app_id}".encode(),
        info=info.encode(),
    ).derive(master)


async def test_bring_your_own_secret_restores_a_new_cluster_with_every_app_key_unchanged(
    drill: Any, tmp_path: Any
) -> None:
    cluster, members = drill
    # A master secret from elsewhere (say, a reference Nova KMS cluster), split offline.
    own = hashlib.sha256(b"novakms test: a reference cluster's master secret").digest()
    secret_file = tmp_path / "secret.hex"
    secret_file.write_text(own.hex() + "\n")
    secret_file.chmod(0o600)
    out_dir = tmp_path / "shares"
    guardians = [
        f"{g.wallet}:0x{public.hex()}" for g, (_, public) in zip(GUARDIANS, ENC_KEYS, strict=True)
    ]
    argv = [sys.executable, "-m", "novakms.cli", "guardian", "split", "--secret-file"]
    argv += [str(secret_file), "--threshold", str(THRESHOLD), "--out", str(out_dir)]
    for guardian in guardians:
        argv += ["--guardian", guardian]
    split = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    assert split.returncode == 0, split.stdout + split.stderr
    report = json.loads(split.stdout)
    assert report["fingerprint"] == secret_fingerprint(own)
    assert own.hex() not in split.stdout.decode() + split.stderr.decode()

    # A new cluster, pinned to that fingerprint before it starts: it never generates a secret.
    await cluster.pin(bytes.fromhex(secret_fingerprint(own)[2:]))
    nodes = [await cluster.start(s, port, require_pin=True) for s, port in members]
    await until(lambda: all(n.not_ready.reason == "secret_lost" for n in nodes), seconds=60)
    for i in (0, 2):
        entry = next(e for e in report["shares"] if e["wallet"] == GUARDIANS[i].wallet)
        share = guardian_shares.open_share(
            Path(entry["file"]).read_bytes(),
            ENC_KEYS[i][0],
            wallet=GUARDIANS[i].wallet,
            set_version=1,
        )
        async with await as_guardian(members[0][1], i) as kms:
            answer = await kms.guardian_restore(guardian_shares.encode_share(share))
    assert answer.recovered is True
    await until(lambda: all(n.serving_apps and not n.syncing for n in nodes), seconds=60)
    for _, port in members:
        for app_id, app in enumerate(APPS, start=1):
            async with await Client.connect(f"127.0.0.1:{port}", signer=app) as kms:
                for path, context in PATHS:
                    got = (await kms.derive(path, context=context)).key
                    assert got == reference_derive(own, app_id, path, context)
