"""syftlab's bridge: remote, privacy-preserving data science in Jupyter.

The names a user needs::

    import kernel_bridge as kb
    alice = kb.connect("ws://127.0.0.1:8765", token="...")   # scientist
    owner = kb.Owner("./state/alice")                          # data owner
"""

from __future__ import annotations

from ._version import __version__ as __version__
from .errors import (
    ApprovalRequired,
    AuthenticationError,
    BudgetExhausted,
    CodecError,
    ExecutionTimeout,
    FrameTooLarge,
    Interrupted,
    InvalidQuery,
    KernelDied,
    MalformedFrame,
    MethodNotAllowed,
    OutputTooLarge,
    PermissionDenied,
    ProtocolError,
    RemoteError,
    RequestDenied,
    RequestPending,
    SyftError,
    UnknownObject,
)
from .owner.owner_api import Owner  # noqa: E402
from .scientist.dp import DPQuery, DPResult  # noqa: E402
from .scientist.launch import launch  # noqa: E402
from .scientist.pointer import Pointer  # noqa: E402
from .scientist.receipt import Receipt  # noqa: E402
from .scientist.request import Request  # noqa: E402
from .scientist.worker import Worker, connect  # noqa: E402


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext kernel_bridge``: the ``%remote`` / ``%%remote`` magics."""
    from .scientist.magic import load_ipython_extension as load

    load(ipython)


__all__ = [
    "ApprovalRequired", "AuthenticationError", "CodecError", "ExecutionTimeout",
    "FrameTooLarge", "Interrupted", "KernelDied", "MalformedFrame", "MethodNotAllowed",
    "Owner", "PermissionDenied", "Pointer", "ProtocolError", "Receipt", "RemoteError",
    "Request", "RequestDenied", "RequestPending", "SyftError", "UnknownObject", "Worker",
    "connect", "launch", "BudgetExhausted", "InvalidQuery", "DPQuery", "DPResult",
    "OutputTooLarge",
]
