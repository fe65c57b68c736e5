"""`novakms dev` and `novakms client` as a user runs them: real processes, real sockets."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data

pytestmark = pytest.mark.slow

SECRET = "5a" * 32


def novakms(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "novakms.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


class StderrReader:
    """Reads a process's stderr in a thread (node logs never fill the pipe); finds its events."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def events(self) -> list[dict[str, Any]]:
        """The lines that are JSON objects: the dev command's own (node logs are not JSON)."""
        with self._changed:
            lines = list(self.lines)
        found = []
        for line in lines:
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    found.append(value)
        return found

    def wait_for(self, event: str, *, count: int = 1, timeout: float = 60, **fields: Any) -> Any:
        """The first ``count`` events named ``event`` with these fields; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [
                    e
                    for e in self.events()
                    if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
                ]
                if len(found) >= count:
                    return found[:count] if count > 1 else found[0]
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no {event} {fields} on stderr:\n{self.text()}"
                self._changed.wait(remaining)

    def text(self, *, join: float = 0) -> str:
        """Everything read so far (after waiting up to ``join`` seconds for the end)."""
        self._thread.join(join)
        with self._changed:
            return "".join(self.lines)


@contextlib.contextmanager
def dev_process(state: Path, *extra: str, secret: bool = True) -> Iterator[dict[str, Any]]:
    """``novakms dev`` with the test's master secret (unless ``secret`` is False: the nodes
    then agree on one); yields its ready line, then stops it.

    The ready line gets ``state``, ``dev_pid``, ``process`` (the Popen) and ``stderr`` (a
    :class:`StderrReader`).
    """
    env = {k: v for k, v in os.environ.items() if k != "IN_ENCLAVE"}
    argv = [sys.executable, "-m", "novakms.cli", "dev", "--port", "0"]
    if secret:
        secret_file = state.parent / f"{state.name}.secret"
        secret_file.write_text(SECRET)
        argv += ["--master-secret-file", str(secret_file)]
    argv += ["--state-dir", str(state), *extra]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        yield from _run_dev(proc, state)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with dev_process(tmp_path_factory.mktemp("dev") / "state") as ready:
        yield ready


def _run_dev(proc: subprocess.Popen[str], state: Path) -> Iterator[dict[str, Any]]:
    assert proc.stdout is not None and proc.stderr is not None
    stderr = StderrReader(proc.stderr)
    line = proc.stdout.readline()
    ready: dict[str, Any] = {"nodes": []}
    try:
        assert line, f"novakms dev exited before its ready line:\n{stderr.text(join=5)}"
        ready = json.loads(line)
        ready.update(state=state, dev_pid=proc.pid, process=proc, stderr=stderr)
        yield ready
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(40)  # the nodes get up to 20 s to drain, then anvil stops
        finally:
            if proc.poll() is None:
                proc.kill()
        text = stderr.text(join=10)
        assert SECRET not in text and SECRET not in line
        for key_file in state.glob("**/*.key"):
            assert key_file.read_text().strip() not in text
        events = stderr.events()  # the command's own lines: one JSON object each
        assert all(
            e.get("event") in {"progress", "node_exited", "node_restarted"} for e in events
        ), events
        restarted = [e["pid"] for e in events if e.get("event") == "node_restarted"]
        for pid in [n["pid"] for n in ready["nodes"] if "pid" in n] + restarted:
            _assert_gone(pid)


def _assert_gone(pid: int, timeout: float = 10) -> None:
    """The process has ended and been reaped (by novakms dev, or init after it)."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"node process {pid} outlived novakms dev"
        time.sleep(0.1)


def hkdf(app_id: int, info: str, length: int) -> bytes:
    prk = hmac.new(
        f"nova-kms:app:{app_id}".encode(), bytes.fromhex(SECRET), hashlib.sha256
    ).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info.encode() + bytes([i]), hashlib.sha256).digest()
        out, i = out + block, i + 1
    return out[:length]


def test_dev_ready_line_shape(dev: dict[str, Any]) -> None:
    assert set(dev) == {"nodes", "apps", "chain", "state", "dev_pid", "process", "stderr"}
    chain = dev["chain"]
    assert set(chain) == {"rpc", "nova_app_registry", "kms_registry", "admin_key_file"}
    assert chain["rpc"].startswith("http://127.0.0.1:") and Path(chain["admin_key_file"]).is_file()
    assert len(dev["nodes"]) == 3  # the default: a cluster of separate processes
    for node in dev["nodes"]:
        assert set(node) == {"address", "wallet", "pid", "metrics"}
        assert node["wallet"].startswith("0x") and len(node["wallet"]) == 42 and node["pid"] > 0
    assert len({n["wallet"] for n in dev["nodes"]}) == 3
    # Every node has its own metrics listener, named in the ready line, serving its own series.
    assert len({n["metrics"] for n in dev["nodes"]} | {n["address"] for n in dev["nodes"]}) == 6
    for node in dev["nodes"]:
        page = httpx.get(f"http://{node['metrics']}/metrics", timeout=10)
        assert page.status_code == 200
        (info,) = [line for line in page.text.splitlines() if line.startswith("novakms_node_info{")]
        assert f'wallet="{node["wallet"]}"' in info and info.endswith(" 1.0")
        assert "novakms_secret_initialized 1.0" in page.text
    # It told what it waited for while starting, on stderr, as JSON events.
    steps = [e["step"] for e in dev["stderr"].events() if e.get("event") == "progress"]
    assert steps == ["chain", "registries", "nodes", "secret", "pin", "ready"]
    assert [a["app_id"] for a in dev["apps"]] == [1, 2]
    for app in dev["apps"]:
        assert Path(app["key_file"]).is_file()
        assert oct(Path(app["key_file"]).stat().st_mode & 0o777) == "0o600"


def test_client_derive_as_documented(dev: dict[str, Any]) -> None:
    node = dev["nodes"][0]
    for app in dev["apps"]:
        out = novakms(
            "client",
            "--node",
            node["address"],
            "--key",
            app["key_file"],
            "--expect-wallet",
            node["wallet"],
            "derive",
            "--path",
            "db/key",
            "--context",
            "v1",
            "--length",
            "48",
        )
        assert out.returncode == 0, out.stdout + out.stderr
        result = json.loads(out.stdout)
        assert result == {
            "app_id": app["app_id"],
            "path": "db/key",
            "length": 48,
            "key": base64.b64encode(hkdf(app["app_id"], "db/key:v1", 48)).decode(),
        }


