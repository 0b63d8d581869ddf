"""numpy arrays and scalars and torch tensors: their dtypes on the wire, the flat
byte views they are sent as, and their checked reconstruction from received buffers.

torch is imported only when a tensor is encoded (it is then already imported) or
decoded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from kernel_bridge.errors import UnsupportedType
from kernel_bridge.wire._codes import MAX_NDIM, bad, type_name

#: Wire dtype string -> numpy dtype. Always little-endian on the wire.
NP_DTYPES: dict[str, np.dtype[Any]] = {
    d.str: d
    for d in (
        np.dtype(name).newbyteorder("<")
        for name in (
            "bool",
            "int8",
            "int16",
            "int32",
            "int64",
            "uint8",
            "uint16",
            "uint32",
            "uint64",
            "float16",
            "float32",
            "float64",
            "complex64",
            "complex128",
        )
    )
}
#: Torch dtype name -> wire numpy dtype of its buffer (bfloat16 travels as int16 bits).
TORCH_DTYPES: dict[str, str] = {
    "bool": "|b1",
    "uint8": "|u1",
    "int8": "|i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
    "float16": "<f2",
    "bfloat16": "<i2",
    "float32": "<f4",
    "float64": "<f8",
    "complex64": "<c8",
    "complex128": "<c16",
}
NP_SUPPORTED = "bool, int8-64, uint8-64, float16/32/64, complex64/128"


# ---------------------------------------------------------------------------------------
# encoding


def wire_dtype(dtype: np.dtype[Any]) -> np.dtype[Any] | None:
    """The little-endian wire dtype for ``dtype``, or None when it cannot be sent."""
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        return None
    return NP_DTYPES.get(dtype.newbyteorder("<").str)


def array_buffer(arr: np.ndarray[Any, Any]) -> tuple[str, list[int], memoryview]:
    """Wire dtype, shape and a flat byte view of ``arr``; copies only to fix layout."""
    wire = wire_dtype(arr.dtype)
    if wire is None:
        raise UnsupportedType(
            f"cannot send a numpy array of dtype {str(arr.dtype)!r}; "
            f"supported dtypes: {NP_SUPPORTED}",
            type="numpy.ndarray",
            dtype=str(arr.dtype),
        )
    shape = [int(n) for n in arr.shape]
    if arr.dtype != wire:
        arr = arr.astype(wire)  # byte swap: the wire is little-endian
    elif not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    # A C-contiguous reshape(-1) is a view, so the memoryview shares the array's memory.
    flat = arr.reshape(-1).view(np.uint8)
    return wire.str, shape, flat.data


def scalar_fields(v: np.generic) -> list[Any]:
    """The ``[dtype, raw bytes]`` payload fields of a numpy scalar."""
    wire = wire_dtype(v.dtype)
    if wire is None:
        name = type_name(type(v))
        raise UnsupportedType(
            f"cannot send a numpy scalar of type {name!r} (dtype {str(v.dtype)!r}); "
            f"supported dtypes: {NP_SUPPORTED}",
            type=name,
        )
    return [wire.str, np.asarray(v).astype(wire).tobytes()]


def tensor_buffer(v: Any) -> tuple[str, list[int], memoryview]:
    """Torch dtype name, shape and a flat byte view of a dense tensor's CPU data."""
    import torch

    if v.layout != torch.strided or v.is_sparse:
        raise UnsupportedType(
            f"cannot send a tensor with layout {v.layout}; call .to_dense() first",
            type="torch.Tensor",
        )
    if v.is_quantized:
        raise UnsupportedType(
            "cannot send a quantized tensor; call .dequantize() first", type="torch.Tensor"
        )
    if getattr(v, "is_nested", False):
        raise UnsupportedType("cannot send a nested tensor", type="torch.Tensor")
    if v.device.type == "meta":
        raise UnsupportedType(
            "cannot send a tensor on the 'meta' device: it holds no data",
            type="torch.Tensor",
        )
    name = str(v.dtype).removeprefix("torch.")
    if name not in TORCH_DTYPES:
        raise UnsupportedType(
            f"cannot send a tensor of dtype {name!r}; supported dtypes: "
            + ", ".join(TORCH_DTYPES),
            type="torch.Tensor",
            dtype=name,
        )
    t = v.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    # contiguous() is a no-op on a contiguous tensor, so the buffer aliases its storage.
    t = t.resolve_conj().resolve_neg().contiguous()
    if name == "bfloat16":
        t = t.view(torch.int16)  # numpy has no bfloat16: send the raw bits
    _, shape, view = array_buffer(t.numpy())
    return name, shape, view


# ---------------------------------------------------------------------------------------
# decoding


