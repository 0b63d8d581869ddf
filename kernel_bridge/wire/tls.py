"""TLS on the client's side: contexts and certificate pinning by SHA-256 fingerprint.

A worker started with TLS serves ``wss://`` and its bulk port with one
certificate, either the owner's or a self-signed one it generated. The owner
gives scientists the certificate's fingerprint (``sha256:`` and 64 hex digits);
the client then checks the worker's certificate against it right after the TLS
handshake, before any token or ticket is sent. Without a fingerprint the
system's certificate authorities verify the worker, as a browser would.
"""

from __future__ import annotations

import hashlib
import re
import ssl

from ..errors import CertificateMismatch, ProtocolError

_HEX = re.compile(r"[0-9a-f]{64}")


def fingerprint_of_der(der: bytes) -> str:
    """The ``sha256:<hex>`` fingerprint of a DER-encoded certificate."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def normalize(fingerprint: str) -> str:
    """A fingerprint in canonical form (``sha256:`` + 64 lowercase hex digits).

    Accepts upper case, ``:`` separators between bytes and a missing prefix.

    Raises
    ------
    ProtocolError
        Not a SHA-256 fingerprint.
    """
    text = str(fingerprint).strip().lower()
    text = text.removeprefix("sha256:").removeprefix("sha256 ").replace(":", "")
    if not _HEX.fullmatch(text):
        raise ProtocolError("a certificate fingerprint is 'sha256:' followed by 64 hex digits "
                            "(syftlab tls fingerprint --state DIR prints it)")
    return "sha256:" + text


def client_context(fingerprint: str | None) -> ssl.SSLContext:
    """A client context: pinned (no CA check, :func:`check_peer` after the handshake)
    when ``fingerprint`` is given, else verified against the system's CAs."""
    if fingerprint is None:
        return ssl.create_default_context()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the pin below is the check, and a stricter one
    return ctx


def check_peer(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, fingerprint: str | None,
               where: str) -> None:
    """Raise :class:`CertificateMismatch` unless the peer's certificate has ``fingerprint``."""
    if fingerprint is None:
        return
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise CertificateMismatch(f"{where} presented no TLS certificate")
    got = fingerprint_of_der(der)
    if got != normalize(fingerprint):
        raise CertificateMismatch(
            f"{where} presented a TLS certificate with fingerprint {got}, not the pinned "
            f"{normalize(fingerprint)}; nothing was sent to it. Check the fingerprint with "
            "the data owner.", got=got)
