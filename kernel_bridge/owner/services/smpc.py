"""The worker's SMPC service: a computing party's shares and protocol runs, or the dealer.

A party holds its shares in this (trusted) worker process, per session, in
memory only: never in a kernel that runs scientist code, never on disk; a
restart forgets them. Protocol programs (:mod:`kernel_bridge.smpc`) run here,
step by step off the event loop, exchanging their :class:`~kernel_bridge.smpc.engine.Open`
contributions with the other parties (:mod:`..smpc_runner`) over direct, end-to-end
encrypted links (:mod:`..smpc_net`). A dealer worker (``[smpc] dealer = true``) holds no
assets; it makes material from public recipes with the CSPRNG and sends each
party its part, sealed to that party's key.

What the scientist gets from these ops: ids, shapes, taints (owner names and
asset names), timings, and shares only of values derived from clean inputs or
through a reveal every involved owner approved.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...errors import (
    ApprovalRequired,
    PartyUnavailable,
    PermissionDenied,
    ProtocolError,
    RequestDenied,
    RequestPending,
    SMPCError,
    SyftError,
    UntrustedParty,
)
from ...smpc import channel, keys
from ...wire import codec
from ...wire.protocol import Action, Op
from ..context import WorkerContext
from ..session import Session
from ..smpc_net import PeerNet
from ..smpc_runner import INLINE_ELEMENTS, drive, torch_threads
from ..smpc_values import (
    MAX_MAGNITUDE,
    Group,
    Shared,
    aligned_doc,
    as_float_tensor,
    compact,
    doc_frame,
    merge_taint,
    parse_recipes,
    recipe_doc,
    taint_text,
)
from .base import Handler, Service
from .objects import kernels_of

if TYPE_CHECKING:
    import torch

# torch and the protocol code (which needs it) are imported by the handlers that use
# them, on the first SMPC op: torch costs a worker ~1.5 s at start and ~180 MB, which
# a worker that never computes under SMPC should not pay.

MAX_PARTIES = 8


class SMPCService(Service):
    """SMPC ops: share, run protocol steps, deal material, reveal, free."""

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        cfg = ctx.config
        self.settings = cfg.smpc
        self.identity = keys.load_or_create(cfg.state, cfg.name)
        self.trust = keys.TrustStore(cfg.state, self.settings.pins())
        self.net = PeerNet(self.identity, self.trust, cfg.host,
                           lambda event, detail: ctx.store.audit("smpc", event, detail))
        self.net.handlers["status?"] = self._answer_status
        self.values: dict[tuple[str, str], Shared] = {}
        self.groups: dict[str, Group] = {}

    def ops(self) -> Mapping[Op, Handler]:
        handlers = {Op.SMPC_SHARE: self.op_smpc_share, Op.SMPC_ACCEPT: self.op_smpc_accept,
                    Op.SMPC_PUT: self.op_smpc_put, Op.SMPC_DEAL: self.op_smpc_deal,
                    Op.SMPC_RUN: self.op_smpc_run}
        return {Op.SMPC_INFO: self.op_smpc_info, Op.SMPC_ABORT: self.op_smpc_abort,
                Op.SMPC_REVEAL: self.op_smpc_reveal, Op.SMPC_REQUEST: self.op_smpc_request,
                Op.SMPC_RESULT: self.op_smpc_result, Op.SMPC_FREE: self.op_smpc_free,
                **{op: self._computing(h) for op, h in handlers.items()}}

    def _computing(self, handler: Handler) -> Handler:
        """``handler``, run with this worker's torch on ``threads`` threads (its setting)."""
        async def run(session: Session, msg: dict[str, Any]) -> dict[str, Any]:
            torch_threads(self.ctx.config.threads)
            return await handler(session, msg)
        return run

    def kernels(self, op: Op, session: Session, msg: dict[str, Any]) -> set[str]:
        return kernels_of(session, [msg.get("pointer")]) if op == Op.SMPC_SHARE else set()

    # -- helpers ----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.ctx.config.name

    @property
    def timeout(self) -> float:
        return self.settings.timeout

    def _parties(self, msg: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, str]]:
        """The computation's parties, in order, and the others' SMPC URLs."""
        raw = msg.get("parties")
        if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_PARTIES:
            raise ProtocolError(f"'parties' lists 2 to {MAX_PARTIES} computing parties")
        names, urls = [], {}
        for p in raw:
            if not (isinstance(p, dict) and isinstance(p.get("name"), str)
                    and isinstance(p.get("url"), str) and p["url"].startswith("ws")):
                raise ProtocolError("each party is {name, url}")
            names.append(p["name"][:64])
            urls[p["name"][:64]] = p["url"][:300]
        if len(set(names)) != len(names):
            raise ProtocolError("the parties must be distinct workers")
        if self.name not in names and not self.settings.dealer:
            raise ProtocolError(f"this worker ({self.name}) is not one of the parties")
        urls.pop(self.name, None)
        return tuple(names), urls

    def _own_url(self, msg: dict[str, Any]) -> str | None:
        """This worker's SMPC URL as the scientist reached it (peers answer questions there)."""
        for p in msg.get("parties") or []:
            if isinstance(p, dict) and p.get("name") == self.name:
                return str(p.get("url"))[:300]
        return None

    def _cid(self, msg: dict[str, Any], key: str = "cid") -> str:
        cid = msg.get(key)
        if not (isinstance(cid, str) and 16 <= len(cid) <= 80 and cid.isascii()):
            raise ProtocolError(f"'{key}' is an id of 16 to 80 characters")
        return cid

    def _get(self, session: Session, sid: Any) -> Shared:
        v = self.values.get((session.id, sid)) if isinstance(sid, str) else None
        if v is None:
            raise PermissionDenied("no such shared value in this session (freed, or this "
                                   "worker restarted: shares are never persisted)",
                                   sid=str(sid)[:80])
        return v

    def _put(self, session: Session, sid: str, value: Shared) -> None:
        if self.settings.dealer:
            raise PermissionDenied("a dealer holds no shares")
        if (session.id, sid) in self.values:
            raise ProtocolError("this shared value id is taken")
        self.values[(session.id, sid)] = value

    def _check_peer(self, name: str, role: keys.Role) -> None:
        if name not in self.trust.entries()[role]:
            raise UntrustedParty(f"{name!r} is not a {role} this worker's owner trusts",
                                 party=name, role=role)

    async def _recv_doc(self, sender: str, cid: str, kind: str) -> Any:
        frame = doc_frame(await self.net.recv(sender, cid, kind, self.timeout))
        if frame.nbytes > 1 << 20:
            return await asyncio.to_thread(codec.loads, frame)
        return codec.loads(frame)

    async def _send_doc(self, peer: str, url: str, cid: str, kind: str, doc: Any) -> None:
        await self.net.send(peer, url, cid, kind, await asyncio.to_thread(aligned_doc, doc))

    # -- ops --------------------------------------------------------------------
    async def op_smpc_info(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """This worker's SMPC port, identity key and its fingerprint, and role (all public)."""
        port = await self.net.start()
        torch = sys.modules.get("torch")  # not imported before the first computation
        return {"smpc": {"name": self.name, "port": port, "public": self.identity.public.hex(),
                         "fingerprint": self.identity.fingerprint,
                         "role": "dealer" if self.settings.dealer else "party",
                         "threads": torch.get_num_threads() if torch else None}}

    async def op_smpc_share(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Secret-share the value of one of the session's pointers among ``parties``.

        Takes ``pointer``, ``cid``, ``sid`` and ``parties``. The value is read
        from the kernel by this trusted code, encoded in fixed point and split
        with the CSPRNG; each other party gets its share sealed to it. Releases
        the shape and the taint (owner and asset names), nothing of the value.
        """
        import torch

        from ...smpc import core_api

        parties, urls = self._parties(msg)
        cid, sid = self._cid(msg), self._cid(msg, "sid")
        obj = session.get(msg.get("pointer"))
        if obj.is_output:
            raise PermissionDenied("held cell outputs cannot be shared; share a pointer")
        host = session.host(obj.kernel)
        async with host.lock:
            reply, bufs = await self.ctx.agent(session, obj.kernel,
                                               {"action": Action.GET, "id": obj.id})
            pieces, _ = self.ctx.value_frame(session, obj.kernel, reply, bufs, copy=True)
        taint_set = session.taint_of(obj)
        taint = {self.name: sorted(taint_set)} if taint_set else {}

        def split() -> list[torch.Tensor]:
            x = as_float_tensor(codec.loads(pieces[0]))
            if not bool(torch.isfinite(x).all()) or \
                    (x.numel() and float(x.abs().max()) >= MAX_MAGNITUDE):
                raise SMPCError("the value is outside the fixed-point range (finite, "
                                f"|x| < 2^{62 - core_api.FRAC_BITS})")
            return list(core_api.share(core_api.encode(x), len(parties)))

        shares = await asyncio.to_thread(split)
        me = parties.index(self.name)
        try:
            await asyncio.gather(*(
                self._send_doc(p, urls[p], cid, f"input:{sid}",
                               {"share": shares[i], "taint": taint})
                for i, p in enumerate(parties) if p != self.name))
        except SyftError as exc:
            await self.net.abort(cid, urls, exc)
            raise
        value = Shared(shares[me], parties, taint, [f"{sid} = share({obj.id})"])
        self._put(session, sid, value)
        session.record("smpc", f"{sid} = share({obj.id}) with {', '.join(parties)}",
                       obj.kernel, obj.id)
        return {"shape": value.shape, "taint": taint}

    async def op_smpc_accept(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Receive this party's share of a value ``source`` shares (``smpc_share``).

        Takes ``cid``, ``sid``, ``source`` and ``parties``. Releases the shape and taint.
        """
        import torch

        parties, urls = self._parties(msg)
        cid, sid = self._cid(msg), self._cid(msg, "sid")
        source = msg.get("source")
        if source not in urls:
            raise ProtocolError("'source' is one of the other parties")
        self._check_peer(source, "peer")
        doc = await self._recv_doc(source, cid, f"input:{sid}")
        share, taint = doc.get("share"), doc.get("taint")
        if not isinstance(share, torch.Tensor) or share.dtype != torch.int64 or \
                not isinstance(taint, dict):
            raise ProtocolError(f"{source} sent a malformed share")
        value = Shared(share, parties, {str(k): [str(a) for a in v] for k, v in taint.items()},
                       [f"{sid} = share from {source}"])
        self._put(session, sid, value)
        return {"shape": value.shape, "taint": value.taint}

    async def op_smpc_put(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Store a share of a clean value the scientist split (``kb.smpc.share``).

        Takes ``sid``, ``share`` (an int64 tensor) and ``parties``; the value is
        clean (it is the scientist's own). Releases its shape.
        """
        import torch

        parties, _ = self._parties(msg)
        sid = self._cid(msg, "sid")
        share = msg.get("share")  # messages decode tensors as WireTensor (numpy)
        if not isinstance(share, codec.WireTensor) or share.dtype != "int64":
            raise ProtocolError("a share is an int64 tensor")
        value = Shared(torch.from_numpy(share.array.copy()), parties, {},
                       [f"{sid} = input from the scientist"])
        self._put(session, sid, value)
        return {"shape": value.shape, "taint": {}}

    async def op_smpc_deal(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """(Dealer) make the material of public ``recipes`` and send each party its part.

        Takes ``cid``, ``recipes`` (kind, shapes, params: public) and ``parties``.
        Each part is sealed to its party's pinned key. Releases the offline time.
        """
        from ...smpc import core_api

        if not self.settings.dealer:
            raise PermissionDenied("this worker is not a dealer (syftlab worker NAME --dealer)")
        parties, urls = self._parties(msg)
        cid = self._cid(msg)
        for p in parties:
            self._check_peer(p, "peer")
        recipes = parse_recipes(msg.get("recipes"))
        t0 = time.perf_counter()

        def make() -> list[list[dict[str, torch.Tensor]]]:
            return [core_api.make(r, len(parties)) for r in recipes]

        made = await asyncio.to_thread(make)
        docs = [recipe_doc(r) for r in recipes]
        await asyncio.gather(*(
            self._send_doc(p, urls[p], cid, "material",
                           {"recipes": docs, "material": [m[i] for m in made]})
            for i, p in enumerate(parties)))
        self.ctx.store.audit(session.scientist, "smpc_deal",
                             {"cid": cid, "recipes": [r["kind"] for r in docs],
                              "parties": list(parties)})
        return {"offline_s": time.perf_counter() - t0}

    async def op_smpc_run(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Run this party's program of one protocol op on shared inputs.

        Takes ``cid``, ``protocol`` (a name in the OPS registry), ``inputs`` (sids),
        ``params`` (public), ``out`` (the result's sid), ``parties`` and
        ``dealer`` (name, when the op needs material). Masked values are opened
        with the other parties only. Every wait has a timeout; a failure
        cancels the computation on the other parties. Releases the result's
        shape and taint, the online time (from the inputs and the material at
        hand to the output share) and the time spent waiting for the dealer's
        material (``material_s``: the tail of the preprocessing, when the op
        starts before the material has all arrived).
        """
        import torch

        from ...smpc import core_api

        parties, urls = self._parties(msg)
        cid, out = self._cid(msg), self._cid(msg, "out")
        spec = core_api.OPS.get(msg.get("protocol"))  # type: ignore[arg-type]
        if spec is None:
            raise ProtocolError(f"unknown SMPC op {str(msg.get('protocol'))[:40]!r}")
        sids = msg.get("inputs")
        if not isinstance(sids, list) or not 1 <= len(sids) <= 16:
            raise ProtocolError("'inputs' lists 1 to 16 shared values")
        inputs = [self._get(session, s) for s in sids]
        if any(v.parties != parties for v in inputs):
            raise ProtocolError("every input must be shared among the same parties, in order")
        params = msg.get("params") or {}
        if not isinstance(params, dict):
            raise ProtocolError("'params' is a map")
        t0 = time.perf_counter()
        material_s = 0.0  # waiting for the dealer's material: preprocessing, not online
        try:
            shapes = tuple(tuple(v.shape) for v in inputs)
            recipes = list(spec.recipes(shapes, params, len(parties)))
            material: list[Any] = []
            if recipes:
                dealer = msg.get("dealer")
                if not isinstance(dealer, str):
                    raise ProtocolError("this op needs a dealer")
                self._check_peer(dealer, "dealer")
                t_material = time.perf_counter()
                doc = await self._recv_doc(dealer, cid, "material")
                material_s = time.perf_counter() - t_material
                if "dealer" not in self.net.roles(dealer):
                    raise UntrustedParty(f"{dealer!r} is not a trusted dealer", party=dealer)
                expect = codec.loads(codec.dumps([recipe_doc(r) for r in recipes]))
                if doc.get("recipes") != expect:
                    raise SMPCError("the dealer's material was made for other shapes")
                material = list(doc["material"])
            me = parties.index(self.name)
            out_numel = math.prod(spec.out_shape(shapes, params))
            small = sum(v.share.numel() for v in inputs) + out_numel <= INLINE_ELEMENTS
            shares = tuple(v.share for v in inputs)
            result = await drive(spec.program(me, len(parties), shares, material, params),
                                 self.net, cid, urls, self.timeout, inline=small)
        except SyftError as exc:
            await self.net.abort(cid, urls, exc)
            raise
        except Exception as exc:
            await self.net.abort(cid, urls, SMPCError("a party failed"))
            raise SMPCError(f"the protocol failed on {self.name} ({type(exc).__name__})") \
                from exc
        finally:
            self.net.forget(cid)
        if isinstance(result, tuple | list):
            result = result[0]
        if not isinstance(result, torch.Tensor):
            raise SMPCError("the protocol returned no share")
        value = Shared(compact(result), parties, merge_taint(inputs),
                       [f"{out} = {msg.get('protocol')}({', '.join(map(str, sids))})"])
        self._put(session, out, value)
        return {"shape": value.shape, "taint": value.taint,
                "online_s": time.perf_counter() - t0 - material_s, "material_s": material_s}

    async def op_smpc_abort(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Cancel a computation here and on the other parties (the scientist saw one fail)."""
        parties, urls = self._parties(msg)
        cid = self._cid(msg)
        await self.net.abort(cid, urls, PartyUnavailable(
            "the computation was cancelled (another party failed)", party=""))
        return {}

    async def op_smpc_reveal(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """This party's share of a value derived only from clean inputs.

        Raises :class:`ApprovalRequired` for anything derived from an owner's
        data: that goes through ``smpc_request`` / ``smpc_result``.
        """
        v = self._get(session, msg.get("sid"))
        if v.taint:
            raise ApprovalRequired(
                f"this shared value derives from {taint_text(v.taint)}; it is revealed only "
                "when every owner involved approves: .request(reason=...)",
                owners=sorted(v.taint))
        return {"share": v.share}

    async def op_smpc_request(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Ask this worker's owner to approve a reveal (one group across all parties).

        Takes ``sid``, ``group`` (the id common to every party's request),
        ``reason`` and ``parties``. Where this worker's owner has data in the
        value, a request is filed for the owner (approval panel, ``syftlab
        requests``); returns it (or None where the owner is not involved).
        """
        v = self._get(session, msg.get("sid"))
        parties, urls = self._parties(msg)
        group = self._cid(msg, "group")
        reason = msg.get("reason") or ""
        if not isinstance(reason, str) or len(reason) > 4000:
            raise ProtocolError("a reason is a string of at most 4000 characters")
        if group in self.groups:
            raise ProtocolError("this group id is taken")
        row = None
        if self.name in v.taint:
            text = (f"[SMPC reveal {group}: shared among {', '.join(parties)}; derives from "
                    f"{taint_text(v.taint)}; every owner named must approve] {reason}")
            lineage = [{"seq": i + 1, "kind": "smpc", "kernel": "smpc", "code": h,
                        "object": msg.get("sid"), "time": time.time(), "target": False}
                       for i, h in enumerate(v.history)]
            row = self.ctx.store.add_request(
                scientist=session.scientist, session_id=session.id, object_id=str(msg["sid"]),
                kind="smpc", value_type="SharedTensor share", reason=text,
                frame=codec.dumps(v.share), lineage=lineage)
        self.groups[group] = Group(str(msg["sid"]), session.id, row.id if row else None, urls,
                                   self._own_url(msg))
        return {"request": row.public() if row else None}

    def _status(self, g: Group) -> str:
        if g.request is None:
            return "approved"  # this owner has no data in the value
        row = self.ctx.store.request(g.request)
        return row.status if row is not None else "denied"

    async def _answer_status(self, sender: str, m: channel.Message) -> None:
        """A peer asks whether this worker's owner approved reveal group ``m.cid``."""
        g = self.groups.get(m.cid)
        try:
            doc = codec.loads(doc_frame(m.payload), limit=4096)
        except SyftError:
            doc = {}
        status = "unknown"
        if g is not None and isinstance(doc, dict) and doc.get("sid") == g.sid and \
                sender in g.urls:
            status = self._status(g)
        url = g.urls.get(sender) if g is not None else None
        if url is None and isinstance(doc, dict) and isinstance(doc.get("reply_to"), str) and \
                doc["reply_to"].startswith("ws"):
            url = doc["reply_to"][:300]  # an authenticated peer; the answer is sealed to it
        if url is not None:
            await self._send_doc(sender, url, m.cid, "status=", {"status": status})

    async def op_smpc_result(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """This party's share of an approved reveal.

        Takes ``group``. Released only when this worker's owner approved (if
        involved) *and* every other involved party confirms, over the encrypted
        links, that its owner approved the same group; committed to the audit
        log before it leaves.
        """
        group = self._cid(msg, "group")
        g = self.groups.get(group)
        if g is None or g.session != session.id:
            raise PermissionDenied("no such reveal request in this session")
        v = self._get(session, g.sid)
        own = self._status(g)
        if own == "denied":
            raise RequestDenied(f"the owner of {self.name} denied the reveal", request=g.request)
        if own != "approved":
            raise RequestPending(f"the owner of {self.name} has not decided yet",
                                 request=g.request)
        others = [p for p in v.taint if p != self.name]
        for p in others:
            if p not in g.urls:
                raise SMPCError(f"{p} has data in this value but is not a party")

        async def ask(p: str) -> str:
            await self._send_doc(p, g.urls[p], group, "status?",
                                 {"sid": g.sid, "reply_to": g.own_url})
            doc = await self._recv_doc(p, group, "status=")
            return str(doc.get("status")) if isinstance(doc, dict) else "unknown"

        statuses = await asyncio.gather(*(ask(p) for p in others))
        for p, s in zip(others, statuses, strict=True):
            if s == "denied":
                raise RequestDenied(f"the owner of {p} denied the reveal", party=p)
            if s != "approved":
                raise RequestPending(f"the owner of {p} has not approved yet", party=p)
        if g.request is not None:
            row = self.ctx.store.request(g.request)
            assert row is not None
            self.ctx.store.record_release(row)  # committed before the share leaves
        else:
            self.ctx.store.audit(session.scientist, "smpc_release",
                                 {"group": group, "sid": g.sid})
        return {"share": v.share}

    async def op_smpc_free(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Forget shared values of this session (``sids``)."""
        sids = msg.get("sids") or []
        if not isinstance(sids, list):
            raise ProtocolError("'sids' is a list")
        for s in sids[:10000]:
            if isinstance(s, str):
                self.values.pop((session.id, s), None)
        return {}