def test_client_named_keys_as_documented(dev: dict[str, Any], tmp_path: Path) -> None:
    app = dev["apps"][0]

    def client(node: dict[str, Any], *op: str) -> dict[str, Any]:
        out = novakms("client", "--node", node["address"], "--key", app["key_file"], *op)
        assert out.returncode == 0, out.stdout + out.stderr
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    first, second = dev["nodes"][:2]
    public = client(first, "keys", "public", "--name", "main", "--alg", "secp256k1")
    assert public == client(second, "keys", "public", "--name", "main", "--alg", "secp256k1")
    address = public["address"]
    signed = client(second, "sign", "--name", "main", "--alg", "secp256k1", "--eip191", "hi")
    signature = bytes.fromhex(signed["signature"][2:])
    assert (
        Account.recover_message(encode_defunct(text="hi"), signature=signature).lower() == address
    )
    typed = {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}],
            "Ping": [{"name": "n", "type": "uint256"}],
        },
        "primaryType": "Ping",
        "domain": {"name": "cli"},
        "message": {"n": 7},
    }
    (tmp_path / "typed.json").write_text(json.dumps(typed))
    signed = client(
        first,
        "sign",
        "--name",
        "main",
        "--alg",
        "secp256k1",
        "--typed-data",
        str(tmp_path / "typed.json"),
    )
    recovered = Account.recover_message(
        encode_typed_data(full_message=typed), signature=bytes.fromhex(signed["signature"][2:])
    )
    assert recovered.lower() == address
    digest = "0x" + "ab" * 32
    signed = client(first, "sign", "--name", "main", "--alg", "secp256k1", "--digest", digest)
    assert signed["digest"] == digest
    ed = client(first, "sign", "--name", "id", "--alg", "ed25519", "--message", "m")
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(ed["public_key"][2:])).verify(
        bytes.fromhex(ed["signature"][2:]), b"m"
    )
    attested = client(second, "keys", "attest", "--name", "id", "--alg", "ed25519")
    assert attested["signer"] == second["wallet"] and ed["public_key"] in attested["statement"]
    sealed = client(first, "encrypt", "--name", "vault", "--text", "s3cret", "--aad", "ctx")
    out = novakms(
        "client", "--node", second["address"], "--key", app["key_file"], "decrypt",
        "--ciphertext", sealed["ciphertext"], "--aad", "ctx", "--output", "text",
    )  # fmt: skip
    assert (out.returncode, out.stdout) == (0, "s3cret"), out.stderr
    refused = novakms(
        "client", "--node", second["address"], "--key", app["key_file"], "decrypt",
        "--ciphertext", sealed["ciphertext"], "--aad", "other",
    )  # fmt: skip
    error = json.loads(refused.stdout)["error"]
    assert refused.returncode == 1 and error["reason"] == "decrypt_failed"


def test_client_health_and_status(dev: dict[str, Any]) -> None:
    address = dev["nodes"][0]["address"]
    assert json.loads(novakms("client", "--node", address, "health").stdout) == {"status": "ok"}
    status = json.loads(novakms("client", "--node", address, "status").stdout)
    assert status["ready"] is True and status["node"]["mode"] == "development"


def test_client_errors_are_json_with_nonzero_exit(dev: dict[str, Any]) -> None:
    node = dev["nodes"][0]
    out = novakms("client", "--node", node["address"], "derive", "--path", "p")
    assert out.returncode == 1
    assert json.loads(out.stdout)["error"]["code"] == "unauthenticated"
    out = novakms(
        "client",
        "--node",
        node["address"],
        "--key",
        dev["apps"][0]["key_file"],
        "derive",
        "--path",
        "p",
        "--length",
        "5000",
    )
    assert out.returncode == 1 and json.loads(out.stdout)["error"]["code"] == "bad_request"
    out = novakms(
        "client", "--node", node["address"], "--expect-wallet", "0x" + "12" * 20, "health"
    )
    assert out.returncode == 1 and json.loads(out.stdout)["error"]["code"] == "unauthenticated"
    out = novakms("client", "--node", "127.0.0.1:1", "health")
    assert out.returncode == 1 and json.loads(out.stdout)["error"]["code"] == "unavailable"
    out = novakms(
        "client", "--node", node["address"], "--key", str(dev["state"] / "missing.key"), "health"
    )
    assert out.returncode == 2 and "missing.key" in json.loads(out.stdout)["error"]["message"]


def test_a_given_state_dir_is_made_private_and_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    (state / "registry.json").write_text("{}")
    (state / "registry.json").chmod(0o644)
    with dev_process(state, "--chain", "static"):
        assert state.stat().st_mode & 0o777 == 0o700
        assert (state / "registry.json").stat().st_mode & 0o777 == 0o600
    assert state.is_dir()  # the user's directory is not removed


def test_state_dir_reuse_keeps_wallets(dev: dict[str, Any], tmp_path: Path) -> None:
    from novakms.dev.env import prepare_state

    first = prepare_state(tmp_path / "s")
    second = prepare_state(tmp_path / "s")
    assert first.node_wallet == second.node_wallet
    assert [a.wallet for a in first.apps] == [a.wallet for a in second.apps]


def test_dev_refuses_in_enclave_mode(tmp_path: Path) -> None:
    out = novakms("dev", "--port", "0", "--state-dir", str(tmp_path), env={"IN_ENCLAVE": "true"})
    assert out.returncode == 2 and "enclave" in json.loads(out.stdout)["error"]["message"]
    assert not list(tmp_path.iterdir())  # refused before creating anything


