"""The worker's side of a real sandboxed kernel: agent requests stay out of iopub.

ipykernel publishes a ``busy`` and an ``idle`` status around every shell message and
waits for its stdout/stderr to flush; the worker reads neither for agent requests (it
waits for their replies), so the agent turns both off for its own requests only: cells
keep their status and outputs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kernel_bridge.owner.kernels import KernelHost
from kernel_bridge.wire import codec
from kernel_bridge.wire.protocol import Action


async def _scenario() -> tuple[list[tuple[str, str]], list[Any], Any]:
    host = KernelHost("plan", [], sandboxed=True, threads=1)
    seen: list[tuple[str, str]] = []
    read = host._on_iopub

    def spy(session: Any, frames: list[Any]) -> None:
        _, parts = session.feed_identities(frames, copy=False)
        header, parent = session.unpack(parts[1].bytes), session.unpack(parts[2].bytes)
        seen.append((header.get("msg_type"), parent.get("msg_type")))
        read(session, frames)

    host._on_iopub = spy  # type: ignore[method-assign]
    try:
        await host.ensure_started()
        defined = await host.execute(
            "def _syft_echo(x):\n    print('printed during a request')\n    return x\n",
            timeout=60)
        assert defined.status == "ok"
        replies = []
        for i in range(5):
            header, buffers = codec.encode({"i": i})
            reply, out = await host.request(
                {"action": Action.CALL, "function": "_syft_echo"}, [header, *buffers],
                timeout=60)
            replies.append((reply["status"], codec.decode(out[0], out[1:])))
        cell = await host.execute("print('a cell')", timeout=60)
        await asyncio.sleep(0.6)  # the requests' output leaves on the stream's timer
        return seen, replies, cell
    finally:
        await host.shutdown()


def test_agent_requests_publish_no_status_and_cells_keep_theirs() -> None:
    seen, replies, cell = asyncio.run(_scenario())
    assert replies == [("ok", {"i": i}) for i in range(5)]
    assert ("status", "syft_request") not in seen, seen
    statuses = [m for m, parent in seen if m == "status" and parent == "execute_request"]
    assert len(statuses) >= 4  # busy and idle around each of the two cells
    assert cell.status == "ok"
    assert [o["content"]["text"] for o in cell.outputs if o["msg_type"] == "stream"] == \
        ["a cell\n"]
    # What a request printed still went out (to no cell: the worker drops it).
    assert ("stream", "syft_request") in seen
