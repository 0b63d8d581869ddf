"""Previews of a request's snapshot for the approval panel, as plain JSON.

Only data goes to the browser (strings, numbers, base64 of PNG/JPEG bytes),
never markup: the panel renders everything as text nodes.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np

from .._render import clip, is_outputs, read_outputs

#: Rows and columns of a table preview; characters of a text preview.
MAX_ROWS, MAX_COLS, MAX_TEXT = 20, 30, 4000
IMAGE_MIMES = ("image/png", "image/jpeg")


def _cell(v: Any) -> Any:
    if isinstance(v, bool | int | str) or v is None:
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, np.generic):
        return _cell(v.item())
    return str(v)


def _clip(text: str) -> str:
    return clip(text, MAX_TEXT, "\n… (truncated)")


def _stats(arr: np.ndarray[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"shape": list(arr.shape), "dtype": str(arr.dtype),
                           "numel": int(arr.size)}
    if arr.size and (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        a = arr.astype(np.float64)
        out.update(min=_cell(float(np.nanmin(a))), max=_cell(float(np.nanmax(a))),
                   mean=_cell(float(np.nanmean(a))), std=_cell(float(np.nanstd(a))))
    out["text"] = _clip(np.array2string(arr, threshold=60, edgeitems=3))
    return out


def _outputs(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for o in read_outputs(outputs):
        if o.kind == "stream":
            items.append({"type": "text", "name": o.name, "text": _clip(o.text)})
        elif o.kind == "data":
            mime = next((m for m in IMAGE_MIMES if m in o.data), None)
            if mime is not None:
                try:  # only well-formed base64 reaches the browser's <img src=data:...>
                    raw = base64.b64decode(str(o.data[mime]).replace("\n", ""), validate=True)
                    items.append({"type": "image", "mime": mime,
                                  "data": base64.b64encode(raw).decode()})
                    continue
                except (binascii.Error, ValueError):
                    pass
            items.append({"type": "text", "text": _clip(o.plain)})
        elif o.kind == "error":
            items.append({"type": "error", "text": _clip(o.text)})
        else:
            items.append({"type": "text", "text": f"<{o.text}>"})
    return {"kind": "outputs", "items": items}


def preview(value: Any) -> dict[str, Any]:
    """Describe ``value`` for review: ``table``, ``tensor``, ``outputs`` or ``text``."""
    if is_outputs(value) and len(value) > 0:
        return _outputs(value)
    try:
        import pandas as pd

        if isinstance(value, pd.Series):
            value = value.to_frame()
        if isinstance(value, pd.DataFrame):
            head = value.iloc[:MAX_ROWS, :MAX_COLS]
            return {"kind": "table", "shape": list(value.shape),
                    "columns": [str(c) for c in head.columns],
                    "index": [_cell(i) for i in head.index],
                    "rows": [[_cell(v) for v in row] for row in head.itertuples(index=False)]}
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        if isinstance(value, torch.Tensor):
            t = value.detach().cpu()
            if t.dtype in (torch.bfloat16, torch.float16) or t.is_complex():
                t = t.to(torch.complex128 if t.is_complex() else torch.float64)
            out = _stats(t.numpy())
            out.update(kind="tensor", type="Tensor", dtype=str(value.dtype))
            return out
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, np.ndarray):
        out = _stats(value)
        out.update(kind="tensor", type="ndarray")
        return out
    if isinstance(value, np.generic):
        value = value.item()
    return {"kind": "text", "type": type(value).__name__, "text": _clip(repr(value))}
