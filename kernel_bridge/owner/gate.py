"""The gate: what may leave a worker, decided by trusted code only.

A clean value leaves on request; a tainted one only as the snapshot an owner
approved (taint: :mod:`.session`). From a private kernel a cell yields a
receipt and nothing else: its outputs are held.

The bound on what leaves a private kernel without approval
-----------------------------------------------------------
A kernel that ran scientist code chooses everything it reports, so each
message out of it is counted in bits the kernel can choose. Per private cell
(``op_run``), whatever the cell's size:

* status: ok, error, interrupted, timeout, or the kernel died: < 3 bits;
* error type: one of :data:`ERROR_TYPES` (~70 names): < 7 bits;
* error line: an integer in 1..:data:`MAX_ERROR_LINE`, or none: < 11 bits;
* held outputs: whether there were any (one bundle, never a count): 1 bit;
* names: parsed from the source by :func:`assigned_names`, never asked of
  the kernel (not whether they exist, not their types): 0 bits.

That is under 22 bits per cell, plus its duration (below). Per pointer
operation or variable lookup (``op_op``, ``op_var``): success or error type
(< 7 bits) and the result's type name from the fixed vocabulary of
:func:`~kernel_bridge.ops.allowlist.safe_type_name` (< 6 bits): under 13 bits.
Shapes and dtypes leave only for clean values and for an asset as the worker
loaded it (the owner's ``show_shape``/``show_row_count``). A request's digest
and size leave only with the approved value.

Timing is the one channel the gate cannot close: the scientist sees how long a
cell takes. A cell of at most T seconds can encode about log2(T / jitter) bits
in its duration (20 bits for 600 s at 1 ms resolution); the owner bounds T by
the worker's ``exec_timeout``.
"""

from __future__ import annotations

import ast
import builtins
import re
from typing import Any

from ..errors import ApprovalRequired
from ..ops.allowlist import safe_type_name
from .session import RemoteObject, Session

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_REPORTED_NAMES = 100
#: Error lines past this are not reported (keeps the line under 11 bits).
MAX_ERROR_LINE = 1024

#: Exception names a receipt may report; anything else becomes "Exception".
ERROR_TYPES = frozenset(
    name for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, BaseException)
) | frozenset({"Aborted", "UnknownAsset"})


def safe_error_name(ename: Any) -> str:
    """The reportable form of an exception type name raised in a kernel."""
    return ename if isinstance(ename, str) and ename in ERROR_TYPES else "Exception"


def assigned_names(code: str) -> list[str]:
    """Names a cell's source binds at top level or anywhere (conservatively), in order.

    IPython syntax (magics, ``!cmd``) is transformed first, like the kernel does.
    """
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        code = TransformerManager().transform_cell(code)
    except Exception:  # IPython missing or odd syntax: parse the raw text
        pass
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    found: dict[str, None] = {}

    def add(target: ast.AST) -> None:
        # Only what a target binds or changes: ``a``, ``a, *b``, ``a[i]`` / ``a.x``
        # (``a`` is changed), not the names read in an index or a call.
        if isinstance(target, ast.Name):
            found.setdefault(target.id)
        elif isinstance(target, ast.Tuple | ast.List):
            for elt in target.elts:
                add(elt)
        elif isinstance(target, ast.Starred):
            add(target.value)
        elif isinstance(target, ast.Subscript | ast.Attribute):
            if isinstance(target.value, ast.Name):
                found.setdefault(target.value.id)

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                add(t)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign | ast.For | ast.AsyncFor):
            add(node.target)
        elif isinstance(node, ast.NamedExpr):
            add(node.target)
        elif isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                if item.optional_vars is not None:
                    add(item.optional_vars)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                found.setdefault((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.setdefault(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            found.setdefault(node.name)
    return [n for n in found if _NAME_RE.match(n)][:MAX_REPORTED_NAMES]


def check_release(session: Session, obj: RemoteObject) -> None:
    """Raise :class:`ApprovalRequired` unless ``obj`` may leave without approval."""
    taint = session.taint_of(obj)
    if taint:
        raise ApprovalRequired(
            f"this value derives from private data ({', '.join(sorted(taint))}); "
            "ask the owner with .request(reason=...)",
            object=obj.id,
            taint=sorted(taint),
        )


def parsed_names(candidates: list[str]) -> list[dict[str, str]]:
    """Receipt entries for a private cell: the names its source assigns, nothing more.

    Whether a name ended up bound, and to what type, depends on the data; the
    source does not.
    """
    return [{"name": n, "change": "assigned"} for n in candidates]


def receipt_names(
    candidates: list[str], reported: Any, known: dict[str, str]
) -> list[dict[str, str]]:
    """Turn the kernel's claim about variables into receipt entries.

    Only names from ``candidates`` (parsed from the source) count; types are
    mapped onto the fixed vocabulary. ``known`` (name -> type) is updated.
    """
    if not isinstance(reported, dict):
        return []
    out = []
    for name in candidates:
        tname = reported.get(name)
        if tname is None:
            continue
        tname = safe_type_name(tname)
        change = "changed" if name in known else "created"
        known[name] = tname
        out.append({"name": name, "type": tname, "change": change})
    return out


def parse_user_expression(payload: Any, limit: int = 1 << 16) -> Any:
    """Decode the JSON a kernel returned through ``user_expressions`` (hostile input)."""
    import json

    try:
        if payload.get("status") != "ok":
            return None
        text = payload["data"]["text/plain"]
        if not isinstance(text, str) or len(text) > limit:
            return None
        inner = ast.literal_eval(text)
        return json.loads(inner) if isinstance(inner, str) else None
    except Exception:
        return None


_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CELL_FRAME_RE = re.compile(r"Cell In\[(\d+)\], line (\d+)")


def error_line(traceback: Any, execution_count: Any, code: str) -> int | None:
    """The line of the failing cell where its error was raised, or None.

    The traceback comes from a kernel that ran scientist code, so it is hostile
    input: only frames naming this cell (``Cell In[N]`` with the cell's own
    execution count) count, the deepest one wins, and the result is an integer
    between 1 and the cell's line count or nothing. The message text is never
    read. At most ``log2(lines)`` bits per failing cell can leave this way, the
    same order as the error type's vocabulary.
    """
    if not isinstance(traceback, list) or not isinstance(execution_count, int):
        return None
    n_lines = max(1, len(code.splitlines()))
    found: int | None = None
    for entry in traceback[:200]:
        if not isinstance(entry, str):
            continue
        for m in _CELL_FRAME_RE.finditer(_ANSI_RE.sub("", entry[:10000])):
            if int(m.group(1)) == execution_count and len(m.group(2)) <= 6:
                found = int(m.group(2))
    limit = min(n_lines, MAX_ERROR_LINE)
    return found if found is not None and 1 <= found <= limit else None
