"""Attacks on SMPC: what the scientist's client and the dealer see, reveals without every
owner's approval, forged and replayed party-to-party messages, a party killed mid-protocol."""

from __future__ import annotations

import concurrent.futures
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

import kernel_bridge as kb
from kernel_bridge.errors import (
    ApprovalRequired,
    MessageRejected,
    PartyUnavailable,
    RequestPending,
    SMPCError,
)
from kernel_bridge.smpc import channel, keys
from kernel_bridge.smpc.channel import new_id
from kernel_bridge.wire import codec
from kernel_bridge.wire.protocol import Op
from tests.conftest import DATASETS

Workers = tuple[kb.Worker, kb.Worker, kb.Worker]


def _walk(value: Any, out: list[Any]) -> None:
    out.append(value)
    if isinstance(value, dict):
        for v in value.values():
            _walk(v, out)
    elif isinstance(value, list | tuple):
        for v in value:
            _walk(v, out)


def test_client_never_sees_plaintext_or_shares(smpc_workers: Workers,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    alice, bob, carol = smpc_workers
    received: list[tuple[bytes, Any]] = []
    real_loads = codec.loads

    def recording_loads(data: Any, limit: int | None = None) -> Any:
        value = real_loads(data, limit)
        received.append((bytes(data), value))
        return value

    monkeypatch.setattr(codec, "loads", recording_loads)  # every frame the client decodes
    x = alice.asset("heart")["chol"].sum()
    y = bob.asset("heart")["chol"].sum()
    xs, ys = x.share(alice, bob, dealer=carol), y.share(alice, bob, dealer=carol)
    m = (xs + ys) / 600
    flags = m > 200
    sq = (m * m).relu()
    for v in (m, flags, sq):
        with pytest.raises(ApprovalRequired):
            v.reveal()
    m.request(reason="check what comes back")
    monkeypatch.setattr(codec, "loads", real_loads)
    assert len(received) > 20
    secrets = [float(pd.read_csv(DATASETS / "heart" / f"{w}.csv")["chol"].sum())
               for w in ("alice", "bob")]
    secrets.append(sum(secrets) / 600)
    for raw, value in received:
        items: list[Any] = []
        _walk(value, items)
        for item in items:  # no tensor, array or blob came back: no share, no value
            assert not isinstance(item, torch.Tensor | np.ndarray | bytes | bytearray), item
            if isinstance(item, float):
                assert all(abs(item - s) > 1e-3 for s in secrets)
        for s in secrets:  # nor the value in any encoding, anywhere in a frame
            for enc in (struct.pack("<d", s), struct.pack("<q", round(s * 2**16))):
                assert enc not in raw


def test_dealer_never_receives_anything_of_the_data(smpc_workers: Workers) -> None:
    alice, bob, carol = smpc_workers
    xs = alice.asset("heart")["chol"].sum().share(alice, bob, dealer=carol)
    ys = bob.asset("heart")["chol"].sum().share(alice, bob, dealer=carol)
    (xs * ys).relu()
    audit = kb.Owner(carol.process.state)
    events = audit.audit()
    audit.close()
    # No party ever opened a link to the dealer: nothing of the data can have reached it.
    assert not [e for e in events if e["event"] == "smpc_link"]
    deals = [e for e in events if e["event"] == "smpc_deal"]
    assert deals and all(set(e["detail"]) == {"cid", "recipes", "parties"} for e in deals)
    # ... while the parties did link to each other and got the dealer's material
    owner = kb.Owner(alice.process.state)
    links = {e["detail"]["party"] for e in owner.audit() if e["event"] == "smpc_link"}
    owner.close()
    assert {"bob", "carol"} <= links


def test_reveal_without_every_owner_is_refused(smpc_workers: Workers) -> None:
    alice, bob, carol = smpc_workers
    xs = alice.asset("heart")["chol"].sum().share(alice, bob, dealer=carol)
    ys = bob.asset("heart")["chol"].sum().share(alice, bob, dealer=carol)
    total = xs + ys
    with pytest.raises(ApprovalRequired):
        alice._call(Op.SMPC_REVEAL, sid=total.sid)  # one party, directly
    # A request filed on alice only (bob's owner is never asked), then approved by alice:
    parties = total._parties.wire
    group = new_id("g")
    reply = alice._call(Op.SMPC_REQUEST, sid=total.sid, group=group, reason="alice only",
                        parties=parties)
    owner = kb.Owner(alice.process.state)
    owner.approve(reply["request"]["id"])
    owner.close()
    # alice asks bob over their link whether bob's owner approved this group: he did not.
    with pytest.raises(RequestPending, match="bob"):
        alice._call(Op.SMPC_RESULT, group=group)
    with pytest.raises(kb.PermissionDenied):
        bob._call(Op.SMPC_RESULT, group=group)  # bob never heard of the group


@pytest.fixture
def mallory(smpc_workers: Workers, tmp_path: Path) -> tuple[keys.Identity, kb.Worker, str]:
    """A peer bob's owner pinned (the attacker holds a real link): its key and bob's SMPC URL."""
    _, bob, _ = smpc_workers
    me = keys.load_or_create(tmp_path, "mallory")
    keys.trust(bob.process.state, "mallory", me.fingerprint, "peer")
    port = bob._call(Op.SMPC_INFO)["smpc"]["port"]
    return me, bob, f"ws://127.0.0.1:{port}"


class _Peer:
    """A raw SMPC link as an attacker holds it: length-prefixed frames over TCP."""

    def __init__(self, url: str) -> None:
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)

    def send(self, frame: bytes | bytearray) -> None:
        self.sock.sendall(struct.pack("<Q", len(frame)) + bytes(frame))

    def recv(self) -> bytes:
        head = self.sock.recv(8, socket.MSG_WAITALL)
        if len(head) < 8:
            raise ConnectionError("closed")
        return self.sock.recv(struct.unpack("<Q", head)[0], socket.MSG_WAITALL)

    def close(self) -> None:
        self.sock.close()