def test_dev_rejects_bad_master_secret(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("abc")
    out = novakms(
        "dev", "--port", "0", "--master-secret-file", str(tmp_path / "secret"),
        "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    assert out.returncode == 2 and "64 hex" in json.loads(out.stdout)["error"]["message"]


def test_dev_refuses_a_master_secret_on_the_command_line(tmp_path: Path) -> None:
    out = novakms("dev", "--port", "0", "--master-secret", SECRET, "--state-dir", str(tmp_path))
    assert out.returncode == 2
    assert "/proc/PID/cmdline" in json.loads(out.stdout)["error"]["message"]
    assert SECRET not in out.stdout + out.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("value", "nsm", "message"),
    [
        (None, False, "refused in enclave mode"),
        ("", False, "refused in enclave mode"),
        ("true", False, "refused in enclave mode"),
        ("1", False, "refused in enclave mode"),
        ("maybe", False, "IN_ENCLAVE must be one of"),
        ("false", True, "refused in enclave mode"),  # the NSM device wins over IN_ENCLAVE=false
    ],
)
def test_serve_defaults_to_enclave_mode_and_refuses_dev_inputs(
    tmp_path: Path, value: str | None, nsm: bool, message: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "IN_ENCLAVE"}
    if value is not None:
        env["IN_ENCLAVE"] = value
    if nsm:  # a file standing in for /dev/nsm
        (tmp_path / "nsm").write_text("")
        env["NOVAKMS_NSM_DEVICE"] = str(tmp_path / "nsm")
    key = tmp_path / "k"
    key.write_text("0x" + "11" * 32)
    out = subprocess.run(
        [sys.executable, "-m", "novakms.cli", "serve", "--key-file", str(key)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert out.returncode == 2
    assert message in json.loads(out.stdout)["error"]["message"]


@pytest.mark.parametrize(("value", "message"), [("maybe", "IN_ENCLAVE must be"), ("on", "enclave")])
def test_dev_reads_in_enclave_like_serve(tmp_path: Path, value: str, message: str) -> None:
    out = novakms("dev", "--port", "0", "--state-dir", str(tmp_path), env={"IN_ENCLAVE": value})
    assert out.returncode == 2 and message in json.loads(out.stdout)["error"]["message"]
    assert not list(tmp_path.iterdir())


def test_dev_refuses_where_the_nsm_device_exists(tmp_path: Path) -> None:
    (tmp_path / "nsm").write_text("")
    state = tmp_path / "state"
    env = {"IN_ENCLAVE": "false", "NOVAKMS_NSM_DEVICE": str(tmp_path / "nsm")}
    out = novakms("dev", "--port", "0", "--state-dir", str(state), env=env)
    assert out.returncode == 2 and "enclave" in json.loads(out.stdout)["error"]["message"]
    assert not state.exists()


def test_client_key_file_refused_when_in_enclave(dev: dict[str, Any]) -> None:
    out = novakms(
        "client",
        "--node",
        dev["nodes"][0]["address"],
        "--key",
        dev["apps"][0]["key_file"],
        "health",
        env={"IN_ENCLAVE": "1"},
    )
    assert out.returncode == 2 and "enclave" in json.loads(out.stdout)["error"]["message"]


def test_serve_in_development_mode(tmp_path: Path) -> None:
    """`novakms serve` with IN_ENCLAVE=false and explicit development inputs serves derive."""
    from novakms.dev.env import prepare_state

    state = prepare_state(tmp_path / "s")
    (tmp_path / "secret").write_text(SECRET)
    sock = tmp_path / "kms.sock"
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "novakms.cli",
            "serve",
            "--listen",
            f"unix://{sock}",
            "--key-file",
            str(state.node_key_file),
            "--registry",
            str(state.registry_file),
            "--master-secret-file",
            str(tmp_path / "secret"),
            "--limit",
            "max_inflight=4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "IN_ENCLAVE": "false"},
    ) as proc:
        _serve_and_derive(proc, sock, state)


def _serve_and_derive(proc: subprocess.Popen[str], sock: Path, state: Any) -> None:
    try:
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.05)
        out = novakms(
            "client",
            "--node",
            f"unix://{sock}",
            "--key",
            str(state.apps[1].key_file),
            "derive",
            "--path",
            "x",
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert json.loads(out.stdout)["key"] == base64.b64encode(hkdf(2, "x", 32)).decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_client_kv_commands(dev: dict[str, Any], tmp_path: Path) -> None:
    node, app = dev["nodes"][0]["address"], dev["apps"][0]
    base = ["client", "--node", node, "--key", app["key_file"], "kv"]
    put = json.loads(novakms(*base, "put", "cli/one", "--value", "hello").stdout)
    assert set(put) == {"key", "version", "updated_at_ms", "acked"} and put["key"] == "cli/one"
    assert put["acked"] == 0
    got = json.loads(novakms(*base, "get", "cli/one").stdout)
    assert got == {
        "key": "cli/one",
        "value": base64.b64encode(b"hello").decode(),
        "version": put["version"],
        "updated_at_ms": put["updated_at_ms"],
    }
    blob = tmp_path / "blob"
    blob.write_bytes(bytes(range(256)))
    novakms(*base, "put", "cli/two", "--value-file", str(blob), "--ttl-ms", "600000")
    assert base64.b64decode(json.loads(novakms(*base, "get", "cli/two").stdout)["value"]) == bytes(
        range(256)
    )
    # The value alone: as text, or as the exact bytes.
    text = novakms(*base, "get", "cli/one", "--output", "text")
    assert text.returncode == 0 and text.stdout == "hello"
    raw = subprocess.run(
        [sys.executable, "-m", "novakms.cli", *base, "get", "cli/two", "--output", "raw"],
        capture_output=True,
        timeout=30,
    )
    assert raw.returncode == 0 and raw.stdout == bytes(range(256))
    not_text = novakms(*base, "get", "cli/two", "--output", "text")
    assert not_text.returncode == 2
    assert "not UTF-8" in json.loads(not_text.stdout)["error"]["message"]
    # The dev cluster has three nodes: a write can wait for both peers to hold it.
    acked = json.loads(novakms(*base, "put", "acked/one", "--value", "v", "--acks", "2").stdout)
    assert acked["acked"] == 2
    too_many = novakms(*base, "put", "acked/one", "--value", "v", "--acks", "3")
    assert too_many.returncode == 1
    assert json.loads(too_many.stdout)["error"]["reason"] == "not_enough_peers"
    conflict = novakms(*base, "put", "cli/one", "--value", "x", "--if-version", "absent")
    assert conflict.returncode == 1 and json.loads(conflict.stdout)["error"]["code"] == "conflict"
    page = json.loads(novakms(*base, "list", "--prefix", "cli/", "--limit", "1").stdout)
    assert page["keys"] == ["cli/one"] and page["cursor"]
    rest = json.loads(novakms(*base, "list", "--prefix", "cli/", "--cursor", page["cursor"]).stdout)
    assert rest == {"keys": ["cli/two"], "cursor": None}
    novakms(*base, "delete", "cli/one", "--if-version", put["version"])
    missing = novakms(*base, "get", "cli/one")
    assert missing.returncode == 1 and json.loads(missing.stdout)["error"]["code"] == "not_found"
    # The other demo app does not see app 1's keys.
    other = ["client", "--node", node, "--key", dev["apps"][1]["key_file"], "kv"]
    assert json.loads(novakms(*other, "list").stdout) == {"keys": [], "cursor": None}


def test_client_cert_commands(dev: dict[str, Any], tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    node, app = dev["nodes"][0]["address"], dev["apps"][1]
    ca = novakms("client", "--node", node, "cert", "ca", "--app-id", "2")
    assert ca.returncode == 0 and ca.stdout.startswith("-----BEGIN CERTIFICATE-----")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cli.example")]))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "req.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    out = novakms(
        "client",
        "--node",
        node,
        "--key",
        app["key_file"],
        "cert",
        "sign",
        "--csr",
        str(tmp_path / "req.csr"),
        "--days",
        "3",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert set(result) == {"certificate", "ca"} and result["ca"] == ca.stdout
    leaf = x509.load_pem_x509_certificate(result["certificate"].encode())
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.stdout.encode()))
    # --out: the certificate, then its CA, as PEM in a file; the details on stdout.
    chain_file = tmp_path / "chain.pem"
    sign = ["client", "--node", node, "--key", app["key_file"], "cert", "sign"]
    out = novakms(*sign, "--csr", str(tmp_path / "req.csr"), "--out", str(chain_file))
    assert out.returncode == 0, out.stdout + out.stderr
    details = json.loads(out.stdout)
    assert set(details) == {"out", "app_id", "serial", "not_before_ms", "not_after_ms"}
    first, second = x509.load_pem_x509_certificates(chain_file.read_bytes())
    assert second == x509.load_pem_x509_certificate(ca.stdout.encode())
    first.verify_directly_issued_by(second)
    assert details["serial"] == format(first.serial_number, "x")
    unwritable = novakms(*sign, "--csr", str(tmp_path / "req.csr"), "--out", str(tmp_path / "no/x"))
    assert unwritable.returncode == 2
    assert "cannot write" in json.loads(unwritable.stdout)["error"]["message"]


def test_client_without_node_finds_the_cluster_on_chain(
    dev: dict[str, Any], tmp_path: Path
) -> None:
    chain = dev["chain"]
    found = ["client", "--chain-rpc", chain["rpc"], "--kms-registry", chain["kms_registry"]]
    found += ["--nova-app-registry", chain["nova_app_registry"]]
    app = dev["apps"][0]
    signed = [*found, "--key", app["key_file"]]
    out = novakms(*signed, "derive", "--path", "db/key", "--context", "v1", "--length", "48")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout) == {
        "app_id": app["app_id"],
        "path": "db/key",
        "length": 48,
        "key": base64.b64encode(hkdf(app["app_id"], "db/key:v1", 48)).decode(),
    }
    # Every op works without --node.
    assert json.loads(novakms(*found, "health").stdout) == {"status": "ok"}
    assert json.loads(novakms(*found, "status").stdout)["ready"] is True
    nodes = json.loads(novakms(*found, "nodes").stdout)
    by_wallet = {n["wallet"]: n["address"] for n in nodes["nodes"]}
    assert by_wallet == {n["wallet"]: n["address"] for n in dev["nodes"]}
    put = json.loads(
        novakms(*signed, "kv", "put", "cli/chain", "--value", "v", "--acks", "2").stdout
    )
    get = json.loads(novakms(*signed, "kv", "get", "cli/chain").stdout)
    assert get["value"] == base64.b64encode(b"v").decode() and get["version"] == put["version"]
    page = json.loads(novakms(*signed, "kv", "list", "--prefix", "cli/chain").stdout)
    assert page == {"keys": ["cli/chain"], "cursor": None}
    deleted = novakms(*signed, "kv", "delete", "cli/chain", "--if-version", put["version"])
    assert json.loads(deleted.stdout)["deleted"] is True
    ca = novakms(*found, "cert", "ca", "--app-id", "1")
    assert ca.returncode == 0 and ca.stdout.startswith("-----BEGIN CERTIFICATE-----")
    # The choice is one or the other; the chain names the wallets.
    both = novakms(*found, "--node", dev["nodes"][0]["address"], "health")
    assert both.returncode == 2 and "not both" in json.loads(both.stdout)["error"]["message"]
    partial = novakms("client", "--chain-rpc", chain["rpc"], "health")
    assert partial.returncode == 2
    pinned = novakms(*found, "--expect-wallet", dev["nodes"][0]["wallet"], "health")
    assert pinned.returncode == 2
    # A chain that cannot be read is an error, not a guess.
    dead = ["client", "--chain-rpc", "http://127.0.0.1:1", "--kms-registry"]
    dead += [chain["kms_registry"], "--nova-app-registry", chain["nova_app_registry"], "health"]
    out = novakms(*dead)
    assert out.returncode == 1 and json.loads(out.stdout)["error"]["code"] == "unavailable"


def test_no_secret_or_key_on_any_command_line(dev: dict[str, Any]) -> None:
    keys = [p.read_text().strip().removeprefix("0x") for p in dev["state"].glob("*.key")]
    for pid in [dev["dev_pid"], *(n["pid"] for n in dev["nodes"])]:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert SECRET not in cmdline
        assert not any(key in cmdline for key in keys)


def test_the_state_dir_is_private(dev: dict[str, Any]) -> None:
    state: Path = dev["state"]
    assert state.stat().st_mode & 0o777 == 0o700
    assert (state / "registry.json").stat().st_mode & 0o777 == 0o600
    for key_file in state.glob("*.key"):
        assert key_file.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_temporary_state_dir_is_removed_on_exit(stop: signal.Signals) -> None:
    env = {k: v for k, v in os.environ.items() if k != "IN_ENCLAVE"}
    argv = [sys.executable, "-m", "novakms.cli", "dev", "--port", "0", "--chain", "static"]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        state = Path(ready["apps"][0]["key_file"]).parent
        assert state.is_dir() and state.stat().st_mode & 0o777 == 0o700
        proc.send_signal(stop)
        assert proc.wait(15) == 0
    assert not state.exists()


def test_a_cluster_stopped_while_it_starts_leaves_nothing_behind(tmp_path: Path) -> None:
    """SIGTERM while the nodes are starting: nodes and anvil stopped, the temporary state gone."""
    env = {k: v for k, v in os.environ.items() if k != "IN_ENCLAVE"}
    env["TMPDIR"] = str(tmp_path)  # the temporary state dir (and anvil's) are made here
    argv = [sys.executable, "-m", "novakms.cli", "dev", "--nodes", "2"]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        stderr = StderrReader(proc.stderr)
        deadline = time.monotonic() + 60
        while not any(e.get("step") == "secret" for e in stderr.events()):
            assert proc.poll() is None, stderr.text(join=5)
            assert time.monotonic() < deadline, stderr.text(join=5)
            time.sleep(0.05)
        assert list(tmp_path.iterdir())  # the state exists while it runs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0, stderr.text(join=5)
        assert proc.stdout.read() == ""  # no ready line
    assert list(tmp_path.iterdir()) == []


def test_dev_with_static_registry(tmp_path: Path) -> None:
    with dev_process(tmp_path, "--chain", "static") as ready:
        assert ready["chain"] is None
        out = novakms(
            "client",
            "--node",
            ready["nodes"][0]["address"],
            "--key",
            ready["apps"][0]["key_file"],
            "derive",
            "--path",
            "p",
        )
        assert json.loads(out.stdout)["key"] == base64.b64encode(hkdf(1, "p", 32)).decode()


def test_admin_commands_drive_the_chain_and_the_node_follows(dev: dict[str, Any]) -> None:
    chain, node = dev["chain"], dev["nodes"][0]["address"]
    admin = ["admin", "--rpc", chain["rpc"], "--key", chain["admin_key_file"]]
    app2 = dev["apps"][1]

    def derive_code() -> str | None:
        out = novakms("client", "--node", node, "--key", app2["key_file"], "derive", "--path", "p")
        return None if out.returncode == 0 else json.loads(out.stdout)["error"]["code"]

    assert derive_code() is None
    out = novakms(
        *admin,
        "version-status",
        "--registry",
        chain["nova_app_registry"],
        "--app-id",
        "2",
        "--version-id",
        "1",
        "--status",
        "REVOKED",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert set(json.loads(out.stdout)) == {"tx", "block"}
    deadline = time.monotonic() + 20
    while derive_code() != "forbidden":
        assert time.monotonic() < deadline, "revocation not enforced"
        time.sleep(0.1)
    # `novakms dev` pinned the secret. Without a pin the nodes (which run as enclave nodes do,
    # --require-pin) serve no app; pinned again from a node's own status, they serve again.
    app1 = dev["apps"][0]

    def app1_error() -> dict[str, Any] | None:
        out = novakms("client", "--node", node, "--key", app1["key_file"], "derive", "--path", "p")
        return None if out.returncode == 0 else json.loads(out.stdout)["error"]

    def pinned() -> bool:
        status = json.loads(novakms("client", "--node", node, "status").stdout)
        return bool(status["secret"]["pinned"])

    assert pinned() and app1_error() is None
    assert novakms(*admin, "reset-pin", "--kms-registry", chain["kms_registry"]).returncode == 0
    deadline = time.monotonic() + 20
    while (error := app1_error()) is None:
        assert time.monotonic() < deadline, "reset pin not seen by the node"
        time.sleep(0.1)
    assert error["code"] == "unavailable" and error["reason"] == "unpinned"
    assert error["fingerprint"].startswith("0x")
    out = novakms(
        *admin, "pin-secret", "--kms-registry", chain["kms_registry"], "--from-node", node
    )
    assert out.returncode == 0, out.stdout + out.stderr
    deadline = time.monotonic() + 20
    while app1_error() is not None:
        assert time.monotonic() < deadline, "pin not seen by the node"
        time.sleep(0.1)
    assert pinned()
    nowhere = novakms(
        *admin, "pin-secret", "--kms-registry", chain["kms_registry"], "--from-node", "127.0.0.1:1"
    )
    assert nowhere.returncode != 0 and "cannot read the fingerprint" in nowhere.stdout
    refused = novakms(
        *admin, "set-app-id", "--kms-registry", chain["kms_registry"], "--app-id", "9"
    )
    assert refused.returncode == 1 and "error" in json.loads(refused.stdout)


GUARDIANS = [("0x" + c * 40, "0x" + f"{i:02x}" * 32) for i, c in enumerate("def", start=1)]


def _guardian_flags(guardians: list[tuple[str, str]]) -> list[str]:
    return [flag for wallet, key in guardians for flag in ("--guardian", f"{wallet}:{key}")]


def test_admin_guardian_commands_and_the_node_follows(dev: dict[str, Any], tmp_path: Path) -> None:
    chain = dev["chain"]
    kms = ["--kms-registry", chain["kms_registry"]]
    admin = ["admin", "--rpc", chain["rpc"], "--key", chain["admin_key_file"]]
    node = dev["nodes"][0]["address"]

    def node_version() -> Any:
        return json.loads(novakms("client", "--node", node, "status").stdout)["auth"][
            "guardian_set_version"
        ]

    def wait_node_version(version: int) -> None:
        deadline = time.monotonic() + 20
        while node_version() != version:
            assert time.monotonic() < deadline, f"guardian set version {version} not seen"
            time.sleep(0.1)

    def read(*extra: str) -> Any:
        out = novakms("admin", "--rpc", chain["rpc"], "guardian-set", *kms, *extra)  # no key
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)

    assert read() == {"version": 0, "threshold": 0, "wallets": [], "enc_keys": []}
    mixed_case = [(GUARDIANS[0][0].upper().replace("0X", "0x"), GUARDIANS[0][1].upper()[2:])]
    out = novakms(
        *admin,
        "set-guardians",
        *kms,
        "--threshold",
        "2",
        *_guardian_flags([(mixed_case[0][0], "0x" + mixed_case[0][1]), *GUARDIANS[1:]]),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert set(result) == {"tx", "block"} and isinstance(result["block"], int)
    expected = {
        "version": 1,
        "threshold": 2,
        "wallets": [w for w, _ in GUARDIANS],
        "enc_keys": [k for _, k in GUARDIANS],
    }
    assert read() == expected
    assert read("--block-tag", "finalized") == expected  # the dev chain finalizes at once
    wait_node_version(1)

    out = novakms(
        *admin, "set-guardians", *kms, "--threshold", "1", *_guardian_flags(GUARDIANS[2:])
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert read()["wallets"] == [GUARDIANS[2][0]] and read()["version"] == 2
    wait_node_version(2)

    out = novakms(*admin, "clear-guardians", *kms)
    assert out.returncode == 0, out.stdout + out.stderr
    assert set(json.loads(out.stdout)) == {"tx", "block"}
    assert read() == {"version": 3, "threshold": 0, "wallets": [], "enc_keys": []}
    wait_node_version(3)

    # Only the owner: the contract's custom error is named in the JSON error.
    stranger = tmp_path / "stranger.key"
    stranger.write_text("0x" + "42" * 32)
    for op in (
        ["clear-guardians"],
        ["set-guardians", "--threshold", "1", *_guardian_flags(GUARDIANS[:1])],
    ):
        out = novakms("admin", "--rpc", chain["rpc"], "--key", str(stranger), op[0], *kms, *op[1:])
        assert out.returncode == 1, out.stdout + out.stderr
        error = json.loads(out.stdout)["error"]
        assert error["revert"] == "NotOwner()" and "NotOwner()" in error["message"]
        assert "Traceback" not in out.stderr
    assert read()["version"] == 3


def _many(n: int) -> list[tuple[str, str]]:
    return [("0x" + f"{i + 1:040x}", "0x" + f"{i + 1:064x}") for i in range(n)]


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--threshold", "1", "--guardian", "0xdd"], "expected WALLET:ENCKEY"),
        (["--threshold", "1", "--guardian", f"{GUARDIANS[0][0]}"], "expected WALLET:ENCKEY"),
        (["--threshold", "1", "--guardian", f"{GUARDIANS[0][0]}:0x1234"], "expected WALLET:ENCKEY"),
        (["--threshold", "1", "--guardian", f"0x12:{GUARDIANS[0][1]}"], "expected WALLET:ENCKEY"),
        (
            ["--threshold", "1", "--guardian", f"{GUARDIANS[0][0]}:{GUARDIANS[0][1][2:]}"],
            "expected WALLET:ENCKEY",
        ),
        (["--threshold", "x", *_guardian_flags(GUARDIANS)], "--threshold 'x'"),
        (["--threshold", "-1", *_guardian_flags(GUARDIANS)], "--threshold '-1'"),
        (["--threshold", "0", *_guardian_flags(GUARDIANS)], "threshold 0 is outside 1..3"),
        (["--threshold", "4", *_guardian_flags(GUARDIANS)], "threshold 4 is outside 1..3"),
        (
            ["--threshold", "1", *_guardian_flags([GUARDIANS[0], GUARDIANS[1], GUARDIANS[0]])],
            "duplicate guardian",
        ),
        (
            ["--threshold", "1", *_guardian_flags([("0x" + "00" * 20, GUARDIANS[0][1])])],
            "zero address",
        ),
        (
            ["--threshold", "1", *_guardian_flags([(GUARDIANS[0][0], "0x" + "00" * 32)])],
            "all zero",
        ),
        (["--threshold", "1", *_guardian_flags(_many(17))], "17 guardians: at most 16"),
    ],
)
def test_set_guardians_refuses_bad_input_before_the_chain(flags: list[str], needle: str) -> None:
    # Nothing listens on the RPC port and the key file is empty: input is checked first.
    out = novakms(
        "admin",
        "--rpc",
        "http://127.0.0.1:1",
        "--key",
        "/dev/null",
        "set-guardians",
        "--kms-registry",
        "0x" + "12" * 20,
        *flags,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    error = json.loads(out.stdout)["error"]
    assert error["code"] == "bad_request" and needle in error["message"], error
    assert "Traceback" not in out.stderr


def test_guardian_commands_need_their_flags() -> None:
    registry = ["--kms-registry", "0x" + "12" * 20]
    out = novakms("admin", "guardian-set", *registry)
    assert out.returncode == 2
    assert "needs --rpc" in json.loads(out.stdout)["error"]["message"]
    out = novakms("admin", "--rpc", "http://127.0.0.1:1", "clear-guardians", *registry)
    assert out.returncode == 2
    assert "needs --key" in json.loads(out.stdout)["error"]["message"]
    # a read-only command with nothing at the RPC URL: a JSON error, exit 1
    out = novakms(
        "admin", "--rpc", "http://127.0.0.1:1", "--rpc-timeout", "2", "guardian-set", *registry
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert json.loads(out.stdout)["error"]["code"] == "unavailable"
    assert "Traceback" not in out.stderr


def test_admin_deploy(dev: dict[str, Any]) -> None:
    chain = dev["chain"]
    out = novakms("admin", "--rpc", chain["rpc"], "--key", chain["admin_key_file"], "deploy")
    assert out.returncode == 0, out.stdout + out.stderr
    deployed = json.loads(out.stdout)
    assert set(deployed) == {"nova_app_registry", "kms_registry"}
    assert deployed["kms_registry"] not in (chain["kms_registry"], chain["nova_app_registry"])


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["client", "--node", "no-port-here", "health"], {}, "HOST:PORT"),
        (["dev", "--chain", "static", "--restart"], {"IN_ENCLAVE": ""}, "--restart is for"),
        (["dev", "--restart", "--restart-delay", "-1"], {"IN_ENCLAVE": ""}, ">= 0"),
        (["admin", "wait-safe", "--node", "no-port-here"], {}, "HOST:PORT"),
        (["admin", "wait-safe", "--node", "127.0.0.1:1", "--interval", "0"], {}, "--interval"),
        (["serve", "--peer-proxy", "ftp://x:1"], {"IN_ENCLAVE": "false"}, "unknown scheme"),
        (
            ["serve", "--key-file", "/dev/null"],
            {"IN_ENCLAVE": "false"},
            "--registry FILE or --chain-rpc",
        ),
        (
            [
                "admin",
                "--rpc",
                "http://127.0.0.1:1",
                "--key",
                "/dev/null",
                "reset-pin",
                "--kms-registry",
                "0x12",
            ],
            {},
            "not an address",
        ),
    ],
)
def test_usage_errors_exit_2_without_a_traceback(
    args: list[str], env: dict[str, str], needle: str
) -> None:
    out = novakms(*args, env=env)
    assert out.returncode == 2
    assert needle in out.stdout + out.stderr and "Traceback" not in out.stderr


