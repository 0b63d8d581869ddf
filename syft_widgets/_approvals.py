"""``Approvals``: the data owner's pending requests and plans, with preview, approve and deny."""

from __future__ import annotations

import threading
import time
from typing import Any

import traitlets

from kernel_bridge.errors import SyftError
from kernel_bridge.owner import lineage
from kernel_bridge.owner.owner_api import Owner, PendingRequest, render_value

from ._base import LiveWidget, static

#: How much of a value and of its code lineage the preview shows.
PREVIEW_CHARS = 2000
CODE_CHARS = 4000
#: How many decided requests stay listed under the pending ones.
RECENT = 10


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + "\n... (truncated)"


def _lineage_rows(r: PendingRequest) -> dict[str, Any]:
    """The request's lineage arranged for review (target, leading, rest), clipped."""
    def entry(e: dict[str, Any] | None) -> dict[str, Any] | None:
        if e is None:
            return None
        return {"seq": e.get("seq"), "kind": str(e.get("kind", "")), "kernel":
                str(e.get("kernel", "")), "title": lineage.entry_title(e),
                "code": _clip(str(e.get("code") or ""), CODE_CHARS)}
    view = r.lineage_view()
    return {"target": entry(view["target"]), "leading": [entry(e) for e in view["leading"]],
            "rest": [entry(e) for e in view["rest"]]}


def _plan_row(p: dict[str, Any]) -> dict[str, Any]:
    """A plan as the widget shows it: code (clipped), inputs, policy in words, progress."""
    doc = p["document"]
    inputs = doc["inputs"]
    progress = f"runs {p['runs_used']}/{p['max_runs']}"
    if p["epsilon_total"] is not None:
        progress += f" · ε {p['epsilon_spent']:.2f} of {p['epsilon_total']:.2f}"
    return {"id": p["id"], "name": p["name"], "scientist": p["scientist"],
            "reason": p["reason"], "status": p["status"], "hash": p["hash"],
            "deny_reason": p["deny_reason"] or "", "code": _clip(doc["code"], CODE_CHARS),
            "entry": doc["entry"],
            "inputs": f"asset '{inputs['asset']}': columns {', '.join(inputs['columns'])}"
                      + (f"; target '{inputs['target']}'" if inputs.get("target") else ""),
            "policy_words": list(p["policy_words"]), "progress": progress}


