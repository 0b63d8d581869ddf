// Approvals front end. Reasons, code and previews are written by the scientist:
// they are only ever set with textContent, never parsed as HTML.
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function step(e, cls) {
  const box = el("div", `sw-step ${cls}`);
  box.dataset.seq = String(e.seq);
  box.append(el("div", "sw-step-title", e.title), el("pre", "", e.code));
  return box;
}

// The step that produced the value first (highlighted), then the private steps that
// led to it; later steps and mock cells folded.
function lineage(view) {
  const box = el("div", "sw-lineage");
  if (!view) return box;
  if (view.target) {
    box.append(el("div", "sw-muted", "requested value, produced by"),
               step(view.target, "sw-step-target"));
  } else {
    box.append(el("div", "sw-muted", "no step is marked as producing the value"));
  }
  if (view.leading.length) {
    const d = el("details", "sw-leading");
    d.open = true;
    d.append(el("summary", "", `what led to it (${view.leading.length} private step` +
                               `${view.leading.length > 1 ? "s" : ""})`));
    for (const e of view.leading) d.append(step(e, "sw-step-leading"));
    box.append(d);
  }
  if (view.rest.length) {
    const d = el("details", "sw-rest");
    d.append(el("summary", "", `${view.rest.length} more step` +
                               `${view.rest.length > 1 ? "s" : ""} (later, mock)`));
    for (const e of view.rest) d.append(step(e, "sw-step-rest"));
    box.append(d);
  }
  return box;
}

function card(model, r) {
  const c = el("div", "sw-request");
  c.dataset.requestId = String(r.id);
  c.append(el("div", "sw-request-head",
              `#${r.id} · ${r.scientist} · ${r.value_type} · ${r.size_text} · ${r.created}`));
  const reason = el("div", "sw-reason");
  reason.append(el("span", "sw-muted", "reason: "), el("span", "sw-reason-text", r.reason));
  c.append(reason);
  c.append(lineage(r.lineage));
  const d = el("details", "sw-preview");
  d.open = true;
  d.append(el("summary", "", "preview"), el("pre", "", r.preview || ""));
  c.append(d);
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

// A plan: its code, inputs and output policy in words, its progress; approve (at the
// hash shown) or deny (with a reason).
function planCard(model, p) {
  const c = el("div", `sw-plan sw-${p.status}`);
  c.dataset.planId = String(p.id);
  c.append(el("div", "sw-request-head",
              `plan #${p.id} · ${p.name} · ${p.scientist} · ${p.status} · ${p.progress}`));
  const reason = el("div", "sw-reason");
  reason.append(el("span", "sw-muted", "reason: "), el("span", "sw-reason-text", p.reason));
  c.append(reason, el("div", "sw-plan-inputs", p.inputs));
  const words = el("ul", "sw-plan-policy");
  for (const w of p.policy_words) words.append(el("li", "", w));
  c.append(words);
  const d = el("details", "sw-plan-code");
  d.open = p.status === "pending";
  d.append(el("summary", "", `code (entry ${p.entry}, sha256 ${p.hash.slice(0, 12)}…)`),
           el("pre", "", p.code));
  c.append(d);
  if (p.deny_reason) c.append(el("div", "sw-muted", `denied: ${p.deny_reason}`));
  if (p.status !== "pending") return c;
  const bar = el("div", "sw-actions");
  const approve = el("button", "sw-approve", "Approve plan");
  const why = el("input", "sw-deny-reason");
  why.placeholder = "reason for denying";
  const deny = el("button", "sw-deny", "Deny");
  approve.onclick = () => { approve.disabled = deny.disabled = true;
                            model.send({ action: "approve_plan", id: p.id, hash: p.hash }); };
  deny.onclick = () => {
    if (!why.value.trim()) { why.focus(); why.classList.add("sw-invalid"); return; }
    approve.disabled = deny.disabled = true;
    model.send({ action: "deny_plan", id: p.id, reason: why.value });
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
  const plans = model.get("plans") || [];
  if (plans.length) {
    parts.push(el("div", "sw-title", `plans · ${plans.filter(p => p.status === "pending").length} pending`));
    for (const p of plans) parts.push(planCard(model, p));
  }
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
    const events = ["change:requests", "change:recent", "change:plans", "change:message", "change:title"];
    for (const ev of events) model.on(ev, redraw);
    return () => { for (const ev of events) model.off(ev, redraw); };
  },
};