# --- admin wait-safe ----------------------------------------------------------------------------


def _answers(*answers: Any) -> tuple[list[int], Any]:
    """A fake ``status`` call giving ``answers`` in turn (exceptions are raised); counts calls."""
    calls = [0]

    async def fetch_status() -> Any:
        answer = answers[min(calls[0], len(answers) - 1)]
        calls[0] += 1
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return calls, fetch_status


async def test_wait_safe_asks_again_until_the_node_reports_safe(autojump_clock: Any) -> None:
    import trio

    from novakms.cli.admin import wait_safe_to_stop
    from novakms.errors import TransportError, Unavailable

    calls, fetch = _answers(
        TransportError("refused"),  # not listening yet: a restarting node
        Unavailable(reason="busy"),
        {"ready": True},  # no safe_to_stop: not safe
        {"safe_to_stop": False, "safe_to_stop_reason": "syncing"},
        {"safe_to_stop": True, "safe_to_stop_reason": None},
    )
    waited = await wait_safe_to_stop(fetch, timeout=300, interval=0.5)
    assert calls[0] == 5 and waited == pytest.approx(2.0) == trio.current_time()


@pytest.mark.parametrize(
    ("answer", "last_reason"),
    [
        ({"safe_to_stop": False, "safe_to_stop_reason": "held_alone"}, "held_alone"),
        ({"safe_to_stop": False, "safe_to_stop_reason": None}, None),
        ({"ready": True}, "not_reported"),
        ({"safe_to_stop": "true"}, None),  # only the bool true is safe
    ],
)
async def test_wait_safe_times_out_with_the_last_reason(
    autojump_clock: Any, answer: Any, last_reason: str | None
) -> None:
    import trio

    from novakms.cli.admin import wait_safe_to_stop
    from novakms.errors import Unavailable

    calls, fetch = _answers(answer)
    with pytest.raises(Unavailable) as info:
        await wait_safe_to_stop(fetch, timeout=3, interval=0.2)
    assert info.value.details == {
        "reason": "not_safe_to_stop",
        "last_reason": last_reason,
        "timeout_s": 3,
    }
    assert trio.current_time() == pytest.approx(3) and calls[0] >= 10


