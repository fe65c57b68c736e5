"""Tests for novakms.net.odyn against a real local HTTP server that signs with eth_account."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trio
from eth_account import Account
from eth_account.messages import encode_defunct

from novakms.crypto.eth import recover_wallet
from novakms.crypto.signer import Signer, SyncSigner
from novakms.errors import Unavailable
from novakms.net.odyn import DEFAULT_ODYN_URL, OdynSigner

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
OTHER_KEY = bytes.fromhex("11" * 32)
WALLET = Account.from_key(KEY).address  # EIP-55 checksummed, as Odyn would answer
SLOW = 2.0
TIMEOUT = 0.3


def eth_sign(key: bytes, text: str) -> bytes:
    return bytes(Account.sign_message(encode_defunct(text=text), private_key=key).signature)


class FakeOdyn(ThreadingHTTPServer):
    """A minimal Odyn API. ``mode`` selects good or bad behaviour."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode = "ok"
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that time out leave broken pipes behind; stay quiet."""


class Handler(BaseHTTPRequestHandler):
    server: FakeOdyn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes | dict[str, Any]) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _common(self) -> bool:
        mode = self.server.mode
        if mode == "slow":
            self.server.release.wait(SLOW)
            self._send(200, {"address": WALLET})
            return True
        if mode == "500":
            self._send(500, b'{"error": "boom"}')
            return True
        if mode == "garbage":
            self._send(200, b"\x00not json{")
            return True
        if mode == "list":
            self._send(200, b"[1, 2]")
            return True
        return False

    def do_GET(self) -> None:
        if self.path != "/v1/eth/address":
            self._send(404, {"error": "not found"})
            return
        if self._common():
            return
        if self.server.mode == "bad_address":
            self._send(200, {"address": "0x1234"})
            return
        self._send(200, {"address": WALLET, "public_key": "0x04..."})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        request = json.loads(self.rfile.read(length))
        self.server.requests.append(request)
        if self.path != "/v1/eth/sign":
            self._send(404, {"error": "not found"})
            return
        if self._common():
            return
        mode = self.server.mode
        message = request["message"]
        sig = eth_sign(OTHER_KEY if mode == "other_key" else KEY, message)
        if mode == "v01":
            sig = sig[:64] + bytes([sig[64] - 27])
        if mode == "bad_v":
            sig = sig[:64] + b"\x05"
        if mode == "short_sig":
            sig = sig[:64]
        if mode == "flipped":
            sig = sig[:10] + bytes([sig[10] ^ 1]) + sig[11:]
        if mode == "drip":
            # Each write is within the per-phase timeout; the whole exceeds the deadline.
            raw = json.dumps({"signature": "0x" + sig.hex(), "address": WALLET}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.flush()
            for i in range(len(raw)):
                if self.server.release.wait(TIMEOUT / 4):
                    return
                self.wfile.write(raw[i : i + 1])
                self.wfile.flush()
            return
        body: dict[str, Any] = {"signature": "0x" + sig.hex(), "address": WALLET}
        if mode == "no_sig":
            body = {"address": WALLET}
        if mode == "sig_not_hex":
            body = {"signature": "0x" + "zz" * 65}
        if mode == "sig_int":
            body = {"signature": 12}
        self._send(200, body)


@pytest.fixture
def odyn() -> Iterator[FakeOdyn]:
    server = FakeOdyn()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


TEXT = "NovaKMS:Response:00ff:0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"


def test_default_url() -> None:
    assert DEFAULT_ODYN_URL == "http://127.0.0.1:18000"


async def test_connect_and_sign(odyn: FakeOdyn) -> None:
    async with await OdynSigner.connect(odyn.url, timeout=2.0) as signer:
        assert isinstance(signer, Signer)
        assert isinstance(signer, SyncSigner)
        assert signer.wallet == WALLET.lower()
        assert repr(signer) == f"OdynSigner(base_url={odyn.url!r}, wallet={WALLET.lower()!r})"
        for text in (TEXT, "ünïcødé 🔑", ""):
            sig = await signer.sign_text(text)
            assert len(sig) == 65
            assert sig[64] in (27, 28)
            assert recover_wallet(text=text, signature=sig) == WALLET.lower()
            assert sig == eth_sign(KEY, text)
    assert odyn.requests[0] == {"message": TEXT, "include_attestation": False}
    assert odyn.requests[1]["message"] == "ünïcødé 🔑"


async def test_concurrent_signs_share_a_client(odyn: FakeOdyn) -> None:
    signer = await OdynSigner.connect(odyn.url + "/", timeout=2.0)
    results: dict[int, bytes] = {}

    async def one(i: int) -> None:
        results[i] = await signer.sign_text(f"{TEXT}:{i}")

    try:
        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(one, i)
    finally:
        await signer.aclose()
    await signer.aclose()  # idempotent
    for i, sig in results.items():
        assert recover_wallet(text=f"{TEXT}:{i}", signature=sig) == signer.wallet
    assert len(results) == 8


def test_connect_and_sign_sync(odyn: FakeOdyn) -> None:
    with OdynSigner.connect_sync(odyn.url, timeout=2.0) as signer:
        assert signer.wallet == WALLET.lower()
        sig = signer.sign_text_sync(TEXT)
        assert recover_wallet(text=TEXT, signature=sig) == WALLET.lower()
        assert sig == eth_sign(KEY, TEXT)
    signer.close()  # idempotent


async def test_v_0_1_is_normalised(odyn: FakeOdyn) -> None:
    odyn.mode = "v01"
    async with OdynSigner(base_url=odyn.url, wallet=WALLET, timeout=2.0) as signer:
        sig = await signer.sign_text(TEXT)
    assert sig[64] in (27, 28)
    assert sig == eth_sign(KEY, TEXT)


def assert_signer_unavailable(info: pytest.ExceptionInfo[Unavailable]) -> None:
    err = info.value
    assert err.reason == "signer"
    assert err.to_wire()["reason"] == "signer"
    assert KEY.hex() not in str(err)
    assert err.__cause__ is None


@pytest.mark.parametrize(
    "mode",
    ["other_key", "flipped", "bad_v", "short_sig", "no_sig", "sig_not_hex", "sig_int"],
)
async def test_bad_signature_answers(odyn: FakeOdyn, mode: str) -> None:
    async with await OdynSigner.connect(odyn.url, timeout=2.0) as signer:
        odyn.mode = mode
        with pytest.raises(Unavailable) as info:
            await signer.sign_text(TEXT)
    assert_signer_unavailable(info)


@pytest.mark.parametrize("mode", ["other_key", "flipped", "no_sig", "500", "garbage"])
def test_bad_signature_answers_sync(odyn: FakeOdyn, mode: str) -> None:
    with OdynSigner.connect_sync(odyn.url, timeout=2.0) as signer:
        odyn.mode = mode
        with pytest.raises(Unavailable) as info:
            signer.sign_text_sync(TEXT)
    assert_signer_unavailable(info)


async def test_signature_for_another_wallet_is_rejected(odyn: FakeOdyn) -> None:
    # Configured for one wallet, Odyn signs with another: caught by recovery.
    other_wallet = Account.from_key(OTHER_KEY).address
    async with OdynSigner(base_url=odyn.url, wallet=other_wallet, timeout=2.0) as signer:
        with pytest.raises(Unavailable) as info:
            await signer.sign_text(TEXT)
    assert_signer_unavailable(info)
    assert "recover" in str(info.value)


@pytest.mark.parametrize("mode", ["500", "garbage", "list", "bad_address"])
async def test_connect_bad_answers(odyn: FakeOdyn, mode: str) -> None:
    odyn.mode = mode
    with pytest.raises(Unavailable) as info:
        await OdynSigner.connect(odyn.url, timeout=2.0)
    assert_signer_unavailable(info)
    with pytest.raises(Unavailable) as info_sync:
        OdynSigner.connect_sync(odyn.url, timeout=2.0)
    assert_signer_unavailable(info_sync)


@pytest.mark.parametrize("mode", ["500", "garbage", "list"])
async def test_sign_bad_answers(odyn: FakeOdyn, mode: str) -> None:
    odyn.mode = mode
    async with OdynSigner(base_url=odyn.url, wallet=WALLET, timeout=2.0) as signer:
        with pytest.raises(Unavailable) as info:
            await signer.sign_text(TEXT)
    assert_signer_unavailable(info)
    assert "boom" not in str(info.value)


async def test_server_down(closed_port_url: str) -> None:
    with pytest.raises(Unavailable) as info:
        await OdynSigner.connect(closed_port_url, timeout=1.0)
    assert_signer_unavailable(info)
    with pytest.raises(Unavailable) as info_sync:
        OdynSigner.connect_sync(closed_port_url, timeout=1.0)
    assert_signer_unavailable(info_sync)
    async with OdynSigner(base_url=closed_port_url, wallet=WALLET, timeout=1.0) as signer:
        with pytest.raises(Unavailable) as info:
            await signer.sign_text(TEXT)
        assert_signer_unavailable(info)
        with pytest.raises(Unavailable) as info_sync:
            signer.sign_text_sync(TEXT)
        assert_signer_unavailable(info_sync)
    signer.close()


async def test_timeout(odyn: FakeOdyn) -> None:
    odyn.mode = "slow"
    start = time.monotonic()
    with pytest.raises(Unavailable) as info:
        await OdynSigner.connect(odyn.url, timeout=TIMEOUT)
    assert_signer_unavailable(info)
    assert "timed out" in str(info.value)
    async with OdynSigner(base_url=odyn.url, wallet=WALLET, timeout=TIMEOUT) as signer:
        with pytest.raises(Unavailable) as info:
            await signer.sign_text(TEXT)
    assert_signer_unavailable(info)
    assert time.monotonic() - start < SLOW


def test_timeout_sync(odyn: FakeOdyn) -> None:
    odyn.mode = "slow"
    start = time.monotonic()
    with pytest.raises(Unavailable) as info:
        OdynSigner.connect_sync(odyn.url, timeout=TIMEOUT)
    assert_signer_unavailable(info)
    with (
        OdynSigner(base_url=odyn.url, wallet=WALLET, timeout=TIMEOUT) as signer,
        pytest.raises(Unavailable) as info,
    ):
        signer.sign_text_sync(TEXT)
    assert_signer_unavailable(info)
    assert "timed out" in str(info.value)
    assert time.monotonic() - start < SLOW


async def test_overall_deadline_async(odyn: FakeOdyn) -> None:
    # A server trickling its answer never trips httpx's per-read timeout; the overall
    # deadline still ends the call.
    odyn.mode = "drip"
    start = time.monotonic()
    async with OdynSigner(base_url=odyn.url, wallet=WALLET, timeout=TIMEOUT) as signer:
        with pytest.raises(Unavailable) as info:
            await signer.sign_text(TEXT)
    assert_signer_unavailable(info)
    assert "timed out" in str(info.value)
    assert time.monotonic() - start < 3 * TIMEOUT


async def test_unencodable_text(odyn: FakeOdyn) -> None:
    async with OdynSigner(base_url=odyn.url, wallet=WALLET, timeout=2.0) as signer:
        with pytest.raises(Unavailable) as info:
            await signer.sign_text("\ud800")
    assert_signer_unavailable(info)
    assert odyn.requests == []


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="wallet"):
        OdynSigner(base_url=DEFAULT_ODYN_URL, wallet="0x1234")
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="timeout"):
            OdynSigner(base_url=DEFAULT_ODYN_URL, wallet=WALLET, timeout=bad)