def shape_of(obj: Any) -> tuple[int, ...]:
    """Check a decoded shape field: a list of at most ``MAX_NDIM`` non-negative ints."""
    if type(obj) is not list or len(obj) > MAX_NDIM:
        raise bad(f"shape must be a list of at most {MAX_NDIM} ints")
    for n in obj:
        if type(n) is not int or n < 0:
            raise bad("shape entries must be non-negative ints")
    return tuple(obj)


def array_from(buf: memoryview, dtype: np.dtype[Any], shape: tuple[int, ...],
               writable: bool = False) -> Any:
    """A numpy view of ``buf``; copied only when misaligned (writability kept) or, with
    ``writable``, when ``buf`` is read-only (one copy at most, which is then writable)."""
    if math.prod(shape) * dtype.itemsize != buf.nbytes:
        raise bad(
            f"array of shape {list(shape)} and dtype {dtype.str} needs "
            f"{math.prod(shape) * dtype.itemsize} bytes, its buffer has {buf.nbytes}"
        )
    arr = np.frombuffer(buf, dtype=dtype)
    if not arr.flags.aligned or (writable and not arr.flags.writeable):
        copy = arr.copy()
        copy.flags.writeable = writable or not buf.readonly
        arr = copy
    return arr.reshape(shape)


def array_dtype(dtype_str: Any) -> np.dtype[Any]:
    """Check an array's decoded dtype field against the allow-list."""
    dtype = NP_DTYPES.get(dtype_str) if type(dtype_str) is str else None
    if dtype is None:
        raise bad(f"array dtype {dtype_str!r} is not allowed; allowed: {NP_SUPPORTED}")
    return dtype


def scalar_from(dtype_str: Any, raw: Any) -> Any:
    """A numpy scalar from its decoded ``dtype`` and ``raw bytes`` fields."""
    dtype = NP_DTYPES.get(dtype_str) if type(dtype_str) is str else None
    if dtype is None:
        raise bad(f"scalar dtype {dtype_str!r} is not allowed; allowed: {NP_SUPPORTED}")
    if type(raw) is not bytes or len(raw) != dtype.itemsize:
        raise bad("numpy scalar payload has the wrong size")
    return np.frombuffer(raw, dtype=dtype)[0]


def check_tensor_fields(name: Any, requires_grad: Any) -> str:
    """Check a tensor's dtype name and ``requires_grad`` fields (before its buffer is
    taken); returns the wire numpy dtype of its buffer."""
    np_dtype = TORCH_DTYPES.get(name) if type(name) is str else None
    if np_dtype is None:
        raise bad(f"tensor dtype {name!r} is not allowed")
    if type(requires_grad) is not bool:
        raise bad("tensor requires_grad must be a bool")
    return np_dtype


@dataclass(frozen=True, eq=False)
class WireTensor:
    """A torch tensor as it travels, held in numpy: what trusted code that only checks
    and forwards tensors decodes them to (``codec.decode(..., tensors="wire")``), so a
    worker need not import torch. It encodes back as the same tensor.

    Attributes
    ----------
    dtype : str
        The torch dtype's name (``"float32"``).
    array : numpy.ndarray
        Its values (for ``bfloat16`` the raw bits, as int16).
    requires_grad : bool
    """

    dtype: str
    array: np.ndarray
    requires_grad: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def numpy(self) -> np.ndarray:
        """The values as numpy (as ``Tensor.numpy()``)."""
        return self.array


def wire_tensor_buffer(v: WireTensor) -> tuple[str, list[int], memoryview]:
    """Dtype name, shape and flat byte view of a :class:`WireTensor` (checked)."""
    np_dtype = TORCH_DTYPES.get(v.dtype)
    if np_dtype is None or v.array.dtype != NP_DTYPES[np_dtype]:
        raise UnsupportedType(f"a WireTensor of dtype {v.dtype!r} must hold {np_dtype} values",
                              type="WireTensor")
    _, shape, view = array_buffer(v.array)
    return v.dtype, shape, view


def tensor_from(name: str, np_dtype: str, shape: Any, buf: memoryview,
                requires_grad: bool, as_torch: bool = True) -> Any:
    """A writable CPU tensor from checked fields and its buffer (a :class:`WireTensor`
    with ``as_torch=False``)."""
    # torch has no read-only tensors: a tensor gets a writable array (one copy at most)
    arr = array_from(buf, NP_DTYPES[np_dtype], shape_of(shape), writable=as_torch)
    if not as_torch:
        if requires_grad and not (arr.dtype.kind in "fc" or name == "bfloat16"):
            raise bad("only float and complex tensors can require grad")
        return WireTensor(name, arr, requires_grad)
    import torch

    tensor = torch.from_numpy(arr)
    if name == "bfloat16":
        tensor = tensor.view(torch.bfloat16)
    if requires_grad:
        if not (tensor.is_floating_point() or tensor.is_complex()):
            raise bad("only float and complex tensors can require grad")
        tensor.requires_grad_(True)
    return tensor
