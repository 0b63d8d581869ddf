"""The async scientist API: ``await kb.aconnect(...)`` from a plain asyncio program.

Three real worker processes (``kb.launch``) run three 1-second cells under
one ``asyncio.gather`` in about one second: what an orchestrator (SMPC, FL)
needs. The same cells one after the other take three, which shows the
timing assertion can fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest

import kernel_bridge as kb
from kernel_bridge.errors import ApprovalRequired, ConnectionLost

SLEEP = "import time\ntime.sleep(1)\n"


async def _connect(w: kb.Worker) -> kb.AsyncWorker:
    return await kb.aconnect(w.process.url, w.token, name=w.name)  # type: ignore[attr-defined]


def test_gather_over_three_workers_runs_three_1s_cells_in_about_1s(
        fresh_worker: Callable[..., kb.Worker]) -> None:
    launched = [fresh_worker(name) for name in ("w1", "w2", "w3")]

    async def main() -> tuple[float, float, list[kb.Receipt]]:
        workers = await asyncio.gather(*(_connect(w) for w in launched))
        try:
            # Warm up: each session's private kernel starts on its first cell.
            warm = await asyncio.gather(*(w.run("1") for w in workers))
            assert all(r.ok for r in warm), warm
            t = time.perf_counter()
            receipts = list(await asyncio.gather(*(w.run(SLEEP) for w in workers)))
            together = time.perf_counter() - t
            t = time.perf_counter()
            for w in workers:
                assert (await w.run(SLEEP)).ok
            one_by_one = time.perf_counter() - t
            return together, one_by_one, receipts
        finally:
            await asyncio.gather(*(w.close() for w in workers))

    together, one_by_one, receipts = asyncio.run(main())
    print(f"three 1 s cells: gather {together:.2f} s, one after the other {one_by_one:.2f} s")
    assert [r.worker.name for r in receipts] == ["w1", "w2", "w3"]
    assert all(r.ok and r.duration >= 1.0 for r in receipts), receipts
    assert together < 2.0, f"gather took {together:.2f} s"
    assert one_by_one >= 3.0, f"one after the other took {one_by_one:.2f} s"


def test_async_worker_does_what_the_blocking_one_does(alice: kb.Worker,
                                                      connect_as: Callable[..., kb.Worker]
                                                      ) -> None:
    token_holder = connect_as("async-ana")  # a token of its own (and a blocking twin)

    async def main() -> None:
        w = await kb.aconnect(alice.process.url, token_holder.core.conn.token, name="alice")
        async with w:
            assert isinstance(w, kb.AsyncWorker) and w.connected
            assert w.scientist == "async-ana" and w.session_id != token_holder.session_id
            assert "heart" in [d["name"] for d in await w.datasets()]
            p = await w.send(np.arange(4))
            assert p.worker is w and p.taint == frozenset()
            q = await w.op(p, "binop", "mul", 10)
            assert (await w.get(q)).tolist() == [0, 10, 20, 30]
            total = await w.op(q, "method", "sum")
            assert int(await w.get(total)) == 60
            # A blocking call inside the worker's own loop would wait on itself.
            with pytest.raises(RuntimeError, match="await"):
                q.get()
            heart = await w.asset("heart")
            with pytest.raises(ApprovalRequired):
                await w.get(heart)
            req = await w.request(heart, "async test")
            assert (await w.wait(req, timeout=0.2, poll=0.1)).status == "pending"
            assert [r.id for r in await w.requests()][-1] == req.id
            query = heart.dp.count(epsilon=0.1)
            assert await w.accuracy(query) > 0
            receipt = await w.run("x = 1 + 1", mock=True)
            assert receipt.ok and receipt.mock and receipt.worker is w
            assert await w.ping() < 5.0
        with pytest.raises(ConnectionLost):
            await w.ping(timeout=1.0)

    asyncio.run(main())


def test_blocking_handle_wraps_an_async_core(session: kb.Worker) -> None:
    """Objects from the blocking API name the blocking Worker as theirs."""
    p = session.send(np.arange(3))
    assert p.worker is session and session.core.handle is session
    assert (p + 1).get().tolist() == [1, 2, 3]
