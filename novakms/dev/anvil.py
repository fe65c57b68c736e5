"""A local anvil (Foundry's development chain) for development and tests.

Development only: production KMS nodes read a real chain. :func:`find_anvil` locates the binary
the project installs with npm (``@foundry-rs/anvil``, via ``scripts/setup``);
:class:`AnvilProcess` starts one anvil, learns its port, waits until it answers, and stops it.

Facts about anvil 1.7.1 this module relies on (checked against that version):

* **Binary**: ``node_modules/.bin/anvil`` is a Node wrapper script around the native binary in
  ``node_modules/@foundry-rs/anvil-<os>-<arch>/bin/anvil``. The wrapper forwards SIGTERM and
  then kills itself at once (status 143) without waiting for anvil, so ``wait()`` may return
  before anvil has finished dumping its state or released its port, and a SIGKILL of the
  wrapper orphans anvil. :func:`find_anvil` therefore prefers the native binary and falls back
  to the wrapper only when the platform package is missing.
* **Port**: ``--port 0`` binds a free port; anvil prints ``Listening on HOST:PORT`` on stdout
  (``-q``/``--quiet`` suppresses that line, so it is not used). Anvil also prints the name of
  every RPC method it serves, so stdout is drained continuously by a thread (the last lines are
  kept for error messages).
* **Accounts**: ``--config-out FILE`` writes the dev accounts and private keys as JSON; they come
  from the default mnemonic :data:`DEFAULT_MNEMONIC` (``m/44'/60'/0'/0/i``), 10000 ETH each.
* **State**: ``--state PATH`` is ``--load-state PATH`` (when the file exists) plus
  ``--dump-state PATH`` (on exit); the dump happens on SIGTERM and SIGINT (verified), not on
  SIGKILL. The dump keeps accounts, code, storage, blocks and transactions, so the block height,
  block hashes, deployed contracts and ``eth_getLogs`` over old blocks survive a restart. State
  *at old blocks* survives only with ``--preserve-historical-states`` at dump time: without it,
  ``eth_call`` at a block number below the reloaded head fails with ``BlockOutOfRangeError``.
  :meth:`AnvilProcess.start` passes ``--preserve-historical-states`` with a state file.
  ``--state-interval SECONDS`` additionally dumps periodically (pass it in ``extra_args``).
* **The ``finalized`` tag**: anvil has no consensus layer; it derives ``safe`` and
  ``finalized`` from ``--slots-in-an-epoch`` (default 32): ``safe = latest - slots`` and
  ``finalized = latest - 2 * slots``, floored at block 0 (never null: on a young chain
  ``finalized`` is the genesis block). With the default, a registry change is "finalized" only
  64 blocks later, and under automine blocks appear only with transactions, so a KMS reading at
  ``finalized`` would not see it until 64 more blocks are mined. ``--slots-in-an-epoch 0``
  makes ``safe == finalized == latest``; :meth:`AnvilProcess.start` passes it by default
  (``slots_in_an_epoch=0``), so the KMS can keep its production default tag on the development
  chain. Pass ``slots_in_an_epoch=1`` (finalized = latest - 2) to test finality lag, or None
  for anvil's default.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx

from novakms.chain.rpc import JsonRpcClient
from novakms.errors import AnvilError, AnvilNotFound

__all__ = ["ANVIL_ENV", "DEFAULT_CHAIN_ID", "DEFAULT_MNEMONIC", "AnvilProcess", "find_anvil"]

ANVIL_ENV = "NOVAKMS_ANVIL"
"""Environment variable naming an anvil binary to use instead of the project's npm one."""

DEFAULT_MNEMONIC = "test test test test test test test test test test test junk"
"""Anvil's default dev mnemonic (accounts ``m/44'/60'/0'/0/i``; public knowledge, dev only)."""

DEFAULT_CHAIN_ID = 31337
"""Anvil's default chain id."""

_LISTENING_RE = re.compile(r"Listening on (\S+):(\d+)")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
_OUTPUT_LINES = 200
_POLL_INTERVAL = 0.005


_LIVE: weakref.WeakSet[AnvilProcess] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    """At interpreter exit, stop anvils that were never stopped (e.g. after an uncaught
    exception), so they do not outlive the program. SIGKILL of Python still orphans them."""
    for node in list(_LIVE):
        with contextlib.suppress(Exception):
            node.stop(timeout=2.0)