def _link(me: keys.Identity, url: str) -> tuple[_Peer, channel.Sender]:
    peer = _Peer(url)
    init = channel.Initiator(me, "bob")
    peer.send(init.hello())
    return peer, init.finish(peer.recv(), lambda name, static: None)


def _accept_in_background(bob: kb.Worker, cid: str, sid: str
                          ) -> concurrent.futures.Future[Any]:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    parties = [{"name": "bob", "url": "ws://127.0.0.1:1"},
               {"name": "mallory", "url": "ws://127.0.0.1:1"}]
    fut = pool.submit(bob._call, Op.SMPC_ACCEPT, cid=cid, sid=sid, source="mallory",
                      parties=parties)
    pool.shutdown(wait=False)
    time.sleep(0.5)  # bob is waiting for mallory's share
    return fut


def _rejections(bob: kb.Worker) -> list[str]:
    o = kb.Owner(bob.process.state)
    try:
        return [e["detail"]["why"] for e in o.audit() if e["event"] == "smpc_rejected"]
    finally:
        o.close()


def test_forged_message_rejected(mallory: tuple[keys.Identity, kb.Worker, str]) -> None:
    me, bob, url = mallory
    cid, sid = new_id("c"), new_id("v")
    fut = _accept_in_background(bob, cid, sid)
    ws, sender = _link(me, url)
    frame = bytearray(sender.seal(cid, f"input:{sid}", codec.dumps(
        {"share": torch.zeros(3, dtype=torch.int64), "taint": {}})))
    frame[-20] ^= 0x01  # one bit of the ciphertext
    ws.send(bytes(frame))
    with pytest.raises(MessageRejected):
        fut.result(timeout=20)
    assert "forged" in _rejections(bob)
    ws.close()


def test_replayed_message_rejected(mallory: tuple[keys.Identity, kb.Worker, str]) -> None:
    me, bob, url = mallory
    cid, sid = new_id("c"), new_id("v")
    fut = _accept_in_background(bob, cid, sid)
    ws, sender = _link(me, url)
    first = sender.seal(new_id("c"), "open:0", codec.dumps([torch.zeros(2, dtype=torch.int64)]))
    ws.send(first)
    ws.send(first)  # the same sealed frame again
    with pytest.raises(MessageRejected):
        fut.result(timeout=20)
    assert "replayed" in _rejections(bob)
    ws.close()


def test_unpinned_peer_refused(smpc_workers: Workers, tmp_path: Path) -> None:
    _, bob, _ = smpc_workers
    stranger = keys.load_or_create(tmp_path, "alice")  # claims a trusted name, wrong key
    port = bob._call(Op.SMPC_INFO)["smpc"]["port"]
    peer = _Peer(f"ws://127.0.0.1:{port}")
    peer.send(channel.Initiator(stranger, "bob").hello())
    with pytest.raises(ConnectionError):  # closed without a handshake reply
        peer.recv()
    o = kb.Owner(bob.process.state)
    assert any(e["event"] == "smpc_untrusted" for e in o.audit())
    o.close()


def test_party_killed_mid_matmul(smpc_workers: Workers, tmp_path: Path,
                                 connect_as: Any) -> None:
    alice, bob, carol = smpc_workers
    dave = kb.launch("dave", state=tmp_path / "dave", scientist="ana", trust_launched=False)
    keys.trust_each_other([("alice", alice.process.state, False),
                           ("dave", dave.process.state, False),
                           ("carol", carol.process.state, True)])
    n = 1200
    a = kb.smpc.share(torch.randn(n, n), parties=[alice, dave], dealer=carol)
    b = kb.smpc.share(torch.randn(n, n), parties=[alice, dave], dealer=carol)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = a @ b
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc
        outcome["at"] = time.monotonic()

    t = threading.Thread(target=run)
    t.start()
    time.sleep(1.0)
    killed = time.monotonic()
    dave.process.kill()
    t.join(timeout=60)
    assert not t.is_alive()
    assert isinstance(outcome.get("error"), SMPCError), outcome
    assert isinstance(outcome["error"], PartyUnavailable)
    assert outcome["at"] - killed < 10.0
    # Nobody stays blocked: alice serves other sessions and computes with bob at once.
    other = connect_as("eve")
    assert other.run("1 + 1").status == "ok"
    xs = kb.smpc.share(torch.arange(4.0), parties=[alice, bob], dealer=carol)
    assert torch.allclose((xs * xs).reveal(), torch.arange(4.0).double() ** 2, atol=1e-3)
