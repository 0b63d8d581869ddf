"""``WorkerGraph``: the scientist and their workers as a live SVG graph."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import traitlets

from kernel_bridge.errors import ConnectionLost, SyftError
from kernel_bridge.scientist.worker import Worker

from ._base import LiveWidget, static
from ._graph_model import Edge, Node, graph_text, kinds_json

T = TypeVar("T")


class _OwnTraffic:
    """What the widget's own polls added to a connection's counters.

    The graph shows the scientist's traffic, so the polls are subtracted. A
    poll's bytes are measured when nothing else was in flight around it, and
    the last clean measurement stands in for the rare poll that overlapped.
    """

    def __init__(self) -> None:
        self.messages = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self._per_op: dict[str, tuple[int, int]] = {}

    def call(self, worker: Worker, op: str, fn: Callable[[], T]) -> T:
        before = worker.stats
        try:
            return fn()
        finally:
            after = worker.stats
            sent = after["messages"] - before["messages"]
            if sent == 1 and before["in_flight"] == 0 and after["in_flight"] == 0:
                self._per_op[op] = (after["bytes_sent"] - before["bytes_sent"],
                                    after["bytes_received"] - before["bytes_received"])
            if sent >= 1:  # our message went out (a failed send adds nothing)
                s, r = self._per_op.get(op, (0, 0))
                self.messages += 1
                self.bytes_sent += s
                self.bytes_received += r


class WorkerGraph(LiveWidget):
    """The scientist and their workers as a live graph.

    Each worker is a node coloured by its state (online, busy: a call of yours
    is in flight, offline: it does not answer), with its pending requests; each
    scientist-worker edge shows latency, and the messages and bytes of your
    work (the widget's own polls are not counted) and, while one of your
    plans runs there (an FL job: one run per round), its round and the ε it
    has spent on that worker. A killed worker turns
    offline within about a second; when it comes back on the same address the
    widget reconnects the handle and the node turns online again.

    Parameters
    ----------
    workers : iterable of Worker
        The handles to watch (``[alice, bob]``).
    interval : float
        Seconds between refreshes (at most 1 s is sensible).
    timeout : float
        How long a ping may take before the worker counts as offline.

    Examples
    --------
    >>> WorkerGraph([alice, bob])   # doctest: +SKIP
    """

    _esm = static("worker_graph.js")
    _css = static("widgets.css")

    nodes = traitlets.List(traitlets.Dict()).tag(sync=True)
    edges = traitlets.List(traitlets.Dict()).tag(sync=True)
    kinds = traitlets.Dict().tag(sync=True)

    def __init__(self, workers: Iterable[Worker], *, interval: float = 1.0,
                 timeout: float = 1.0, start: bool = True) -> None:
        self.workers = list(workers)
        if not self.workers:
            raise ValueError("WorkerGraph needs at least one worker")
        self.timeout = timeout
        self._own = [_OwnTraffic() for _ in self.workers]
        super().__init__(kinds=kinds_json(), interval=interval)
        self._lock = threading.Lock()
        # A first picture from local state only: the network is read by the pollers.
        self._nodes = [self._node(i, w, "online" if w.connected else "offline", {}, "")
                       for i, w in enumerate(self.workers)]
        self._edges = [self._edge(i, w, None) for i, w in enumerate(self.workers)]
        self._publish(self._nodes, self._edges)
        if start:
            self.start()

    # -- model -----------------------------------------------------------------
    @property
    def scientist_id(self) -> str:
        return f"scientist:{self.workers[0].scientist}"

    def _node(self, i: int, w: Worker, status: str, metrics: dict[str, Any],
              detail: str) -> Node:
        return Node(id=f"worker:{i}:{w.name}", kind="worker", label=w.name, status=status,
                    metrics=metrics, detail=detail)

    def _edge(self, i: int, w: Worker, latency: float | None,
              plan: dict[str, Any] | None = None) -> Edge:
        stats, own = w.stats, self._own[i]
        metrics: dict[str, Any] = {
            "latency_ms": None if latency is None else latency * 1000.0,
            "messages": max(0, stats["messages"] - own.messages),
            "bytes_sent": max(0, stats["bytes_sent"] - own.bytes_sent),
            "bytes_received": max(0, stats["bytes_received"] - own.bytes_received),
        }
        if plan is not None:
            metrics["plan_round"] = (plan["runs_used"], plan["max_runs"])
            if plan["epsilon_spent"]:
                metrics["plan_epsilon"] = plan["epsilon_spent"]
        return Edge(source=self.scientist_id, target=f"worker:{i}:{w.name}", metrics=metrics)

    def _probe(self, i: int, w: Worker) -> tuple[Node, Edge]:
        """One worker's state, from a ping and its request list (never blocks for long)."""
        own = self._own[i]
        busy = w.stats["in_flight"] > 0
        try:
            if not w.connected:
                w.reconnect(attempts=1, delay=0.0)
            latency = own.call(w, "ping", lambda: w.ping(timeout=self.timeout))
            requests = own.call(w, "requests", lambda: w.requests(timeout=self.timeout))
            plans = own.call(w, "plans", lambda: w.plans(timeout=self.timeout))
        except Exception as exc:  # whatever stops the talk (refused, hung, bad handshake)
            reason = str(exc) if isinstance(exc, (ConnectionLost, OSError, SyftError)) and \
                not isinstance(exc, TimeoutError) else type(exc).__name__
            return (self._node(i, w, "offline", {}, reason[:120]), self._edge(i, w, None))
        pending = sum(1 for r in requests if r.status == "pending")
        status = "busy" if busy else "online"
        return (self._node(i, w, status, {"pending": pending}, ""),
                self._edge(i, w, latency, _running_plan(plans)))

    def _tasks(self) -> list[Callable[[], None]]:
        # One poller per worker: a worker that hangs (its ping waits for the timeout,
        # a reconnect for the handshake) does not delay the others' updates.
        return [functools.partial(self.refresh_worker, i) for i in range(len(self.workers))]

    def refresh_worker(self, i: int) -> None:
        """Probe worker ``i`` once and publish the graph (its poller calls this)."""
        w = self.workers[i]
        if not w.connected and self._nodes[i].status != "offline":
            # Show the drop at once: reconnecting may wait on the user's own reconnect.
            self._store(i, self._node(i, w, "offline", {}, "connection lost"),
                        self._edge(i, w, None))
        self._store(i, *self._probe(i, w))

    def _store(self, i: int, node: Node, edge: Edge) -> None:
        with self._lock:
            self._nodes[i], self._edges[i] = node, edge
            self._publish(self._nodes, self._edges)

    def refresh(self) -> None:
        """Probe every worker once and publish the result."""
        for i in range(len(self.workers)):
            self.refresh_worker(i)

    def _publish(self, workers: list[Node], edges: list[Edge]) -> None:
        me = Node(id=self.scientist_id, kind="scientist", label=self.workers[0].scientist)
        self._model = ([me, *workers], list(edges))
        nodes_json = [n.to_json() for n in self._model[0]]
        edges_json = [e.to_json() for e in edges]
        with self.hold_sync():
            if nodes_json != self.nodes:
                self.nodes = nodes_json
            if edges_json != self.edges:
                self.edges = edges_json
            self.updated = time.time()

    # -- reading it ------------------------------------------------------------
    def status(self) -> dict[str, str]:
        """``{worker name: online | busy | offline}`` as last published."""
        return {n["label"]: n["status"] for n in self.nodes if n["kind"] == "worker"}

    def text(self) -> str:
        state = "live" if self.live else "stopped"
        return f"WorkerGraph ({len(self.workers)} workers, {state})\n" + graph_text(*self._model)


def _running_plan(plans: list[Any]) -> dict[str, Any] | None:
    """The approved plan of the scientist's that ran last (the newest with runs)."""
    ran = [p for p in plans if p.status == "approved" and p.runs_used > 0]
    if not ran:
        return None
    p = max(ran, key=lambda p: p.id)
    return {"runs_used": p.runs_used, "max_runs": int(p.info["max_runs"]),
            "epsilon_spent": p.epsilon_spent}