def _default_roots() -> list[Path]:
    """Where to look for ``node_modules``: the source tree holding this package, then cwd."""
    roots = [Path(__file__).resolve().parents[2]]
    cwd = Path.cwd().resolve()
    roots.extend(p for p in (cwd, *cwd.parents) if p not in roots)
    return roots


def _platform_package() -> str | None:
    """The npm platform package holding the native binary, e.g. ``anvil-linux-amd64``."""
    system = {"linux": "linux", "darwin": "darwin", "win32": "win32"}.get(sys.platform)
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    if system is None or arch is None:
        return None
    return f"anvil-{system}-{arch}"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_anvil(repo_root: Path | None = None) -> Path:
    """Locate the anvil binary.

    Order: ``$NOVAKMS_ANVIL`` if set; else, under ``repo_root`` (default: the source tree of
    this package, then the current directory and its parents), the native binary of the npm
    platform package, then ``node_modules/.bin/anvil`` (the Node wrapper; see the module notes
    on why the native binary is preferred); else ``anvil`` on ``PATH`` (e.g. Foundry's own
    install, for ``novakms dev`` outside the checkout).

    Args:
        repo_root: the project root holding ``node_modules``.

    Returns:
        The path of an executable.

    Raises:
        AnvilNotFound: nothing found; the message says where it looked and what to do.
    """
    override = os.environ.get(ANVIL_ENV)
    if override:
        path = Path(override)
        if _executable(path):
            return path
        raise AnvilNotFound(f"${ANVIL_ENV} is set to {override!r}, which is not an executable")
    roots = [Path(repo_root)] if repo_root is not None else _default_roots()
    package = _platform_package()
    name = "anvil.exe" if sys.platform == "win32" else "anvil"
    for root in roots:
        modules = root / "node_modules"
        if package is not None:
            native = modules / "@foundry-rs" / package / "bin" / name
            if _executable(native):
                return native
        wrapper = modules / ".bin" / "anvil"
        if _executable(wrapper):
            return wrapper
    on_path = shutil.which(name)
    if on_path is not None:
        return Path(on_path)
    where = str(roots[0]) if len(roots) == 1 else f"{roots[0]} (or the current directory)"
    raise AnvilNotFound(
        f"anvil is not installed: no node_modules/.bin/anvil under {where} and no anvil on "
        f"PATH. In the checkout run scripts/setup (it installs @foundry-rs/anvil with npm); "
        f"elsewhere install Foundry's anvil on PATH or set ${ANVIL_ENV} to an anvil binary."
    )


