"""The plan document: what a data owner approves once and the worker enforces on every run.

A plan is a msgpack-able dict (the scientist builds it, each owner reviews it)::

    {"name": "fedavg heart",
     "code": "def run(data, spec, weights, round): ...",   # Python source; defines `entry`
     "entry": "run",
     "inputs": {"asset": "heart", "columns": ["age", "sex"], "target": "target",
                "encoding": [{"name": "age", "kind": "int", "lower": 0, "upper": 120}, ...]},
     "policy": {
         "max_runs": 20,
         "outputs": {"update": {"kind": "tensors", "shapes": {"0.weight": [32, 12]},
                                "dtype": "float32"},
                     "loss": {"kind": "scalar"},
                     "n": {"kind": "count"}},
         "aggregate": {"secure": True, "min_workers": 3},     # or None
         "dp": {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 1e-5,
                "batch_size": 32, "local_epochs": 1, "epsilon_total": 2.0}},   # or None
     "description": "optional, shown to the owner"}

``inputs.encoding`` is optional. Without it a run's ``data`` is the declared
columns as a pandas DataFrame. With it (one public declaration per column, the
target last) the worker encodes those columns once, in its own trusted code, as
``{"X": float32 [n, width], "y": int64 [n]}`` (:func:`kernel_bridge.fl.encoding.encode_table`:
bounded numbers scaled to [0, 1], categories one-hot, bools 0/1), so the plan's kernel
needs neither pandas nor the per-run encoding: FL training plans use it.

Its identity is :func:`plan_hash`: SHA-256 over the canonical encoding (JSON with
sorted keys, no spaces, no NaN), so any change, one byte of code included, is a
new plan that needs its own approval. This module is pure (no I/O): the scientist
uses it to build and hash plans, the worker to check them before storing one,
the owner's views to say the policy in words.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from .errors import InvalidPlan

#: Largest plan code accepted, in bytes.
MAX_CODE = 1 << 20
#: Most runs one plan may allow.
MAX_RUNS = 1_000_000
#: Most outputs, tensors per output and dimensions per tensor.
MAX_OUTPUTS, MAX_TENSORS, MAX_DIMS = 64, 4096, 8
#: Most elements across the tensors of one output.
MAX_ELEMENTS = 1 << 28

OUTPUT_KINDS = ("tensors", "scalar", "count")
#: Column kinds an ``inputs.encoding`` declaration may have; most categories per column.
ENCODING_KINDS, MAX_CATEGORIES = ("int", "float", "bool", "category"), 4096
TOP_KEYS = {"name", "code", "entry", "inputs", "policy"}
OPTIONAL_TOP_KEYS = {"description"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_PARAM = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")


def canonical(doc: dict[str, Any]) -> bytes:
    """The canonical encoding of a plan: UTF-8 JSON, keys sorted, no spaces.

    Tuples encode as lists, so a plan built with tuples hashes like one built
    with lists. Values JSON cannot hold (bytes, NaN, arrays) raise InvalidPlan.
    """
    try:
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidPlan(f"a plan holds only JSON values (str, number, bool, None, list, "
                          f"dict): {exc}") from None
    return text.encode()


def plan_hash(doc: dict[str, Any]) -> str:
    """The plan's identity: ``sha256`` hex of :func:`canonical` (what the owner approves)."""
    return hashlib.sha256(canonical(doc)).hexdigest()


