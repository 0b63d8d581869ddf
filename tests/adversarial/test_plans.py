"""Attacks on plans: crashes, tampering, and getting held (secure-aggregation) outputs out.

What the worker must hold: an approval survives a crash and binds the exact
stored document; runs are counted across restarts (a run in flight at a crash
still counts); the outputs of a secure-policy plan never reach the scientist in
the clear, only through the release hook, in masked form, once, and only for
an aggregate of at least ``min_workers``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kernel_bridge as kb
from kernel_bridge.errors import (
    PermissionDenied,
    PlanOutputRejected,
    PlanRunsExhausted,
    ProtocolError,
    SecureAggregationRequired,
)
from kernel_bridge.launch import relaunch
from kernel_bridge.owner.assets import load_assets
from kernel_bridge.owner.config import WorkerConfig
from kernel_bridge.owner.context import WorkerContext
from kernel_bridge.owner.ledger import Ledger
from kernel_bridge.owner.services.plans import PlanService
from kernel_bridge.owner.session import Session
from kernel_bridge.owner.store import Store
from tests.conftest import DATASETS
from tests.plans.docs import means_plan, secure_plan

HEART = pd.read_csv(DATASETS / "heart" / "alice.csv")
MEAN = HEART[["age", "chol"]].to_numpy(dtype="float32").mean(axis=0)


def test_approval_and_runs_survive_a_sigkill(fresh_worker: Callable[..., kb.Worker]) -> None:
    w = fresh_worker("planrestart", config=DATASETS / "alice.toml", assets={}, mocks={},
                     scientist="ana")
    owner = kb.Owner(w.process.state)
    plan = w.submit_plan(means_plan(max_runs=3), reason="r")
    owner.approve_plan(plan.id, plan.hash)
    plan.run()
    # A run in flight when the worker dies still counts: its code ran on the data.
    failed: list[BaseException] = []

    def slow() -> None:
        try:
            plan.run(mode="slow")
        except BaseException as exc:  # the connection dies with the worker
            failed.append(exc)

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            r["status"] == "running" for r in owner.plan(plan.id)["runs"]):
        time.sleep(0.05)
    w.process.kill()
    t.join(60)
    assert failed
    relaunch(w)
    w.reconnect()
    again = w.plan_by_id(plan.id)
    assert again.status == "approved" and again.runs_used == 2
    assert [r["status"] for r in owner.plan(plan.id)["runs"]] == ["released", "interrupted"]
    assert again.run().run["runs_used"] == 3
    with pytest.raises(PlanRunsExhausted):
        again.run()
    owner.close()


def test_a_document_changed_in_the_state_file_after_approval_does_not_run(
        fresh_worker: Callable[..., kb.Worker]) -> None:
    w = fresh_worker("plantamper", config=DATASETS / "alice.toml", assets={}, mocks={},
                     scientist="ana")
    owner = kb.Owner(w.process.state)
    plan = w.submit_plan(means_plan(max_runs=3), reason="r")
    owner.approve_plan(plan.id, plan.hash)
    doc = owner.plan(plan.id)["document"]
    doc["code"] = doc["code"].replace('mode == "probe"', 'mode == "probe!"')
    db = sqlite3.connect(Path(w.process.state) / "worker.sqlite")
    db.execute("UPDATE plans SET document=? WHERE id=?", (json.dumps(doc), plan.id))
    db.commit()
    db.close()
    with pytest.raises(PermissionDenied, match="does not match the hash"):
        plan.run()
    assert w.plan_by_id(plan.id).runs_used == 0
    owner.close()


def test_secure_plan_outputs_never_reach_the_scientist_in_the_clear(
        fresh_worker: Callable[..., kb.Worker]) -> None:
    w = fresh_worker("plansecure", config=DATASETS / "alice.toml", assets={}, mocks={},
                     scientist="ana")
    owner = kb.Owner(w.process.state)
    plan = w.submit_plan(secure_plan(min_workers=3), reason="r")
    owner.approve_plan(plan.id, plan.hash)
    received: list[bytes] = []
    ws = w._conn._ws
    recv = ws.recv

    async def spy(*args: object, **kwargs: object) -> object:
        raw = await recv(*args, **kwargs)  # type: ignore[arg-type]
        received.append(bytes(raw) if isinstance(raw, bytes | bytearray) else raw.encode())
        return raw

    ws.recv = spy  # type: ignore[method-assign]
    # Asking for the clear outputs is refused before anything runs.
    with pytest.raises(SecureAggregationRequired):
        w._call("plan_run", plan=plan.id, value={}, release="clear")
    assert w.plan_by_id(plan.id).runs_used == 0
    reply = w._call("plan_run", plan=plan.id, value={}, release="hold")
    assert reply["run"]["status"] == "held"
    assert "frame" not in reply and "download" not in reply
    result = plan.run(scale=1.0)
    assert result.held and result.outputs is None
    # Nothing the client received carries the update's bytes.
    assert received
    needle = MEAN.astype("<f4").tobytes()
    for part in (needle[:4], needle[4:]):
        assert not any(part in raw for raw in received)
    # Held runs are not kept across a restart, and never leave later.
    assert [r["status"] for r in owner.plan(plan.id)["runs"]] == ["held", "held"]
    owner.close()


def test_the_release_hook_releases_masked_outputs_once_for_enough_workers(
        tmp_path: Path) -> None:
    """The hook the secure-aggregation service calls, driven in this process."""
    config = WorkerConfig.from_toml(DATASETS / "alice.toml").with_overrides(
        state=tmp_path / "state")
    store = Store(config.state)
    assets = load_assets(config)
    ledger = Ledger(store)
    ledger.declare({n: a.spec.dp for n, a in assets.items() if a.spec.dp is not None})
    service = PlanService(WorkerContext(config, store, assets), ledger)
    hide = [store.dir] + [a.spec.path for a in assets.values()]
    ana = Session("ana", hide, sandboxed=True, threads=1, bulk_threshold=1 << 20)
    bea = Session("bea", hide, sandboxed=True, threads=1, bulk_threshold=1 << 20)
    plan = service.store.submit("ana", secure_plan(min_workers=3), "r")
    service.store.decide(plan.id, True)

    async def go() -> dict:
        try:
            return await service.op_plan_run(ana, {"plan": plan.id, "value": {}})
        finally:
            await service.close()

    reply = asyncio.run(go())
    rid = reply["run"]["id"]
    assert "frame" not in reply
    held = service.held_outputs(ana, rid)
    np.testing.assert_allclose(held.outputs["mean"]["m"].numpy(), MEAN, rtol=1e-5)
    with pytest.raises(PermissionDenied):
        service.held_outputs(bea, rid)
    masked = {"mean": {"m": np.array([7, 9], dtype=np.int64)}, "n": np.int64(5),
              "loss": 0.5}
    with pytest.raises(SecureAggregationRequired):
        service.release_masked(ana, rid, masked, participants=2)
    with pytest.raises(PlanOutputRejected):
        service.release_masked(ana, rid, {**masked, "mean": {"m": np.zeros(3)}},
                               participants=3)
    with pytest.raises(PlanOutputRejected):
        service.release_masked(ana, rid, {**masked, "extra": 1}, participants=3)
    out = service.release_masked(ana, rid, masked, participants=3)
    assert out["mean"]["m"].tolist() == [7, 9]
    with pytest.raises(PermissionDenied):
        service.release_masked(ana, rid, masked, participants=3)
    run = service.store.run(rid)
    assert run is not None and run["status"] == "aggregated"
    assert run["released"]["participants"] == 3
    assert store.audit_log()[-1]["event"] == "plan_run_aggregated"
    store.close()


def test_args_cannot_replace_what_the_worker_binds(
        fresh_worker: Callable[..., kb.Worker]) -> None:
    w = fresh_worker("planargs", config=DATASETS / "alice.toml", assets={}, mocks={},
                     scientist="ana")
    owner = kb.Owner(w.process.state)
    plan = w.submit_plan(means_plan(max_runs=3), reason="r")
    owner.approve_plan(plan.id, plan.hash)
    for bad in ({"data": 1}, {"spec": {}}, {"_x": 1}, {"x": {1, 2}}, {"x": slice(1, 2)}):
        with pytest.raises(ProtocolError):
            w._call("plan_run", plan=plan.id, value=bad)
    assert w.plan_by_id(plan.id).runs_used == 0
    owner.close()
