"""Requests and approvals: a snapshot for the owner to review, and its release.

A request snapshots a value when it is made; the owner approves or denies that
snapshot (CLI, Lab panel, widget, :class:`~kernel_bridge.owner.owner_api.Owner`);
only an approved snapshot leaves, to the scientist who asked, with its digest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from ...errors import PermissionDenied, ProtocolError, RequestDenied, RequestPending
from ...wire import codec
from ...wire.protocol import Action, Op
from .. import limits
from ..session import Session
from .base import Handler, Service
from .objects import kernels_of


class RequestService(Service):
    """The scientist's side of approvals: ask, wait, see the status, fetch the result."""

    def ops(self) -> Mapping[Op, Handler]:
        return {Op.REQUEST: self.op_request, Op.REQUEST_STATUS: self.op_request_status,
                Op.REQUESTS: self.op_requests, Op.WAIT_REQUEST: self.op_wait_request,
                Op.REQUEST_RESULT: self.op_request_result}

    def kernels(self, op: Op, session: Session, msg: dict[str, Any]) -> set[str]:
        return kernels_of(session, [msg.get("id")]) if op == Op.REQUEST else set()

    async def op_request(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Ask the owner to release a value: snapshot it now, for review.

        Takes ``id`` and ``reason``. The snapshot and its digest stay in the
        worker; the scientist gets the request's id and status, and the digest
        only together with an approved value (``request_result``), so an
        undecided or denied snapshot cannot be confirmed by guessing its hash.
        """
        obj = session.get(msg.get("id"))
        reason = msg.get("reason") or ""
        if not isinstance(reason, str) or len(reason) > 4000:
            raise ProtocolError("a reason is a string of at most 4000 characters")
        if obj.is_output:
            data = codec.dumps(obj.outputs)
            value_type = "outputs"
        else:
            host = session.host(obj.kernel)
            async with host.lock:
                reply, bufs = await self.ctx.agent(session, obj.kernel,
                                                {"action": Action.GET, "id": obj.id})
                pieces, _ = self.ctx.value_frame(session, obj.kernel, reply, bufs, copy=True)
            data = pieces[0]
            value_type = obj.type_name
        lineage = [dict(e, target=(e["object"] == obj.id)) for e in session.lineage
                   if e["seq"] <= len(session.lineage)]
        row = self.ctx.store.add_request(
            scientist=session.scientist, session_id=session.id, object_id=obj.id,
            kind="output" if obj.is_output else "value", value_type=value_type,
            reason=reason, frame=data, lineage=lineage,
        )
        return {"request": row.public()}

    def _own_request(self, session: Session, rid: Any) -> Any:
        row = self.ctx.store.request(int(rid)) if isinstance(rid, int) else None
        if row is None or row.scientist != session.scientist:
            raise PermissionDenied(f"no request {rid} of yours on this worker", request=rid)
        return row

    async def op_request_status(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """The status of one of the scientist's requests (no digest, no size)."""
        return {"request": self._own_request(session, msg.get("request")).public()}

    async def op_requests(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """The scientist's own requests on this worker (no digests, no sizes)."""
        rows = self.ctx.store.requests(scientist=session.scientist)
        return {"requests": [r.public() for r in rows]}

    async def op_wait_request(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Wait until the owner decides one of the scientist's requests, or ``timeout`` passes.

        Takes ``request`` and ``timeout`` (finite, bounded seconds). Returns the
        request's status as :meth:`op_request_status` does: no digest, no size.
        """
        rid = msg.get("request")
        timeout = limits.timeout_arg(msg.get("timeout"), default=0.0,
                                     maximum=limits.MAX_WAIT_TIMEOUT, allow_zero=True)
        deadline = time.monotonic() + timeout
        while True:
            row = self._own_request(session, rid)
            if row.status != "pending" or time.monotonic() >= deadline:
                return {"request": row.public()}
            await asyncio.sleep(0.1)

    async def op_request_result(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """The approved snapshot, byte for byte, with its SHA-256 to check it by.

        Releases exactly what the owner approved, to the scientist who asked; the
        release is committed to the audit log before a byte leaves.
        """
        row = self._own_request(session, msg.get("request"))
        if row.status == "pending":
            raise RequestPending(f"request {row.id} is still pending", request=row.id)
        if row.status == "denied":
            raise RequestDenied(f"request {row.id} was denied: {row.deny_reason or ''}",
                                request=row.id, reason=row.deny_reason or "")
        data = self.ctx.store.snapshot_bytes(row)
        self.ctx.store.record_release(row)  # committed before a byte leaves
        out, _ = self.ctx.deliver([data], len(data))
        out["sha256"] = row.sha256
        return out
