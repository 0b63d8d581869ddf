"""A request's lineage as the owner reviews it: the value's own entry first.

The worker records every step of a session (cells, pointer operations, assets,
sends) in order; a request carries that list with the entry that produced the
requested value marked ``"target": True``. The owner needs that entry, then
the private steps that led to it, and not the rest (later cells, mock cells),
which stays folded. The API (:meth:`PendingRequest.code`), the CLI, the
approval panel and the widget all arrange and print it here.
"""

from __future__ import annotations

from typing import Any

#: Kernel whose steps can lead to a private value.
PRIVATE = "private"


def arrange(lineage: list[dict[str, Any]]) -> dict[str, Any]:
    """Split a lineage into ``target``, ``leading`` and ``rest`` (JSON-able).

    Parameters
    ----------
    lineage : list of dict
        Entries with ``seq``, ``kind``, ``kernel``, ``code``, ``object`` and
        ``target`` (True on the entry that produced the requested value).

    Returns
    -------
    dict
        ``target``: the marked entry (None when none is marked); ``leading``: the
        private entries before it, in order (every private entry when none is
        marked); ``rest``: everything else (later entries, mock entries), in order.
    """
    entries = sorted((dict(e) for e in lineage), key=lambda e: _seq(e))
    marked = [e for e in entries if e.get("target")]
    target = marked[-1] if marked else None
    limit = _seq(target) if target is not None else None
    leading, rest = [], []
    for e in entries:
        if e is target:
            continue
        private = e.get("kernel", PRIVATE) == PRIVATE
        if private and (limit is None or _seq(e) < limit):
            leading.append(e)
        else:
            rest.append(e)
    return {"target": target, "leading": leading, "rest": rest}


def _seq(entry: dict[str, Any]) -> int:
    seq = entry.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0


def entry_title(entry: dict[str, Any]) -> str:
    """``[7] cell`` / ``[5] op`` (``· mock`` for the mock kernel)."""
    kernel = entry.get("kernel", PRIVATE)
    return f"[{_seq(entry)}] {entry.get('kind', '?')}" + ("" if kernel == PRIVATE
                                                          else f" · {kernel}")


def entry_lines(entry: dict[str, Any]) -> list[str]:
    """An entry as code: a cell's source lines, or the one line of an operation."""
    code = str(entry.get("code") or "")
    if entry.get("kind") == "cell":
        return [f"# {entry_title(entry)}", *code.splitlines()]
    return [f"{code}  # {entry_title(entry)}"]


def render(lineage: list[dict[str, Any]], full: bool = False) -> str:
    """The lineage as text: the requested value's entry, what led to it, the rest folded.

    Parameters
    ----------
    lineage : list of dict
        As in :func:`arrange`.
    full : bool
        Print the folded entries too (after the others, under their own heading).
    """
    view = arrange(lineage)
    out: list[str] = []
    if view["target"] is not None:
        out.append("# ── requested value: produced by ──")
        out.extend(entry_lines(view["target"]))
    else:
        out.append("# ── (no step is marked as producing the value: the whole private "
                   "session follows) ──")
    if view["leading"]:
        out.append("# ── what led to it (private kernel, in order) ──")
        for e in view["leading"]:
            out.extend(entry_lines(e))
    n = len(view["rest"])
    if n and full:
        out.append(f"# ── the rest of the session ({n}: later steps, mock kernel) ──")
        for e in view["rest"]:
            out.extend(entry_lines(e))
    elif n:
        out.append(f"# ── {n} more step{'s' if n > 1 else ''} folded (later steps, mock "
                   "kernel) ──")
    return "\n".join(out)
