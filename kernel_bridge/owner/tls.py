"""The worker's TLS certificate: the owner's, or a self-signed one kept in the state dir.

``syftlab worker --tls`` makes a self-signed certificate (ECDSA P-256, valid
ten years, for the worker's host, ``localhost`` and ``127.0.0.1``) the first
time and reuses it after, so its fingerprint stays what the owner handed out.
``--tls-cert/--tls-key`` (or ``tls_cert``/``tls_key`` in the TOML) use the
owner's own certificate instead. Scientists pin the certificate by its
SHA-256 fingerprint (:mod:`kernel_bridge.wire.tls`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..wire.tls import fingerprint_of_der

#: Where a generated certificate and key live, under the state directory.
TLS_DIR = "tls"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"


@dataclass(frozen=True)
class Certificate:
    """A certificate and key on disk, and the certificate's fingerprint."""

    cert: Path
    key: Path
    fingerprint: str

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting this certificate (TLS 1.2 or later)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the TLS certificate {self.cert} and key "
                              f"{self.key}: {exc}", key="tls_cert") from None
        return ctx


def fingerprint_of_file(cert: str | os.PathLike[str]) -> str:
    """The ``sha256:`` fingerprint of the first certificate in a PEM file."""
    try:
        pem = Path(cert).read_text()
        der = ssl.PEM_cert_to_DER_cert(pem[:pem.index("-----END CERTIFICATE-----") + 25])
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read a PEM certificate from {cert}: {exc}",
                          key="tls_cert") from None
    return fingerprint_of_der(der)


def generated_paths(state: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Where the self-signed certificate and key of a state directory are."""
    d = Path(state) / TLS_DIR
    return d / CERT_FILE, d / KEY_FILE


def certificate(state: str | os.PathLike[str], host: str, cert: Path | None = None,
                key: Path | None = None) -> Certificate:
    """The worker's certificate: ``cert``/``key`` when given, else the state dir's own
    self-signed one, made on first use.

    Raises
    ------
    ConfigError
        Files missing or unreadable.
    """
    if cert is not None and key is not None:
        for p in (cert, key):
            if not Path(p).is_file():
                raise ConfigError(f"TLS file not found: {p}", key="tls_cert")
        return Certificate(Path(cert), Path(key), fingerprint_of_file(cert))
    cert_path, key_path = generated_paths(state)
    if not (cert_path.is_file() and key_path.is_file()):
        _self_signed(cert_path, key_path, host)
    return Certificate(cert_path, key_path, fingerprint_of_file(cert_path))


def _self_signed(cert_path: Path, key_path: Path, host: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"syftlab worker {host}")])
    now = dt.datetime.now(dt.UTC)
    built = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=3650))
             .add_extension(x509.SubjectAlternativeName(list(dict.fromkeys(names))),
                            critical=False)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .sign(key, hashes.SHA256()))
    cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_bytes = key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    cert_path.write_bytes(built.public_bytes(serialization.Encoding.PEM))
