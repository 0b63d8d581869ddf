"""SEAL-level evaluation on TenSEAL values: rotations, exact-scale products, packing.

TenSEAL's Python API has no rotation; SEAL's (``tenseal.sealapi``) does. An
:class:`Evaluator` loads the ciphertexts of a serialized TenSEAL CKKS vector
into SEAL objects, computes with SEAL's evaluator, and writes the result back as
a TenSEAL CKKS vector (``CKKSVectorProto``: sizes, ciphertexts, scale), which
the scientist's TenSEAL decrypts as usual. SEAL objects load and save through
files only, so they go through anonymous in-memory files (``memfd``).

Scale management: a product with a plaintext encoded at the scale of the prime
that the following rescale drops keeps the ciphertext's scale exactly, so a chain
of plaintext products stays at the context's scale and can be added to
anything else at that scale.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..wire.sealed import check_vector, proto_fields

__all__ = ["Evaluator", "vector_proto"]


@contextlib.contextmanager
def _memfile(data: bytes | None = None) -> Iterator[tuple[int, str]]:
    fd = os.memfd_create("syftlab-he", os.MFD_CLOEXEC)
    try:
        if data is not None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        yield fd, f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def vector_proto(size: int, ciphertexts: Sequence[bytes], scale: float) -> bytes:
    """A TenSEAL ``CKKSVectorProto``: one chunk of ``size`` values per ciphertext."""
    sizes = _varint(size) * len(ciphertexts)
    out = bytearray(b"\x0a" + _varint(len(sizes)) + sizes)
    for ct in ciphertexts:
        out += b"\x12" + _varint(len(ct)) + ct
    out += b"\x19" + struct.pack("<d", scale)
    return bytes(out)


def vector_sizes(data: bytes) -> list[int]:
    """The chunk sizes of a serialized CKKS vector (how many values each ciphertext holds)."""
    sizes: list[int] = []
    for number, wire, value in proto_fields(data):
        if number == 1 and wire == 2:
            assert isinstance(value, bytes)
            pos = 0
            while pos < len(value):
                n = shift = 0
                while True:
                    b = value[pos]
                    pos += 1
                    n |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                sizes.append(n)
        elif number == 1 and wire == 0:
            assert isinstance(value, int)
            sizes.append(value)
    return sizes


class Evaluator:
    """SEAL evaluation under one (public) TenSEAL context.

    Parameters
    ----------
    context : tenseal.Context
        Needs relinearisation keys for products of ciphertexts and Galois keys
        for rotations; no secret key is needed (or used).
    """

    def __init__(self, context: Any) -> None:
        import tenseal.sealapi as sa

        self.sa = sa
        self.context = context
        self.seal = context.seal_context().data
        self.encoder = sa.CKKSEncoder(self.seal)
        self.ev = sa.Evaluator(self.seal)
        self.slots: int = self.encoder.slot_count()
        self.galois = context.galois_keys().data if context.has_galois_keys() else None
        self.relin = context.relin_keys().data if context.has_relin_keys() else None
        self.encryptor = sa.Encryptor(self.seal, context.public_key().data)
        self.scale = float(context.global_scale)

    def _out(self, fn: Any, *args: Any) -> Any:
        dest = self.sa.Ciphertext()
        fn(*args, dest)
        return dest

    def sum(self, a: Any, b: Any) -> Any:
        """``a + b`` for ciphertexts at one level and scale."""
        return self._out(self.ev.add, a, b)

    # -- in and out -------------------------------------------------------------
    def load(self, data: bytes) -> tuple[Any, int]:
        """The first ciphertext of a serialized CKKS vector, and how many values it holds.

        SEAL checks that the ciphertext is valid for this context (a malformed
        one raises ``ValueError``/``RuntimeError``, which callers turn into typed errors).
        """
        cts = check_vector(data)
        sizes = vector_sizes(data)
        if len(cts) != 1 or len(sizes) != 1:
            raise ValueError("expected a vector of one ciphertext")
        ct = self.sa.Ciphertext()
        with _memfile(cts[0]) as (_, path):
            ct.load(self.seal, path)
        if not self.sa.is_valid_for(ct, self.seal):
            raise ValueError("the ciphertext is not valid for this context")
        if ct.size() != 2:
            raise ValueError("expected a fresh (size 2) ciphertext")
        return ct, int(sizes[0])

    def dump(self, ct: Any, size: int) -> bytes:
        """A serialized TenSEAL CKKS vector holding ``ct``'s first ``size`` values."""
        with _memfile() as (fd, path):
            ct.save(path)
            blob = _read_all(fd)
        return vector_proto(size, [blob], float(ct.scale))

    # -- levels and scales --------------------------------------------------------
    def level(self, ct: Any) -> int:
        """How many rescales ``ct`` may still undergo."""
        return int(self.seal.get_context_data(ct.parms_id()).chain_index())

    def last_prime(self, ct: Any) -> float:
        """The prime the next rescale of ``ct`` drops."""
        data = self.seal.get_context_data(ct.parms_id())
        return float(data.parms().coeff_modulus()[-1].value())

    def encode(self, values: np.ndarray | float, ct: Any, scale: float) -> Any:
        """A plaintext at ``ct``'s level, ``values`` tiled or given for every slot."""
        plain = self.sa.Plaintext()
        if isinstance(values, np.ndarray):
            self.encoder.encode(values.astype(float).tolist(), ct.parms_id(), scale, plain)
        else:
            self.encoder.encode(float(values), ct.parms_id(), scale, plain)
        return plain

    def to_level(self, ct: Any, level: int) -> Any:
        """``ct`` switched down to ``level`` (no rescale: the scale is kept)."""
        while self.level(ct) > level:
            ct = self._out(self.ev.mod_switch_to_next, ct)
        return ct

    # -- arithmetic ---------------------------------------------------------------
    def mul_plain(self, ct: Any, values: np.ndarray | float, out_scale: float | None = None
                  ) -> Any:
        """``ct ⊙ values``, rescaled; the result's scale is ``ct``'s (or ``out_scale``)."""
        if self.level(ct) < 1:
            raise ValueError("the context has no multiplicative depth left")
        q = self.last_prime(ct)
        scale = q if out_scale is None else out_scale * q / float(ct.scale)
        out = self._out(self.ev.multiply_plain, ct, self.encode(values, ct, scale))
        self.ev.rescale_to_next_inplace(out)
        out.scale = float(ct.scale) if out_scale is None else out_scale
        return out

    def mul_encoded(self, ct: Any, plain: Any) -> Any:
        """``ct ⊙ plain`` without rescaling (for sums of many products, rescaled once)."""
        return self._out(self.ev.multiply_plain, ct, plain)

    def rescale(self, ct: Any, scale: float) -> Any:
        """Rescale a product whose plaintext was encoded at the dropped prime."""
        self.ev.rescale_to_next_inplace(ct)
        ct.scale = scale
        return ct

    def add_plain(self, ct: Any, values: np.ndarray | float) -> Any:
        """``ct + values`` (encoded at ``ct``'s level and scale)."""
        return self._out(self.ev.add_plain, ct, self.encode(values, ct, float(ct.scale)))

    def sub_plain(self, ct: Any, values: np.ndarray | float) -> Any:
        """``ct - values``."""
        return self._out(self.ev.sub_plain, ct, self.encode(values, ct, float(ct.scale)))

    def add(self, a: Any, b: Any) -> Any:
        """``a + b`` at the lower of their levels; their scales must agree."""
        if not np.isclose(float(a.scale), float(b.scale), rtol=1e-9, atol=0.0):
            raise ValueError("scales differ")
        level = min(self.level(a), self.level(b))
        a, b = self.to_level(a, level), self.to_level(b, level)
        b.scale = a.scale
        return self.sum(a, b)

    def square(self, ct: Any) -> Any:
        """``ct ⊙ ct``, relinearised and rescaled."""
        if self.level(ct) < 1:
            raise ValueError("the context has no multiplicative depth left")
        out = self._out(self.ev.square, ct)
        self.ev.relinearize_inplace(out, self.relin)
        self.ev.rescale_to_next_inplace(out)
        return out

    def multiply(self, a: Any, b: Any) -> Any:
        """``a ⊙ b`` for two ciphertexts at one level, relinearised and rescaled."""
        out = self._out(self.ev.multiply, a, b)
        if self.relin is None:
            raise ValueError("the context has no relinearisation keys")
        self.ev.relinearize_inplace(out, self.relin)
        self.ev.rescale_to_next_inplace(out)
        return out

    def dot(self, a: Any, b: Any) -> Any:
        """``Σ a_i b_i`` in every slot (one product, ``log2(slots)`` rotations)."""
        return self.fold(self.multiply(a, b), 1, self.slots)

    def rotate(self, ct: Any, steps: int) -> Any:
        """Slot ``i`` of the result holds slot ``i + steps`` of ``ct`` (cyclically)."""
        if self.galois is None:
            raise ValueError("the context has no Galois keys (rotations need them)")
        steps %= self.slots
        if steps == 0:
            return ct
        return self._out(self.ev.rotate_vector, ct, steps, self.galois)

    def periodize(self, ct: Any, period: int) -> Any:
        """Sum of ``ct`` over all shifts by multiples of ``period``: a ``period``-periodic
        vector (``ct`` zero beyond ``period`` makes it ``ct`` repeated)."""
        return self.fold(ct, period, self.slots)

    def fold(self, ct: Any, start: int, stop: int) -> Any:
        """Add ``ct`` rotated by ``start, 2 start, ...`` below ``stop`` (a rotate-and-sum tree)."""
        if self.galois is None:
            raise ValueError("the context has no Galois keys (rotations need them)")
        out = ct  # the first addition makes a new ciphertext; the rest work in place
        tmp = self.sa.Ciphertext()
        step = start
        while step < stop:
            self.ev.rotate_vector(out, step % self.slots, self.galois, tmp)
            if out is ct:
                out = self._out(self.ev.add, ct, tmp)
            else:
                self.ev.add_inplace(out, tmp)
            step *= 2
        return out

    def rerandomize(self, ct: Any) -> Any:
        """``ct`` plus a fresh public-key encryption of zero (new randomness, same value)."""
        zero = self.sa.Ciphertext()
        self.encryptor.encrypt_zero(ct.parms_id(), zero)
        zero.scale = float(ct.scale)
        return self.sum(ct, zero)
