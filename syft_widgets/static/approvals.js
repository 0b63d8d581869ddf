// Approvals front end. Reasons, code and previews are written by the scientist:
// they are only ever set with textContent, never parsed as HTML.
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function card(model, r) {
  const c = el("div", "sw-request");
  c.dataset.requestId = String(r.id);
  c.append(el("div", "sw-request-head",
              `#${r.id} · ${r.scientist} · ${r.value_type} · ${r.size_text} · ${r.created}`));
  const reason = el("div", "sw-reason");
  reason.append(el("span", "sw-muted", "reason: "), el("span", "sw-reason-text", r.reason));
  c.append(reason);
  for (const [label, body, cls] of [["code", r.code, "sw-code"],
                                    ["preview", r.preview, "sw-preview"]]) {
    const d = el("details", cls);
    if (label === "preview") d.open = true;
    d.append(el("summary", "", label), el("pre", "", body || ""));
    c.append(d);
  }
  const bar = el("div", "sw-actions");
  const approve = el("button", "sw-approve", "Approve");
  const why = el("input", "sw-deny-reason");
  why.placeholder = "reason for denying";
  const deny = el("button", "sw-deny", "Deny");
  approve.onclick = () => { approve.disabled = deny.disabled = true;
                            model.send({ action: "approve", id: r.id }); };
  deny.onclick = () => {
    if (!why.value.trim()) { why.focus(); why.classList.add("sw-invalid"); return; }
    approve.disabled = deny.disabled = true;
    model.send({ action: "deny", id: r.id, reason: why.value });
  };
  bar.append(approve, why, deny);
  c.append(bar);
  return c;
}

function draw(model, root) {
  const pending = model.get("requests") || [];
  const recent = model.get("recent") || [];
  const parts = [el("div", "sw-title", `${model.get("title")} · ${pending.length} pending`)];
  if (!pending.length) parts.push(el("div", "sw-muted sw-empty", "No pending requests."));
  for (const r of pending) parts.push(card(model, r));
  const msg = model.get("message");
  if (msg) parts.push(el("div", "sw-message", msg));
  if (recent.length) {
    const d = el("details", "sw-recent");
    d.append(el("summary", "", `recent decisions (${recent.length})`));
    for (const r of recent) {
      const line = el("div", `sw-decided sw-${r.status}`,
                      `#${r.id} · ${r.scientist} · ${r.status}` +
                      (r.deny_reason ? ` (${r.deny_reason})` : ""));
      line.dataset.requestId = String(r.id);
      d.append(line);
    }
    parts.push(d);
  }
  root.replaceChildren(...parts);
}

export default {
  render({ model, el: host }) {
    host.classList.add("sw-widget", "sw-approvals");
    const root = document.createElement("div");
    host.append(root);
    const redraw = () => draw(model, root);
    redraw();
    const events = ["change:requests", "change:recent", "change:message", "change:title"];
    for (const ev of events) model.on(ev, redraw);
    return () => { for (const ev of events) model.off(ev, redraw); };
  },
};
