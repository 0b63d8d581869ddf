"""Class 7 of issue 9: one client must not stall or fill the worker.

Each test attacks a real worker process (started by the fixtures, as root in CI)
and measures what the other scientists see, or what the worker holds.
"""

from __future__ import annotations

import math
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

import kernel_bridge as kb
from kernel_bridge.errors import AuthenticationError, ConnectionLost, ProtocolError, QuotaExceeded
from kernel_bridge.scientist._loop import run_sync
from kernel_bridge.wire import bulk, codec, frames

GiB = 1 << 30
MiB = 1 << 20


def rss(worker: kb.Worker) -> int:
    """The worker process's resident memory, in bytes (kernels are other processes)."""
    pid = worker.process.proc.pid
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def costly_hello(size: int) -> bytes:
    """A hello frame of ``size`` bytes whose header is ``size`` empty maps: the worst
    case for msgpack (about a microsecond of held interpreter per byte)."""
    n = size - 5 - frames.PRELUDE_MIN
    header = b"\xdd" + struct.pack(">I", n) + b"\x80" * n
    return frames.pack_bytes(header, [])


class Pinger:
    """Measures another scientist's round trips while an attack runs."""

    def __init__(self, worker: kb.Worker) -> None:
        self.worker = worker
        self.times: list[float] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.perf_counter()
            try:
                self.worker._call_once("ping", 30)
            except BaseException as exc:  # recorded, the test fails on it
                self.errors.append(exc)
                return
            self.times.append(time.perf_counter() - t)
            time.sleep(0.01)

    def __enter__(self) -> Pinger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


# -- pre-authentication frames ---------------------------------------------------------------


def test_huge_preauth_hello_does_not_stall_other_scientists(
        alice: kb.Worker, connect_as: Callable[..., kb.Worker]) -> None:
    other = connect_as("avail-other-hello")
    other.ping()
    frame = costly_hello(8 * MiB)
    outcome: list[str] = []

    def attack() -> None:
        try:
            with ws_connect(alice.process.url, max_size=None, compression=None,
                            open_timeout=30) as ws:
                ws.send(frame)
                reply = ws.recv(timeout=60)
                outcome.append(f"reply {codec.loads(reply)}")
        except ConnectionClosed as exc:
            outcome.append(f"closed {exc.rcvd.code if exc.rcvd else None}")

    with Pinger(other) as pinger:
        time.sleep(0.2)
        attacker = threading.Thread(target=attack, daemon=True)
        attacker.start()
        attacker.join(60)
        time.sleep(1.0)
    assert not pinger.errors, pinger.errors
    assert len(pinger.times) > 10
    assert max(pinger.times) < 1.0, f"slowest round trip {max(pinger.times):.2f}s during attack"
    # The frame is refused for its size before anything is decoded.
    assert outcome == ["closed 1009"], outcome


