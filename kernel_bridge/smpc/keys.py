"""Long-term identity keys of SMPC workers, and which peers and dealers an owner trusts.

Every worker has one X25519 identity key, made once (``os.urandom`` through
``cryptography``) and kept in its state directory (``smpc_identity.key``, mode
0600; the scientist's kernels never see the state directory). Its
*fingerprint* (``sha256:`` + hex of the public key's SHA-256) is what an owner
pins.

Trust is decided by the owner, never by the scientist: a worker accepts a link
from, or opens one to, a peer only if the peer's name *and* public key match
an entry it pins, either in the worker TOML::

    [smpc]
    dealer = false                       # true: this worker is a dealer (no assets)
    [smpc.peers]                         # computing parties we exchange masked values with
    bob = "sha256:3f1c..."
    [smpc.dealers]                       # dealers whose material we accept
    dave = "sha256:9a0e..."

or in ``smpc_trust.json`` in the state directory (written by
``syftlab smpc trust``, and by :func:`kernel_bridge.launch` for the workers one
process starts locally, which then trust each other). The trust file is read
again at every new link, so a pin added while the worker runs takes effect.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..errors import UntrustedParty

IDENTITY_FILE = "smpc_identity.key"
TRUST_FILE = "smpc_trust.json"
_TRUST_LOCK = threading.Lock()

Role = Literal["peer", "dealer"]
ROLES: tuple[Role, ...] = ("peer", "dealer")


def fingerprint(public: bytes) -> str:
    """``sha256:<hex>`` of a raw 32-byte X25519 public key."""
    return "sha256:" + hashlib.sha256(public).hexdigest()


@dataclass(frozen=True)
class Identity:
    """A worker's long-term X25519 key pair and its name."""

    name: str
    private: X25519PrivateKey

    @property
    def public(self) -> bytes:
        """The raw 32-byte public key."""
        return self.private.public_key().public_bytes(serialization.Encoding.Raw,
                                                      serialization.PublicFormat.Raw)

    @property
    def fingerprint(self) -> str:
        """What owners pin: :func:`fingerprint` of :attr:`public`."""
        return fingerprint(self.public)

    def exchange(self, public: bytes) -> bytes:
        """X25519 with a peer's raw public key."""
        return self.private.exchange(X25519PublicKey.from_public_bytes(public))


def load_or_create(state_dir: str | os.PathLike[str], name: str) -> Identity:
    """The identity key kept in ``state_dir`` (made on first use, mode 0600).

    Parameters
    ----------
    state_dir : path
        The worker's state directory.
    name : str
        The worker's name (bound into every link handshake).

    Returns
    -------
    Identity
    """
    path = Path(state_dir) / IDENTITY_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        key = X25519PrivateKey.generate()
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
        tmp = path.with_name(f".{IDENTITY_FILE}.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # atomic: two racing creators end with one key
        tmp.unlink(missing_ok=True)
    raw = path.read_bytes()
    if len(raw) != 32:
        raise UntrustedParty(f"{path} is not an X25519 key (32 raw bytes)")
    return Identity(name, X25519PrivateKey.from_private_bytes(raw))


def _check_fingerprint(value: str) -> str:
    if not (isinstance(value, str) and value.startswith("sha256:") and len(value) == 71
            and all(c in "0123456789abcdef" for c in value[7:])):
        raise ValueError(f"{value!r} is not a fingerprint (sha256: and 64 hex digits)")
    return value


class TrustStore:
    """The peers and dealers one worker trusts: pinned in its TOML and its trust file.

    Parameters
    ----------
    state_dir : path
        Where ``smpc_trust.json`` lives (read again on every :meth:`check`).
    pinned : mapping of role to (mapping of name to fingerprint)
        From the worker TOML's ``[smpc.peers]`` / ``[smpc.dealers]``.
    """

    def __init__(self, state_dir: str | os.PathLike[str],
                 pinned: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.path = Path(state_dir) / TRUST_FILE
        self.pinned: dict[str, dict[str, str]] = {
            role: dict((pinned or {}).get(role, {})) for role in ROLES}

    def entries(self) -> dict[str, dict[str, str]]:
        """``{role: {name: fingerprint}}``: the TOML's pins, then the trust file's."""
        out: dict[str, dict[str, str]] = {role: dict(self.pinned[role]) for role in ROLES}
        for role, table in read_trust_file(self.path).items():
            out[role].update(table)
        return out

    def check(self, name: str, public: bytes, role: Role) -> None:
        """Raise :class:`UntrustedParty` unless ``name`` with ``public`` is pinned as ``role``."""
        pinned = self.entries()[role].get(name)
        if pinned is None or pinned != fingerprint(public):
            raise UntrustedParty(
                f"{name!r} is not a {role} this worker's owner trusts (or its key changed); "
                f"the owner pins it with: syftlab smpc trust {name} FINGERPRINT --{role}",
                party=name[:64], role=role)

    def trusts(self, name: str, public: bytes) -> set[Role]:
        """The roles ``name`` with key ``public`` is trusted in."""
        fp = fingerprint(public)
        entries = self.entries()
        return {role for role in ROLES if entries[role].get(name) == fp}


def read_trust_file(path: Path) -> dict[str, dict[str, str]]:
    """The trust file's ``{role: {name: fingerprint}}`` (empty when missing)."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    out: dict[str, dict[str, str]] = {}
    for role in ROLES:
        table = doc.get(role) or {}
        out[role] = {str(k): _check_fingerprint(v) for k, v in table.items()}
    return out


def trust(state_dir: str | os.PathLike[str], name: str, fp: str,
          role: Role = "peer") -> None:
    """Pin ``name``'s fingerprint as a trusted ``role`` in a worker's trust file.

    Parameters
    ----------
    state_dir : path
        The worker's state directory.
    name : str
        The peer's or dealer's worker name.
    fp : str
        Its fingerprint (``syftlab smpc fingerprint --state ...`` on its machine).
    role : {"peer", "dealer"}
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    path = Path(state_dir) / TRUST_FILE
    fp = _check_fingerprint(fp)
    with _TRUST_LOCK:  # read-modify-write: threads launching workers at once (kb.launch)
        doc = read_trust_file(path)
        doc.setdefault(role, {})[name] = fp
        tmp = path.with_name(f".{TRUST_FILE}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)


def trust_each_other(members: list[tuple[str, Path, bool]]) -> None:
    """Pin every member's key in every other member's trust file (local demos, one owner).

    Parameters
    ----------
    members : list of (name, state dir, is_dealer)
        The workers one person runs on one machine (``syftlab demo``, ``kb.launch``).
    """
    ids = {name: load_or_create(state, name) for name, state, _ in members}
    for name, state, _ in members:
        for other, _, dealer in members:
            if other != name:
                trust(state, other, ids[other].fingerprint, "dealer" if dealer else "peer")
