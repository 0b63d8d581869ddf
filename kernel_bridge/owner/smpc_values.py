"""What an SMPC party holds and the helpers around it, apart from the service's ops.

:class:`Shared` (one party's share of a value, with what is public about it),
:class:`Group` (a reveal request as one party knows it), taints, the reading of
a kernel value into a float64 tensor, the packing of an Open's contributions
and the parsing of the dealer's public recipes. torch is imported by the
functions that need it (a worker imports this module at start).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ProtocolError, SMPCError
from ..wire import codec, frames

if TYPE_CHECKING:
    import torch

    from ..smpc.engine import Recipe

#: kernel_bridge.smpc.fixed.FRAC_BITS without importing torch (tests/test_owner_imports.py).
FRAC_BITS = 16
#: Largest magnitude a shared value may have: fixed point leaves 63 - FRAC_BITS
#: integer bits; one more is kept free so that a sum of two stays in range.
MAX_MAGNITUDE = float(2 ** (62 - FRAC_BITS))


@dataclass
class Shared:
    """One party's share of a shared value, and what is public about it."""

    share: torch.Tensor
    parties: tuple[str, ...]
    taint: dict[str, list[str]]
    history: list[str] = field(default_factory=list)

    @property
    def shape(self) -> list[int]:
        return list(self.share.shape)


@dataclass
class Group:
    """A reveal request as one party knows it."""

    sid: str
    session: str
    request: int | None
    urls: dict[str, str]
    own_url: str | None = None


def merge_taint(values: list[Shared]) -> dict[str, list[str]]:
    out: dict[str, set[str]] = {}
    for v in values:
        for owner, assets in v.taint.items():
            out.setdefault(owner, set()).update(assets)
    return {k: sorted(s) for k, s in sorted(out.items()) if s}


def taint_text(taint: Mapping[str, list[str]]) -> str:
    """``alice:heart, bob:heart`` (or ``clean``)."""
    return ", ".join(f"{o}:{a}" for o, assets in sorted(taint.items()) for a in assets) or "clean"


def as_float_tensor(value: Any) -> torch.Tensor:
    """A numeric value read from a kernel as a float64 tensor, or a typed error."""
    import torch

    try:
        import pandas as pd

        if isinstance(value, pd.Series | pd.DataFrame):
            value = value.to_numpy(dtype=np.float64)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise SMPCError("only real numeric values can be shared")
        return value.detach().to(torch.float64).cpu()
    if isinstance(value, bool | int | float | np.integer | np.floating):
        return torch.tensor(float(value), dtype=torch.float64)
    if isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
        return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64))
    raise SMPCError("only numeric values (tensor, ndarray, numeric Series or scalar) can be "
                    "shared")


def pack(values: list[torch.Tensor]) -> Any:
    """An Open's contributions as one flat buffer (the receiver knows shapes and dtypes:
    its own contributions have the same).

    Contributions a protocol laid out back to back in one buffer
    (:func:`kernel_bridge.smpc.arith.masked`) are sent from there, without a copy.
    """
    import torch

    flat = [v.reshape(-1) for v in values]
    if len(flat) > 1 and all(v.is_contiguous() for v in flat):
        nbytes = [v.numel() * v.element_size() for v in flat]
        at = flat[0].data_ptr()
        storage = flat[0].untyped_storage()
        for v, size in zip(flat, nbytes, strict=True):
            if v.data_ptr() != at or v.untyped_storage().data_ptr() != storage.data_ptr():
                break
            at += size
        else:
            whole = torch.empty(0, dtype=torch.uint8).set_(
                storage, flat[0].storage_offset() * flat[0].element_size(), (sum(nbytes),),
                (1,))
            return whole.numpy()
    arrays = [v.numpy().view(np.uint8) for v in flat]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def unpack(payload: bytearray, like: list[torch.Tensor]) -> list[torch.Tensor]:
    """A peer's contributions, shaped like ours; a wrong length is a typed error."""
    import torch

    sizes = [v.numel() * v.element_size() for v in like]
    if len(payload) != sum(sizes):
        raise SMPCError("a party opened values of other shapes")
    out, offset = [], 0
    for v, size in zip(like, sizes, strict=True):
        t = torch.frombuffer(payload, dtype=v.dtype, count=v.numel(), offset=offset) \
            if size else torch.empty(0, dtype=v.dtype)
        out.append(t.reshape(v.shape))
        offset += size
    return out


def recipe_doc(r: Recipe) -> dict[str, Any]:
    return {"kind": r.kind, "shapes": [list(s) for s in r.shapes], "params": dict(r.params)}


def parse_recipes(raw: Any) -> list[Recipe]:
    from ..smpc.engine import Recipe

    if not isinstance(raw, list) or len(raw) > 64:
        raise ProtocolError("'recipes' is a list of at most 64")
    out = []
    for r in raw:
        try:
            shapes = tuple(tuple(int(d) for d in s) for s in r["shapes"])
            if any(d < 0 or d > 1 << 31 for s in shapes for d in s):
                raise ValueError
            out.append(Recipe(str(r["kind"]), shapes, dict(r.get("params") or {})))
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("a recipe is {kind, shapes, params}") from None
    return out


def aligned_doc(doc: Any) -> bytes:
    """``doc``'s wire frame after a pad (its length, then zeros) that puts the frame's
    buffers 64-aligned in the payload, which the receiving link places 64-aligned: its
    tensors (dealer material, shares) then decode as views of the receive buffer, where
    misaligned ones would each be copied."""
    header, buffers = codec.encode(doc)
    pieces = frames.pack(header, buffers)
    start = sum(memoryview(p).nbytes for p in pieces[:2])  # prelude and header
    pad = -(1 + start) % 64
    return b"".join([bytes([pad]) + bytes(pad), *pieces])


def doc_frame(payload: Any) -> memoryview:
    """The wire frame in a payload made by :func:`aligned_doc` (a view, no copy)."""
    view = memoryview(payload).cast("B")
    return view[1 + view[0]:] if view.nbytes else view


def compact(share: torch.Tensor) -> torch.Tensor:
    """``share`` holding only its own bytes: a view of a larger buffer (a protocol's output
    is often the dealer's material, decoded in place from the whole frame it came in)
    is copied out, so that a stored share does not keep the frame alive."""
    if share.untyped_storage().nbytes() > share.numel() * share.element_size():
        return share.clone()
    return share
