// Budget front end: one bar per asset, the spent share of ε filled in.
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function draw(model, root) {
  const rows = model.get("rows") || [];
  const parts = [el("div", "sw-title", model.get("title"))];
  for (const r of rows) {
    const row = el("div", "sw-budget-row");
    row.dataset.asset = r.label;
    row.dataset.spent = String(r.epsilon_spent);
    const bar = el("div", "sw-bar");
    const fill = el("div", "sw-bar-spent" + (r.fraction >= 1 ? " sw-exhausted"
                                              : r.fraction >= 0.8 ? " sw-low" : ""));
    fill.style.width = `${(100 * r.fraction).toFixed(2)}%`;
    bar.title = r.text;
    bar.append(fill);
    row.append(el("div", "sw-budget-label", r.label), bar, el("div", "sw-budget-text", r.text));
    parts.push(row);
  }
  if (!rows.length) parts.push(el("div", "sw-muted", "No budget read yet."));
  const err = model.get("error");
  if (err) parts.push(el("div", "sw-muted", `last refresh failed: ${err}`));
  root.classList.toggle("sw-stale", Boolean(err) || !model.get("live"));
  root.replaceChildren(...parts);
}

export default {
  render({ model, el: host }) {
    host.classList.add("sw-widget", "sw-budget");
    const root = document.createElement("div");
    host.append(root);
    const redraw = () => draw(model, root);
    redraw();
    const events = ["change:rows", "change:title", "change:error", "change:live"];
    for (const ev of events) model.on(ev, redraw);
    return () => { for (const ev of events) model.off(ev, redraw); };
  },
};
