"""The live widgets against real workers: graph health, approvals, budget, text fallbacks."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from nbconvert import MarkdownExporter

import kernel_bridge as kb
from kernel_bridge.launch import relaunch
from syft_widgets import Approvals, Budget, WorkerGraph
from tests.plans.docs import dp_plan

NOTEBOOK = Path(__file__).resolve().parent / "files" / "widgets_live.ipynb"


def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> float:
    """Poll ``pred`` until true; returns the seconds it took (fails after ``timeout``)."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)
    return time.monotonic() - t0


def polled(widget: Any, ticks: int = 1, timeout: float = 10) -> None:
    """Wait until the widget's poller has refreshed ``ticks`` times."""
    wait_for(lambda: widget.ticks >= ticks, timeout, f"{ticks} refreshes")


def edge(graph: WorkerGraph, name: str) -> dict[str, Any]:
    node = next(n for n in graph.nodes if n["label"] == name and n["kind"] == "worker")
    return next(e for e in graph.edges if e["target"] == node["id"])


def node(graph: WorkerGraph, name: str) -> dict[str, Any]:
    return next(n for n in graph.nodes if n["label"] == name and n["kind"] == "worker")


# -- WorkerGraph ------------------------------------------------------------------------------
def test_graph_marks_a_killed_worker_offline_and_a_restarted_one_online(
        session: kb.Worker, fresh_worker: Callable[..., kb.Worker]) -> None:
    carol = fresh_worker("carol")
    graph = WorkerGraph([session, carol])  # default 1 s polling
    try:
        polled(graph)
        assert graph.status() == {"alice": "online", "carol": "online"}
        assert node(graph, "carol")["metrics"]["pending"] == 0
        assert edge(graph, "carol")["metrics"]["latency_ms"] > 0
        os.killpg(carol.process.proc.pid, signal.SIGSTOP)  # hung: connected but silent
        try:
            wait_for(lambda: graph.status()["carol"] == "offline", 3.0, "hung worker offline")
            assert node(graph, "carol")["detail"] == "TimeoutError"
            ticks = graph._pollers[0].ticks
            wait_for(lambda: graph._pollers[0].ticks > ticks + 1, 3, "alice still polled")
            assert graph.status()["alice"] == "online"
        finally:
            os.killpg(carol.process.proc.pid, signal.SIGCONT)
        wait_for(lambda: graph.status()["carol"] == "online", 5, "resumed worker online")
        carol.process.kill()  # SIGKILL, as a crash
        took = wait_for(lambda: graph.status()["carol"] == "offline", 3.0,
                        "killed worker shown offline")
        assert graph.status()["alice"] == "online"
        assert node(graph, "carol")["detail"]  # says why (connection refused)
        assert edge(graph, "carol")["metrics"]["latency_ms"] is None
        assert "carol (worker)" in graph.text() and "offline" in graph.text()
        relaunch(carol)  # same port, same state directory
        wait_for(lambda: graph.status()["carol"] == "online", 10, "restarted worker online")
        assert carol.connected  # the poller reconnected the user's handle
        assert carol.send(41).get() == 41
    finally:
        graph.close()
    print(f"offline after {took:.2f}s")


def test_graph_counts_the_scientists_traffic_and_pending_requests(
        connect_as: Callable[..., kb.Worker]) -> None:
    w = connect_as("graph-traffic")
    graph = WorkerGraph([w], interval=0.2)
    try:
        polled(graph, 5)
        quiet = edge(graph, "alice")["metrics"]
        assert quiet["messages"] == 0  # the widget's own pings are not the scientist's work
        assert quiet["bytes_sent"] < 200
        payload = np.arange(50_000, dtype=np.float64)  # 400 kB
        ptr = w.send(payload)
        wait_for(lambda: edge(graph, "alice")["metrics"]["bytes_sent"] >= payload.nbytes, 3,
                 "sent bytes on the edge")
        assert edge(graph, "alice")["metrics"]["messages"] >= 1
        ptr.sum().request(reason="graph test")
        wait_for(lambda: node(graph, "alice")["metrics"]["pending"] == 1, 3,
                 "pending request on the node")
        assert "pending 1" in node(graph, "alice")["lines"]
    finally:
        graph.close()


