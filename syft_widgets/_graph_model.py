"""The worker graph's model: nodes and edges with a kind and a dict of metrics.

The front end draws whatever this module sends: each node with the shape,
colour and ring of its kind (:data:`NODE_KINDS`), each edge with its metrics as
text lines already formatted here (:data:`EDGE_METRICS`, :data:`NODE_METRICS`).
So the graph grows by table entries, not by new drawing code:

- a new node kind (e.g. the SMPC crypto provider) is one entry in
  :data:`NODE_KINDS`, e.g. ``"crypto_provider": NodeKind("hexagon", "#8e44ad", ring=2)``,
  and a ``Node(kind="crypto_provider", ...)`` from whoever knows about it;
- a new edge metric (e.g. the FL round on each scientist-worker edge) is one
  entry in :data:`EDGE_METRICS`, e.g. ``"fl_round": Metric("round", "{:d}".format)``,
  and the value in ``edge.metrics["fl_round"]``; edges whose metrics lack it
  simply do not show it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from kernel_bridge._format import human_size

#: A node's health as the front end colours it.
STATUSES = ("online", "busy", "offline")


@dataclass(frozen=True)
class NodeKind:
    """How a kind of node is drawn: ``shape`` (circle, rect, hexagon), fill colour, and
    ``ring`` (0 = the centre, 1 = around it, 2 = an outer ring)."""

    shape: str
    color: str
    ring: int


@dataclass(frozen=True)
class Metric:
    """How one metric is shown: a short label and a formatter for its value."""

    label: str
    fmt: Callable[[Any], str]


def human_bytes(n: Any) -> str:
    return human_size(int(n))


NODE_KINDS: dict[str, NodeKind] = {
    "scientist": NodeKind("rect", "#2c7be5", ring=0),
    "worker": NodeKind("circle", "#00a36c", ring=1),
}

#: Edge metrics in display order; an edge shows those present in its ``metrics``.
EDGE_METRICS: dict[str, Metric] = {
    "latency_ms": Metric("latency", lambda v: f"{v:.1f} ms"),
    "messages": Metric("msgs", lambda v: f"{int(v)}"),
    "bytes_sent": Metric("sent", human_bytes),
    "bytes_received": Metric("recv", human_bytes),
    # The scientist's plan running on that worker (an FL job: one run per round).
    "plan_round": Metric("round", lambda v: f"{int(v[0])}/{int(v[1])}"),
    "plan_epsilon": Metric("ε", lambda v: f"{v:.2f}"),
}

#: Node metrics in display order.
NODE_METRICS: dict[str, Metric] = {
    "pending": Metric("pending", lambda v: f"{int(v)}"),
}


@dataclass
class Node:
    """One participant: ``id`` is unique in the graph, ``kind`` a key of :data:`NODE_KINDS`."""

    id: str
    kind: str
    label: str
    status: str = "online"
    metrics: dict[str, Any] = field(default_factory=dict)
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["lines"] = metric_lines(self.metrics, NODE_METRICS)
        return d


@dataclass
class Edge:
    """A link between two node ids; ``kind`` says what flows there (``connection`` for now)."""

    source: str
    target: str
    kind: str = "connection"
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["lines"] = metric_lines(self.metrics, EDGE_METRICS)
        return d


def metric_lines(metrics: dict[str, Any], table: dict[str, Metric]) -> list[str]:
    """``label value`` lines for the metrics in ``table`` that are present (and not None)."""
    return [f"{m.label} {m.fmt(metrics[key])}" for key, m in table.items()
            if metrics.get(key) is not None]


def kinds_json() -> dict[str, dict[str, Any]]:
    """:data:`NODE_KINDS` as the front end reads it."""
    return {name: asdict(kind) for name, kind in NODE_KINDS.items()}


def graph_text(nodes: list[Node], edges: list[Edge]) -> str:
    """The graph as plain text, for consoles and nbconvert."""
    by_id = {n.id: n for n in nodes}
    out = []
    for n in nodes:
        if n.kind == "scientist":
            out.append(f"{n.label} ({n.kind})")
            continue
        lines = metric_lines(n.metrics, NODE_METRICS)
        edge = next((e for e in edges if n.id in (e.source, e.target)), None)
        if edge is not None:
            lines = metric_lines(edge.metrics, EDGE_METRICS) + lines
        other = by_id.get(edge.source if edge and edge.source != n.id else "", None)
        via = f" <- {other.label}" if other else ""
        extra = f" [{n.detail}]" if n.detail else ""
        out.append(f"  {n.label} ({n.kind}){via}: {n.status}"
                   + (f", {', '.join(lines)}" if lines else "") + extra)
    return "\n".join(out)