class AnvilProcess:
    """One local anvil process (synchronous; from trio use ``trio.to_thread.run_sync``).

    Typical use::

        with AnvilProcess().start() as anvil:
            async with JsonRpcClient(anvil.url) as rpc: ...

    ``with AnvilProcess() as anvil`` starts it with the defaults. :meth:`restart` stops it and
    starts it again with the same options on the same port (with a ``state_file``, the chain
    continues where it stopped). Anvils still running when the interpreter exits are stopped
    by an ``atexit`` hook.

    Args:
        executable: the anvil binary (default: :func:`find_anvil`).
    """

    def __init__(self, executable: Path | None = None) -> None:
        self._executable = Path(executable) if executable is not None else find_anvil()
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=_OUTPUT_LINES)
        self._listening = threading.Event()
        self._bound: tuple[str, int] | None = None
        self._options: dict[str, Any] = {}
        self._host = "127.0.0.1"
        self._port = 0
        self._chain_id = 0
        self._accounts: list[str] = []
        self._private_keys: list[bytes] = []

    # -- properties ---------------------------------------------------------------------

    @property
    def executable(self) -> Path:
        """The anvil binary."""
        return self._executable

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while started, else None."""
        return self._process.pid if self._process is not None else None

    @property
    def host(self) -> str:
        """The host to connect to (``127.0.0.1`` when anvil listens on all interfaces)."""
        return self._host

    @property
    def port(self) -> int:
        """The port anvil listens on (0 before the first start)."""
        return self._port

    @property
    def url(self) -> str:
        """The HTTP JSON-RPC endpoint."""
        if not self._port:
            raise AnvilError("anvil has not been started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def chain_id(self) -> int:
        """The chain id anvil answered at start."""
        return self._chain_id

    @property
    def accounts(self) -> list[str]:
        """The funded dev accounts (lowercase ``0x`` + 40 hex), in mnemonic order."""
        return list(self._accounts)

    @property
    def private_keys(self) -> list[bytes]:
        """The 32-byte private keys of :attr:`accounts` (dev keys: public knowledge)."""
        return list(self._private_keys)

    @property
    def state_file(self) -> Path | None:
        """The state file given to :meth:`start`, if any."""
        value = self._options.get("state_file")
        return Path(value) if value is not None else None

    @property
    def output(self) -> list[str]:
        """The last lines anvil printed (for diagnostics)."""
        return list(self._output)

    def __repr__(self) -> str:
        state = f"running on port {self._port}" if self.running else "stopped"
        return f"AnvilProcess({state})"

    def rpc(self, *, timeout: float = 5.0) -> JsonRpcClient:
        """A new JSON-RPC client of this anvil (close it with ``aclose``)."""
        return JsonRpcClient(self.url, timeout=timeout)

    # -- lifecycle ----------------------------------------------------------------------

    def start(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        block_time: float | None = None,
        state_file: Path | None = None,
        chain_id: int | None = None,
        slots_in_an_epoch: int | None = 0,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 10.0,
    ) -> Self:
        """Start anvil and wait until it answers ``eth_chainId``.

        Args:
            port: TCP port; 0 picks a free one (read back from anvil's output).
            host: address to listen on.
            block_time: seconds between blocks (interval mining); None mines one block per
                transaction (automine).
            state_file: load the chain from this file if it exists, and dump it there on
                :meth:`stop` (``--state``, with ``--preserve-historical-states``).
            chain_id: chain id (anvil's default is 31337).
            slots_in_an_epoch: ``finalized`` lags ``latest`` by twice this many blocks; 0
                (default) makes ``finalized`` the latest block; None keeps anvil's default
                (32, a lag of 64 blocks).
            extra_args: more anvil command-line arguments.
            startup_timeout: seconds to wait for anvil to listen and answer.

        Returns:
            self.

        Raises:
            AnvilError: already running, anvil exited, or it did not answer in time.
        """
        if self.running:
            raise AnvilError("anvil is already running")
        if self._process is not None:  # it exited on its own: reap it
            self._terminate(timeout=1.0)
        self._cleanup()
        self._options = {
            "host": host,
            "block_time": block_time,
            "state_file": state_file,
            "chain_id": chain_id,
            "slots_in_an_epoch": slots_in_an_epoch,
            "extra_args": tuple(extra_args),
            "startup_timeout": startup_timeout,
        }
        tmpdir = Path(tempfile.mkdtemp(prefix="novakms-anvil-"))
        config_out = tmpdir / "config.json"
        args = [
            str(self._executable),
            "--host",
            host,
            "--port",
            str(int(port)),
            "--config-out",
            str(config_out),
        ]
        if block_time is not None:
            args += ["--block-time", repr(float(block_time))]
        if state_file is not None:
            args += ["--state", str(state_file), "--preserve-historical-states"]
        if chain_id is not None:
            args += ["--chain-id", str(int(chain_id))]
        if slots_in_an_epoch is not None:
            args += ["--slots-in-an-epoch", str(int(slots_in_an_epoch))]
        args += list(extra_args)

        self._output.clear()
        self._listening.clear()
        self._bound = None
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )
        self._process = process
        assert process.stdout is not None
        self._reader = threading.Thread(
            target=self._drain, args=(process.stdout,), name="anvil-stdout", daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + startup_timeout
        try:
            self._wait_listening(deadline)
            assert self._bound is not None
            bound_host, self._port = self._bound
            self._host = "127.0.0.1" if bound_host in ("0.0.0.0", "[::]", "::") else bound_host
            self._host = self._host.strip("[]")
            self._chain_id = self._wait_answering(deadline)
            self._load_accounts(config_out)
        except BaseException:
            self._terminate(timeout=2.0)
            self._cleanup()
            raise
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        _LIVE.add(self)
        return self

    def _drain(self, stream: IO[bytes]) -> None:
        """Reader thread: keep the last lines of output; notice the ``Listening on`` line."""
        try:
            for raw in stream:
                line = _ANSI_RE.sub("", raw.decode("utf-8", "replace")).rstrip()
                self._output.append(line)
                if self._bound is None:
                    match = _LISTENING_RE.search(line)
                    if match is not None:
                        self._bound = (match.group(1), int(match.group(2)))
                        self._listening.set()
        except (OSError, ValueError):  # the pipe was closed under us
            pass
        finally:
            self._listening.set()

    def _failure(self, message: str) -> AnvilError:
        tail = "\n".join(list(self._output)[-15:])
        return AnvilError(f"{message}; last output:\n{tail}" if tail else message)

    def _wait_listening(self, deadline: float) -> None:
        """Wait for the ``Listening on`` line (or for anvil to exit)."""
        self._listening.wait(max(0.0, deadline - time.monotonic()))
        if self._bound is None:
            process = self._process
            if process is not None and process.poll() is None:
                # Its output ended, so it is exiting; give it a moment to be reaped.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=2.0)
            if process is not None and process.poll() is not None:
                if self._reader is not None:
                    self._reader.join(timeout=1.0)
                raise self._failure(f"anvil exited with status {process.returncode}")
            raise self._failure("anvil did not report its port in time")

    def _wait_answering(self, deadline: float) -> int:
        """Poll ``eth_chainId`` until anvil answers; return the chain id."""
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while True:
                try:
                    response = client.post(self.url, json=body)
                    result = response.json().get("result")
                    if response.status_code == 200 and isinstance(result, str):
                        return int(result, 16)
                except (httpx.HTTPError, ValueError, AttributeError):
                    pass
                process = self._process
                if process is not None and process.poll() is not None:
                    raise self._failure(f"anvil exited with status {process.returncode}")
                if time.monotonic() >= deadline:
                    raise self._failure("anvil did not answer eth_chainId in time")
                time.sleep(_POLL_INTERVAL)

    def _load_accounts(self, config_out: Path) -> None:
        """Read the dev accounts and keys from anvil's ``--config-out`` file."""
        try:
            config = json.loads(config_out.read_text())
            accounts = [str(a).lower() for a in config["available_accounts"]]
            keys = [bytes.fromhex(str(k).removeprefix("0x")) for k in config["private_keys"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AnvilError(f"cannot read anvil's account list: {type(exc).__name__}") from None
        if len(accounts) != len(keys) or any(len(k) != 32 for k in keys):
            raise AnvilError("anvil's account list is malformed")
        self._accounts = accounts
        self._private_keys = keys

    def _terminate(self, *, timeout: float) -> bool:
        """SIGTERM, wait, SIGKILL fallback. Returns whether SIGKILL was needed."""
        process = self._process
        if process is None:
            return False
        killed = False
        if process.poll() is None:
            try:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                killed = True
                process.kill()
                process.wait()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
            self._reader = None
        if process.stdout is not None:
            process.stdout.close()
        return killed

    def _cleanup(self) -> None:
        """Forget the process."""
        self._process = None
        _LIVE.discard(self)

    def stop(self, *, timeout: float = 10.0) -> int | None:
        """Stop anvil: SIGTERM (anvil dumps its state file, if any), then SIGKILL after
        ``timeout`` seconds. Idempotent.

        Args:
            timeout: seconds to wait after SIGTERM.

        Returns:
            The exit status, or None if it was not started.

        Raises:
            AnvilError: anvil had to be killed although a state file was configured (the
                dump is then missing or incomplete).
        """
        process = self._process
        if process is None:
            return None
        killed = self._terminate(timeout=timeout)
        self._cleanup()
        if killed and self.state_file is not None:
            raise AnvilError(
                f"anvil did not exit within {timeout:g}s of SIGTERM and was killed; "
                "its state file was not dumped"
            )
        return process.returncode

    def restart(self, *, port: int | None = None) -> Self:
        """Stop, then start again with the same options, on the same port by default.

        Args:
            port: another port (0 for a free one), or None to keep the current one.

        Returns:
            self.

        Raises:
            AnvilError: as for :meth:`start` and :meth:`stop`.
        """
        if not self._options:
            raise AnvilError("anvil has not been started")
        self.stop()
        return self.start(port=self._port if port is None else port, **self._options)

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
