"""The scientist side imports without cycles, and only downwards.

Pointers, requests, receipts and DP queries depend on the ``Session``
protocol (``scientist/_session.py``), not on the worker; nothing in
``kernel_bridge/scientist`` hides an import behind ``TYPE_CHECKING`` or
inside a function, and nothing there imports the owner side or the
top-level package.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import kernel_bridge

SCIENTIST = Path(kernel_bridge.__file__).parent / "scientist"

# The only function-level imports allowed, each with its reason. Their edges
# still count in the cycle check below.
LAZY = {
    ("pointer.py", "scientist.smpc"):
        "SMPC imports torch (~1.5 s); sessions that never share skip it",
}


def _imports(path: Path) -> tuple[set[str], list[str]]:
    """Modules of ``kernel_bridge`` a file imports (relative to the package), and offences."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    offences: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            offences.append(f"{path.name}:{node.lineno}: TYPE_CHECKING import")
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.level > 0:
                    target = ("scientist." if inner.level == 1 else "") + (inner.module or "")
                    if (path.name, target) in LAZY:
                        continue
                    offences.append(f"{path.name}:{inner.lineno}: import inside a function")
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = "scientist" if node.level == 1 else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            if node.level == 1 and not node.module:
                found.update(f"scientist.{a.name}" for a in node.names)
            else:
                found.add(mod)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("kernel_bridge.").removeprefix("kernel_bridge")
                         or "<package>" for a in node.names if a.name.startswith("kernel_bridge"))
    return found, offences


def test_scientist_modules_have_no_import_cycles_or_hidden_imports() -> None:
    graph: dict[str, set[str]] = {}
    offences: list[str] = []
    for path in sorted(SCIENTIST.glob("*.py")):
        deps, bad = _imports(path)
        graph[f"scientist.{path.stem}"] = {d for d in deps if d.startswith("scientist.")}
        offences += bad
        offences += [f"{path.name}: imports {d}" for d in deps
                     if d == "<package>" or d == "" or d.startswith(("owner", "lab", "launch"))]
    assert offences == []

    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 1:
            raise AssertionError("import cycle: " + " -> ".join([*trail, node]))
        if state.get(node) == 2 or node not in graph:
            return
        state[node] = 1
        for dep in sorted(graph[node]):
            visit(dep, [*trail, node])
        state[node] = 2

    for module in graph:
        visit(module, [])


def test_the_lazy_smpc_import_keeps_torch_out_of_a_plain_session() -> None:
    """What the one allowed lazy import buys, checked in a fresh interpreter."""
    code = ("import sys, kernel_bridge, kernel_bridge.scientist.async_worker; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_objects_depend_on_the_session_protocol_not_on_the_worker() -> None:
    for name in ("pointer", "request", "receipt", "dp", "display", "_session"):
        deps, _ = _imports(SCIENTIST / f"{name}.py")
        assert not deps & {"scientist.worker", "scientist.async_worker",
                           "scientist.connection"}, (name, deps)
