"""Loading a scientist's HE values on the worker: checked, bounded, typed errors.

The wire has already checked the structure (:mod:`kernel_bridge.wire.sealed`).
Before TenSEAL/SEAL parse anything, every embedded SEAL object is inflated here
with a bound (SEAL would inflate a zstd or zlib stream without one: a small
"decompression bomb" could exhaust the worker's memory). Then TenSEAL loads
the context, which must be CKKS, public only (no secret key: refused), with
relinearisation and Galois keys and at least the depth the computation needs;
SEAL validates every ciphertext against it. Any failure is an
:class:`~kernel_bridge.errors.HEError` whose message names the problem, never
the values. Call these functions off the event loop.
"""

from __future__ import annotations

import zlib
from typing import Any

from ..errors import CodecError, HEError
from ..wire.sealed import HEContextBytes, HEVectorBytes, check_context, check_vector, seal_header
from .seal import Evaluator

__all__ = ["MAX_INFLATED_BYTES", "MAX_INFLATED_VECTOR_BYTES", "inflated_size", "load_context",
           "load_vector"]

#: Most bytes all SEAL objects of one context may inflate to (its Galois keys are large).
MAX_INFLATED_BYTES = 512 * 1024 * 1024
#: Most bytes the ciphertexts of one vector may inflate to.
MAX_INFLATED_VECTOR_BYTES = 64 * 1024 * 1024
_HEADER = 16


def inflated_size(blob: bytes, limit: int) -> int:
    """The size a SEAL object inflates to, refusing anything above ``limit``.

    Raises
    ------
    HEError
        The stream inflates past ``limit`` or is not valid zstd/zlib.
    """
    compression, _ = seal_header(blob)
    body = memoryview(blob)[_HEADER:]
    if compression == "none":
        return len(blob)
    try:
        if compression == "zlib":
            d = zlib.decompressobj()
            out = len(d.decompress(body, limit + 1))
            if d.unconsumed_tail or out > limit:
                raise HEError("an HE value inflates past the worker's limit", limit=limit)
            return out + _HEADER
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(bytes(body), read_across_frames=True)
        total = 0
        while True:
            chunk = reader.read(1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise HEError("an HE value inflates past the worker's limit", limit=limit)
        return total + _HEADER
    except HEError:
        raise
    except Exception as exc:
        raise HEError(f"an HE value holds a corrupt {compression} stream") from exc


def _bounded(blobs: list[bytes], limit: int = MAX_INFLATED_BYTES) -> None:
    left = limit
    for blob in blobs:
        left -= inflated_size(blob, left)


def load_context(value: Any, min_depth: int = 1) -> Any:
    """A scientist's public context as a TenSEAL context the worker can evaluate under.

    Parameters
    ----------
    value : HEContextBytes
        As decoded from the wire.
    min_depth : int
        Rescales the computation needs.

    Returns
    -------
    tenseal.Context

    Raises
    ------
    HEError
        Not a context, a context with a secret key, not CKKS, missing keys, or too shallow.
    """
    import tenseal as ts

    if type(value) is not HEContextBytes:
        raise HEError("expected an HE context (kb.he.context(...).public())")
    try:
        _bounded(check_context(value.data))
    except CodecError as exc:
        raise HEError(exc.message, **exc.data) from None
    try:
        ctx = ts.context_from(value.data)
    except Exception as exc:
        raise HEError(f"SEAL refused the context ({type(exc).__name__})") from None
    if ctx.has_secret_key() or ctx.is_private():
        raise HEError("an HE context carrying a secret key is refused", reason="secret_key")
    seal = ctx.seal_context().data
    first = seal.first_context_data()
    if str(first.parms().scheme()) != "SCHEME_TYPE.CKKS":
        raise HEError("only CKKS contexts are served")
    if not ctx.has_galois_keys() or not ctx.has_relin_keys() or not ctx.has_public_key():
        raise HEError("the context needs its public, relinearisation and Galois keys")
    depth = int(first.chain_index())
    if depth < min_depth:
        raise HEError(f"this computation needs a context of depth {min_depth} or more "
                      f"(kb.he.context(depth={min_depth})); this one has {depth}",
                      depth=depth, needed=min_depth)
    return ctx


def load_vector(ev: Evaluator, value: Any) -> tuple[Any, int]:
    """A scientist's ciphertext (one SEAL ciphertext) loaded under ``ev``'s context.

    Returns
    -------
    ciphertext, size
        The SEAL ciphertext and how many values the vector says it holds.

    Raises
    ------
    HEError
        Not a vector, malformed, or not valid for the context.
    """
    if type(value) is not HEVectorBytes:
        raise HEError("expected an encrypted vector (kb.he.encrypt(ctx, x))")
    try:
        _bounded(check_vector(value.data), MAX_INFLATED_VECTOR_BYTES)
        return ev.load(value.data)
    except CodecError as exc:
        raise HEError(exc.message, **exc.data) from None
    except HEError:
        raise
    except Exception as exc:
        raise HEError(f"the ciphertext does not fit the context ({type(exc).__name__})") from None
