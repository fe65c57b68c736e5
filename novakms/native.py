"""The modules that may run compiled, and whether they do (``scripts/native``, mypyc).

The request path's pure cores are plain, fully typed Python; ``scripts/native build`` (run by
``scripts/setup`` where a C compiler and the Python headers are present) compiles the ones in
:data:`MODULES` with mypyc into extension modules beside their sources, which Python then
imports instead of the ``.py`` files. The sources stay the definition: a compiled module
gives the same results and raises the same errors on every input its callers may pass (the
tests run the suite against it and compare it with its source on generated inputs); only a
caller passing an argument of the wrong static type sees a ``TypeError`` from the compiled
boundary instead of the module's own check. Without a compiler everything runs as source.

``novakms/_native.json`` (written by the build, never committed) records the SHA-256 of each
compiled source, so that a build older than its source is detected (:func:`stale`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

__all__ = ["MANIFEST", "MODULES", "build", "clean", "compiled", "main", "source_digests", "stale"]

#: The modules compiled by ``scripts/native build``: the codec, the framing and the sealed
#: channel, the request and response shapes, the argument reader and the authorization policy.
MODULES = (
    "novakms.wire.cbor",
    "novakms.wire.framing",
    "novakms.wire.channel",
    "novakms.wire.messages",
    "novakms.server.ops.args",
    "novakms.auth.policy",
)
_PACKAGE_DIR = Path(__file__).resolve().parent
_ROOT = _PACKAGE_DIR.parent
#: The build's record of what it compiled: ``{module: sha256 of its source}``.
MANIFEST = _PACKAGE_DIR / "_native.json"


def _source(module: str) -> Path:
    return _ROOT.joinpath(*module.split(".")).with_suffix(".py")


def source_digests() -> dict[str, str]:
    """The SHA-256 (hex) of each module's source now."""
    return {m: hashlib.sha256(_source(m).read_bytes()).hexdigest() for m in MODULES}


def compiled() -> dict[str, bool]:
    """Whether each module of :data:`MODULES` is loaded from an extension module (imports it)."""
    loaded = {}
    for module in MODULES:
        path = getattr(importlib.import_module(module), "__file__", None) or ""
        loaded[module] = path.endswith(tuple(EXTENSION_SUFFIXES))
    return loaded


def stale() -> list[str]:
    """The compiled modules whose source changed since the build (empty: none, or no build)."""
    if not MANIFEST.is_file():
        return []
    built = json.loads(MANIFEST.read_text(encoding="utf-8"))
    now = source_digests()
    return [m for m, is_compiled in compiled().items() if is_compiled and built.get(m) != now[m]]


#: One group, its shared library inside the package (``novakms/_native__mypyc.<suffix>``), so
#: that wherever ``novakms`` is imported from (an editable install, ``PYTHONPATH``) it is too.
_BUILD = """
import sys
from mypyc.build import mypycify
from setuptools import setup
setup(
    name="novakms-native",
    packages=[],
    ext_modules=mypycify(sys.argv[1:], group_name="novakms._native"),
    script_args=["build_ext", "--inplace"],
)
"""


def _artifacts() -> list[Path]:
    """Every file a build leaves in the tree: the modules' extensions, mypyc's shared library
    of the group, the manifest."""
    found = [MANIFEST] if MANIFEST.exists() else []
    for module in MODULES:
        source = _source(module)
        found += [p for p in source.parent.glob(source.stem + ".*") if p.suffix != ".py"]
    found += list(_PACKAGE_DIR.glob("_native__mypyc.*"))
    return [p for p in found if p.name.endswith(tuple(EXTENSION_SUFFIXES)) or p == MANIFEST]


def clean() -> None:
    """Remove a build: every module runs as source again."""
    for path in _artifacts():
        path.unlink()


def _toolchain_missing() -> str | None:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "no Python headers (Python.h)"
    if importlib.util.find_spec("mypyc") is None:
        return "no mypyc (pip install -e '.[dev]')"
    return None


def build() -> int:
    """Compile :data:`MODULES` in place unless the build is current; 0 when done or skipped.

    Without a compiler, the headers or mypyc it says so and leaves the sources to run. A
    failed compilation removes what it left (the sources run) and returns 1.
    """
    missing = _toolchain_missing()
    if missing is not None:
        print(f"native: {missing}; the modules run as source", file=sys.stderr)
        return 0
    digests = source_digests()
    current = MANIFEST.is_file() and json.loads(MANIFEST.read_text(encoding="utf-8")) == digests
    if current and all(compiled().values()):
        print("native: up to date", file=sys.stderr)
        return 0
    clean()
    print(f"native: compiling {len(MODULES)} modules with mypyc", file=sys.stderr)
    done = subprocess.run(
        [sys.executable, "-c", _BUILD, *(str(_source(m).relative_to(_ROOT)) for m in MODULES)],
        cwd=_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        clean()
        print(done.stdout[-3000:] + done.stderr[-3000:], file=sys.stderr)
        print("native: mypyc failed; the modules run as source", file=sys.stderr)
        return 1
    MANIFEST.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m novakms.native build | clean | status`` (``scripts/native``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if len(args) == 1 else ""
    if command == "build":
        return build()
    if command == "clean":
        clean()
        return 0
    if command == "status":
        late = set(stale())
        for module, is_compiled in compiled().items():
            state = "stale" if module in late else "compiled" if is_compiled else "source"
            print(f"{module}: {state}")
        return 1 if late else 0
    print("usage: scripts/native build | clean | status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
