"""The pure cores never load trio, sockets, a clock or an RNG, and the import graph has no cycle.

The list of pure modules is derived from the package (STYLE.md dependency direction): every
module of the pure packages, plus the named pure modules of the mixed packages, minus the
commented glue exceptions below. A new module in a pure package is pure until said otherwise.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import novakms

_ROOT = Path(novakms.__file__).parent

#: Packages whose every module is pure.
PURE_PACKAGES = ["wire", "crypto", "store", "auth"]
#: Pure modules of the mixed packages (and of the top level).
PURE_MODULES = [
    "novakms.errors",
    "novakms.config",
    "novakms.chain.abi",
    "novakms.chain.jsonrpc",
    "novakms.chain.members",
    "novakms.client.cluster_core",
    "novakms.cli.settings",
    "novakms.log.render",
    "novakms.log.sampling",
    "novakms.cluster.bootstrap",
    "novakms.cluster.replication",
    "novakms.cluster.readiness",
    "novakms.cluster.recovery",
    "novakms.cluster.sync_messages",
    "novakms.cluster.proof",
    "novakms.net.addresses",  # the address value type the CONNECT codec and the dialers share
]
#: Modules of the pure packages that are glue on purpose, and why.
GLUE_EXCEPTIONS: dict[str, str] = {
    # None today: auth/source.py only declares the Protocol the trio glue implements, and
    # wire/http_connect.py is the pure half of net/proxy.py.
}

# cryptography.x509 itself imports socket and random (through email.utils), pyhpke imports
# cryptography's serialization module, which loads random, and importlib.resources (the ABI
# artifacts of chain.abi) loads tempfile (random) and zipfile/email (socket); so for these modules
# only the source is checked, not what importing them loads.
SOURCE_ONLY = {
    "novakms.chain.abi",
    "novakms.chain.members",  # imports chain.abi
    "novakms.crypto.certs",
    "novakms.crypto.guardian_shares",
    # novakms.log's __init__ configures structlog, which imports asyncio (and through it
    # socket); the renderer and the sampler themselves import nothing but the standard library.
    "novakms.log.render",
    "novakms.log.sampling",
}
FORBIDDEN = ["trio", "socket", "random", "asyncio", "httpx", "anyio"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _pure_modules() -> list[str]:
    names = set(PURE_MODULES)
    for package in PURE_PACKAGES:
        for path in (_ROOT / package).glob("*.py"):
            if path.name != "__init__.py":
                names.add(_module_name(path))
    return sorted(names - set(GLUE_EXCEPTIONS))


PURE = _pure_modules()


def test_the_derived_list_covers_the_modules_once_forgotten() -> None:
    assert {"novakms.auth.cache", "novakms.cluster.proof", "novakms.chain.abi"} <= set(PURE)
    for name in PURE_MODULES + list(GLUE_EXCEPTIONS):
        assert (_ROOT.parent / (name.replace(".", "/") + ".py")).is_file(), name


@pytest.mark.parametrize("module", sorted(set(PURE) - SOURCE_ONLY))
def test_pure_module_loads_no_io(module: str) -> None:
    code = (
        "import sys, importlib; importlib.import_module(sys.argv[1]);"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, module], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"


@pytest.mark.parametrize("module", PURE)
def test_pure_module_source_reads_no_clock(module: str) -> None:
    source = (_ROOT.parent / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
    for needle in (
        "import time",
        "from time",
        "time.time(",
        "os.urandom",
        "import random",
        "import trio",
        "import socket",
    ):
        assert needle not in source, f"{module} uses {needle}"


# -- the import graph ----------------------------------------------------------------------------


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports executed when the module loads: top level, and inside module-level ``if`` /
    ``try`` blocks, but not under ``if TYPE_CHECKING`` and not inside functions or classes."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                pending.extend(node.body)
            pending.extend(node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                pending.extend(handler.body)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the novakms modules it imports when loaded.

    ``from a.b import c`` depends on ``a.b`` and, when ``a.b.c`` is a module, on it too;
    importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``.
    """
    paths = {_module_name(p): p for p in _ROOT.rglob("*.py")}
    packages = {name for name, path in paths.items() if path.name == "__init__.py"}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if name in packages else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                while target:
                    if target in paths and target != name:
                        edges.add(target)
                    target = target.rpartition(".")[0]
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_pure_modules_import_only_pure_modules() -> None:
    graph = import_graph()
    pure = set(PURE) | SOURCE_ONLY
    allowed = pure | {name.rpartition(".")[0] for name in pure}  # and their packages' __init__
    leaks = {m: sorted(graph[m] - allowed) for m in sorted(pure) if graph[m] - allowed}
    assert leaks == {}, f"pure modules importing glue: {leaks}"