def test_graph_edges_show_the_running_plans_round_and_epsilon(
        fresh_worker: Callable[..., kb.Worker]) -> None:
    from tests.conftest import DATASETS

    w = fresh_worker("alice", config=DATASETS / "alice.toml", assets={}, mocks={},
                     scientist="ana")
    owner = kb.Owner(w.process.state)
    owner.set_budget(None, "heart", 10.0, 1e-3)  # the sample gives no δ for DP-SGD
    owner.set_budget("ana", "heart", 10.0, 1e-3)
    graph = WorkerGraph([w], interval=0.2)
    try:
        polled(graph, 2)
        assert "plan_round" not in edge(graph, "alice")["metrics"]  # no plan of theirs ran
        plan = w.submit_plan(dp_plan(max_runs=4, epsilon_total=10.0), reason="graph")
        owner.approve_plan(plan.id, plan.hash)
        plan.wait(timeout=10)
        plan.run()
        plan.run()
        wait_for(lambda: "round 2/4" in edge(graph, "alice")["lines"], 5, "round on the edge")
        eps = plan.refresh().epsilon_spent
        assert eps > 0 and f"ε {eps:.2f}" in edge(graph, "alice")["lines"]
        assert "round 2/4" in graph.text()
    finally:
        graph.close()
        owner.close()


def test_graph_shows_busy_while_a_call_runs_and_never_blocks_it(
        connect_as: Callable[..., kb.Worker]) -> None:
    w = connect_as("graph-busy")
    graph = WorkerGraph([w], interval=0.2)
    done: list[kb.Receipt] = []
    try:
        t = threading.Thread(target=lambda: done.append(
            w.run("import time\ntime.sleep(2.5)", mock=True)))
        t.start()
        wait_for(lambda: graph.status()["alice"] == "busy", 3, "busy while a cell runs")
        # pings still answer while the cell runs: the latency is measured, not a timeout
        assert edge(graph, "alice")["metrics"]["latency_ms"] is not None
        t.join(15)
        assert done and done[0].ok
        wait_for(lambda: graph.status()["alice"] == "online", 3, "online once the cell ends")
    finally:
        graph.close()


def test_closing_stops_the_updates(session: kb.Worker) -> None:
    graph = WorkerGraph([session], interval=0.1)
    polled(graph)
    pollers = graph._pollers
    assert len(pollers) == 1 and pollers[0].running
    graph.close()
    assert not pollers[0].running and not pollers[0]._thread.is_alive()
    ticks, updated = graph.ticks, graph.updated
    time.sleep(0.5)
    assert graph.ticks == ticks and graph.updated == updated
    assert not graph.live and "stopped" in repr(graph)


def test_graph_model_grows_by_table_entries(session: kb.Worker) -> None:
    from syft_widgets import _graph_model as gm

    gm.NODE_KINDS["crypto_provider"] = gm.NodeKind("hexagon", "#8e44ad", ring=2)
    gm.EDGE_METRICS["fl_round"] = gm.Metric("round", lambda v: f"{int(v)}")
    try:
        graph = WorkerGraph([session], start=False)
        assert graph.kinds["crypto_provider"]["shape"] == "hexagon"
        e = gm.Edge("scientist:x", "worker:0:alice", metrics={"fl_round": 3, "messages": 2})
        assert e.to_json()["lines"] == ["msgs 2", "round 3"]
        graph.close()
    finally:
        del gm.NODE_KINDS["crypto_provider"], gm.EDGE_METRICS["fl_round"]


def test_text_fallbacks_are_whole(session: kb.Worker, fresh_worker: Callable[..., kb.Worker]
                                  ) -> None:
    graph = WorkerGraph([session, fresh_worker("dave")], interval=0.2)
    try:
        polled(graph)
        assert graph.status() == {"alice": "online", "dave": "online"}
        bundle, _meta = graph._repr_mimebundle_()
        text = bundle["text/plain"]
        assert len(text) > 110  # ipywidgets would cut it here
        assert "alice (worker)" in text and "dave (worker)" in text and "latency" in text
        assert "application/vnd.jupyter.widget-view+json" in bundle
        assert repr(graph) == graph.text()
    finally:
        graph.close()


# -- Approvals ---------------------------------------------------------------------------------
def test_approve_action_releases_the_value_to_the_waiting_scientist(
        connect_as: Callable[..., kb.Worker], owner: kb.Owner) -> None:
    sci = connect_as("approvals-yes")
    req = sci.asset("secret")["value"].sum().request(reason="total, please")
    widget = Approvals(owner)
    try:
        row = next(r for r in widget.requests if r["id"] == req.id)
        assert row["reason"] == "total, please" and row["scientist"] == "approvals-yes"
        assert "requested value" in row["code"] and "secret" in row["code"]
        expected = owner.value(req.id)
        assert str(int(expected)) in row["preview"]
        waited: list[kb.Request] = []
        t = threading.Thread(target=lambda: waited.append(req.wait(timeout=30, poll=5)))
        t.start()
        time.sleep(0.3)
        assert t.is_alive()  # the scientist is blocked on the owner's decision
        widget._on_frontend_msg(widget, {"action": "approve", "id": req.id}, [])  # the button
        t.join(30)
        assert waited and waited[0].status == "approved"
        assert req.result() == expected
        assert all(r["id"] != req.id for r in widget.requests)
        assert widget.recent[0]["id"] == req.id and widget.recent[0]["status"] == "approved"
        assert widget.message.startswith(f"approved #{req.id}")
        # a second click on a decided request is a message, not a crash or a re-decision
        assert "already approved" in widget.handle_action({"action": "deny", "id": req.id,
                                                           "reason": "too late"})
        assert owner.request(req.id).status == "approved"
    finally:
        widget.close()