async def test_wait_safe_cuts_off_a_call_that_hangs_at_the_timeout(autojump_clock: Any) -> None:
    import trio

    from novakms.cli.admin import wait_safe_to_stop
    from novakms.errors import Unavailable

    async def hangs() -> Any:
        await trio.sleep_forever()

    with pytest.raises(Unavailable) as info:
        await wait_safe_to_stop(hangs, timeout=7, interval=0.2)
    assert info.value.details["last_reason"] == "no_answer"
    assert trio.current_time() == pytest.approx(7)


def test_wait_safe_on_a_port_nobody_listens_on_times_out_as_json() -> None:
    out = novakms("admin", "wait-safe", "--node", "127.0.0.1:1", "--timeout", "1")
    assert out.returncode == 1, out.stdout + out.stderr
    error = json.loads(out.stdout)["error"]
    assert error["code"] == "unavailable" and error["reason"] == "not_safe_to_stop"
    assert error["last_reason"] == "unreachable" and error["timeout_s"] == 1
    assert "Traceback" not in out.stderr


def test_wait_safe_on_a_node_with_an_empty_store(tmp_path: Path) -> None:
    """Needs `status["safe_to_stop"]` on the node (not on every branch yet)."""
    with dev_process(tmp_path / "state", "--chain", "static") as ready:
        address = ready["nodes"][0]["address"]
        out = novakms("admin", "wait-safe", "--node", address, "--timeout", "20", timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        result = json.loads(out.stdout)
        assert set(result) == {"node", "safe_to_stop", "waited_s"}
        assert result["node"] == address and result["safe_to_stop"] is True
        assert isinstance(result["waited_s"], float) and result["waited_s"] >= 0


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ([], "--rpc and --key"),
        (["--key", "/dev/null"], "--rpc"),
        (["--rpc", "http://127.0.0.1:1"], "--key"),
    ],
)
def test_chain_admin_commands_need_rpc_and_key(given: list[str], missing: str) -> None:
    out = novakms("admin", *given, "reset-pin", "--kms-registry", "0x" + "12" * 20)
    assert out.returncode == 2, out.stdout + out.stderr
    error = json.loads(out.stdout)["error"]
    assert error["code"] == "bad_request" and f"needs {missing}:" in error["message"]
    assert "Traceback" not in out.stderr


