"""CKKS parameters chosen from a computation's multiplicative depth.

A CKKS ciphertext can be rescaled once per multiplication; each rescale drops
one prime of the coefficient modulus. A computation of multiplicative depth
``d`` therefore needs ``d`` *scale primes* (of ``scale_bits`` each) between a
first prime (which holds the result: it must exceed the result's magnitude times
the scale) and a special prime (used for key switching). SEAL refuses parameters
whose total modulus is too large for the ring dimension at 128-bit security
(HomomorphicEncryption.org standard, the table below); the smallest ring that
fits is the fastest.

:func:`for_depth` tries, for each ring dimension from the smallest with enough
slots, scale sizes from 40 bits down to 30 and takes the first that fits: depth
2 gives TenSEAL's usual N=8192, [60, 40, 40, 60], scale 2^40; depth 3 gives
N=8192, [55, 35, 35, 35, 55], scale 2^35; deeper computations move to N=16384.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_COEFF_BITS", "HEParameters", "for_depth"]

#: Largest total coefficient modulus (bits) for each ring dimension at 128-bit security.
MAX_COEFF_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
_SCALE_BITS = (40, 38, 35, 33, 30)


@dataclass(frozen=True)
class HEParameters:
    """CKKS parameters.

    Attributes
    ----------
    poly_modulus_degree : int
        Ring dimension N; a ciphertext holds N/2 slots.
    coeff_mod_bit_sizes : tuple of int
        Bit sizes of the primes: first, ``depth`` scale primes, special.
    scale_bits : int
        log2 of the encoding scale.
    depth : int
        Multiplications (rescales) the parameters allow.
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    depth: int

    @property
    def slots(self) -> int:
        """Values one ciphertext holds (N/2)."""
        return self.poly_modulus_degree // 2

    def to_doc(self) -> dict[str, object]:
        """The parameters as a JSON-friendly dict."""
        return {"poly_modulus_degree": self.poly_modulus_degree,
                "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
                "scale_bits": self.scale_bits, "depth": self.depth}


def for_depth(depth: int, min_slots: int = 0, scale_bits: int | None = None) -> HEParameters:
    """The fastest 128-bit-secure CKKS parameters for a computation.

    Parameters
    ----------
    depth : int
        Multiplicative depth of the computation (plaintext and ciphertext
        multiplications on the longest path), 1 to 20.
    min_slots : int, optional
        Fewest slots needed (values packed in one ciphertext).
    scale_bits : int, optional
        Force the scale (20 to 60 bits); by default the largest that fits, at most 40.

    Returns
    -------
    HEParameters

    Raises
    ------
    ValueError
        No parameters at 128-bit security fit the depth and scale.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 20:
        raise ValueError("depth must be an int from 1 to 20")
    if scale_bits is not None and not 20 <= scale_bits <= 60:
        raise ValueError("scale_bits must lie between 20 and 60")
    candidates = (scale_bits,) if scale_bits is not None else _SCALE_BITS
    for n, max_bits in MAX_COEFF_BITS.items():
        if n // 2 < min_slots or n < 8192:  # N=4096 leaves too little room for useful depth
            continue
        for bits in candidates:
            outer = min(60, bits + 20)
            sizes = (outer, *([bits] * depth), outer)
            if sum(sizes) <= max_bits:
                return HEParameters(n, sizes, bits, depth)
    raise ValueError(f"no 128-bit-secure CKKS parameters fit depth {depth}"
                     + (f" with scale 2^{scale_bits}" if scale_bits else ""))