def test_deny_needs_a_reason_and_reaches_the_scientist(
        connect_as: Callable[..., kb.Worker], owner: kb.Owner) -> None:
    sci = connect_as("approvals-no")
    req = sci.asset("secret")["value"].max().request(reason="<b>max</b> please")
    widget = Approvals(owner)
    try:
        assert "a denial needs a reason" in widget.handle_action(
            {"action": "deny", "id": req.id, "reason": "  "})
        assert owner.request(req.id).status == "pending"
        for bad in ({"action": "approve", "id": "x"}, {"action": "nuke", "id": req.id}, {}):
            widget.handle_action(bad)  # typed garbage from a front end: a message only
        assert owner.request(req.id).status == "pending"
        widget.handle_action({"action": "deny", "id": req.id, "reason": "max is identifying"})
        assert req.wait(timeout=10).status == "denied"
        with pytest.raises(kb.RequestDenied, match="max is identifying"):
            req.result()
        assert all(r["id"] != req.id for r in widget.requests)
        last = widget.recent[0]
        assert (last["id"], last["status"], last["deny_reason"]) == (
            req.id, "denied", "max is identifying")
        assert widget.message.startswith(f"denied #{req.id}")
        assert f"#{req.id} {last['scientist']}: denied (max is identifying)" in widget.text()
    finally:
        widget.close()


def test_approvals_poll_sees_new_requests_and_decisions_made_elsewhere(
        connect_as: Callable[..., kb.Worker], owner: kb.Owner) -> None:
    sci = connect_as("approvals-poll")
    widget = Approvals(owner)  # default 1 s polling
    try:
        req = sci.asset("secret")["value"].min().request(reason="min")
        wait_for(lambda: any(r["id"] == req.id for r in widget.requests), 3, "new request")
        assert f"#{req.id} approvals-poll: 'min'" in widget.text()
        kb.Owner(owner.store.dir).approve(req.id)  # e.g. the CLI, another process
        wait_for(lambda: all(r["id"] != req.id for r in widget.requests), 3, "decided elsewhere")
    finally:
        widget.close()
    assert not widget.live


# -- Budget ------------------------------------------------------------------------------------
def test_budget_bars_move_after_a_dp_query(connect_as: Callable[..., kb.Worker],
                                           owner: kb.Owner) -> None:
    sci = connect_as("budget-watcher")
    widget = Budget(sci)
    owner_view = Budget(owner)
    try:
        wait_for(lambda: "heart" in widget.spent(), 5, "heart's budget read")
        before = next(r for r in widget.rows if r["label"] == "heart")
        assert before["epsilon_limit"] > 0
        sci.asset("heart").dp.mean("age", epsilon=0.2).release()
        wait_for(lambda: widget.spent()["heart"] > before["epsilon_spent"], 3, "bar moved")
        after = next(r for r in widget.rows if r["label"] == "heart")
        assert after["epsilon_spent"] == pytest.approx(before["epsilon_spent"] + 0.2)
        assert after["epsilon_remaining"] == pytest.approx(before["epsilon_remaining"] - 0.2)
        assert after["fraction"] > before["fraction"]
        assert "heart" in widget.text() and "#" in widget.text()
        label = "budget-watcher · heart"
        wait_for(lambda: owner_view.spent().get(label, 0) >= 0.2 - 1e-9, 3, "owner's view")
    finally:
        widget.close()
        owner_view.close()


# -- text fallbacks in a converted notebook ----------------------------------------------------
def test_notebook_converts_with_text_fallbacks(tmp_path: Path) -> None:
    """The example notebook, executed by nbclient and turned into Markdown by nbconvert."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", out
    md, _ = MarkdownExporter().from_notebook_node(nb)
    assert "WorkerGraph (2 workers, live)" in md
    assert "alice (worker) <- ana" in md and "bob (worker) <- ana" in md
    assert "Privacy budget on alice (ana)" in md
    assert "Approvals for" in md and "mean age, please" in md
    assert "application/vnd.jupyter.widget-view+json" not in md


def test_front_end_ships_in_the_package_without_cdn_imports() -> None:
    import re

    import syft_widgets

    static = Path(syft_widgets.__file__).parent / "static"
    files = sorted(static.glob("*.js")) + sorted(static.glob("*.css"))
    assert {f.name for f in files} >= {"worker_graph.js", "approvals.js", "budget.js",
                                       "widgets.css"}
    for f in files:
        text = f.read_text()
        assert not re.search(r"""(import|from)\s*\(?\s*["']https?:""", text), f
        assert "@import" not in text and "url(http" not in text, f
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text, f
