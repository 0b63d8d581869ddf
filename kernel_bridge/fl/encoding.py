"""Table -> tensors, from the asset's *public* column declarations only.

Every worker must turn its table into the same feature layout, and the
scientist must know the model's input width before any training, so the
encoding is a function of the declared spec, never of the private values:

* ``int`` / ``float`` columns with both bounds: scaled to ``[0, 1]`` by
  ``(x - lower) / (upper - lower)`` (clipped there); without bounds: as they are;
* ``category`` columns: one-hot over the declared categories, in their declared
  order (a value outside them encodes as all zeros);
* ``bool`` columns: 0 / 1;
* the target: a class index (``category``: its position; bounded ``int``:
  ``x - lower``; ``bool``: 0 / 1).

:func:`merge_specs` combines several workers' declarations into one (bounds
widened, categories united) so that all of them encode identically; the merged
spec goes into the plan's ``inputs.encoding`` (:func:`encoding_decls`), which the
owner approves with the plan, and each worker's trusted code encodes its table
by it (:func:`encode_inputs`) before the plan's sandboxed kernel sees the data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import InvalidQuery

#: A column declaration as a worker's ``datasets()`` shows it:
#: ``{"name", "kind", "lower", "upper", "categories"}``.
ColumnDecl = dict[str, Any]


def column_width(col: ColumnDecl) -> int:
    """How many inputs a declared feature column becomes."""
    if col["kind"] == "category":
        return len(col["categories"])
    if col["kind"] in ("int", "float", "bool"):
        return 1
    raise InvalidQuery(f"column {col['name']!r} is a {col['kind']} column: FL features must be "
                       "int, float, bool or category")


def feature_names(spec: Sequence[ColumnDecl], features: Sequence[str]) -> list[str]:
    """The encoded inputs' names, in order (``cp=typical``, ``age``, ...)."""
    by_name = _by_name(spec)
    out: list[str] = []
    for name in features:
        col = by_name[name]
        column_width(col)
        if col["kind"] == "category":
            out += [f"{name}={c}" for c in col["categories"]]
        else:
            out.append(name)
    return out


def input_width(spec: Sequence[ColumnDecl], features: Sequence[str]) -> int:
    """The model's input width: known from the declarations before any training."""
    by_name = _by_name(spec)
    missing = [f for f in features if f not in by_name]
    if missing:
        raise InvalidQuery(f"no declared column(s) {missing} in the asset")
    return sum(column_width(by_name[f]) for f in features)


def n_classes(spec: Sequence[ColumnDecl], target: str) -> int:
    """How many classes the target column declares."""
    col = _by_name(spec).get(target)
    if col is None:
        raise InvalidQuery(f"no declared target column {target!r} in the asset")
    if col["kind"] == "category":
        return len(col["categories"])
    if col["kind"] == "bool":
        return 2
    if col["kind"] == "int" and col.get("lower") is not None and col.get("upper") is not None:
        return int(col["upper"]) - int(col["lower"]) + 1
    raise InvalidQuery(f"target {target!r} must be a category, a bool or a bounded int column "
                       "(its classes must be declared)")


def merge_specs(specs: Iterable[Sequence[ColumnDecl]], columns: Sequence[str]
                ) -> list[ColumnDecl]:
    """One declaration per column that encodes every worker's table the same way.

    Bounds are widened to cover every worker's; categories are united in order of
    first appearance. Columns whose kinds differ between workers are refused.

    Parameters
    ----------
    specs : iterable of list of dict
        Each worker's declared columns (``dataset["schema"]["columns"]``).
    columns : sequence of str
        The columns the plan uses (features and target).

    Returns
    -------
    list of dict
        The merged declarations of ``columns``, in that order.

    Raises
    ------
    InvalidQuery
        A column is missing on a worker or declared with different kinds.
    """
    merged: dict[str, ColumnDecl] = {}
    for spec in specs:
        by_name = _by_name(spec)
        for name in columns:
            if name not in by_name:
                raise InvalidQuery(f"a worker declares no column {name!r}")
            col = by_name[name]
            have = merged.get(name)
            if have is None:
                merged[name] = {"name": name, "kind": col["kind"], "lower": col.get("lower"),
                                "upper": col.get("upper"),
                                "categories": list(col.get("categories") or []) or None}
                continue
            if have["kind"] != col["kind"]:
                raise InvalidQuery(f"column {name!r} is declared {have['kind']} on one worker "
                                   f"and {col['kind']} on another")
            for bound, pick in (("lower", min), ("upper", max)):
                a, b = have[bound], col.get(bound)
                have[bound] = None if a is None or b is None else pick(a, b)
            if have["kind"] == "category":
                cats = have["categories"] or []
                have["categories"] = cats + [c for c in col["categories"] if c not in cats]
    return [merged[name] for name in columns]


