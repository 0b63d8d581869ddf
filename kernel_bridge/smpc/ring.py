"""Exact products in the ring Z_2^64: matrix multiplication and 2-D convolution.

torch's ``int64`` matmul is exact mod 2^64 (it wraps) but has no BLAS behind
it. :func:`ring_matmul` gets the same exact result from fast kernels by
splitting each 64-bit operand into small *limbs*, multiplying limb matrices
with a kernel whose accumulation is exact, and adding the partial products
back with shifts, keeping only the limb pairs whose shift is below 64 (the
others vanish mod 2^64) -- the trick of CryptGPU (Tan et al., IEEE S&P 2021):

* ``"float64"``: balanced signed digits of 22 bits (:func:`signed_digits`:
  3 digits, the 6 digit products whose shift is below 64; CryptGPU uses 4
  unsigned 16-bit limbs and 10 products) multiplied with float64 BLAS; the
  inner dimension is cut in chunks of 2048 so every partial sum is an integer
  of magnitude at most 2^53, exact. Runs on a CUDA device too
  (``device="cuda"``); the same code runs on ``device="cpu"`` in the tests.
* ``"int8"``: signed byte limbs (digits in [-128, 127], obtained by adding and
  xoring ``0x80..80``) multiplied with ``torch._int_mm`` (int8 x int8 -> int32,
  AMX/VNNI on recent x86): for each shift ``8s`` one product of the
  concatenated limbs ``[A_0..A_s] @ [B_s..B_0]``, 8 products in all (36 limb
  products), inner dimension chunked so the int32 sums stay exact.
* ``"int64"``: torch's own int64 matmul (small problems).

``"auto"`` (:func:`choose`) picks int64 for tiny problems, int8 limbs for
large ones when the CPU has AMX (int8 tiles), float64 digits otherwise; a
CUDA ``device`` always uses float64 digits.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

#: ``0x8080808080808080`` as a signed int64: adding then xoring it turns the
#: bytes of a ring element into signed digits in [-128, 127] (see ``_digits``).
_C80 = 0x8080808080808080 - (1 << 64)
#: Inner-dimension chunk of the int8 method: 8 * K * 2^14 < 2^31.
_INT8_CHUNK = 8192
#: From this many multiply-adds (M*K*N) on, int8 limbs beat torch's int64 matmul
#: (measured on a Xeon with AMX: about equal at 512^3, 1.8x faster at 1000^3).
_LARGE = 1 << 27
#: From this many multiply-adds on, float64 digits beat torch's int64 matmul (measured on
#: an AMD EPYC, one thread: even at 64^3, 2.6x faster at 100^3, 6-9x at 1000^3).
_FLOAT64_FROM = 1 << 18

METHODS = ("auto", "int64", "int8", "float64")


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dtype != torch.int64 or b.dtype != torch.int64:
        raise TypeError("ring products take int64 tensors")


def _mm_int64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


def signed_digits(x: torch.Tensor, bits: int) -> list[torch.Tensor]:
    """Balanced base-``2^bits`` digits: ``x = sum_i d_i 2^(bits*i)`` mod 2^64.

    Every digit but the top one lies in ``[-2^(bits-1), 2^(bits-1))``; the top
    one is the signed rest (``x``'s high bits), so no digit exceeds
    ``2^(bits-1)`` in magnitude. Adding ``2^(bits-1)`` at every lower digit
    position first turns plain unsigned digits into these (as ``_C80`` does
    for bytes).
    """
    count = -(-64 // bits)
    half = 1 << (bits - 1)
    off = sum(half << (bits * i) for i in range(count - 1)) % (1 << 64)
    y = x + (off - (1 << 64) if off >= 1 << 63 else off)
    mask = (1 << bits) - 1
    digits = [((y >> (bits * i)) & mask) - half for i in range(count - 1)]
    return digits + [y >> (bits * (count - 1))]


def _mm_float64(a: torch.Tensor, b: torch.Tensor, bits: int = 22,
                device: str | torch.device | None = None) -> torch.Tensor:
    """Exact ``a @ b mod 2^64`` (2-D) from float64 products of balanced ``bits``-bit digits.

    A digit is at most ``2^(bits-1)`` in magnitude, a digit product at most
    ``2^(2*bits-2)``, so the inner dimension is cut in chunks of
    ``2^(55 - 2*bits)`` and every partial sum is an integer of magnitude at
    most 2^53: exact in float64 whatever order BLAS adds in. With 22-bit
    digits (the default): 3 digits, the 6 digit pairs whose shift is below 64,
    inner chunks of 2048.
    """
    dev = torch.device(device) if device is not None else a.device
    m, k = a.shape
    n = b.shape[1]
    chunk = max(1, 1 << (55 - 2 * bits))
    a_d = [d.to(dev, torch.float64) for d in signed_digits(a, bits)]
    b_d = [d.to(dev, torch.float64) for d in signed_digits(b, bits)]
    out = torch.zeros((m, n), dtype=torch.int64, device=dev)
    for k0 in range(0, k, chunk):
        k1 = min(k, k0 + chunk)
        for i, ai in enumerate(a_d):
            js = [j for j in range(len(b_d)) if (i + j) * bits < 64]
            bc = torch.cat([b_d[j][k0:k1] for j in js], dim=1) if len(js) > 1 \
                else b_d[js[0]][k0:k1]
            r = (ai[:, k0:k1] @ bc).to(torch.int64)
            for idx, j in enumerate(js):
                out.add_(r[:, idx * n:(idx + 1) * n], alpha=1 << ((i + j) * bits))
    return out.to(a.device)


def _digits_a(a: torch.Tensor) -> torch.Tensor:
    """``(M, K)`` int64 -> ``(M, 8K)`` int8 ``[A_0 | A_1 | ... | A_7]`` (signed byte digits)."""
    m, k = a.shape
    w = ((a + _C80) ^ _C80).contiguous().numpy().view(np.int8).reshape(m, k, 8)
    return torch.from_numpy(np.ascontiguousarray(w.transpose(0, 2, 1))).view(m, 8 * k)


def _digits_b(b: torch.Tensor) -> torch.Tensor:
    """``(K, N)`` int64 -> ``(8K, N)`` int8 ``[B_7; B_6; ...; B_0]`` (signed byte digits)."""
    k, n = b.shape
    w = ((b + _C80) ^ _C80).contiguous().numpy().view(np.int8).reshape(k, n, 8)
    return torch.from_numpy(np.ascontiguousarray(w.transpose(2, 0, 1)[::-1])).view(8 * k, n)


def _mm_int8(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact ``a @ b mod 2^64`` (2-D) from int8 x int8 -> int32 products of byte digits.

    With digits ``a = sum_i A_i 2^(8i)``, ``b = sum_j B_j 2^(8j)`` (mod 2^64),
    ``a @ b = sum_s 2^(8s) [A_0 .. A_s] @ [B_s; ..; B_0]`` over ``s < 8``: eight
    int8 products whose inner dimension grows with ``s``, read as slices of one
    digit-major copy of each operand.
    """
    m, k = a.shape
    n = b.shape[1]
    out = torch.zeros((m, n), dtype=torch.int64)
    for k0 in range(0, k, _INT8_CHUNK):
        k1 = min(k, k0 + _INT8_CHUNK)
        kc = k1 - k0
        acat = _digits_a(a[:, k0:k1])
        brev = _digits_b(b[k0:k1])
        for s in range(8):
            part = torch._int_mm(acat[:, :(s + 1) * kc], brev[(7 - s) * kc:])
            out.add_(part, alpha=1 << (8 * s))
    return out


@functools.cache
def _int8_works() -> bool:
    """Whether this torch has a CPU ``torch._int_mm`` (int8 x int8 -> int32)."""
    try:
        x = torch.ones((17, 8), dtype=torch.int8)
        return bool((torch._int_mm(x, x.t().contiguous()) == 8).all())
    except (RuntimeError, AttributeError):
        return False


@functools.cache
def _int8_fast() -> bool:
    """Whether int8 products are fast here: they work and the CPU has AMX int8 tiles."""
    try:
        with open("/proc/cpuinfo") as f:
            amx = "amx_int8" in f.read()
    except OSError:
        amx = False
    return amx and _int8_works()


_METHOD_FNS = {"int64": _mm_int64, "int8": _mm_int8}


def choose(m: int, k: int, n: int, device: str | torch.device | None = None) -> str:
    """The method ``"auto"`` uses for an ``(m, k) @ (k, n)`` product.

    float64 digits on a CUDA device; int8 limbs for large products where the
    CPU has AMX int8 tiles (without them ``torch._int_mm`` is a slow loop);
    float64 digits (6 dgemms: 6-9x faster than torch's int64 matmul at 1000^3) from
    about 64^3 multiply-adds on; torch's int64 matmul below, where the
    digit split costs more than it saves.
    """
    if device is not None and torch.device(device).type != "cpu":
        return "float64"
    work = m * k * n
    if work >= _LARGE and _int8_fast():
        return "int8"
    return "float64" if work >= _FLOAT64_FROM else "int64"


def _mm2(a: torch.Tensor, b: torch.Tensor, method: str,
         device: str | torch.device | None) -> torch.Tensor:
    if method not in METHODS:
        raise ValueError(f"unknown ring matmul method {method!r}; one of {METHODS}")
    if device is not None and torch.device(device).type != "cpu" or method == "float64":
        return _mm_float64(a, b, 22, device)
    if method == "auto":
        method = choose(a.shape[0], a.shape[1], b.shape[1])
        if method == "float64":
            return _mm_float64(a, b)
    if method == "int8" and not _int8_works():
        method = "int64"
    return _METHOD_FNS[method](a.contiguous(), b.contiguous())


def ring_matmul(a: torch.Tensor, b: torch.Tensor, method: str = "auto",
                device: str | torch.device | None = None) -> torch.Tensor:
    """Exact matrix product mod 2^64 of ``int64`` tensors (``torch.matmul`` shapes).

    Parameters
    ----------
    a, b : torch.Tensor
        ``int64`` ring elements; 1-D, 2-D or batched (broadcast as ``torch.matmul``).
    method : {"auto", "int64", "int8", "float64"}
        The kernel (see the module docstring); all give the same exact result.
    device : str or torch.device, optional
        Compute on this device (e.g. ``"cuda"``) with the float64-limb method;
        the result comes back on ``a``'s device.

    Returns
    -------
    torch.Tensor
        ``int64`` tensor equal to ``torch.matmul(a, b)`` computed mod 2^64.
    """
    _check(a, b)
    if a.dim() == 1 and b.dim() == 1:
        return _mm2(a[None], b[:, None], method, device)[0, 0]
    if a.dim() == 1:
        return ring_matmul(a[None], b, method, device).squeeze(-2)
    if b.dim() == 1:
        return ring_matmul(a, b[:, None], method, device).squeeze(-1)
    if a.dim() == 2 and b.dim() == 2:
        return _mm2(a, b, method, device)
    if b.dim() == 2:
        lead = a.shape[:-1]
        return _mm2(a.reshape(-1, a.shape[-1]), b, method, device).reshape(*lead, b.shape[1])
    if a.dim() == 2:
        # a @ b[i] for every batch i: one product against b laid out as (K, batch * N).
        batch = b.shape[:-2]
        k, n = b.shape[-2:]
        bb = b.reshape(-1, k, n).permute(1, 0, 2).reshape(k, -1)
        r = _mm2(a, bb, method, device).reshape(a.shape[0], -1, n).permute(1, 0, 2)
        return r.reshape(*batch, a.shape[0], n)
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])  # type: ignore[no-untyped-call]
    ab = a.expand(*batch, *a.shape[-2:]).reshape(-1, *a.shape[-2:])
    bb = b.expand(*batch, *b.shape[-2:]).reshape(-1, *b.shape[-2:])
    outs = [_mm2(x, y, method, device) for x, y in zip(ab, bb, strict=True)]
    return torch.stack(outs).reshape(*batch, a.shape[-2], b.shape[-1])


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(x) for x in v)
    if len(t) != 2:
        raise ValueError("conv2d parameters are an int or a pair")
    return (t[0], t[1])