# --- dev: node processes that exit, and restarts --------------------------------------------------


def _status(address: str) -> Any:
    """The node's status over an anonymous connection, or None when it does not answer."""
    from novakms.client.blocking import BlockingClient
    from novakms.errors import NovaKMSError

    try:
        with BlockingClient.connect(address, timeout=5) as client:
            return client.call("status")
    except NovaKMSError:
        return None


def _wait_serving(address: str, timeout: float = 60) -> Any:
    """Poll until the node is ready and not syncing (a liveness bound, not a speed check)."""
    deadline = time.monotonic() + timeout
    while True:
        status = _status(address)
        if status is not None and status["ready"] and not status.get("syncing"):
            return status
        assert time.monotonic() < deadline, f"{address} not serving: {status}"
        time.sleep(0.2)


def _cmdline(pid: int, timeout: float = 30) -> list[str]:
    """The node process's command line, once it is one: between fork and exec /proc shows
    the parent's (novakms dev) or nothing, a window that load widens."""
    deadline = time.monotonic() + timeout
    while True:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        if "serve" in argv:
            return argv
        assert time.monotonic() < deadline, f"process {pid} never became a node: {argv}"
        time.sleep(0.01)


def _derive(address: str, key_file: str) -> str:
    """The app's key for path ``p`` from this node, base64 (as `client derive` prints it)."""
    from novakms.client.blocking import BlockingClient
    from novakms.crypto.signer import LocalSigner

    signer = LocalSigner.from_file(key_file)
    with BlockingClient.connect(address, signer=signer, timeout=10) as client:
        return base64.b64encode(client.derive("p").key).decode()