class Approvals(LiveWidget):
    """Pending requests on a worker, for its data owner to review and decide.

    Each request shows who asked, their reason, the code that produced the value
    (its lineage), the value's type and size, and a text preview of the exact
    snapshot. Approve releases that snapshot; deny needs a reason the scientist
    will read. Everything the scientist wrote is shown as text, never as HTML.

    Parameters
    ----------
    owner : kb.Owner
        The owner's handle on the worker's state directory; decisions go through it.
    interval : float
        Seconds between refreshes.

    Examples
    --------
    >>> Approvals(kb.Owner("./state/alice"))   # doctest: +SKIP
    """

    _esm = static("approvals.js")
    _css = static("widgets.css")

    requests = traitlets.List(traitlets.Dict()).tag(sync=True)
    #: Plans: pending ones to decide, then the others with their progress.
    plans = traitlets.List(traitlets.Dict()).tag(sync=True)
    recent = traitlets.List(traitlets.Dict()).tag(sync=True)
    #: The outcome of the last action (shown under the list).
    message = traitlets.Unicode("").tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)

    def __init__(self, owner: Owner, *, interval: float = 1.0, start: bool = True) -> None:
        self.owner = owner
        # The poller reads through a connection of its own; decisions use the caller's.
        self._reader = Owner(owner.store.dir)
        self._lock = threading.Lock()
        self._version = 0
        self._previews: dict[int, tuple[str, str]] = {}
        super().__init__(interval=interval, title=f"Requests on {owner.store.dir.name}")
        self.on_msg(self._on_frontend_msg)
        self._refresh_from(self.owner)
        if start:
            self.start()

    # -- actions (the buttons call these through handle_action) ---------------------
    def approve(self, request_id: int) -> PendingRequest:
        """Approve request ``request_id``: its snapshot is released to the scientist."""
        row = self.owner.approve(int(request_id))
        self.message = (f"#{row.id} was already approved" if row.already_decided
                        else f"approved #{row.id} ({row.scientist})")
        self._refresh_from(self.owner)
        return row

    def deny(self, request_id: int, reason: str) -> PendingRequest:
        """Deny request ``request_id``; ``reason`` is shown to the scientist."""
        row = self.owner.deny(int(request_id), reason)
        self.message = (f"#{row.id} was already denied" if row.already_decided
                        else f"denied #{row.id} ({row.scientist})")
        self._refresh_from(self.owner)
        return row

    # plans
    def approve_plan(self, plan_id: int, plan_hash: str | None = None) -> dict[str, Any]:
        """Approve plan ``plan_id`` (at ``plan_hash``, the hash shown, when given)."""
        p = self.owner.approve_plan(int(plan_id), plan_hash)
        self.message = (f"plan #{p['id']} was already approved" if p["already_decided"]
                        else f"approved plan #{p['id']} ({p['scientist']})")
        self._refresh_from(self.owner)
        return p

    def deny_plan(self, plan_id: int, reason: str) -> dict[str, Any]:
        """Deny plan ``plan_id``; ``reason`` is shown to the scientist."""
        p = self.owner.deny_plan(int(plan_id), reason)
        self.message = (f"plan #{p['id']} was already denied" if p["already_decided"]
                        else f"denied plan #{p['id']} ({p['scientist']})")
        self._refresh_from(self.owner)
        return p

    def handle_action(self, content: dict[str, Any]) -> str:
        """Run one action sent by the front end; returns (and shows) its outcome.

        ``{"action": "approve", "id": 3}`` or ``{"action": "deny", "id": 3, "reason": "..."}``.
        Bad input and decided requests give a message, never an exception in the kernel.
        """
        action = content.get("action") if isinstance(content, dict) else None
        try:
            rid = int(content.get("id"))  # type: ignore[arg-type]
            if action == "approve":
                self.approve(rid)
            elif action == "deny":
                self.deny(rid, str(content.get("reason") or ""))
            elif action == "approve_plan":
                self.approve_plan(rid, str(content.get("hash") or "") or None)
            elif action == "deny_plan":
                self.deny_plan(rid, str(content.get("reason") or ""))
            elif action == "refresh":
                self._refresh_from(self.owner)
            else:
                self.message = f"unknown action {action!r}"
        except (ValueError, KeyError, TypeError, SyftError) as exc:
            self.message = f"#{content.get('id') if isinstance(content, dict) else '?'}: " \
                           f"{exc.args[0] if exc.args else type(exc).__name__}"
        return self.message

    def _on_frontend_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        self.handle_action(content if isinstance(content, dict) else {})

    # -- refreshing --------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the requests (the poller calls this)."""
        self._refresh_from(self._reader, poll=True)

    def _refresh_from(self, owner: Owner, poll: bool = False) -> None:
        with self._lock:
            version = self._version
            if not poll:
                self._version += 1
                version = self._version
        pending = owner.requests("pending")
        done = [r for r in owner.requests(None) if r.status != "pending"][-RECENT:][::-1]
        rows = [self._row(owner, r) for r in pending]
        plans = [_plan_row(p) for p in owner.plans(None)]
        plans = [p for p in plans if p["status"] == "pending"] + \
            [p for p in plans if p["status"] != "pending"][::-1][:RECENT]
        recent = [self._row(owner, r, preview=False) for r in done]
        with self._lock:
            if version != self._version:
                return  # an action published newer state while this poll was reading
            with self.hold_sync():
                if rows != self.requests:
                    self.requests = rows
                if recent != self.recent:
                    self.recent = recent
                if plans != self.plans:
                    self.plans = plans
                self.updated = time.time()

    def _row(self, owner: Owner, r: PendingRequest, preview: bool = True) -> dict[str, Any]:
        s = r.summary()
        row: dict[str, Any] = {k: s[k] for k in (
            "id", "scientist", "reason", "kind", "value_type", "size", "size_text", "status")}
        row.update(sha256=r.sha256[:16], deny_reason=r.deny_reason or "",
                   created=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created)))
        if preview:
            row["preview"], row["code"] = self._preview(owner, r)
            row["lineage"] = _lineage_rows(r)
        return row

    def _preview(self, owner: Owner, r: PendingRequest) -> tuple[str, str]:
        if r.id not in self._previews:  # a snapshot never changes: decode it once
            try:
                text = render_value(owner.value(r.id), max_chars=PREVIEW_CHARS)
            except (SyftError, OSError, KeyError) as exc:
                text = f"(preview unavailable: {exc})"
            self._previews[r.id] = (text, _clip(r.code(), CODE_CHARS))
        return self._previews[r.id]

    def close(self) -> None:
        super().close()
        self._reader.close()

    def text(self) -> str:
        head = f"Approvals for {self.owner.store.dir} ({len(self.requests)} pending" \
               f"{', live' if self.live else ''})"
        lines = [head]
        for r in self.requests:
            lines.append(f"  #{r['id']} {r['scientist']}: {r['reason']!r} - {r['value_type']}, "
                         f"{r['size_text']}, {r['created']}")
        for r in self.recent[:3]:
            why = f" ({r['deny_reason']})" if r["deny_reason"] else ""
            lines.append(f"  #{r['id']} {r['scientist']}: {r['status']}{why}")
        for p in self.plans:
            lines.append(f"  plan #{p['id']} {p['name']!r} by {p['scientist']}: {p['status']}, "
                         f"{p['progress']}")
            if p["status"] == "pending":
                lines.extend(f"    - {w}" for w in p["policy_words"])
        if self.message:
            lines.append(f"  last action: {self.message}")
        return "\n".join(lines)
