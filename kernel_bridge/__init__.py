"""syftlab's bridge: remote, privacy-preserving data science in Jupyter.

The names a user needs::

    import kernel_bridge as kb
    alice = kb.connect("ws://127.0.0.1:8765", token="...")   # scientist
    owner = kb.Owner("./state/alice")                          # data owner

From an asyncio program (an orchestrator talking to many workers at once),
``alice = await kb.aconnect(url, token)`` gives an :class:`AsyncWorker` whose
methods are coroutines; the blocking API above is generated from it.
"""

from __future__ import annotations

import sys
from typing import Any

from . import he as he  # noqa: E402  (kb.he.context / encrypt / decrypt; TenSEAL loads on use)
from . import smpc as smpc  # kb.smpc.share (its client names load lazily)
from ._version import __version__ as __version__
from .errors import (  # noqa: E402
    ApprovalRequired,
    AuthenticationError,
    BudgetExhausted,
    CodecError,
    ConnectionLost,
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
from .launch import launch  # noqa: E402
from .owner.owner_api import Owner  # noqa: E402
from .scientist.async_worker import AsyncWorker, aconnect  # noqa: E402
from .scientist.dp import DPQuery, DPResult  # noqa: E402
from .scientist.pointer import Pointer  # noqa: E402
from .scientist.receipt import Receipt  # noqa: E402
from .scientist.request import Request  # noqa: E402
from .scientist.torch_hook import hook_torch  # noqa: E402  # fl
from .scientist.worker import Worker, connect  # noqa: E402


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext kernel_bridge``: the ``%remote`` / ``%%remote`` magics, and ``kb``."""
    from .scientist.magic import load_ipython_extension as load

    load(ipython)
    ipython.user_ns.setdefault("kb", sys.modules[__name__])


__all__ = [
    # scientist
    "connect", "aconnect", "launch", "Worker", "AsyncWorker", "Pointer", "Receipt",
    "Request", "DPQuery", "DPResult", "hook_torch",
    # data owner
    "Owner",
    # errors
    "SyftError", "ApprovalRequired", "AuthenticationError", "BudgetExhausted", "CodecError",
    "ConnectionLost", "ExecutionTimeout", "FrameTooLarge", "Interrupted", "InvalidQuery",
    "KernelDied", "MalformedFrame", "MethodNotAllowed", "OutputTooLarge", "PermissionDenied",
    "ProtocolError", "RemoteError", "RequestDenied", "RequestPending", "UnknownObject",
]
