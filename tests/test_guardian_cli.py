"""`novakms guardian keygen | split | open` as a guardian runs them: real processes, real files."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from novakms.cli.guardian import share_file_name
from novakms.crypto import guardian_shares as gs
from novakms.crypto.kdf import secret_fingerprint
from novakms.crypto.signer import LocalSigner

pytestmark = pytest.mark.slow

SECRET = hashlib.sha256(b"guardian cli test secret").digest()


def novakms(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "IN_ENCLAVE"}
    return subprocess.run(
        [sys.executable, "-m", "novakms.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def is_secret(value: bytes | None) -> bool:
    """Compare without letting pytest print the value."""
    return value is not None and hmac.compare_digest(value, SECRET)


@dataclass(frozen=True)
class Guardian:
    directory: Path
    wallet: str
    enc_public: bytes

    @property
    def enc_private(self) -> bytes:
        return bytes.fromhex((self.directory / "enc.key").read_text().strip()[2:])

    @property
    def arg(self) -> str:
        return f"{self.wallet}:0x{self.enc_public.hex()}"


def assert_no_secrets(out: subprocess.CompletedProcess[str], *guardians: Guardian) -> None:
    text = out.stdout + out.stderr
    assert SECRET.hex() not in text.lower()
    for guardian in guardians:
        for name in ("enc.key", "wallet.key"):
            assert (guardian.directory / name).read_text().strip()[2:] not in text.lower()


def keygen(directory: Path) -> Guardian:
    out = novakms("guardian", "keygen", "--out", str(directory))
    assert out.returncode == 0, out.stdout + out.stderr
    line = json.loads(out.stdout)
    assert set(line) == {"wallet", "enc_public_key"}
    guardian = Guardian(directory, line["wallet"], bytes.fromhex(line["enc_public_key"][2:]))
    assert_no_secrets(out, guardian)
    return guardian


@pytest.fixture(scope="module")
def guardians(tmp_path_factory: pytest.TempPathFactory) -> list[Guardian]:
    base = tmp_path_factory.mktemp("guardians")
    return [keygen(base / f"g{i}" / "keys") for i in range(3)]


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.hex"
    path.write_text("0x" + SECRET.hex() + "\n")
    return path


def split(
    secret_file: Path, out: Path, guardians: list[Guardian], *extra: str, threshold: int = 2
) -> dict[str, Any]:
    args = [a for g in guardians for a in ("--guardian", g.arg)]
    result = novakms(
        "guardian", "split", "--secret-file", str(secret_file), "--threshold", str(threshold),
        *args, "--out", str(out), *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert_no_secrets(result, *guardians)
    line: dict[str, Any] = json.loads(result.stdout)
    return line


def open_cli(
    guardian: Guardian, share: Path, *, wallet: str | None = None, version: int = 1
) -> Any:
    return novakms(
        "guardian", "open", "--enc-key", str(guardian.directory / "enc.key"), "--share",
        str(share), "--wallet", wallet or guardian.wallet, "--set-version", str(version),
    )  # fmt: skip


def test_keygen_files(guardians: list[Guardian]) -> None:
    for guardian in guardians:
        assert oct(guardian.directory.stat().st_mode & 0o777) == "0o700"
        for name in ("wallet.key", "enc.key"):
            assert oct((guardian.directory / name).stat().st_mode & 0o777) == "0o600"
        # The wallet key is a project key file; the enc key is 0x + 64 hex of its public key.
        assert LocalSigner.from_file(guardian.directory / "wallet.key").wallet == guardian.wallet
        assert gs.enc_public_key_of(guardian.enc_private) == guardian.enc_public
    assert len({g.wallet for g in guardians}) == 3


def test_keygen_never_overwrites(guardians: list[Guardian]) -> None:
    before = (guardians[0].directory / "enc.key").read_bytes()
    out = novakms("guardian", "keygen", "--out", str(guardians[0].directory))
    assert out.returncode == 2
    assert json.loads(out.stdout)["error"]["code"] == "bad_request"
    assert (guardians[0].directory / "enc.key").read_bytes() == before


def test_split_open_recover_round_trip(
    guardians: list[Guardian], secret_file: Path, tmp_path: Path
) -> None:
    line = split(secret_file, tmp_path / "shares", guardians)
    assert line["fingerprint"] == secret_fingerprint(SECRET)
    assert line["threshold"] == 2 and line["set_version"] == 1
    assert [s["wallet"] for s in line["shares"]] == [g.wallet for g in guardians]
    directory = tmp_path / "shares"
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    guardian_set = gs.GuardianSet(
        tuple(g.wallet for g in guardians), tuple(g.enc_public for g in guardians), 2, 1
    )
    expected = gs.make_shares(SECRET, guardian_set)
    opened = []
    for i, (guardian, listed) in enumerate(zip(guardians, line["shares"], strict=True)):
        path = Path(listed["file"])
        assert path == (directory / share_file_name(guardian.wallet)).resolve()
        # `open` shows the public fields, never y.
        out = open_cli(guardian, path)
        assert out.returncode == 0, out.stdout + out.stderr
        assert json.loads(out.stdout) == {
            "wallet": guardian.wallet,
            "set_version": 1,
            "x": i + 1,
            "threshold": 2,
            "count": 3,
            "fingerprint": line["fingerprint"],
        }
        share = gs.open_share(
            path.read_bytes(), guardian.enc_private, wallet=guardian.wallet, set_version=1
        )
        assert share.y.hex() not in out.stdout
        assert_no_secrets(out, guardian)
        # Byte-identical to what a node holding the secret would hand out for this set.
        assert gs.encode_share(share) == gs.encode_share(expected[i])
        opened.append(share)
    pin = line["fingerprint"]
    for pair in ([0, 1], [1, 2], [2, 0]):
        assert is_secret(gs.recover([opened[i] for i in pair], threshold=2, pin_fingerprint=pin))
    assert gs.recover(opened[:1], threshold=2, pin_fingerprint=pin) is None


def test_one_wrong_share_and_two_good_still_recover(
    guardians: list[Guardian], secret_file: Path, tmp_path: Path
) -> None:
    line = split(secret_file, tmp_path / "shares", guardians)
    files = [Path(s["file"]) for s in line["shares"]]
    good = [
        gs.open_share(f.read_bytes(), g.enc_private, wallet=g.wallet, set_version=1)
        for f, g in zip(files, guardians, strict=True)
    ]
    # Guardian 2 turns against the others: a well-formed share with its own x and a wrong y,
    # sealed to its own key exactly like a genuine one.
    y = bytearray(good[1].y)
    y[5] ^= 0x40
    forged = gs.GuardianShare(
        x=2, y=bytes(y), threshold=2, count=3, set_version=1, fingerprint=good[1].fingerprint,
        wallet=guardians[1].wallet,
    )  # fmt: skip
    forged_file = tmp_path / "forged.bin"
    forged_file.write_bytes(gs.seal_share(forged, guardians[1].enc_public))
    out = open_cli(guardians[1], forged_file)
    assert out.returncode == 0  # nothing in the share itself tells it apart
    received = gs.open_share(
        forged_file.read_bytes(), guardians[1].enc_private, wallet=guardians[1].wallet,
        set_version=1,
    )  # fmt: skip
    pin = line["fingerprint"]
    for order in ([received, good[0], good[2]], [good[0], received, good[2]]):
        assert is_secret(gs.recover(order, threshold=2, pin_fingerprint=pin))
    assert gs.recover([received, good[0]], threshold=2, pin_fingerprint=pin) is None


def test_split_twice_same_plaintexts_other_sealed_bytes(
    guardians: list[Guardian], secret_file: Path, tmp_path: Path
) -> None:
    one = split(secret_file, tmp_path / "one", guardians)
    two = split(secret_file, tmp_path / "two", guardians)
    for a, b, g in zip(one["shares"], two["shares"], guardians, strict=True):
        sealed_a, sealed_b = Path(a["file"]).read_bytes(), Path(b["file"]).read_bytes()
        assert sealed_a != sealed_b  # a fresh HPKE ephemeral key each time
        plain = [
            gs.encode_share(gs.open_share(s, g.enc_private, wallet=g.wallet, set_version=1))
            for s in (sealed_a, sealed_b)
        ]
        assert plain[0] == plain[1]


def test_set_version_and_threshold(
    guardians: list[Guardian], secret_file: Path, tmp_path: Path
) -> None:
    line = split(secret_file, tmp_path / "v7", guardians, "--set-version", "7", threshold=3)
    assert line["set_version"] == 7 and line["threshold"] == 3
    path = Path(line["shares"][2]["file"])
    out = open_cli(guardians[2], path, version=7)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["threshold"] == 3
    wrong = open_cli(guardians[2], path, version=1)
    assert wrong.returncode == 2
    error = json.loads(wrong.stdout)["error"]
    assert error["code"] == "bad_request" and error["reason"] == "decrypt"


def test_open_refusals(guardians: list[Guardian], secret_file: Path, tmp_path: Path) -> None:
    line = split(secret_file, tmp_path / "shares", guardians)
    path = Path(line["shares"][0]["file"])
    cases = [
        (open_cli(guardians[1], path), "decrypt"),  # another guardian's key
        (open_cli(guardians[0], path, wallet=guardians[1].wallet), "decrypt"),
    ]
    truncated = tmp_path / "short.bin"
    truncated.write_bytes(path.read_bytes()[:40])
    cases.append((open_cli(guardians[0], truncated), "truncated"))
    for out, reason in cases:
        assert out.returncode == 2
        assert json.loads(out.stdout)["error"]["reason"] == reason
        assert_no_secrets(out, *guardians)
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("0x1234\n")
    out = novakms(
        "guardian", "open", "--enc-key", str(bad_key), "--share", str(path), "--wallet",
        guardians[0].wallet, "--set-version", "1",
    )  # fmt: skip
    assert out.returncode == 2 and "1234" not in out.stdout
    assert "not an encryption key file" in json.loads(out.stdout)["error"]["message"]


@pytest.mark.parametrize(
    ("secret_text", "extra", "message"),
    [
        ("ab" * 31, (), "64 hex"),
        ("zz" * 32, (), "64 hex"),
        (None, ("--threshold", "4"), "threshold"),
        (None, ("--threshold", "0"), "threshold"),
    ],
)
def test_split_refusals(
    guardians: list[Guardian],
    tmp_path: Path,
    secret_text: str | None,
    extra: tuple[str, ...],
    message: str,
) -> None:
    secret_file = tmp_path / "secret.hex"
    secret_file.write_text(secret_text or SECRET.hex())
    args = [a for g in guardians for a in ("--guardian", g.arg)]
    out = novakms(
        "guardian", "split", "--secret-file", str(secret_file), "--threshold", "2", *args,
        "--out", str(tmp_path / "out"), *extra,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    error = json.loads(out.stdout)["error"]
    assert error["code"] == "bad_request" and message in error["message"]
    assert not (tmp_path / "out").exists()
    if secret_text:
        assert secret_text not in out.stdout + out.stderr
    assert_no_secrets(out, *guardians)


def test_split_refuses_duplicates_and_bad_guardians(
    guardians: list[Guardian], secret_file: Path, tmp_path: Path
) -> None:
    out = novakms(
        "guardian", "split", "--secret-file", str(secret_file), "--threshold", "1",
        "--guardian", guardians[0].arg, "--guardian", guardians[0].arg, "--out", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 2 and "twice" in json.loads(out.stdout)["error"]["message"]
    out = novakms(
        "guardian", "split", "--secret-file", str(secret_file), "--threshold", "1",
        "--guardian", f"{guardians[0].wallet}:0x{'00' * 32}", "--out", str(tmp_path / "z"),
    )  # fmt: skip
    assert out.returncode == 2 and json.loads(out.stdout)["error"]["reason"] == "bad_key"
    out = novakms(
        "guardian", "split", "--secret-file", str(secret_file), "--threshold", "1",
        "--guardian", "not-a-guardian", "--out", str(tmp_path / "z"),
    )  # fmt: skip
    assert out.returncode == 2 and "WALLET:ENCPUBHEX" in out.stderr
