"""The protocol between the scientist's client, the worker and the kernel agent.

Names are enums and messages typed structures, shared by both ends, so that a
reader (and mypy) can follow an operation from the scientist's call to the
worker's handler. Every message is a msgpack map; a request carries ``op`` and
``#`` (its id), a reply ``re`` (the request's id) and either ``ok`` with the
op's fields or ``error`` (:meth:`kernel_bridge.errors.SyftError.to_wire`).

Changing the protocol
---------------------
* Adding an op, an agent action or an *optional* field: no version change. An
  older worker answers an unknown op with ``ProtocolError``; an older peer
  ignores a field it does not know.
* Changing or removing a field, or what a field means: bump
  :data:`~kernel_bridge.wire.frames.WIRE_VERSION`, keep accepting the previous
  version for one release (``SUPPORTED_VERSIONS``), and say so in the README.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NotRequired, TypedDict


class Op(StrEnum):
    """Operations a scientist's client asks of a worker."""

    HELLO = "hello"
    PING = "ping"
    DATASETS = "datasets"
    SEND = "send"
    UPLOAD_TICKET = "upload_ticket"
    ASSET = "asset"
    OP = "op"
    GET = "get"
    VAR = "var"
    DELETE = "delete"
    RUN = "run"
    INTERRUPT = "interrupt"
    RESTART = "restart"
    REQUEST = "request"
    REQUEST_STATUS = "request_status"
    WAIT_REQUEST = "wait_request"
    REQUEST_RESULT = "request_result"
    REQUESTS = "requests"
    DP_QUERY = "dp_query"
    BUDGET = "budget"
    # plans
    PLAN_SUBMIT = "plan_submit"
    PLAN_STATUS = "plan_status"
    PLANS = "plans"
    WAIT_PLAN = "wait_plan"
    PLAN_RUN = "plan_run"
    # HE (kernel_bridge/owner/services/he.py)
    HE_CONTEXT = "he_context"
    HE_PREDICT = "he_predict"
    HE_EVALUATE = "he_evaluate"
    HE_SERVICES = "he_services"
    # smpc
    SMPC_INFO = "smpc_info"
    SMPC_SHARE = "smpc_share"
    SMPC_ACCEPT = "smpc_accept"
    SMPC_PUT = "smpc_put"
    SMPC_DEAL = "smpc_deal"
    SMPC_RUN = "smpc_run"
    SMPC_ABORT = "smpc_abort"
    SMPC_REVEAL = "smpc_reveal"
    SMPC_REQUEST = "smpc_request"
    SMPC_RESULT = "smpc_result"
    SMPC_FREE = "smpc_free"
    # fl (secure aggregation of held plan runs: kernel_bridge/owner/services/secagg.py)
    SECAGG_KEYS = "secagg_keys"
    SECAGG_SHARE = "secagg_share"
    SECAGG_MASK = "secagg_mask"
    SECAGG_UNMASK = "secagg_unmask"


class Action(StrEnum):
    """Requests the worker sends to the agent inside a kernel (``syft_request``)."""

    PUT = "put"
    OP = "op"
    GET = "get"
    BIND_VAR = "bind_var"
    NAMES = "names"
    DELETE = "delete"
    CALL = "call"


class OpKind(StrEnum):
    """Kinds of pointer operation (:attr:`Op.OP`)."""

    BINOP = "binop"
    UNOP = "unop"
    GETITEM = "getitem"
    SETITEM = "setitem"
    ATTR = "attr"
    METHOD = "method"


class Kernel(StrEnum):
    """A session's kernels: what the scientist sends, the private data, the mock data."""

    CLEAN = "clean"
    PRIVATE = "private"
    MOCK = "mock"


class PointerInfo(TypedDict):
    """What a scientist learns about a remote object (``Session.pointer_info``)."""

    id: str
    type: str
    kernel: str
    taint: list[str]
    output: bool
    shape: NotRequired[list[int | None] | None]
    dtype: NotRequired[str | None]


class ReceiptName(TypedDict):
    """One name in a receipt; ``type`` only for mock cells."""

    name: str
    change: str  # "assigned" (private), "created" or "changed" (mock)
    type: NotRequired[str]


class ReceiptInfo(TypedDict):
    """A cell's receipt (:attr:`Op.RUN`)."""

    worker: str
    kernel: str
    status: str  # ok | error | interrupted | timeout
    error_type: str | None
    error_line: int | None
    duration: float
    names: list[ReceiptName]
    cell: int
    held: list[PointerInfo]
    outputs: NotRequired[list[dict[str, Any]]]  # mock cells only


class RequestInfo(TypedDict):
    """What a scientist sees of their own request: no digest, no size before release."""

    id: int
    object_id: str
    kind: str
    value_type: str
    reason: str
    status: str  # pending | approved | denied
    deny_reason: str | None
    created: float
    decided: float | None
