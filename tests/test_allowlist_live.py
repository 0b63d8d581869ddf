"""The pointer allow-list against a live worker: navigation to dunders, module
globals, I/O and code-taking methods is refused with a clear error, by the trusted
server before anything reaches the kernel, and by the kernel agent too."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import kernel_bridge as kb
from kernel_bridge.scientist.pointer import Pointer


def raw_op(worker: kb.Worker, target: Pointer, kind: str, name: str,
           args: list[object] | None = None) -> dict[str, object]:
    """Send an op the way a hostile client would: no client-side filtering."""
    return worker._call("op", target=target.id, kind=kind, name=name, args=args or [],
                        kwargs={}, reflected=False)


NAVIGATION = ["__class__", "__globals__", "__dict__", "__init__", "__reduce__",
              "__subclasses__", "__builtins__", "_mgr", "__module__", "__getattribute__"]


@pytest.mark.parametrize("name", NAVIGATION)
def test_dunder_navigation_refused(session: kb.Worker, name: str) -> None:
    p = session.send(torch.arange(3.0))
    for kind in ("attr", "method"):
        with pytest.raises(kb.MethodNotAllowed, match="private and dunder names"):
            raw_op(session, p, kind, name)


@pytest.mark.parametrize(("value", "name"), [
    (pd.DataFrame({"a": [1.0]}), "to_csv"),
    (pd.DataFrame({"a": [1.0]}), "to_pickle"),
    (pd.DataFrame({"a": [1.0]}), "eval"),
    (pd.DataFrame({"a": [1.0]}), "query"),
    (pd.DataFrame({"a": [1.0]}), "apply"),
    (pd.DataFrame({"a": [1.0]}), "pipe"),
    (np.arange(3.0), "tofile"),
    (np.arange(3.0), "dump"),
    (torch.arange(3.0), "apply_"),
    (torch.arange(3.0), "register_hook"),
    (torch.arange(3.0), "storage"),
])
def test_io_and_code_taking_methods_refused(session: kb.Worker, value: object,
                                            name: str) -> None:
    p = session.send(value)
    with pytest.raises(kb.MethodNotAllowed, match="allow-list"):
        getattr(p, name)()


def test_client_side_dunders_never_travel(session: kb.Worker) -> None:
    p = session.send(torch.arange(3.0))
    sent = session.stats["messages"]
    with pytest.raises(AttributeError):
        p.__globals__  # noqa: B018
    with pytest.raises(AttributeError):
        p._private  # noqa: B018
    assert session.stats["messages"] == sent


def test_unknown_operator_and_kind_refused(session: kb.Worker) -> None:
    p = session.send(torch.arange(3.0))
    with pytest.raises(kb.MethodNotAllowed, match="not allowed"):
        raw_op(session, p, "binop", "__class__", [1])
    with pytest.raises(kb.MethodNotAllowed, match="not allowed"):
        raw_op(session, p, "unop", "getattr")
    with pytest.raises(kb.ProtocolError, match="unknown operation kind"):
        raw_op(session, p, "call", "sum")


def test_string_dispatch_cannot_reach_dunders(session: kb.Worker) -> None:
    """``agg("__class__")`` would go through pandas' own name lookup, around the
    allow-list: string arguments of string-dispatching methods must be allow-listed."""
    p = session.send(pd.DataFrame({"g": ["a", "b"], "x": [1.0, 2.0]}))
    for bad in ("__class__", "__init__", "to_csv", "eval", "_get_value"):
        with pytest.raises(kb.MethodNotAllowed, match="allow-listed reductions"):
            p.groupby("g").agg(bad)
        with pytest.raises(kb.MethodNotAllowed, match="allow-listed reductions"):
            p.x.agg(bad)
        with pytest.raises(kb.MethodNotAllowed, match="allow-listed reductions"):
            p.agg({"x": [bad]})
    assert p.groupby("g").agg("sum").get().to_dict() == {"x": {"a": 1.0, "b": 2.0}}
    assert p.agg({"x": ["min", "max"]}).get()["x"].tolist() == [1.0, 2.0]


def test_functions_never_become_arguments(session: kb.Worker) -> None:
    """A pointer to a function (bound from a mock cell) cannot be passed to an op: a
    called function could read the kernel's private data into a clean result."""
    assert session.run("f = len\ndf = __import__('pandas').DataFrame({'x': [1.0]})",
                       mock=True).ok
    f, df = session.mock_vars["f"], session.mock_vars["df"]
    assert f.type_name in ("function", "object")
    with pytest.raises(kb.MethodNotAllowed, match="cannot be an argument"):
        df.agg(f)


def test_refusal_leaves_the_session_usable(session: kb.Worker) -> None:
    p = session.send(torch.tensor([1.0, 2.0]))
    with pytest.raises(kb.MethodNotAllowed):
        raw_op(session, p, "attr", "__class__")
    assert torch.equal((p + 1).get(), torch.tensor([2.0, 3.0]))


def test_allowlisted_attribute_on_wrong_family_refused(session: kb.Worker) -> None:
    """A name allowed for DataFrames (``groupby``) is refused on a tensor: the check is
    per type family, by the server and again by the kernel against the real type."""
    p = session.send(torch.arange(3.0))
    with pytest.raises(kb.MethodNotAllowed, match="allow-list"):
        p.groupby("x")


TAMPER = '''
import kernel_bridge.kernel.agent as _a
from kernel_bridge.errors import MethodNotAllowed as _M
_secret = str(int(secret["value"].max())) + " " + str(secret["note"][3])
def _evil(req):
    if req["name"] == "sum":
        raise _M(_secret)
    if req["name"] == "mean":
        raise ValueError(_secret)
    if req["name"] == "max":
        raise KeyError(_secret)
    return _orig(req)
_orig = _a.run_op
_a.run_op = _evil
'''


def test_tampered_agent_cannot_leak_through_op_errors(session: kb.Worker) -> None:
    """Scientist code replaces the kernel's agent so that pointer ops fail with the
    secret in the message: what reaches the scientist is the server's own text."""
    from .conftest import PLANTED_NUMBER, PLANTED_TEXT

    assert session.run(TAMPER).ok
    p = session.asset("secret")["value"]  # lives in the tampered (private) kernel
    for name in ("sum", "mean", "max"):
        with pytest.raises(kb.SyftError) as info:
            getattr(p, name)()
        wire = repr(info.value.to_wire())
        assert str(PLANTED_NUMBER) not in wire and PLANTED_TEXT not in wire, wire
