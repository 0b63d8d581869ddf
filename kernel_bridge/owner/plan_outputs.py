"""Checking a plan run's outputs against the form its policy declares (trusted code).

The outputs come from a sandboxed kernel through the typed codec (no pickle),
so they are plain values, arrays and tensors; this module decides whether they
are exactly what the owner approved: the declared names and no others, tensors
of the declared names, shapes and dtype, finite numbers, counts that are
non-negative integers. Anything else raises
:class:`~kernel_bridge.errors.PlanOutputRejected`, whose message names the output
and the problem, never a value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import PlanOutputRejected
from ..wire.codec import WireTensor


def _reject(output: str, problem: str) -> PlanOutputRejected:
    return PlanOutputRejected(f"the run's output {output!r} was refused: {problem}; "
                              "nothing was released", output=output, problem=problem)


def _array(value: Any) -> np.ndarray | None:
    """A numpy view of an ndarray or a tensor (None for anything else)."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, WireTensor):
        # bfloat16 travels as its int16 bits: not float32, so refused like any other dtype.
        return value.array if value.dtype != "bfloat16" else value.array.view(np.uint16)
    if type(value).__module__.startswith("torch") and type(value).__name__ == "Tensor":
        return value.detach().cpu().numpy()  # type: ignore[no-any-return]
    return None


def _tensor(arr: np.ndarray, owned: bool) -> WireTensor:
    """The float32 tensor as it will travel (the worker does not import torch): ``arr``
    itself when ``owned`` and already writable and C-ordered, else a fresh copy."""
    if owned and arr.flags.writeable and arr.flags.c_contiguous:
        return WireTensor("float32", arr)
    return WireTensor("float32", np.array(arr, dtype=np.float32, order="C", copy=True))


def check_outputs(value: Any, forms: dict[str, dict[str, Any]],
                  owned: bool = False) -> dict[str, Any]:
    """The run's outputs in their declared form, or PlanOutputRejected.

    Parameters
    ----------
    value : Any
        What the plan's entry function returned (decoded from the kernel).
    forms : dict
        ``policy.outputs`` of the plan.
    owned : bool
        ``value`` was decoded from a private copy of the kernel's reply that
        nothing else holds (:meth:`~.plan_kernels.PlanKernels.run`): its writable
        arrays are kept as they are instead of copied once more.

    Returns
    -------
    dict
        ``{name: {param: WireTensor float32}}`` for tensors outputs, ``float``
        for scalars, ``int`` for counts: objects of their own, not views of
        anything another party can still write.
    """
    if not isinstance(value, dict):
        raise _reject("*", f"the entry function must return a dict of outputs, not "
                      f"{type(value).__name__}")
    names = set(value)
    if names != set(forms):
        extra = sorted(map(str, names - set(forms)))[:5]
        missing = sorted(set(forms) - names)[:5]
        raise _reject("*", f"outputs must be exactly {sorted(forms)}"
                      + (f"; undeclared: {extra}" if extra else "")
                      + (f"; missing: {missing}" if missing else ""))
    out: dict[str, Any] = {}
    for name, form in forms.items():
        v = value[name]
        if form["kind"] == "tensors":
            out[name] = _check_tensors(name, v, form["shapes"], owned)
        elif form["kind"] == "scalar":
            out[name] = _check_scalar(name, v)
        else:
            out[name] = _check_count(name, v)
    return out


def _check_tensors(name: str, v: Any, shapes: dict[str, list[int]],
                   owned: bool = False) -> dict[str, Any]:
    if not isinstance(v, dict) or set(v) != set(shapes):
        raise _reject(name, "a dict of exactly the declared tensor names is expected")
    out = {}
    for pname, shape in shapes.items():
        arr = _array(v[pname])
        if arr is None:
            raise _reject(name, f"{pname!r} is not a tensor or ndarray")
        if arr.dtype != np.float32:
            raise _reject(name, f"{pname!r} has dtype {arr.dtype}, not float32")
        if list(arr.shape) != list(shape):
            raise _reject(name, f"{pname!r} has shape {list(arr.shape)}, not {shape}")
        if not np.isfinite(arr).all():
            raise _reject(name, f"{pname!r} holds a NaN or an infinity")
        out[pname] = _tensor(arr, owned)
    return out


def _check_scalar(name: str, v: Any) -> float:
    arr = _array(v)
    if arr is not None:
        if arr.shape != () or arr.dtype.kind not in "fiu":
            raise _reject(name, "a single number is expected")
        v = arr.item()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
        raise _reject(name, "a finite number is expected")
    return float(v)


def _check_count(name: str, v: Any) -> int:
    arr = _array(v)
    if arr is not None:
        if arr.shape != () or arr.dtype.kind not in "iu":
            raise _reject(name, "a single integer is expected")
        v = arr.item()
    if isinstance(v, np.integer):
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**53:
        raise _reject(name, "a count (an integer >= 0) is expected")
    return int(v)


def check_masked(value: Any, forms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A masked form of held outputs: the declared names and shapes, any numeric dtype.

    Used by :meth:`~kernel_bridge.owner.services.plans.PlanService.release_masked`:
    masks may live in an integer ring, so dtypes are not fixed, but nothing of
    another shape or name can ride along.
    """
    if not isinstance(value, dict) or set(value) != set(forms):
        raise _reject("*", f"masked outputs must be exactly {sorted(forms)}")
    out: dict[str, Any] = {}
    for name, form in forms.items():
        v = value[name]
        if form["kind"] == "tensors":
            if not isinstance(v, dict) or set(v) != set(form["shapes"]):
                raise _reject(name, "a dict of exactly the declared tensor names is expected")
            for pname, shape in form["shapes"].items():
                arr = _array(v[pname])
                if arr is None or arr.dtype.kind not in "fiu" or list(arr.shape) != shape:
                    raise _reject(name, f"{pname!r} must be a numeric array of shape {shape}")
                if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                    raise _reject(name, f"{pname!r} holds a NaN or an infinity")
            out[name] = dict(v)
        else:
            arr = _array(v)
            ok = (arr is not None and arr.shape == () and arr.dtype.kind in "fiu") or (
                isinstance(v, int | float | np.number) and not isinstance(v, bool))
            if not ok:
                raise _reject(name, "a single masked number is expected")
            out[name] = v
    return out
