"""Sessions: tokens, isolation between scientists, reconnects, crashes, kernels dying."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch

import kernel_bridge as kb
from kernel_bridge.launch import relaunch


def test_wrong_missing_and_revoked_tokens_refused(alice: kb.Worker) -> None:
    url = alice.process.url
    with pytest.raises(kb.AuthenticationError):
        kb.connect(url, token="syft_not-a-real-token")
    with pytest.raises(kb.AuthenticationError):
        kb.connect(url, token="")
    owner = kb.Owner(alice.process.state)
    token = owner.add_token("mallory")
    w = kb.connect(url, token)
    assert w.send(1).get() == 1
    owner.revoke_token("mallory")
    with pytest.raises(kb.AuthenticationError):
        kb.connect(url, token)
    w.close()
    # tokens are stored hashed, never in clear
    raw = (alice.process.state / "worker.sqlite").read_bytes()
    assert token.encode() not in raw


def test_second_scientist_cannot_use_first_ones_pointers(
        session: kb.Worker, connect_as: Callable[..., kb.Worker]) -> None:
    mine = session.send(torch.tensor([42.0]))
    heart = session.asset("heart")
    eve = connect_as("eve")
    for ptr in (mine, heart):
        forged = kb.Pointer(eve, {"id": ptr.id, "type": "torch.Tensor", "taint": [],
                                  "kernel": "private"})
        with pytest.raises(kb.UnknownObject):
            forged.get()
        with pytest.raises(kb.UnknownObject):
            (forged + 1).get()
        with pytest.raises(kb.UnknownObject):
            forged.request(reason="let me see")
    made_up = kb.Pointer(eve, {"id": "p_" + "0" * 24, "type": "torch.Tensor", "taint": [],
                               "kernel": "private"})
    with pytest.raises(kb.UnknownObject) as a:
        made_up.get()
    forged = kb.Pointer(eve, {"id": mine.id, "type": "torch.Tensor", "taint": [],
                              "kernel": "private"})
    with pytest.raises(kb.UnknownObject) as b:
        forged.get()
    assert a.value.message == b.value.message  # no oracle for "exists elsewhere"
    with pytest.raises(kb.ProtocolError):
        eve.send(1) + mine  # mixing handles is refused client-side too
    r = eve.run("print(globals().keys())", mock=True)  # eve's kernels are her own
    assert "mine" not in str(r.outputs)


def test_sessions_have_separate_kernels(session: kb.Worker,
                                        connect_as: Callable[..., kb.Worker]) -> None:
    session.run("shared = 1", mock=True)
    other = connect_as("frank")
    r = other.run("print('shared' in globals())", mock=True)
    assert r.outputs[0]["content"]["text"] == "False\n"


def test_reconnect_resumes_the_session(session: kb.Worker) -> None:
    p = session.send(torch.tensor([5.0]))
    old_session = session.session_id
    session._conn._ws.transport.abort()  # type: ignore[union-attr]  # the network drops
    time.sleep(0.3)
    assert session.reconnect() is True
    assert session.session_id == old_session
    assert torch.equal(p.get(), torch.tensor([5.0]))


def test_broken_connection_reconnects_transparently(session: kb.Worker) -> None:
    p = session.send(7)
    session._conn._ws.transport.abort()  # type: ignore[union-attr]
    time.sleep(0.3)
    assert (p + 1).get() == 8


def test_sigkill_keeps_requests_and_approved_values(fresh_worker: Callable[..., kb.Worker]
                                                    ) -> None:
    w = fresh_worker("carol")
    req = w.asset("secret")["value"].sum().request(reason="total")
    rid = req.id
    w.process.kill()  # SIGKILL: no clean shutdown, kernels die with it
    owner = kb.Owner(w.process.state)
    assert [r.id for r in owner.requests()] == [rid]  # the request survived
    owner.approve(rid)
    relaunch(w)
    w.reconnect()  # the old session is gone; requests belong to the scientist
    again = w.request_by_id(rid)
    assert again.status == "approved"
    assert again.result() == owner.value(rid)
    assert again.sha256 == owner.request(rid).sha256  # the snapshot approved before the crash
    events = [e["event"] for e in owner.audit()]
    assert "release" in events


def test_kernel_death_is_reported_and_kernel_restarted(session: kb.Worker) -> None:
    session.run("before = 1")
    before = session.vars["before"]
    with pytest.raises(kb.KernelDied, match="restarted"):
        session.run("import os; os._exit(1)")
    with pytest.raises(kb.UnknownObject):
        before.get()
    assert session.send(torch.ones(2)).sum().get().item() == 2.0
    assert session.run("z = 3").ok


def test_interrupt_stops_a_runaway_cell(session: kb.Worker) -> None:
    import threading

    session.run("keep = 41")
    timer = threading.Timer(1.0, session.interrupt)
    timer.start()
    t0 = time.monotonic()
    r = session.run("while True:\n    pass")
    assert r.status == "interrupted" and r.error_type == "KeyboardInterrupt"
    assert time.monotonic() - t0 < 1.0 + 2.0
    assert session.run("keep += 1").ok  # other variables survive
    out = session.run("print(keep)", mock=False)
    assert out.ok


def test_timeout_interrupts_and_keeps_variables(session: kb.Worker) -> None:
    session.run("kept = 'yes'", mock=True)
    t0 = time.monotonic()
    r = session.run("import time\nwhile True:\n    time.sleep(0.01)", mock=True, timeout=1.0)
    assert r.status == "timeout" and time.monotonic() - t0 < 1.0 + 2.0
    r2 = session.run("print(kept)", mock=True)
    assert r2.outputs[0]["content"]["text"] == "yes\n"
