// WorkerGraph front end: plain SVG, redrawn from the model's `nodes`, `edges`, `kinds`.
// Every string from Python is set with textContent (names come from other parties).
const SVG = "http://www.w3.org/2000/svg";
const STATUS_FILL = { busy: "#f0ad4e", offline: "#9aa0a6" };

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function shape(kind, x, y, fill, offline) {
  const stroke = { stroke: offline ? "#5f6368" : "#1f2933", "stroke-width": 2,
                   "stroke-dasharray": offline ? "5 4" : "none", fill };
  if (kind.shape === "rect") {
    return svg("rect", { x: x - 60, y: y - 22, width: 120, height: 44, rx: 8, ...stroke });
  }
  if (kind.shape === "hexagon") {
    const r = 30, pts = [];
    for (let k = 0; k < 6; k++) {
      const a = Math.PI / 6 + (k * Math.PI) / 3;
      pts.push(`${x + r * Math.cos(a)},${y + r * Math.sin(a)}`);
    }
    return svg("polygon", { points: pts.join(" "), ...stroke });
  }
  return svg("circle", { cx: x, cy: y, r: 30, ...stroke });
}

function layout(nodes, kinds) {
  // One column per ring (0 = scientist), nodes spread evenly down their column.
  const cols = new Map();
  for (const n of nodes) {
    const ring = (kinds[n.kind] || { ring: 1 }).ring;
    if (!cols.has(ring)) cols.set(ring, []);
    cols.get(ring).push(n);
  }
  const rows = Math.max(1, ...[...cols.values()].map((c) => c.length));
  const height = rows * 170 + 30;
  const rings = [...cols.keys()].sort((a, b) => a - b);
  const pos = new Map();
  rings.forEach((ring, ci) => {
    const col = cols.get(ring);
    col.forEach((n, i) => {
      pos.set(n.id, { x: 90 + ci * 300, y: ((i + 0.5) * (height - 30)) / col.length + 10 });
    });
  });
  return { pos, width: 90 + (rings.length - 1) * 300 + 150, height };
}

function draw(model, root) {
  const nodes = model.get("nodes") || [];
  const edges = model.get("edges") || [];
  const kinds = model.get("kinds") || {};
  const { pos, width, height } = layout(nodes, kinds);
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const g = svg("svg", { class: "sw-graph", width, height, viewBox: `0 0 ${width} ${height}`,
                         role: "img" });
  g.appendChild(svg("title", {}, "worker graph"));
  for (const e of edges) {
    const a = pos.get(e.source), b = pos.get(e.target);
    if (!a || !b) continue;
    const down = (byId.get(e.target) || {}).status === "offline";
    const grp = svg("g", { class: "sw-edge", "data-source": e.source, "data-target": e.target,
                           "data-kind": e.kind });
    grp.appendChild(svg("line", { x1: a.x + 60, y1: a.y, x2: b.x - 30, y2: b.y,
                                  stroke: down ? "#b0b4b8" : "#52606d", "stroke-width": 2,
                                  "stroke-dasharray": down ? "6 5" : "none" }));
    // Labels sit beside the edge's end at the worker, on the side the edge does not come
    // from (below a descending edge, above a level or rising one), so they never cross it.
    const n = (e.lines || []).length;
    const below = b.y > a.y + 1;
    (e.lines || []).forEach((line, i) => {
      const y = below ? b.y + 16 + i * 14 : b.y - 8 - (n - 1 - i) * 14;
      grp.appendChild(svg("text", { x: b.x - 36, y, "text-anchor": "end",
                                    class: "sw-edge-label" }, line));
    });
    g.appendChild(grp);
  }
  for (const n of nodes) {
    const p = pos.get(n.id);
    const kind = kinds[n.kind] || { shape: "circle", color: "#888", ring: 1 };
    const fill = STATUS_FILL[n.status] || kind.color;
    const grp = svg("g", { class: "sw-node", "data-id": n.id, "data-kind": n.kind,
                           "data-status": n.status });
    grp.appendChild(svg("title", {}, `${n.label} (${n.kind}): ${n.status}` +
                                      (n.detail ? ` - ${n.detail}` : "")));
    grp.appendChild(shape(kind, p.x, p.y, fill, n.status === "offline"));
    grp.appendChild(svg("text", { x: p.x, y: p.y + 5, "text-anchor": "middle",
                                  class: "sw-node-label" }, n.label));
    const below = n.kind === "scientist" ? [] : [n.status, ...(n.lines || [])];
    below.forEach((line, i) => {
      grp.appendChild(svg("text", { x: p.x, y: p.y + 48 + i * 14, "text-anchor": "middle",
                                    class: i === 0 ? `sw-status sw-${n.status}` : "sw-node-metric" },
                          line));
    });
    g.appendChild(grp);
  }
  root.replaceChildren(g);
}

function footer(model, el) {
  const t = model.get("updated");
  const when = t ? new Date(t * 1000).toLocaleTimeString() : "never";
  el.textContent = `${model.get("live") ? "live" : "stopped"} · updated ${when}`;
}

export default {
  render({ model, el }) {
    el.classList.add("sw-widget");
    const root = document.createElement("div");
    const foot = document.createElement("div");
    foot.className = "sw-footer";
    el.append(root, foot);
    const redraw = () => draw(model, root);
    const refoot = () => footer(model, foot);
    redraw();
    refoot();
    model.on("change:nodes", redraw);
    model.on("change:edges", redraw);
    model.on("change:kinds", redraw);
    model.on("change:updated", refoot);
    model.on("change:live", refoot);
    return () => {
      model.off("change:nodes", redraw);
      model.off("change:edges", redraw);
      model.off("change:kinds", redraw);
      model.off("change:updated", refoot);
      model.off("change:live", refoot);
    };
  },
};
