"""Cells: run scientist code in the private or mock kernel, interrupt, restart.

A private cell's outputs are held as one bundle; its receipt carries only what
:mod:`..gate` bounds. A mock cell's outputs come back in full.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from ...errors import KernelDied, ProtocolError, SyftError
from ...wire.protocol import Action, Op
from .. import gate, limits
from ..session import Session, new_id
from .base import Handler, Service


class CellService(Service):
    """Cells in a session's private and mock kernels."""

    def ops(self) -> Mapping[Op, Handler]:
        return {Op.RUN: self.op_run, Op.INTERRUPT: self.op_interrupt,
                Op.RESTART: self.op_restart}

    def kernels(self, op: Op, session: Session, msg: dict[str, Any]) -> set[str]:
        # Interrupt and restart must overtake the cell they stop: not ordered.
        return {"mock" if msg.get("mock") else "private"} if op == Op.RUN else set()

    async def op_run(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Run a cell in the private (or, with ``mock``, the mock) kernel.

        Takes ``code``, ``mock`` and ``timeout``; returns a receipt. From the
        private kernel a receipt's data-dependent content is bounded and does not
        grow with the cell (see :mod:`.gate`): status, error type, error line,
        whether outputs were held, and the duration. Its names are parsed from
        the source. A mock receipt carries the mock kernel's outputs in full.
        """
        code = msg.get("code")
        if not isinstance(code, str):
            raise ProtocolError("'code' must be a string")
        kernel = "mock" if msg.get("mock") else "private"
        timeout = limits.timeout_arg(msg.get("timeout"), default=self.ctx.config.exec_timeout,
                                     maximum=limits.MAX_RUN_TIMEOUT)
        state = session.kernels[kernel]
        host = state.host
        candidates = gate.assigned_names(code)
        # Only the mock kernel is asked which names exist and their types: from the
        # private kernel that would be a channel of several bits per name.
        expr = {} if kernel == "private" else {
            "names": "__import__('kernel_bridge.kernel.agent').kernel.agent.names_json("
                     f"{candidates!r})"}
        async with host.lock:
            for name in self.ctx.mentions(code):
                await self.ctx.load_asset(session, kernel, name)
            seq = session.record("cell", code, kernel)
            try:
                result = await host.execute(code, timeout=timeout, user_expressions=expr)
            except KernelDied:
                session.kernel_restarted(kernel)
                raise
            reported = None
            if kernel == "mock":
                reported = gate.parse_user_expression(result.user_expressions.get("names"))
                if result.status != "ok" and candidates:
                    with contextlib.suppress(SyftError):
                        r, _ = await self.ctx.agent(session, kernel, {
                            "action": Action.NAMES, "names": candidates}, timeout=10)
                        reported = r.get("names")
        if kernel == "private":
            names = gate.parsed_names(candidates)
        else:
            names = gate.receipt_names(candidates, reported, state.names)
        receipt: dict[str, Any] = {
            "worker": self.ctx.config.name, "kernel": kernel, "status": result.status,
            "error_type": gate.safe_error_name(result.ename) if result.ename else None,
            "duration": round(result.duration, 4), "names": names, "cell": seq, "held": [],
            "error_line": gate.error_line(result.traceback, result.execution_count, code)
            if result.ename else None,
        }
        if kernel == "mock":
            receipt["outputs"] = result.outputs
        elif result.outputs:
            obj = session.add_object(kernel, {"type": "outputs"}, set(state.holds), seq,
                                     oid=new_id("o"), outputs=result.outputs)
            session.lineage[seq - 1]["object"] = obj.id  # the cell that produced them
            receipt["held"] = [self.ctx.pointer(session, obj)]
        if result.status == "timeout":
            receipt["error_type"] = "TimeoutError"
        return {"receipt": receipt}

    async def op_interrupt(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Interrupt what the private (or, with ``mock``, the mock) kernel runs.

        Not ordered behind the session's other messages, so it overtakes the cell it
        stops. Releases nothing (the cell's receipt says ``interrupted``).
        """
        kernel = "mock" if msg.get("mock") else "private"
        await session.host(kernel).interrupt()
        return {}

    async def op_restart(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Replace the private (or mock) kernel with a fresh one.

        Every object in the old kernel is gone and its taint record with it; a new
        private kernel holds nothing until an asset is loaded again. Releases nothing.
        """
        kernel = "mock" if msg.get("mock") else "private"
        host = session.host(kernel)
        await host.interrupt() if host.started else None
        async with host.lock:
            await host.restart()
            session.kernel_restarted(kernel)
        return {}