def _by_name(spec: Sequence[ColumnDecl]) -> dict[str, ColumnDecl]:
    return {c["name"]: c for c in spec}


def encoding_decls(spec: Sequence[ColumnDecl], columns: Sequence[str]) -> list[ColumnDecl]:
    """The declarations of ``columns`` as a plan's ``inputs.encoding`` holds them
    (only the keys each kind uses; see :mod:`kernel_bridge.plan_document`)."""
    by_name = _by_name(spec)
    out: list[ColumnDecl] = []
    for name in columns:
        col = by_name[name]
        decl: ColumnDecl = {"name": name, "kind": col["kind"]}
        if col["kind"] in ("int", "float"):
            decl.update({b: col[b] for b in ("lower", "upper") if col.get(b) is not None})
        if col["kind"] == "category":
            decl["categories"] = [str(c) for c in col["categories"]]
        out.append(decl)
    return out


def encode_inputs(frame: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """What a run of a plan with ``inputs.encoding`` gets as ``data``: ``{"X", "y"}``
    (``{"X"}`` without a target), encoded from the declared columns of ``frame``."""
    X, y = encode_table(frame, inputs["encoding"], list(inputs["columns"]),
                        inputs.get("target"))
    return {"X": X} if y is None else {"X": X, "y": y}


def encode_table(data: Any, spec: list[dict[str, Any]], features: list[str],
                 target: str | None) -> tuple[Any, Any]:
    """Encode a DataFrame as ``(X float32 [n, width], y int64 [n] or None)``."""
    import numpy as np

    cols = {c["name"]: c for c in spec}
    parts = []
    run: list[str] = []  # consecutive numeric/bool columns: read and scaled as one block

    def flush() -> None:
        if not run:
            return
        x = np.array(data[run].to_numpy(dtype=np.float64), dtype=np.float64)  # writable
        lo = np.array([_bound(cols[n], "lower") for n in run])
        hi = np.array([_bound(cols[n], "upper") for n in run])
        scaled = ~np.isnan(lo)
        if scaled.any():
            x[:, scaled] = np.clip((x[:, scaled] - lo[scaled]) / (hi[scaled] - lo[scaled]),
                                   0.0, 1.0)
        parts.append(x.astype(np.float32))
        run.clear()

    def _bound(col: dict[str, Any], which: str) -> float:
        # Scaled only with both bounds declared, upper > lower (numbers; not bools).
        if col["kind"] in ("int", "float") and col.get("lower") is not None \
                and col.get("upper") is not None and col["upper"] > col["lower"]:
            return float(col[which])
        return float("nan")

    for name in features:
        col = cols[name]
        if col["kind"] == "category":
            flush()
            values = data[name].astype(str).to_numpy()
            cats = list(col["categories"])
            onehot = np.zeros((len(values), len(cats)), dtype=np.float32)
            for j, cat in enumerate(cats):
                onehot[:, j] = values == cat
            parts.append(onehot)
            continue
        run.append(name)
    flush()
    X = np.concatenate(parts, axis=1) if parts else np.zeros((len(data), 0), np.float32)
    y = None
    if target is not None:
        col = cols[target]
        if col["kind"] == "category":
            index = {c: i for i, c in enumerate(col["categories"])}
            y = np.array([index.get(str(v), -1) for v in data[target]], dtype=np.int64)
        elif col["kind"] == "bool":
            y = data[target].to_numpy().astype(np.int64)
        else:
            y = (data[target].to_numpy() - int(col["lower"])).astype(np.int64)
        keep = y >= 0  # a value outside the declared classes cannot be learnt: dropped
        X, y = X[keep], y[keep]
    return np.ascontiguousarray(X, dtype=np.float32), y