def conv2d_out_shape(x_shape: Sequence[int], w_shape: Sequence[int],
                     stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                     dilation: int | Sequence[int] = 1) -> tuple[int, int, int, int]:
    """Output shape of :func:`ring_conv2d` (``(B, C, H, W)`` input, ``(O, C, kh, kw)`` weight)."""
    if len(x_shape) != 4 or len(w_shape) != 4 or x_shape[1] != w_shape[1]:
        raise ValueError(f"conv2d takes (B, C, H, W) and (O, C, kh, kw); got "
                         f"{tuple(x_shape)} and {tuple(w_shape)}")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    oh = (x_shape[2] + 2 * ph - dh * (w_shape[2] - 1) - 1) // sh + 1
    ow = (x_shape[3] + 2 * pw - dw * (w_shape[3] - 1) - 1) // sw + 1
    if oh <= 0 or ow <= 0:
        raise ValueError("conv2d kernel larger than the (padded) input")
    return (x_shape[0], w_shape[0], oh, ow)


def unfold(x: torch.Tensor, kernel: tuple[int, int], stride: int | Sequence[int] = 1,
           padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B * oh * ow, C * kh * kw)`` patches (any dtype, incl. int64)."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    kh, kw = kernel
    if ph or pw:
        x = torch.nn.functional.pad(x, (pw, pw, ph, ph))
    p = x.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)
    p = p[..., ::dh, ::dw]  # (B, C, oh, ow, kh, kw)
    b, c, oh, ow = p.shape[:4]
    return p.permute(0, 2, 3, 1, 4, 5).reshape(b * oh * ow, c * kh * kw)


def ring_conv2d(x: torch.Tensor, w: torch.Tensor, stride: int | Sequence[int] = 1,
                padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
                method: str = "auto", device: str | torch.device | None = None) -> torch.Tensor:
    """Exact 2-D convolution (cross-correlation, as torch's) mod 2^64 of ``int64`` tensors.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, C, H, W)`` ``int64`` input.
    w : torch.Tensor
        ``(O, C, kh, kw)`` ``int64`` weight (no groups, no bias).
    stride, padding, dilation : int or pair
        As in ``torch.nn.functional.conv2d``.
    method, device
        As in :func:`ring_matmul`.

    Returns
    -------
    torch.Tensor
        ``(B, O, oh, ow)`` ``int64``: the convolution computed mod 2^64.
    """
    _check(x, w)
    shape = conv2d_out_shape(x.shape, w.shape, stride, padding, dilation)
    cols = unfold(x, (w.shape[2], w.shape[3]), stride, padding, dilation)
    r = ring_matmul(cols, w.reshape(w.shape[0], -1).t(), method, device)  # (B*oh*ow, O)
    b, o, oh, ow = shape
    return r.reshape(b, oh, ow, o).permute(0, 3, 1, 2).contiguous()
