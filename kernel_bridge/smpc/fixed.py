"""Fixed-point encoding of real numbers in the ring Z_2^64 (torch ``int64``, wrapping).

A real ``x`` is held as the ring element ``round(x * 2**FRAC_BITS) mod 2**64``,
read as a signed 64-bit integer. With ``FRAC_BITS = 16``:

* **Precision**: the resolution (one *ulp*) is ``2**-16 ≈ 1.53e-5``; encoding
  rounds to nearest, so it is off by at most half an ulp (``7.6e-6``).
* **Range of a value**: ``|x| < 2**46 ≈ 7.0e13`` (:data:`MAX_ABS`). Sums and
  differences must stay below ``2**47`` in magnitude (the ring wraps silently
  beyond; comparisons read the sign bit, so they need ``|x| < 2**47``).
* **Range of a product**: a fixed-point product (``mul``, ``matmul``,
  ``conv2d``, ``mul_public`` by a non-integer) is computed at scale ``2**32``
  and truncated back; the truncation protocol is exact (up to one ulp) when each
  result element satisfies ``|result| < 2**30 ≈ 1.07e9`` (:data:`MAX_PRODUCT`);
  beyond that the result is garbage (wrap-around), which tests check at the
  edge. Intermediate terms of a sum may exceed it; only the result counts.
* **Division by a public number** ``c`` with ``|c| > 1`` multiplies by its
  reciprocal carried with :data:`DIV_BITS` significant bits (relative error
  ``<= 2**-21``, plus the one-ulp truncation) and needs
  ``|x| < 2**(45 - DIV_BITS) = 2**25 ≈ 3.4e7``; with ``|c| <= 1`` it is a
  fixed-point product by ``1/c`` (``|x / c| < 2**30``).

:func:`encode` refuses non-finite values and values of ``|x| >= MAX_ABS`` with a
typed :class:`~.errors.PrecisionError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import PrecisionError

#: Fractional bits of the encoding.
FRAC_BITS = 16
#: ``2**FRAC_BITS``: the scale of an encoded value.
SCALE = 1 << FRAC_BITS
#: Largest magnitude :func:`encode` accepts (exclusive).
MAX_ABS = float(2 ** (62 - FRAC_BITS))
#: Largest magnitude of a fixed-point product's result (exclusive) for exact truncation.
MAX_PRODUCT = float(2 ** (62 - 2 * FRAC_BITS))
#: Significant bits of a public divisor's reciprocal (see ``div_public``).
DIV_BITS = 20
#: One unit in the last place, as a real number.
ULP = 1.0 / SCALE


def as_float64(x: Any) -> torch.Tensor:
    """``x`` (tensor, ndarray, number, nested list) as a float64 tensor on the CPU."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def encode(x: Any, frac_bits: int = FRAC_BITS) -> torch.Tensor:
    """Encode reals as fixed-point ring elements.

    Parameters
    ----------
    x : tensor, ndarray, number or nested list
        Finite reals with ``|x| < 2**(62 - frac_bits)``.
    frac_bits : int
        Fractional bits (default :data:`FRAC_BITS`).

    Returns
    -------
    torch.Tensor
        ``int64`` tensor ``round(x * 2**frac_bits)``, same shape as ``x``.

    Raises
    ------
    PrecisionError
        A value is not finite or is outside the range.
    """
    f = as_float64(x)
    if not bool(torch.isfinite(f).all()):
        raise PrecisionError("fixed-point encoding needs finite values (got NaN or inf)")
    bound = float(2 ** (62 - frac_bits))
    if f.numel() and float(f.abs().max()) >= bound:
        raise PrecisionError(f"fixed-point range is |x| < 2**{62 - frac_bits} "
                             f"({bound:.3g}); a value is outside it",
                             bound=bound)
    return torch.round(f * float(1 << frac_bits)).to(torch.int64)


def decode(r: torch.Tensor, frac_bits: int = FRAC_BITS) -> torch.Tensor:
    """Decode fixed-point ring elements (signed ``int64``) to ``float64`` reals.

    Parameters
    ----------
    r : torch.Tensor
        ``int64`` ring elements (e.g. a reconstructed share sum).
    frac_bits : int
        Fractional bits they were encoded with.

    Returns
    -------
    torch.Tensor
        ``float64`` tensor ``r / 2**frac_bits``.
    """
    return r.to(torch.float64) / float(1 << frac_bits)