def test_node_command_passes_the_secret_file_only_when_asked() -> None:
    import dataclasses

    from novakms.dev.nodes import DevNode, NodeLaunch, node_command

    launch = NodeLaunch(
        log_level="INFO",
        chain_rpc="http://127.0.0.1:8545",
        nova_app_registry="0x" + "01" * 20,
        kms_registry="0x" + "02" * 20,
        poll_interval=0.5,
        limits=("max_inflight=4",),
        master_secret_file="/s/secret",
    )
    node = DevNode(host="127.0.0.1", port=7401, wallet="0x" + "03" * 20, key_file=Path("/s/n.key"))
    first = node_command(launch, node, with_secret=True)
    joiner = node_command(launch, node, with_secret=False)
    assert first == [*joiner, "--master-secret-file", "/s/secret"]
    assert joiner[joiner.index("serve") :] == [
        "serve",
        "--listen", "tcp://127.0.0.1:7401",
        "--key-file", "/s/n.key",
        "--chain-rpc", "http://127.0.0.1:8545",
        "--nova-app-registry", "0x" + "01" * 20,
        "--kms-registry", "0x" + "02" * 20,
        "--poll-interval", "0.5",
        "--limit", "max_inflight=4",
    ]  # fmt: skip
    without_file = dataclasses.replace(launch, master_secret_file=None)
    assert node_command(without_file, node, with_secret=True) == joiner


def test_dev_keeps_serving_when_a_node_exits(tmp_path: Path) -> None:
    with dev_process(tmp_path / "state") as ready:
        first, victim, last = ready["nodes"]
        os.kill(victim["pid"], signal.SIGKILL)
        event = ready["stderr"].wait_for("node_exited")
        assert event == {
            "event": "node_exited",
            "node": victim["address"],
            "wallet": victim["wallet"],
            "pid": victim["pid"],
            "exit": -signal.SIGKILL,
            "signal": "SIGKILL",
        }
        for node in (first, last):
            status = _status(node["address"])
            assert status is not None and status["ready"] is True
        assert _status(victim["address"]) is None  # it stays down without --restart
        assert ready["process"].poll() is None  # novakms dev still runs
        assert (
            _derive(last["address"], ready["apps"][0]["key_file"])
            == base64.b64encode(hkdf(1, "p", 32)).decode()
        )
    events = [e["event"] for e in ready["stderr"].events() if e["event"] != "progress"]
    assert events == ["node_exited"]


