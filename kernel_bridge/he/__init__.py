"""Homomorphic encryption (CKKS, with TenSEAL): compute on data that stays encrypted.

The scientist's side::

    import kernel_bridge as kb
    ctx = kb.he.context(depth=3)          # keys made here; parameters from the depth
    enc_x = kb.he.encrypt(ctx, x)         # only ctx.public() and ciphertexts travel
    enc_y = bob.asset("risk_model").he_predict(enc_x)
    kb.he.decrypt(enc_y)

The parts: :mod:`.params` (parameters from the depth), :mod:`.context` (keys,
measured precision), :mod:`.vector` (encrypt, decrypt), and the evaluation code
the worker runs: :mod:`.seal` (SEAL-level evaluation: rotations, exact scales),
:mod:`.linear` (vector × plain matrix, diagonal method with baby-step
giant-step), :mod:`.mlp` (encrypted inference of a polynomial MLP),
:mod:`.evaluate` (encrypted evaluation of a scientist's model, with DP noise
added under encryption) and :mod:`.validate` (loading a scientist's values on
the worker, bounded, with typed errors). TenSEAL is imported only when used.
"""

from __future__ import annotations

from .context import Context, context
from .params import HEParameters, for_depth
from .vector import EncryptedVector, decrypt, encrypt

__all__ = ["Context", "EncryptedVector", "HEParameters", "context", "decrypt", "encrypt",
           "for_depth"]
