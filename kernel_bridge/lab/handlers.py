"""HTTP handlers under ``/syftlab/``: authenticated JSON, nothing else.

Every handler is a :class:`jupyter_server.base.handlers.APIHandler` behind
``@tornado.web.authenticated``, so a call without the server's token (or
login cookie) is refused. Bad input gets a 4xx with a JSON ``message``.
Blocking work runs in the side's thread pool, never on tornado's loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from ..errors import SyftError
from ..scientist.connections import ConnectionsError
from .owner_side import OwnerSide
from .scientist_side import ScientistSide

T = TypeVar("T")
Side = OwnerSide | ScientistSide


class SyftlabHandler(APIHandler):
    """Base: the configured side, JSON replies, blocking calls off the loop."""

    @property
    def side(self) -> Side:
        return self.settings["syftlab_side"]  # type: ignore[no-any-return]

    def need(self, kind: type[T]) -> T:
        if not isinstance(self.side, kind):
            other = "owner" if kind is OwnerSide else "scientist"
            raise tornado.web.HTTPError(
                404, f"this JupyterLab serves the {self.side.side} side, not the {other}'s")
        return self.side

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self.side.pool, fn, *args)
        except KeyError as exc:
            raise tornado.web.HTTPError(404, str(exc.args[0] if exc.args else exc)) \
                from None
        except (ValueError, ConnectionsError, SyftError) as exc:
            raise tornado.web.HTTPError(400, f"{type(exc).__name__}: {exc}") from None

    def reply(self, payload: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload, default=str))

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise tornado.web.HTTPError(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400, "the body must be a JSON object")
        return body

    @staticmethod
    def request_id(raw: str) -> int:
        try:
            return int(raw)
        except ValueError:
            raise tornado.web.HTTPError(400, f"bad request id {raw[:40]!r}") from None


class InfoHandler(SyftlabHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        info: dict[str, Any] = {"side": self.side.side}
        if isinstance(self.side, OwnerSide):
            info["state"] = self.side.state
        self.reply(info)


class WorkersHandler(SyftlabHandler):
    """GET: the scientist's workers with datasets, requests and budget."""

    @tornado.web.authenticated
    async def get(self) -> None:
        side = self.need(ScientistSide)
        # The listing fans out over side.pool; wait for it on the loop's default pool.
        loop = asyncio.get_running_loop()
        try:
            workers = await loop.run_in_executor(None, side.workers)
        except ConnectionsError as exc:
            raise tornado.web.HTTPError(400, str(exc)) from None
        self.reply({"workers": workers})


class BudgetHandler(SyftlabHandler):
    """GET ``?workers=alice,bob``: remaining ε per worker and asset (scientist side)."""

    @tornado.web.authenticated
    async def get(self) -> None:
        side = self.need(ScientistSide)
        raw = self.get_query_argument("workers", "")
        names = [n for n in raw.split(",") if n] if raw else None
        loop = asyncio.get_running_loop()
        try:
            budget = await loop.run_in_executor(None, side.budget, names)
            urls = await loop.run_in_executor(None, side.urls)
        except ConnectionsError as exc:
            raise tornado.web.HTTPError(400, str(exc)) from None
        self.reply({"budget": budget, "urls": {k: v for k, v in urls.items() if k in budget}})


class RequestsHandler(SyftlabHandler):
    """GET ``?status=pending|history|all``: the owner's requests."""

    @tornado.web.authenticated
    async def get(self) -> None:
        side = self.need(OwnerSide)
        which = self.get_query_argument("status", "pending")
        self.reply({"requests": await self.blocking(side.requests, which)})


class RequestHandler(SyftlabHandler):
    """GET one request with lineage, code and a preview of the snapshot."""

    @tornado.web.authenticated
    async def get(self, raw_id: str) -> None:
        side = self.need(OwnerSide)
        self.reply({"request": await self.blocking(side.request, self.request_id(raw_id))})


class DecisionHandler(SyftlabHandler):
    """POST ``approve`` or ``deny`` (body ``{"reason": "..."}``, required for a denial)."""

    @tornado.web.authenticated
    async def post(self, raw_id: str, action: str) -> None:
        side = self.need(OwnerSide)
        rid = self.request_id(raw_id)
        body = self.json_body()
        if action == "approve":
            row = await self.blocking(side.approve, rid)
        else:
            reason = body.get("reason")
            if not isinstance(reason, str) or not reason.strip():
                raise tornado.web.HTTPError(400, "a denial needs a reason")
            row = await self.blocking(side.deny, rid, reason.strip())
        self.reply({"request": row})


class LedgerHandler(SyftlabHandler):
    """GET: the privacy-budget ledger per scientist and asset (owner side)."""

    @tornado.web.authenticated
    async def get(self) -> None:
        side = self.need(OwnerSide)
        rows = await self.blocking(side.ledger)
        self.reply({"ledger": rows, "available": True})


# plans
class PlansHandler(SyftlabHandler):
    """GET ``?status=pending|all``: the owner's plans, with their policy in words."""

    @tornado.web.authenticated
    async def get(self) -> None:
        side = self.need(OwnerSide)
        which = self.get_query_argument("status", "pending")
        self.reply({"plans": await self.blocking(side.plans, which)})


class PlanHandler(SyftlabHandler):
    """GET one plan: code, inputs, policy (and in words), progress, runs."""

    @tornado.web.authenticated
    async def get(self, raw_id: str) -> None:
        side = self.need(OwnerSide)
        self.reply({"plan": await self.blocking(side.plan, self.request_id(raw_id))})


class PlanDecisionHandler(SyftlabHandler):
    """POST ``approve`` (body ``{"hash": "<the hash reviewed>"}``, required), ``deny`` or
    ``revoke`` (an approved plan; body ``{"reason": "..."}``, required for both)."""

    @tornado.web.authenticated
    async def post(self, raw_id: str, action: str) -> None:
        side = self.need(OwnerSide)
        pid = self.request_id(raw_id)
        body = self.json_body()
        if action == "approve":
            digest = body.get("hash")
            if not isinstance(digest, str) or len(digest) != 64:
                raise tornado.web.HTTPError(400, "approving a plan needs the hash you reviewed")
            row = await self.blocking(side.approve_plan, pid, digest)
        else:
            reason = body.get("reason")
            if not isinstance(reason, str) or not reason.strip():
                what = "denial" if action == "deny" else "revocation"
                raise tornado.web.HTTPError(400, f"a {what} needs a reason")
            decide = side.deny_plan if action == "deny" else side.revoke_plan
            row = await self.blocking(decide, pid, reason.strip())
        self.reply({"plan": row})


def handlers(base_url: str) -> list[tuple[str, type[SyftlabHandler]]]:
    def u(path: str) -> str:
        return url_path_join(base_url, "syftlab", path)

    return [
        (u("info"), InfoHandler),
        (u("workers"), WorkersHandler),
        (u("budget"), BudgetHandler),
        (u("requests"), RequestsHandler),
        (u(r"requests/([^/]+)"), RequestHandler),
        (u(r"requests/([^/]+)/(approve|deny)"), DecisionHandler),
        (u("ledger"), LedgerHandler),
        # plans
        (u("plans"), PlansHandler),
        (u(r"plans/([^/]+)"), PlanHandler),
        (u(r"plans/([^/]+)/(approve|deny|revoke)"), PlanDecisionHandler),
    ]