def test_dev_restart_rejoins_like_an_enclave_node(tmp_path: Path) -> None:
    expected_key = base64.b64encode(hkdf(1, "p", 32)).decode()
    with dev_process(tmp_path / "state", "--restart", "--restart-delay", "0.2") as ready:
        stderr, nodes, app = ready["stderr"], ready["nodes"], ready["apps"][0]

        def kv(address: str, *args: str) -> subprocess.CompletedProcess[str]:
            return novakms("client", "--node", address, "--key", app["key_file"], "kv", *args)

        out = kv(nodes[0]["address"], "put", "restart/kept", "--value", "kept", "--acks", "2")
        assert out.returncode == 0, out.stdout + out.stderr
        victim = nodes[2]
        started_with = _cmdline(victim["pid"])
        assert "--master-secret-file" in started_with  # the first start uses the user's file
        os.kill(victim["pid"], signal.SIGKILL)
        exited = stderr.wait_for("node_exited", node=victim["address"])
        assert (exited["pid"], exited["signal"]) == (victim["pid"], "SIGKILL")
        restarted = stderr.wait_for("node_restarted", node=victim["address"])
        assert set(restarted) == {"event", "node", "wallet", "pid"}
        assert restarted["wallet"] == victim["wallet"] and restarted["pid"] != victim["pid"]
        # Same key file and listen address, but no secret file: the peers still run.
        secret_flag = started_with.index("--master-secret-file")
        assert _cmdline(restarted["pid"]) == (
            started_with[:secret_flag] + started_with[secret_flag + 2 :]
        )
        _wait_serving(victim["address"])
        # It fetched the secret from its peers and caught up their store.
        assert _derive(victim["address"], app["key_file"]) == expected_key
        got = kv(victim["address"], "get", "restart/kept")
        assert got.returncode == 0, got.stdout + got.stderr
        assert base64.b64decode(json.loads(got.stdout)["value"]) == b"kept"
        assert ready["process"].poll() is None

        # All of them at once: the first to restart runs alone and gets the file again; the
        # others join it.
        for pid in (nodes[0]["pid"], nodes[1]["pid"], restarted["pid"]):
            os.kill(pid, signal.SIGKILL)
        again = stderr.wait_for("node_restarted", count=4)[1:]
        assert {e["node"] for e in again} == {n["address"] for n in nodes}
        with_file = [e for e in again if "--master-secret-file" in _cmdline(e["pid"])]
        assert len(with_file) == 1
        for node in nodes:
            _wait_serving(node["address"])
            assert _derive(node["address"], app["key_file"]) == expected_key
    events = ready["stderr"].events()
    assert [e["event"] for e in events].count("node_exited") == 4


def test_a_node_that_exits_while_the_cluster_starts_is_an_error(tmp_path: Path) -> None:
    # The node processes inherit the environment, and `novakms serve` reads NOVAKMS_CONFIG
    # (`novakms dev` does not): every node exits at once, after anvil and the registries.
    out = novakms(
        "dev", "--state-dir", str(tmp_path / "state"), timeout=120,
        env={"IN_ENCLAVE": "", "NOVAKMS_CONFIG": str(tmp_path / "missing.toml")},
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout.count("\n") == 1  # the error, and no ready line before it
    assert "a node exited while starting" in json.loads(out.stdout)["error"]["message"]
    assert "cannot read the config" in out.stderr  # the node's own error, on stderr


def test_dev_guardians_and_the_recovery_drill_by_hand(tmp_path: Path) -> None:
    options = ("--guardians", "3", "--threshold", "2", "--restart", "--restart-delay", "0.2")
    with dev_process(tmp_path / "state", *options, secret=False) as ready:
        nodes, app, guardians = ready["nodes"], ready["apps"][0], ready["guardians"]
        assert ready["threshold"] == 2 and len(guardians) == 3
        for guardian in guardians:
            assert set(guardian) == {"wallet", "key_file", "enc_key_file", "share_file"}
            for name in ("key_file", "enc_key_file", "share_file"):
                assert Path(guardian[name]).stat().st_mode & 0o777 == 0o600
            opened = novakms(
                "guardian", "open", "--enc-key", guardian["enc_key_file"], "--share",
                guardian["share_file"], "--wallet", guardian["wallet"], "--set-version", "1",
            )  # fmt: skip
            assert opened.returncode == 0, opened.stdout + opened.stderr
            assert json.loads(opened.stdout)["threshold"] == 2
        address = nodes[0]["address"]
        expected = _derive(address, app["key_file"])
        status = json.loads(novakms("guardian", "status", "--node", address).stdout)
        assert status["guardians"]["threshold"] == 2 and status["guardians"]["recovery"] is None
        fetched = novakms(
            "guardian", "fetch", "--node", nodes[1]["address"], "--key", guardians[2]["key_file"],
            "--out", str(tmp_path / "fetched.bin"),
        )  # fmt: skip
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        assert json.loads(fetched.stdout)["x"] == 3

        # Total loss: every node is killed; dev restarts them, and they find the pin but no
        # secret anywhere: secret_lost, and no new secret.
        for node in nodes:
            os.kill(node["pid"], signal.SIGKILL)
        ready["stderr"].wait_for("node_restarted", count=3)
        deadline = time.monotonic() + 60
        while not all((_status(n["address"]) or {}).get("reason") == "secret_lost" for n in nodes):
            assert time.monotonic() < deadline, "the restarted nodes did not report secret_lost"
            time.sleep(0.2)
        # Two guardians restore it, each from its own files, with the CLI.
        for guardian in guardians[:2]:
            restored = novakms(
                "guardian", "restore", "--node", address, "--key", guardian["key_file"],
                "--enc-key", guardian["enc_key_file"], "--share", guardian["share_file"],
            )  # fmt: skip
            assert restored.returncode == 0, restored.stdout + restored.stderr
        assert json.loads(restored.stdout)["recovered"] is True
        for node in nodes:
            _wait_serving(node["address"])
            assert _derive(node["address"], app["key_file"]) == expected
    # Peers that answer "not ready" while the cluster bootstraps its secret (at the start, and
    # again after the total loss) are the normal course of things: never a WARNING.
    warned = [
        line
        for line in ready["stderr"].text().splitlines()
        if "level=warning" in line and "bootstrapping the master secret" in line
    ]
    assert warned == []
