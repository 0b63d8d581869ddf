"""The gate and approvals: what the owner saw is exactly what leaves, and only to the requester."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
import torch

import kernel_bridge as kb

from .conftest import PLANTED_NUMBER


def syftlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernel_bridge.cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_tainted_get_refused_until_approved_via_cli(session: kb.Worker) -> None:
    heart = session.asset("heart")
    m = heart["age"].mean()
    with pytest.raises(kb.ApprovalRequired):
        m.get()
    req = m.request(reason="mean age for the report")
    with pytest.raises(kb.RequestPending):
        req.result()


def test_cli_approve_releases_the_value(alice: kb.Worker, session: kb.Worker) -> None:
    state = str(alice.process.state)
    m = session.asset("heart")["age"].mean()
    req = m.request(reason="mean age for the report")
    listing = syftlab("requests", "list", "--state", state)
    assert listing.returncode == 0, listing.stderr
    assert f"#{req.id} [pending]" in listing.stdout
    assert "mean age for the report" in listing.stdout
    assert ".mean()" in listing.stdout  # the code lineage that made the value
    shown = syftlab("requests", "show", str(req.id), "--state", state)
    assert shown.returncode == 0, shown.stderr
    true_mean = kb.Owner(state).value(req.id)
    assert f"{float(true_mean):.4f}"[:6] in shown.stdout
    assert req.sha256 is None  # the scientist gets the digest only with the value
    assert kb.Owner(state).request(req.id).sha256 in shown.stdout
    approved = syftlab("requests", "approve", str(req.id), "--state", state)
    assert approved.returncode == 0 and "approved" in approved.stdout
    assert req.wait(timeout=10).status == "approved"
    assert float(req.result()) == pytest.approx(float(true_mean))
    again = syftlab("requests", "approve", str(req.id), "--state", state)
    # Approving again is a no-op that says so (the owner may have clicked in the panel).
    assert again.returncode == 0 and "was already approved: nothing changed" in again.stdout
    denied = syftlab("requests", "deny", str(req.id), "--reason", "no", "--state", state)
    assert denied.returncode == 2 and "already approved" in denied.stderr


def test_release_is_the_snapshot_not_the_current_value(session: kb.Worker,
                                                        owner: kb.Owner) -> None:
    t = session.asset("secret")["value"].sum()
    req = t.request(reason="total")
    snapshot = owner.value(req.id)
    session.run("secret['value'] = 0")  # the remote object changes after the request
    owner.approve(req.id)
    assert req.wait(10).result() == snapshot
    assert snapshot > PLANTED_NUMBER  # the planted value was in the sum


def test_only_the_requester_receives(session: kb.Worker, owner: kb.Owner,
                                     connect_as: Callable[..., kb.Worker]) -> None:
    req = session.asset("secret")["value"].max().request(reason="max")
    owner.approve(req.id)
    eve = connect_as("eve")
    with pytest.raises(kb.PermissionDenied):
        eve.request_by_id(req.id)
    with pytest.raises(kb.PermissionDenied):
        eve._call("request_result", request=req.id)
    with pytest.raises(kb.PermissionDenied):
        eve._call("wait_request", request=req.id, timeout=0.1)
    assert eve.requests() == [] or all(r.id != req.id for r in eve.requests())
    assert req.result() == PLANTED_NUMBER  # the requester does get it


def test_deny_carries_the_reason(session: kb.Worker, owner: kb.Owner) -> None:
    req = session.asset("secret")["id"].tolist().request(reason="all ids please")
    owner.deny(req.id, "too granular")
    req.wait(10)
    assert req.status == "denied" and req.deny_reason == "too granular"
    with pytest.raises(kb.RequestDenied, match="too granular"):
        req.result()
    with pytest.raises(ValueError):
        owner.approve(req.id)  # a decision is final
    with pytest.raises(ValueError):
        owner.deny(req.id, "")


def test_held_output_released_after_approval(session: kb.Worker, owner: kb.Owner) -> None:
    r = session.run("print(secret['value'].max())")
    assert len(r.held) == 1 and str(PLANTED_NUMBER) not in repr(r)
    out = r.held[0]
    with pytest.raises(kb.ApprovalRequired):
        out.get()
    req = out.request(reason="see the max")
    assert "print(secret['value'].max())" in owner.request(req.id).code()
    owner.approve(req.id)
    released = req.wait(10).result()
    assert released[0]["msg_type"] == "stream"
    assert str(PLANTED_NUMBER) in released[0]["content"]["text"]


def test_clean_cell_output_is_free(session: kb.Worker) -> None:
    r = session.run("print('hello')")  # no private data in this kernel yet
    assert r.held[0].get()[0]["content"]["text"] == "hello\n"


def test_audit_log_records_requests_and_releases(session: kb.Worker, owner: kb.Owner) -> None:
    req = session.send(torch.ones(1)).request(reason="audit me")
    owner.approve(req.id)
    req.result()
    events = [(e["event"], e["detail"].get("request")) for e in owner.audit(200)]
    assert ("request", req.id) in events
    assert ("approved", req.id) in events
    assert ("release", req.id) in events
    assert events.index(("approved", req.id)) < events.index(("release", req.id))


def test_tampered_snapshot_is_not_released(session: kb.Worker, owner: kb.Owner) -> None:
    req = session.asset("secret")["value"].min().request(reason="min")
    row = owner.store.request(req.id)
    assert row is not None
    path = owner.store.snapshots / row.snapshot
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    owner.approve(req.id)
    with pytest.raises(kb.SyftError):
        req.result()
