"""Deciding a request twice: the same decision again is a no-op that says so.

The tutorial leads the owner to approve in the Approvals panel, then runs an
owner cell that approves again; that second approval must not fail. The
opposite decision on a decided request still fails (a decision never changes).
"""

from __future__ import annotations

import pytest

import kernel_bridge as kb
from kernel_bridge.errors import AlreadyDecided


def _decisions(owner: kb.Owner, rid: int) -> list[str]:
    return [e["event"] for e in owner.audit()
            if e["event"] in ("approved", "denied") and e["detail"].get("request") == rid]


def test_approving_twice_is_a_no_op_that_says_so(session: kb.Worker, owner: kb.Owner) -> None:
    r = session.run("print(heart.age.mean())")
    req = r.request("mean age")
    first = owner.approve(req.id)
    assert first.status == "approved" and not first.already_decided
    assert str(first) == f"request #{req.id} ({session.scientist}): approved"
    again = owner.approve(req.id)
    assert again.status == "approved" and again.already_decided
    assert str(again).startswith(f"request #{req.id} ({session.scientist}): already approved")
    assert again.decided == first.decided  # the first decision stands, untouched
    assert _decisions(owner, req.id) == ["approved"]  # one decision in the audit log
    # The opposite decision still fails, with a typed error that names the status.
    with pytest.raises(AlreadyDecided, match="already approved") as err:
        owner.deny(req.id, "changed my mind")
    assert isinstance(err.value, ValueError) and err.value.data["status"] == "approved"
    assert owner.request(req.id).status == "approved"
    assert req.wait(timeout=30).status == "approved"


def test_denying_twice_keeps_the_first_reason(session: kb.Worker, owner: kb.Owner) -> None:
    req = session.run("print(heart.chol.max())").request("max chol")
    owner.deny(req.id, "per-patient maxima identify people")
    again = owner.deny(req.id, "another reason")
    assert again.already_decided and again.deny_reason == "per-patient maxima identify people"
    assert "already denied" in str(again) and "per-patient maxima" in str(again)
    with pytest.raises(AlreadyDecided, match="already denied"):
        owner.approve(req.id)
    assert _decisions(owner, req.id) == ["denied"]
