"""TLS: ``wss://`` and the bulk port encrypted with one certificate the scientist pins."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import kernel_bridge as kb
from kernel_bridge.errors import CertificateMismatch
from kernel_bridge.owner.tls import fingerprint_of_file, generated_paths
from kernel_bridge.wire.tls import fingerprint_of_der

PLAIN = b"PLANTED-PLAINTEXT-0451:"


class Tap:
    """A TCP proxy to ``port`` that records every byte going either way."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen = bytearray()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                with self._lock:
                    self.seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def tls_worker(fresh_worker: Callable[..., kb.Worker]) -> kb.Worker:
    return fresh_worker("tlsw", extra_args=["--tls"])


@pytest.fixture
def taps() -> Iterator[list[Tap]]:
    made: list[Tap] = []
    yield made
    for t in made:
        t.close()


def test_pinned_wss_worker_works_end_to_end_and_nothing_travels_in_clear(
        tls_worker: kb.Worker, taps: list[Tap]) -> None:
    assert tls_worker.process.url.startswith("wss://")
    fp = fingerprint_of_file(generated_paths(tls_worker.process.state)[0])
    ws_tap = Tap(tls_worker.process.port)
    taps.append(ws_tap)
    w = kb.connect(f"wss://127.0.0.1:{ws_tap.port}", tls_worker.token,  # type: ignore[attr-defined]
                   fingerprint=fp)
    bulk_tap = Tap(int(w._conn.info["bulk_port"]))
    taps.append(bulk_tap)
    w._conn.info["bulk_port"] = bulk_tap.port  # the bulk path through the tap too
    small = w.send(PLAIN + b"inline")
    assert small.get() == PLAIN + b"inline"
    big_value = PLAIN * (3 * (1 << 20) // len(PLAIN))  # > 1 MiB: the bulk path both ways
    big = w.send(big_value)
    assert big.get() == big_value
    arr = np.arange(400_000, dtype=np.float64)
    assert np.array_equal((w.send(arr) * 2).get(), arr * 2)
    w.close()
    assert len(bulk_tap.seen) > 2 * len(big_value)  # both transfers went through the tap
    for tap in (ws_tap, bulk_tap):
        assert PLAIN not in tap.seen
        assert tls_worker.token.encode() not in tap.seen  # type: ignore[attr-defined]
    assert bulk_tap.seen[:1] == b"\x16"  # a TLS handshake record opens each bulk stream


def test_wrong_or_missing_fingerprint_is_refused_before_the_token_is_sent(
        tls_worker: kb.Worker, taps: list[Tap]) -> None:
    tap = Tap(tls_worker.process.port)
    taps.append(tap)
    url = f"wss://127.0.0.1:{tap.port}"
    with pytest.raises(CertificateMismatch, match="fingerprint"):
        kb.connect(url, tls_worker.token, fingerprint="sha256:" + "ab" * 32)  # type: ignore[attr-defined]
    with pytest.raises(CertificateMismatch):
        kb.connect(url, tls_worker.token)  # type: ignore[attr-defined]
    with pytest.raises(kb.ProtocolError, match="fingerprint"):
        kb.connect(url, tls_worker.token, fingerprint="sha256:nothex")  # type: ignore[attr-defined]
    assert tls_worker.token.encode() not in tap.seen  # type: ignore[attr-defined]
    assert tls_worker.ping() > 0


def test_bulk_port_speaks_tls_with_the_same_certificate(tls_worker: kb.Worker) -> None:
    port = int(tls_worker._conn.info["bulk_port"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw) as s:
        der = s.getpeercert(binary_form=True)
    assert der and fingerprint_of_der(der) == fingerprint_of_file(
        generated_paths(tls_worker.process.state)[0])
    # A plaintext client gets nothing but a closed connection.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"D" + b"\x00" * 16)
        try:
            data = s.recv(100)
        except OSError:
            data = b""
        assert not data.startswith(b"\x00" * 8) and len(data) < 100


def test_cli_prints_the_fingerprint_the_worker_serves(tls_worker: kb.Worker) -> None:
    out = subprocess.run([sys.executable, "-m", "kernel_bridge.cli", "tls", "fingerprint",
                          "--state", str(tls_worker.process.state)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    fp = out.stdout.strip()
    assert fp.startswith("sha256:") and len(fp) == 71
    log = tls_worker.process.log_path.read_text()
    assert fp in log  # the worker printed it when it started
    assert tls_worker._conn.info["tls"] == fp


def test_tls_and_upload_settings_from_toml(tmp_path: Path) -> None:
    from kernel_bridge.errors import ConfigError
    from kernel_bridge.owner.config import WorkerConfig

    toml = tmp_path / "w.toml"
    toml.write_text('[worker]\nname = "w"\nstate = "st"\ntls = true\nupload_quota_mb = 10\n'
                    'upload_quota_worker_mb = 20\nupload_ttl = 5\n')
    cfg = WorkerConfig.from_toml(toml)
    assert cfg.tls and cfg.tls_cert is None
    assert (cfg.upload_quota, cfg.upload_quota_worker, cfg.upload_ttl) == (10 << 20, 20 << 20, 5)
    toml.write_text('[worker]\nname = "w"\nstate = "st"\ntls_cert = "c.pem"\n')
    with pytest.raises(ConfigError, match="tls_key"):
        WorkerConfig.from_toml(toml)
    toml.write_text('[worker]\nname = "w"\nstate = "st"\nupload_ttl = -1\n')
    with pytest.raises(ConfigError, match="upload_ttl"):
        WorkerConfig.from_toml(toml)


def test_lab_sidebar_pins_a_wss_worker_from_the_connections_file(
        tls_worker: kb.Worker, tmp_path: Path) -> None:
    """The sidebar reads the same connections file as ``%remote connect``, fingerprint included."""
    import json

    from kernel_bridge.lab.scientist_side import ScientistSide

    fp = fingerprint_of_file(generated_paths(tls_worker.process.state)[0])
    entry = {"url": tls_worker.process.url, "token": tls_worker.token}  # type: ignore[attr-defined]
    path = tmp_path / "connections.json"
    path.write_text(json.dumps({"tlsw": {**entry, "fingerprint": fp}}))
    side = ScientistSide(str(path), wait=30.0)
    try:
        (row,) = side.workers()
        assert row["online"] is True and row["error"] is None, row
        assert row["latency_ms"] is not None
        # Without the pin the same worker is refused (its certificate is self-signed).
        path.write_text(json.dumps({"tlsw": entry}))
        (row,) = side.workers()
        assert row["online"] is False and "CertificateMismatch" in str(row["error"]), row
    finally:
        side.close()
