"""Attacks on taint: a hostile kernel, aliasing and pipelining must launder nothing.

Each test plays a scientist holding only a token against a real worker (started
as root, like CI) with the planted secret of ``tests/conftest.py``; each leaked
the secret before the server-side taint of ``kernel_bridge/owner/session.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

import kernel_bridge as kb
from kernel_bridge.scientist._loop import run_sync

from ..conftest import PLANTED_NUMBER, PLANTED_TEXT

#: Replaces the agent's request handler: an asset still gets bound in the kernel,
#: but the worker is told the load failed, hoping it never records the taint.
HIJACK_LOAD = '''
import kernel_bridge.kernel.agent as _a
_orig_handle = _a.handle
def _lying_handle(content, buffers):
    if content.get("action") == "put" and content.get("bind"):
        value = _a._incoming_value(content, buffers)
        get_ipython().user_ns[content["bind"]] = value
        _a.STORE[content["id"]] = value
        raise RuntimeError("nothing was loaded here")
    return _orig_handle(content, buffers)
_a.handle = _lying_handle
'''


def _contains_secret(value: Any) -> bool:
    text = repr(value)
    return str(PLANTED_NUMBER) in text or PLANTED_TEXT in text


def test_a_replaced_agent_cannot_hide_an_asset_load(session: kb.Worker) -> None:
    assert session.run(HIJACK_LOAD).ok  # no asset yet: the kernel is clean
    with pytest.raises(kb.SyftError):
        session.asset("secret")  # the lying agent answers "error"...
    # ...but the asset is bound in the kernel; the cell does not name it, so the
    # worker loads nothing more and only its own records say what the kernel holds.
    r = session.run("leak = int(globals()['sec' + 'ret']['value'].max())")
    assert r.ok
    leak = session.vars["leak"]
    assert "secret" in leak.taint
    with pytest.raises(kb.ApprovalRequired):
        leak.get()


def test_aliasing_through_a_clean_container_launders_nothing(session: kb.Worker) -> None:
    box = session.send({"inner": [1, 2]})
    inner = box["inner"]  # a pointer to the very list inside the clean dict
    inner[0] = session.asset("secret")["value"].max()
    with pytest.raises(kb.ApprovalRequired):
        inner.get()
    fetched = box.get()
    assert not _contains_secret(fetched)
    assert fetched == {"inner": [1, 2]}  # the private value went into a copy


def test_a_view_of_a_clean_array_launders_nothing(session: kb.Worker) -> None:
    base = session.send(np.zeros(4, dtype=np.int64))
    view = base.reshape(2, 2)  # numpy: a view sharing base's memory
    view[0] = session.asset("secret")["value"].max()
    fetched = base.get()
    assert not _contains_secret(fetched.tolist())
    assert fetched.tolist() == [0, 0, 0, 0]


def test_pipelined_cell_cannot_slip_private_data_past_a_release_check(
        session: kb.Worker) -> None:
    assert session.run("box = [0]").ok  # before any asset: clean, and fetchable
    box = session.vars["box"]
    assert box.get() == [0]
    big = session.send(np.ones((600, 600)))
    conn = session._conn

    async def pipeline() -> list[Any]:
        # Sent back to back without waiting: a slow op, a cell writing the secret
        # into box, a get of box. The get must be checked after the cell ran.
        slow = conn.call("op", target=big.id, kind="method", name="dot", args=[big.ref],
                         kwargs={})
        cell = conn.call("run", code="box.append(int(secret['value'].max()))")
        get = conn.call("get", id=box.id)
        return await asyncio.gather(slow, cell, get, return_exceptions=True)

    _, cell, got = run_sync(pipeline())
    assert not isinstance(cell, BaseException) and cell["receipt"]["status"] == "ok"
    assert isinstance(got, kb.ApprovalRequired), got
    with pytest.raises(kb.ApprovalRequired):
        box.get()


def test_a_kernel_that_held_an_asset_taints_values_made_before_it(session: kb.Worker) -> None:
    # A cell plants a hook before any asset, then the asset arrives: whatever the
    # hook copied into an old object must not come back clean.
    assert session.run("early = []\nimport builtins\nbuiltins._keep = early").ok
    early = session.vars["early"]
    assert early.get() == []
    assert session.run("_keep.append(int(secret['value'].max()))").ok
    with pytest.raises(kb.ApprovalRequired):
        early.get()
