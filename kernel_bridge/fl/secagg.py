"""Secure aggregation: the scientist learns the sum of the workers' updates, nothing else.

The protocol of Bonawitz et al. (CCS 2017, "Practical Secure Aggregation for
Privacy-Preserving Machine Learning"), as Flower's SecAgg(+) implements it,
over the complete graph of a round's workers:

1. **Advertise keys.** Each worker ``i`` makes two X25519 key pairs, ``c``
   (to encrypt shares to peers) and ``s`` (for pairwise masks), and publishes
   both public keys.
2. **Share keys.** It draws a self-mask seed ``b_i`` and Shamir-shares ``b_i``
   and its mask private key ``s_i`` (``t``-of-``n``, over GF(2^521 - 1)) among
   all workers; each peer's shares are encrypted (ChaCha20-Poly1305 under a key
   from X25519(c_i, c_j)) and relayed by the scientist, who cannot read them.
3. **Masked input.** Its update ``x_i`` (fixed point in Z_2^64) leaves the
   worker only as ``y_i = x_i + PRG(b_i) + sum_{j>i} PRG(s_ij) - sum_{j<i} PRG(s_ij)``
   with ``s_ij = HKDF(X25519(s_i, s_j))`` and ChaCha20 as the PRG. The pairwise
   masks cancel in the sum.
4. **Unmask.** Given the set of workers whose masked input arrived, each
   survivor reveals its share of ``b_j`` for every survivor ``j`` and of
   ``s_j`` for every worker that dropped after sharing; never both for the same
   ``j`` (refused). With ``t`` shares the scientist rebuilds the self masks of
   the survivors and the pairwise masks the dropped workers left behind, and
   removes them: the result is the sum of the survivors' updates.

The masking runs in the worker's trusted process (the plan's output is held
there), never in a kernel. Honest-but-curious scientist, and fewer than ``t``
colluding workers, are the stated model (as in the paper's semi-honest
setting); a scientist that lies about who dropped is caught for the workers it
names both ways, as step 4's refusal shows.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import InvalidQuery, PermissionDenied

#: Fixed-point fractional bits of values in the ring Z_2^64.
FRAC_BITS = 24
#: Shamir's field: the Mersenne prime 2^521 - 1 (holds a 32-byte secret).
PRIME = (1 << 521) - 1
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw


# -- fixed point in Z_2^64 ----------------------------------------------------------------
def encode(values: np.ndarray, frac_bits: int = FRAC_BITS) -> np.ndarray:
    """Float values as fixed-point elements of Z_2^64 (uint64, two's complement)."""
    scaled = np.array(values, dtype=np.float64)  # our own copy: scaled in place below
    scaled *= float(1 << frac_bits)
    np.rint(scaled, out=scaled)
    limit = float(1 << 56)  # room for a sum of 128 such values
    if scaled.size and (not scaled.max() < limit or not scaled.min() > -limit):
        raise InvalidQuery("a value is too large for secure aggregation's fixed-point ring")
    return scaled.astype(np.int64).view(np.uint64)


def decode(ring: np.ndarray, frac_bits: int = FRAC_BITS) -> np.ndarray:
    """Fixed-point ring elements back to float64."""
    return np.asarray(ring, dtype=np.uint64).view(np.int64).astype(np.float64) / (1 << frac_bits)


#: The PRG encrypts this many zero bytes at a time (the keystream goes on across
#: calls): a small buffer kept warm instead of megabytes of fresh zeros per mask.
_ZEROS = bytes(1 << 18)


def prg(seed: bytes, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """``size`` pseudo-random uint64 from a 32-byte seed (the ChaCha20 keystream),
    written into ``out`` when given (a uint64 array of ``size``: no allocation)."""
    if out is None:
        out = np.empty(size, dtype=np.uint64)
    enc = Cipher(algorithms.ChaCha20(seed, b"\0" * 16), mode=None).encryptor()
    zeros, dest = memoryview(_ZEROS), out.data.cast("B")
    for at in range(0, dest.nbytes, len(_ZEROS)):
        n = min(len(_ZEROS), dest.nbytes - at)
        enc.update_into(zeros[:n], dest[at:at + n])
    return out


def _kdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(secret)


def key_tag(identity_secret: bytes, context: bytes, sender: tuple[int, str],
            receiver: tuple[int, str], c: bytes, s: bytes) -> bytes:
    """The tag one worker puts on its round keys for one receiver.

    HMAC-SHA256 under a key both derive from their long-term identities
    (X25519 of one's identity key with the other's pinned public key: the SMPC
    identities of :mod:`kernel_bridge.smpc.keys`), over the round, both indices
    and names and the two public keys. The scientist relays the keys but holds
    no identity the owners pinned, so it cannot swap a worker's keys for its
    own (which would let it open the shares sealed to that worker).
    """
    key = _kdf(identity_secret, b"syftlab-secagg-keys|" + context)
    body = msgpack.packb([context, sender[0], sender[1], receiver[0], receiver[1], c, s])
    return hmac.new(key, body, hashlib.sha256).digest()


def _pub(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(_RAW, _RAW_PUB)


def _priv_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(_RAW, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def pair_seed(my_secret: bytes, peer_public: bytes, context: bytes, a: int, b: int) -> bytes:
    """The seed of the pairwise mask between ``a`` and ``b`` (the same at both ends)."""
    shared = X25519PrivateKey.from_private_bytes(my_secret).exchange(
        X25519PublicKey.from_public_bytes(peer_public))
    lo, hi = min(a, b), max(a, b)
    return _kdf(shared, b"syftlab-secagg-mask|" + context + f"|{lo}|{hi}".encode())


# -- Shamir sharing over GF(PRIME) ---------------------------------------------------------
def shamir_split(secret: bytes, ids: Iterable[int], threshold: int) -> dict[int, int]:
    """Shares ``{id: f(id)}`` of ``secret`` with a random polynomial of degree ``threshold-1``."""
    coeffs = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME)
                                                for _ in range(threshold - 1)]
    out = {}
    for x in ids:
        acc = 0
        for c in reversed(coeffs):
            acc = (acc * x + c) % PRIME
        out[x] = acc
    return out


@functools.lru_cache(maxsize=64)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """The Lagrange coefficients at 0 of the points ``xs`` (the same for every secret
    shared among the same workers: computed once per round, not once per secret)."""
    out = []
    for xi in xs:
        num, den = 1, 1
        for xj in xs:
            if xj != xi:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(out)


def shamir_combine(shares: Mapping[int, int], size: int = 32) -> bytes:
    """The secret from at least ``threshold`` shares (Lagrange interpolation at 0)."""
    xs = tuple(sorted(shares))
    secret = sum(shares[x] * c for x, c in zip(xs, _lagrange_at_zero(xs), strict=True)) % PRIME
    if secret >> (8 * size):
        raise InvalidQuery("the shares do not reconstruct a secret (too few, or wrong ones)")
    return secret.to_bytes(size, "big")


# -- one worker's side -----------------------------------------------------------------------
@dataclass
class Participant:
    """One worker's state in one round (kept in the worker's trusted process).

    Parameters
    ----------
    index : int
        This worker's id in the round (1..n, fixed by the scientist's order).
    context : bytes
        Binds every key and mask to this job and round.
    """

    index: int
    context: bytes
    _c: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate, repr=False)
    _s: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate, repr=False)
    _b: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict, repr=False)
    threshold: int = 0
    _received: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)
    masked: bool = False
    revealed: bool = False

    def advertise(self) -> dict[str, bytes]:
        """Step 1: the two public keys."""
        return {"c": _pub(self._c), "s": _pub(self._s)}

    def share_keys(self, keys: Mapping[int, Mapping[str, bytes]], threshold: int
                   ) -> dict[int, bytes]:
        """Step 2: encrypted Shamir shares of ``b`` and ``s`` for every peer."""
        if self.index not in keys or keys[self.index]["s"] != _pub(self._s):
            raise PermissionDenied("secure aggregation: my own keys are not in the key list")
        if not 1 < threshold <= len(keys):
            raise InvalidQuery(f"secure aggregation needs 2 <= threshold <= {len(keys)}")
        keys_ = {int(j): (bytes(k["c"]), bytes(k["s"])) for j, k in keys.items()}
        for j, (c, s) in keys_.items():
            for pub in (c, s):  # a low-order point would make a shared secret of zeros
                try:
                    self._c.exchange(X25519PublicKey.from_public_bytes(pub))
                except ValueError:
                    raise PermissionDenied(f"secure aggregation: worker {j}'s public key "
                                           "is not a valid X25519 key") from None
        self.keys = keys_
        self.threshold = threshold
        ids = sorted(self.keys)
        b_shares = shamir_split(self._b, ids, threshold)
        s_shares = shamir_split(_priv_bytes(self._s), ids, threshold)
        out = {}
        for j in ids:
            plain = b"|".join(str(v).encode() for v in (self.index, j, b_shares[j], s_shares[j]))
            if j == self.index:
                self._received[j] = (b_shares[j], s_shares[j])
                continue
            out[j] = self._seal(j, plain)
        return out

    def _box(self, peer: int) -> ChaCha20Poly1305:
        shared = self._c.exchange(X25519PublicKey.from_public_bytes(self.keys[peer][0]))
        return ChaCha20Poly1305(_kdf(shared, b"syftlab-secagg-box|" + self.context))

    def _seal(self, peer: int, plain: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        aad = self.context + f"|{self.index}->{peer}".encode()
        return nonce + self._box(peer).encrypt(nonce, plain, aad)

    def receive_shares(self, sealed: Mapping[int, bytes]) -> None:
        """Step 2 (end): the shares the peers encrypted for me."""
        for j, blob in sealed.items():
            j = int(j)
            aad = self.context + f"|{j}->{self.index}".encode()
            plain = self._box(j).decrypt(bytes(blob[:12]), bytes(blob[12:]), aad)
            src, dst, b_share, s_share = (int(v) for v in plain.split(b"|"))
            if (src, dst) != (j, self.index):
                raise PermissionDenied("secure aggregation: a share addressed to someone else")
            self._received[j] = (b_share, s_share)

    def mask(self, ring: np.ndarray) -> np.ndarray:
        """Step 3: ``y = x + PRG(b) + sum_{j>i} PRG(s_ij) - sum_{j<i} PRG(s_ij)`` (mod 2^64)."""
        if not self.keys:
            raise InvalidQuery("secure aggregation: mask before the keys were shared")
        if set(self._received) != set(self.keys):
            missing = sorted(set(self.keys) - set(self._received))
            raise InvalidQuery(f"secure aggregation: no shares yet from workers {missing}")
        # In place, with one scratch buffer for every mask (uint64 wraps mod 2^64).
        y: np.ndarray = np.array(ring, dtype=np.uint64)
        m = prg(self._b, ring.size)
        y += m
        mine = _priv_bytes(self._s)
        for j, (_, s_pub) in self.keys.items():
            if j == self.index:
                continue
            prg(pair_seed(mine, s_pub, self.context, self.index, j), ring.size, out=m)
            if j > self.index:
                y += m
            else:
                y -= m
        self.masked = True
        return y

    def reveal(self, survivors: Iterable[int]) -> dict[str, dict[int, int]]:
        """Step 4: shares of ``b_j`` for survivors and of ``s_j`` for dropped workers.

        Raises
        ------
        PermissionDenied
            Asked twice, or with fewer survivors than the threshold, or naming
            workers outside the round (any of which could unmask one update).
        """
        alive = {int(j) for j in survivors}
        if self.revealed:
            raise PermissionDenied("secure aggregation: shares were already revealed")
        if not alive <= set(self.keys) or self.index not in alive:
            raise PermissionDenied("secure aggregation: unknown workers in the survivor list")
        if len(alive) < self.threshold:
            raise PermissionDenied(f"secure aggregation: {len(alive)} survivors, fewer than "
                                   f"the threshold {self.threshold}")
        self.revealed = True
        dropped = set(self.keys) - alive
        return {"b": {j: self._received[j][0] for j in alive if j in self._received},
                "s": {j: self._received[j][1] for j in dropped if j in self._received}}


# -- the scientist's side --------------------------------------------------------------------
def unmask(masked: Mapping[int, np.ndarray], keys: Mapping[int, Mapping[str, bytes]],
           revealed: Mapping[int, Mapping[str, Mapping[int, int]]], threshold: int,
           context: bytes) -> np.ndarray:
    """The sum of the survivors' inputs (ring elements) from their masked inputs.

    Parameters
    ----------
    masked : dict
        ``{i: y_i}`` of the survivors.
    keys : dict
        Every worker's advertised public keys (``{"c", "s"}``), survivors and dropped.
    revealed : dict
        ``{i: Participant.reveal(...)}`` from at least ``threshold`` survivors.
    threshold : int
        Shamir's threshold.
    context : bytes
        The round's context.

    Returns
    -------
    numpy.ndarray
        ``sum_i x_i`` (uint64 ring elements) over the survivors.
    """
    alive = sorted(masked)
    dropped = sorted(set(keys) - set(alive))
    if len(revealed) < threshold:
        raise InvalidQuery(f"secure aggregation: {len(revealed)} workers revealed shares, "
                           f"{threshold} are needed")
    size = next(iter(masked.values())).size
    total = np.zeros(size, dtype=np.uint64)
    for i in alive:
        total += np.asarray(masked[i], dtype=np.uint64)
    m = np.empty(size, dtype=np.uint64)  # one scratch buffer for every mask
    for i in alive:  # remove the survivors' self masks
        b = shamir_combine({int(h): int(r["b"][i]) for h, r in revealed.items()})
        total -= prg(b, size, out=m)
    for j in dropped:  # remove the pairwise masks the dropped left in the survivors' inputs
        s_j = shamir_combine({int(h): int(r["s"][j]) for h, r in revealed.items()})
        for i in alive:
            prg(pair_seed(s_j, bytes(keys[i]["s"]), context, i, j), size, out=m)
            # Survivor i added +m when j > i and -m when j < i: undo it.
            if j > i:
                total -= m
            else:
                total += m
    return total


def context_for(round_name: str) -> bytes:
    """The context bytes binding a round's keys and masks (the round's name)."""
    return hashlib.sha256(f"syftlab-fl-secagg|{round_name}".encode()).digest()


# -- plan outputs <-> one vector ----------------------------------------------------------------
def output_order(forms: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """The (output, tensor) order in which a plan's outputs are flattened for masking.

    Sorted by name, so that it does not depend on a dict's order (a stored plan's
    policy comes back from canonical JSON with its keys sorted).
    """
    order: list[tuple[str, str | None]] = []
    for name in sorted(forms):
        form = forms[name]
        if form["kind"] == "tensors":
            order += [(name, p) for p in sorted(form["shapes"])]
        else:
            order.append((name, None))
    return order


def _numpy(v: Any) -> np.ndarray:
    return np.asarray(v.numpy() if hasattr(v, "numpy") else v, dtype=np.float64)


def flatten_outputs(outputs: Mapping[str, Any], forms: Mapping[str, Any]) -> np.ndarray:
    """Outputs in their declared form (tensors, numbers) as one float64 vector."""
    return np.concatenate([
        _numpy(outputs[o] if p is None else outputs[o][p]).ravel()
        for o, p in output_order(forms)])


def flatten_ring(masked: Mapping[str, Any], forms: Mapping[str, Any]) -> np.ndarray:
    """Masked outputs (ring elements in the declared form) as one uint64 vector."""
    return np.concatenate([
        np.asarray(masked[o] if p is None else masked[o][p]).astype(np.uint64).ravel()
        for o, p in output_order(forms)])


def split_outputs(vector: np.ndarray, forms: Mapping[str, Any]) -> dict[str, Any]:
    """A flat vector cut back into the declared form (the inverse of :func:`flatten_outputs`)."""
    out: dict[str, Any] = {}
    at = 0
    for name in sorted(forms):
        form = forms[name]
        if form["kind"] == "tensors":
            parts = {}
            for param in sorted(form["shapes"]):
                shape = form["shapes"][param]
                n = int(np.prod(shape)) if shape else 1
                parts[param] = np.ascontiguousarray(vector[at:at + n].reshape(shape))
                at += n
            out[name] = parts
        else:
            out[name] = np.asarray(vector[at])
            at += 1
    if at != vector.size:
        raise InvalidQuery("the vector does not fit the declared outputs")
    return out