def test_endless_preauth_frame_costs_the_worker_nothing(
        alice: kb.Worker, connect_as: Callable[..., kb.Worker]) -> None:
    """A frame announcing 60 MiB (under the post-authentication limit), then bytes
    without end: the worker neither buffers them nor slows down for others."""
    other = connect_as("avail-other-endless")
    base = rss(alice)
    peak = base
    with Pinger(other) as pinger:
        with socket.create_connection(("127.0.0.1", alice.process.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      b"Sec-WebSocket-Version: 13\r\n\r\n")
            head = s.recv(4096)
            assert b"101" in head.split(b"\r\n")[0], head
            # FIN + binary, masked, 64-bit length, zero mask; then the payload, forever.
            s.sendall(b"\x82\xff" + struct.pack(">Q", 60 * MiB) + b"\x00\x00\x00\x00")
            chunk = b"\x80" * (256 * 1024)
            sent = 0
            try:
                while sent < 100 * MiB:
                    s.sendall(chunk)
                    sent += len(chunk)
                    if sent % (4 * MiB) == 0:
                        peak = max(peak, rss(alice))
            except OSError:
                pass  # the worker hung up: fine
            time.sleep(0.5)
            peak = max(peak, rss(alice))
    assert not pinger.errors, pinger.errors
    assert peak - base < 16 * MiB, f"worker buffered {(peak - base) >> 20} MiB of a pre-auth frame"
    assert max(pinger.times) < 1.0


# -- uploads -----------------------------------------------------------------------------------


@pytest.fixture
def roomy(fresh_worker: Callable[..., kb.Worker]) -> kb.Worker:
    """A worker whose quotas admit one 8 GiB upload per session, 12 GiB in all, with
    tickets that live 3 s."""
    return fresh_worker("uploads", extra_args=[
        "--upload-quota-mb", str(10 * 1024), "--upload-quota-worker-mb", str(12 * 1024),
        "--upload-ttl", "3"])


def start_upload(worker: kb.Worker, size: int) -> tuple[socket.socket, bytes]:
    """Claim ``size`` bytes and open the bulk transfer (header sent, no data yet)."""
    t = worker._call("upload_ticket", size=size)
    s = socket.create_connection((worker._conn.host, int(t["port"])), timeout=10)
    s.sendall(b"U" + t["ticket"] + struct.pack("<Q", size))
    return s, t["ticket"]


def wait_rss_below(worker: kb.Worker, limit: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while True:
        now = rss(worker)
        if now < limit or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def test_upload_claim_allocates_nothing_up_front_and_quotas_hold(
        roomy: kb.Worker, connect_as: Callable[..., kb.Worker]) -> None:
    base = rss(roomy)
    s, _ = start_upload(roomy, 8 * GiB)
    try:
        time.sleep(1.0)
        assert rss(roomy) - base < 64 * MiB, "an 8 GiB claim allocated memory up front"
        s.sendall(b"\x00" * (64 * MiB))  # memory follows what arrives, not what was claimed
        time.sleep(0.5)
        grown = rss(roomy) - base
        assert grown < 200 * MiB, f"worker grew by {grown >> 20} MiB for 64 MiB received"
        # A second 8 GiB claim of the same session is over its 10 GiB quota ...
        with pytest.raises(QuotaExceeded) as info:
            roomy._call("upload_ticket", size=8 * GiB)
        assert info.value.data["scope"] == "session"
        # ... and one of another session over the worker's 12 GiB.
        with pytest.raises(QuotaExceeded) as info:
            other = kb.connect(roomy.process.url, kb.Owner(roomy.process.state)
                               .add_token("second"), name="uploads")
            other._call("upload_ticket", size=8 * GiB)
        assert info.value.data["scope"] == "worker"
        # The transfer stalls: after the ticket's time to live its memory and quota are back.
        after = wait_rss_below(roomy, base + 32 * MiB, 15)
        assert after - base < 32 * MiB, f"abandoned upload still holds {(after - base) >> 20} MiB"
    finally:
        s.close()
    s2, _ = start_upload(roomy, 8 * GiB)  # the quota was given back
    s2.close()
    assert roomy.ping() > 0


def test_unused_tickets_expire_and_ticket_count_is_bounded(roomy: kb.Worker) -> None:
    tickets = [roomy._call("upload_ticket", size=GiB) for _ in range(8)]
    assert len({t["ticket"] for t in tickets}) == 8
    with pytest.raises(QuotaExceeded, match="tickets"):
        roomy._call("upload_ticket", size=1)
    time.sleep(3.0 + 1.5)  # ttl, plus the worker's 1 s expiry sweep
    roomy._call("upload_ticket", size=GiB)  # expired tickets gave their share back
    with pytest.raises(ProtocolError):  # and an expired ticket is gone
        run_sync(roomy._conn.call("send", upload=tickets[0]["ticket"]))


@pytest.mark.parametrize("size", [-1, 0, 2**70, 1.5, "8", None, True])
def test_upload_ticket_size_must_be_a_sane_int(alice: kb.Worker, size: object) -> None:
    with pytest.raises(ProtocolError):
        alice._call("upload_ticket", size=size)


def test_claimed_upload_larger_than_ticket_is_refused(roomy: kb.Worker) -> None:
    t = roomy._call("upload_ticket", size=1000)
    with pytest.raises(ProtocolError):
        bulk.upload(roomy._conn.host, int(t["port"]), t["ticket"], [b"x" * 5000], timeout=10)
    assert roomy.ping() > 0


# -- timeouts ----------------------------------------------------------------------------------


BAD_TIMEOUTS = [math.nan, math.inf, -math.inf, -1.0, 0.0, 1e308, 10**30, "5", True]


@pytest.fixture(scope="module")
def timeouts_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kb.Worker]:
    w = kb.launch("timeouts", state=tmp_path_factory.mktemp("state") / "timeouts",
                  scientist="tim")
    yield w
    w.close()


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
def test_bad_timeouts_are_typed_errors_and_the_worker_stays_responsive(
        timeouts_worker: kb.Worker, timeout: object) -> None:
    w = timeouts_worker
    t = time.perf_counter()
    with pytest.raises(ProtocolError, match="timeout"):
        run_sync(w._conn.call("run", reply_timeout=20, code="1", timeout=timeout), 25)
    if timeout != 0.0:  # 0 is a valid poll for wait_request
        r = w.send([1]).request(reason="timeouts")
        with pytest.raises(ProtocolError, match="timeout"):
            run_sync(w._conn.call("wait_request", reply_timeout=20, request=r.id,
                                  timeout=timeout), 25)
    assert time.perf_counter() - t < 5
    t = time.perf_counter()
    assert w.ping() < 1.0
    assert w.run("x = 1").status == "ok"
    assert time.perf_counter() - t < 10


# -- token revocation ---------------------------------------------------------------------------


def test_revoking_a_token_closes_its_live_sessions(
        alice: kb.Worker, connect_as: Callable[..., kb.Worker], owner: kb.Owner) -> None:
    victim = connect_as("avail-revoked")
    other = connect_as("avail-bystander")
    p = victim.send([1, 2, 3])
    assert victim.ping() > 0 and other.ping() > 0
    t0 = time.monotonic()
    assert owner.revoke_token("avail-revoked")
    closed_after = None
    while time.monotonic() - t0 < 5:
        try:
            victim._call_once("ping", 2)
        except (ConnectionLost, AuthenticationError):
            closed_after = time.monotonic() - t0
            break
        time.sleep(0.05)
    assert closed_after is not None and closed_after < 2.0, closed_after
    with pytest.raises(AuthenticationError):  # and it cannot come back (no resume)
        victim.reconnect(attempts=1)
    with pytest.raises((ConnectionLost, AuthenticationError)):
        p.get()
    assert other.ping() > 0
    assert other.send([4]).get() == [4]


# -- terminal control characters ----------------------------------------------------------------


EVIL = "\x1b[2J\x1b]0;owned\x07\x1b[8mhidden\x1b[0m\r\x9b31m\u202e"


def syftlab(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "kernel_bridge.cli", *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


def test_control_characters_never_reach_the_owners_terminal(
        alice: kb.Worker, session: kb.Worker) -> None:
    session.run(f"note = 1  # {EVIL}cell")
    p = session.send(["value", EVIL])
    r = p.request(reason=f"please {EVIL} approve")
    state = str(alice.process.state)
    listing = syftlab("requests", "list", "--state", state)
    shown = syftlab("requests", "show", str(r.id), "--state", state)
    audit = syftlab("audit", "--state", state, "--limit", "200")
    for text in (listing, shown, audit):
        bad = sorted({hex(ord(c)) for c in text
                      if (ord(c) < 32 and c not in "\n\t") or 0x7f <= ord(c) <= 0x9f
                      or c in "\u202e\u2066\u2067\u2068\u2069"})
        assert not bad, bad
    assert "please" in listing and "approve" in listing and f"#{r.id}" in listing
    assert "hidden" in shown and "note = 1" in shown  # the text stays, only controls go


def test_replacing_a_token_closes_sessions_opened_with_the_old_one(
        alice: kb.Worker, connect_as: Callable[..., kb.Worker], owner: kb.Owner) -> None:
    old = connect_as("avail-rotated")
    assert old.ping() > 0
    new_token = owner.add_token("avail-rotated")  # the old token stops working
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            old._call_once("ping", 2)
        except (ConnectionLost, AuthenticationError):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("a session of the replaced token kept working")
    fresh = kb.connect(alice.process.url, new_token, name="alice")
    try:
        assert fresh.ping() > 0
    finally:
        fresh.close()
