"""What ``kernel_bridge`` and ``syft_widgets`` export, pinned (like jupyter_client's test).

Adding or removing a public name is a decision: this test makes it one, and
it checks that everything exported is documented and that the blocking
``Worker`` is generated from the ``AsyncWorker`` (so the two cannot drift).
"""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

import kernel_bridge as kb
import syft_widgets
from kernel_bridge.errors import SyftError

KERNEL_BRIDGE = {
    # scientist
    "connect", "aconnect", "launch", "Worker", "AsyncWorker", "Pointer", "Receipt",
    "Request", "DPQuery", "DPResult", "hook_torch",  # fl: PySyft's tensor.send(worker)
    # data owner
    "Owner",
    # errors
    "SyftError", "ApprovalRequired", "AuthenticationError", "BudgetExhausted", "CodecError",
    "ConnectionLost", "ExecutionTimeout", "FrameTooLarge", "Interrupted", "InvalidQuery",
    "KernelDied", "MalformedFrame", "MethodNotAllowed", "OutputTooLarge", "PermissionDenied",
    "ProtocolError", "RemoteError", "RequestDenied", "RequestPending", "UnknownObject",
}
SYFT_WIDGETS = {"Approvals", "Budget", "WorkerGraph"}

#: Scientist classes whose every public member must say what it does.
SCIENTIST_CLASSES = [kb.Worker, kb.AsyncWorker, kb.Pointer, kb.Receipt, kb.Request,
                     kb.DPQuery, kb.DPResult]

#: AsyncWorker coroutines that are methods of the objects in the blocking API
#: (``ptr.get()``, ``req.wait()``, ``query.release()``...) or its plumbing, and
#: the three ``Worker`` adds to by hand (``datasets`` is a property there, ``run``
#: interrupts the remote cell on Ctrl-C, ``close`` stops a launched process).
ON_OBJECTS = {"get", "request", "delete", "op", "wait", "refresh", "result", "accuracy",
              "release", "var", "open", "call", "call_once", "fetch_value", "fetch_frame",
              "send_value", "datasets", "run", "close"}


@pytest.mark.parametrize(("module", "expected"), [(kb, KERNEL_BRIDGE),
                                                  (syft_widgets, SYFT_WIDGETS)])
def test_all_is_pinned_and_unique(module: ModuleType, expected: set[str]) -> None:
    assert len(module.__all__) == len(set(module.__all__)), "a name is listed twice"
    assert set(module.__all__) == expected


@pytest.mark.parametrize("module", [kb, syft_widgets])
def test_every_exported_name_exists_and_has_a_docstring(module: ModuleType) -> None:
    undocumented = [n for n in module.__all__ if not (getattr(module, n).__doc__ or "").strip()]
    assert undocumented == []


def test_every_public_member_of_the_scientist_classes_is_documented() -> None:
    missing = []
    for cls in SCIENTIST_CLASSES:
        for name, member in vars(cls).items():
            if name.startswith("_"):
                continue
            target = member.fget if isinstance(member, property) else member
            if (callable(target) or isinstance(member, property)) and \
                    not (getattr(target, "__doc__", None) or "").strip():
                missing.append(f"{cls.__name__}.{name}")
    assert missing == []


def test_errors_are_exported_typed_errors() -> None:
    for name in kb.__all__:
        obj = getattr(kb, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert issubclass(obj, SyftError), name


def test_the_blocking_worker_is_generated_from_the_async_one() -> None:
    """Every AsyncWorker coroutine has a blocking twin with the same docstring."""
    coros = {n for n, f in vars(kb.AsyncWorker).items()
             if inspect.iscoroutinefunction(f) and not n.startswith("_")}
    assert coros >= {"send", "asset", "run", "interrupt", "restart", "requests",
                     "request_by_id", "budget", "ping", "reconnect", "get", "request",
                     "wait", "result", "release", "close", "datasets"}
    for name in sorted(coros - ON_OBJECTS):
        blocking = getattr(kb.Worker, name)
        assert not inspect.iscoroutinefunction(blocking), name
        assert blocking.__doc__ == getattr(kb.AsyncWorker, name).__doc__, name
        assert blocking.__wrapped__ is getattr(kb.AsyncWorker, name), name
    # The objects' blocking methods are generated from their coroutines the same way.
    for cls, name in [(kb.Pointer, "get"), (kb.Pointer, "request"), (kb.Pointer, "delete"),
                      (kb.Request, "wait"), (kb.Request, "result"), (kb.Request, "refresh"),
                      (kb.DPQuery, "release"), (kb.DPQuery, "accuracy")]:
        method = getattr(cls, name)
        assert inspect.iscoroutinefunction(method.__wrapped__), (cls, name)
        assert method.__doc__ == method.__wrapped__.__doc__
