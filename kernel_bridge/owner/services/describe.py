"""Readable code for pointer operations, for the lineage an owner reviews."""

from __future__ import annotations

from typing import Any

from ...wire.codec import WireTensor
from ...wire.refs import PointerRef


def _short(v: Any) -> str:
    if isinstance(v, PointerRef):
        return v.id
    if isinstance(v, list | tuple):
        inner = ", ".join(_short(x) for x in v[:8]) + (", ..." if len(v) > 8 else "")
        return f"[{inner}]" if isinstance(v, list) else f"({inner})"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k!r}: {_short(x)}" for k, x in list(v.items())[:8]) + "}"
    shape = getattr(v, "shape", None)
    if shape is not None:
        kind = "Tensor" if isinstance(v, WireTensor) else type(v).__name__
        return f"<{kind} shape={tuple(shape)}>"
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."

def describe_op(out: str, target: str, kind: str, name: Any, args: list[Any],
                kwargs: dict[str, Any], reflected: bool) -> str:
    """Readable code for one pointer operation, for the lineage the owner reviews."""
    a = ", ".join([_short(x) for x in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()])
    if kind == "binop":
        sym = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//",
               "mod": "%", "pow": "**", "matmul": "@", "and": "&", "or": "|", "xor": "^",
               "lshift": "<<", "rshift": ">>", "eq": "==", "ne": "!=", "lt": "<", "le": "<=",
               "gt": ">", "ge": ">="}.get(str(name))
        if name == "getitem":
            return f"{out} = {target}[{a}]"
        left, right = (a, target) if reflected else (target, a)
        return f"{out} = {left} {sym} {right}"
    if kind == "unop":
        return f"{out} = {name}({target})"
    if kind == "getitem":
        return f"{out} = {target}[{a}]"
    if kind == "setitem":
        key = _short(args[0]) if args else ""
        value = _short(args[1]) if len(args) > 1 else ""
        return f"{target}[{key}] = {value}"
    if kind == "attr":
        return f"{out} = {target}.{name}"
    return f"{out} = {target}.{name}({a})"