def _fail(field: str, problem: str) -> InvalidPlan:
    return InvalidPlan(f"plan field {field!r}: {problem}", field=field)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def _keys(d: Any, field: str, required: set[str],
          optional: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise _fail(field, "expected a dict")
    missing = required - set(d)
    if missing:
        raise _fail(field, f"missing {', '.join(sorted(missing))}")
    unknown = set(d) - required - set(optional)
    if unknown:
        raise _fail(field, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    return d


def check(doc: Any) -> dict[str, Any]:
    """Check a plan document's structure; returns it as its canonical JSON decodes.

    Asset-specific checks (the asset exists, the columns are declared) are the
    worker's (:mod:`kernel_bridge.owner.plans`). Raises
    :class:`~kernel_bridge.errors.InvalidPlan` naming the first bad field.
    """
    doc = _keys(doc, "plan", TOP_KEYS, OPTIONAL_TOP_KEYS)
    # Plain JSON types from here on (tuples are lists).
    doc = _keys(json.loads(canonical(doc)), "plan", TOP_KEYS, OPTIONAL_TOP_KEYS)
    name = doc["name"]
    if not isinstance(name, str) or not 0 < len(name) <= 200:
        raise _fail("name", "a string of 1 to 200 characters")
    if not isinstance(doc.get("description", ""), str) or len(doc.get("description", "")) > 4000:
        raise _fail("description", "a string of at most 4000 characters")
    code = doc["code"]
    if not isinstance(code, str) or not code.strip() or len(code.encode()) > MAX_CODE:
        raise _fail("code", f"Python source of at most {MAX_CODE} bytes")
    entry = doc["entry"]
    if not isinstance(entry, str) or not _NAME.match(entry):
        raise _fail("entry", "the name of the function the code defines")
    try:
        compile(code, f"<plan {name}>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise _fail("code", f"not valid Python (line {exc.lineno})") from None
    if not re.search(rf"^\s*(async\s+)?def\s+{re.escape(entry)}\s*\(", code, re.M):
        raise _fail("entry", f"the code defines no function {entry!r}")
    inputs = _keys(doc["inputs"], "inputs", {"asset", "columns"}, {"target", "encoding"})
    if not isinstance(inputs["asset"], str) or not inputs["asset"]:
        raise _fail("inputs.asset", "the name of one of the worker's assets")
    cols = inputs["columns"]
    if not isinstance(cols, list) or not cols or not all(
            isinstance(c, str) and c for c in cols) or len(set(cols)) != len(cols):
        raise _fail("inputs.columns", "a non-empty list of distinct column names")
    target = inputs.get("target")
    if target is not None and (not isinstance(target, str) or not target or target in cols):
        raise _fail("inputs.target", "None, or a column name not among inputs.columns")
    if inputs.get("encoding") is not None:
        _check_encoding(inputs["encoding"], [*cols, *([target] if target else [])], target)
    policy = _keys(doc["policy"], "policy", {"max_runs", "outputs"}, {"aggregate", "dp"})
    if not _is_int(policy["max_runs"]) or not 1 <= policy["max_runs"] <= MAX_RUNS:
        raise _fail("policy.max_runs", f"an integer from 1 to {MAX_RUNS}")
    outputs = policy["outputs"]
    if not isinstance(outputs, dict) or not 0 < len(outputs) <= MAX_OUTPUTS:
        raise _fail("policy.outputs", f"a dict of 1 to {MAX_OUTPUTS} outputs")
    for oname, form in outputs.items():
        _check_output(oname, form)
    agg = policy.get("aggregate")
    if agg is not None:
        agg = _keys(agg, "policy.aggregate", {"secure", "min_workers"})
        if not isinstance(agg["secure"], bool):
            raise _fail("policy.aggregate.secure", "true or false")
        if not _is_int(agg["min_workers"]) or not 1 <= agg["min_workers"] <= 10_000:
            raise _fail("policy.aggregate.min_workers", "an integer from 1 to 10000")
        if agg["secure"] and not any(f["kind"] == "tensors" for f in outputs.values()):
            raise _fail("policy.aggregate", "secure aggregation needs a tensors output")
    dp = policy.get("dp")
    if dp is not None:
        dp = _keys(dp, "policy.dp", {"noise_multiplier", "max_grad_norm", "delta",
                                     "batch_size", "local_epochs", "epsilon_total"})
        for key in ("noise_multiplier", "max_grad_norm", "epsilon_total"):
            if not _is_num(dp[key]) or not dp[key] > 0:
                raise _fail(f"policy.dp.{key}", "a finite number > 0")
        if not _is_num(dp["delta"]) or not 0 < dp["delta"] < 1:
            raise _fail("policy.dp.delta", "a number in (0, 1)")
        for key in ("batch_size", "local_epochs"):
            if not _is_int(dp[key]) or not 1 <= dp[key] <= 1_000_000:
                raise _fail(f"policy.dp.{key}", "an integer from 1 to 1000000")
    checked: dict[str, Any] = doc
    return checked


def _check_encoding(encoding: Any, names: list[str], target: str | None) -> None:
    """One public declaration per read column, in order: what the worker encodes by."""
    field = "inputs.encoding"
    if not isinstance(encoding, list) or [c.get("name") if isinstance(c, dict) else None
                                          for c in encoding] != names:
        raise _fail(field, "one declaration per column of inputs.columns (then the target), "
                    "in that order")
    for col in encoding:
        where = f"{field}.{col['name'][:60]}"
        _keys(col, where, {"name", "kind"}, {"lower", "upper", "categories"})
        kind = col["kind"]
        if kind not in ENCODING_KINDS:
            raise _fail(where, f"kind is one of {', '.join(ENCODING_KINDS)}")
        for bound in ("lower", "upper"):
            if col.get(bound) is not None and (kind not in ("int", "float")
                                               or not _is_num(col[bound])):
                raise _fail(f"{where}.{bound}", "a finite number (int and float columns only)")
        cats = col.get("categories")
        if kind == "category":
            if not isinstance(cats, list) or not 0 < len(cats) <= MAX_CATEGORIES or not all(
                    isinstance(c, str) and 0 < len(c) <= 200 for c in cats) \
                    or len(set(cats)) != len(cats):
                raise _fail(f"{where}.categories",
                            f"1 to {MAX_CATEGORIES} distinct strings of 1 to 200 characters")
        elif cats is not None:
            raise _fail(f"{where}.categories", "only for category columns")
    if target is not None:
        t = encoding[-1]
        bounded = t["kind"] == "int" and _is_int(t.get("lower")) and _is_int(t.get("upper")) \
            and 0 <= t["upper"] - t["lower"] < MAX_CATEGORIES
        if t["kind"] not in ("category", "bool") and not bounded:
            raise _fail(f"{field}.{target[:60]}", "the target is a category, a bool or an int "
                        f"with integer bounds (at most {MAX_CATEGORIES} classes)")


def _check_output(oname: Any, form: Any) -> None:
    field = f"policy.outputs.{oname}"
    if not isinstance(oname, str) or not _NAME.match(oname):
        raise _fail("policy.outputs", f"output name {str(oname)[:70]!r} is not an identifier")
    if not isinstance(form, dict) or form.get("kind") not in OUTPUT_KINDS:
        raise _fail(field, f"kind is one of {', '.join(OUTPUT_KINDS)}")
    if form["kind"] != "tensors":
        _keys(form, field, {"kind"})
        return
    _keys(form, field, {"kind", "shapes", "dtype"})
    if form["dtype"] != "float32":
        raise _fail(f"{field}.dtype", "only 'float32' is supported")
    shapes = form["shapes"]
    if not isinstance(shapes, dict) or not 0 < len(shapes) <= MAX_TENSORS:
        raise _fail(f"{field}.shapes", f"a dict of 1 to {MAX_TENSORS} named shapes")
    total = 0
    for pname, shape in shapes.items():
        if not isinstance(pname, str) or not _PARAM.match(pname):
            raise _fail(f"{field}.shapes", f"tensor name {str(pname)[:70]!r} is not allowed "
                        "(letters, digits, '_', '.', '-')")
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(
                _is_int(d) and 0 <= d < 2**31 for d in shape):
            raise _fail(f"{field}.shapes.{pname}", f"a list of at most {MAX_DIMS} sizes >= 0")
        total += math.prod(shape)
    if total > MAX_ELEMENTS:
        raise _fail(f"{field}.shapes", f"more than {MAX_ELEMENTS} elements in all")


def _num(x: float) -> str:
    """``2.0`` (not ``2``), ``0.5``, ``1e-05``: an ε reads as a real number."""
    text = f"{x:g}"
    return text if any(c in text for c in ".en") else text + ".0"


def policy_words(doc: dict[str, Any]) -> list[str]:
    """The policy in sentences an owner can check, e.g. ``"at most 20 runs"``.

    Parameters
    ----------
    doc : dict
        A checked plan document.

    Returns
    -------
    list of str
        What leaves each run (and in what form), how many runs, how much ε.
    """
    policy, inputs = doc["policy"], doc["inputs"]
    asset = inputs["asset"]
    out: list[str] = []
    outputs = policy["outputs"]
    forms = []
    for name, form in outputs.items():
        if form["kind"] == "tensors":
            n = sum(math.prod(s) for s in form["shapes"].values())
            forms.append(f"'{name}': {len(form['shapes'])} float32 tensor(s) "
                         f"({n:,} numbers) of fixed shapes")
        elif form["kind"] == "scalar":
            forms.append(f"'{name}': one number")
        else:
            forms.append(f"'{name}': one count")
    agg = policy.get("aggregate")
    if agg is not None and agg["secure"]:
        names = ", ".join(f"'{n}'" for n in outputs)
        out.append(f"the sum of {names} of ≥ {agg['min_workers']} workers, securely "
                   "aggregated: no single worker's values are revealed")
        out.append("each worker's part: " + "; ".join(forms))
    else:
        out.append("each run releases to the scientist, in the clear: " + "; ".join(forms))
        if agg is not None:
            out.append(f"meant to be aggregated over ≥ {agg['min_workers']} workers "
                       "(not enforced: released in the clear)")
    out.append(f"at most {policy['max_runs']} run{'s' if policy['max_runs'] != 1 else ''}")
    dp = policy.get("dp")
    if dp is not None:
        out.append(f"ε ≤ {_num(dp['epsilon_total'])} on '{asset}' in total "
                   f"(DP-SGD: noise multiplier {_num(dp['noise_multiplier'])}, clipping "
                   f"norm {_num(dp['max_grad_norm'])}, δ = {_num(dp['delta'])}, batches of "
                   f"{dp['batch_size']}, {dp['local_epochs']} local epoch(s) per run; "
                   "the worker composes ε over the plan's runs with one RDP accountant "
                   "and debits it before each run's outputs leave)")
    else:
        out.append("no differential privacy: released values are exact")
    cols = ", ".join(inputs["columns"])
    target = f", target '{inputs['target']}'" if inputs.get("target") else ""
    out.append(f"reads '{asset}': columns {cols}{target}")
    if inputs.get("encoding") is not None:
        out.append("the worker encodes them before the code sees them (bounded numbers scaled "
                   "to [0, 1], categories one-hot, bools 0/1, by the declarations in "
                   "inputs.encoding): the code gets X (float32) and y (int64), not the table")
    return out
