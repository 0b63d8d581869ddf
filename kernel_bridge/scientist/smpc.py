"""The scientist's side of SMPC: :class:`SharedTensor`, ``x.share(...)`` and ``kb.smpc.share``.

A :class:`SharedTensor` names a value secret-shared among computing parties
(workers): the scientist's client holds its id, shape and taint, never a share.
Each operator asks every party to run its part of the protocol (and the dealer
to send the material first); the parties exchange masked values with each
other directly. Fixed-point encoding (``FRAC_BITS`` fractional bits) is done
for you: you give and get floats.

::

    xs = x.share(alice, bob, dealer=dave)       # x: a numeric pointer on alice
    ys = y.share(alice, bob, dealer=dave)
    mean = (xs + ys) / 600
    mean.reveal()                                # ApprovalRequired: alice and bob decide
    req = mean.request(reason="pooled mean"); req.wait(); req.result()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Coroutine, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import (
    ApprovalRequired,
    ConnectionLost,
    PartyUnavailable,
    ProtocolError,
    RequestDenied,
    RequestPending,
    SMPCError,
    SyftError,
)
from ..smpc import core_api
from ..smpc.channel import new_id
from ..wire.protocol import Op
from .request import Request

__all__ = ["SharedRequest", "SharedTensor", "share"]

#: Seconds the client waits for one party's answer to one op (parties time out sooner).
REPLY_TIMEOUT = 300.0

_infos: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _core(worker: Any) -> Any:
    core = getattr(worker, "core", None)
    if core is None:
        raise TypeError(f"expected a Worker, got {type(worker).__name__}")
    return core


async def _info(core: Any) -> dict[str, Any]:
    """A worker's SMPC name, port and URL (cached per connection)."""
    info = _infos.get(core)
    if info is None:
        reply = (await core.call(Op.SMPC_INFO))["smpc"]
        host = core.conn.url.split("://", 1)[1].rsplit(":", 1)[0]
        info = {**reply, "url": f"ws://{host}:{reply['port']}"}
        _infos[core] = info
    return info


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _call(core: Any, op: Op, /, **fields: Any) -> dict[str, Any]:
    try:
        reply: dict[str, Any] = await core.call_once(op, reply_timeout=REPLY_TIMEOUT, **fields)
        return reply
    except ConnectionLost as exc:
        raise PartyUnavailable(f"lost the connection to {core.name} mid-protocol",
                               party=core.name) from exc
    except TimeoutError:
        raise PartyUnavailable(f"{core.name} did not answer in {REPLY_TIMEOUT:g} s",
                               party=core.name) from None


class _Parties:
    """The computing parties (and dealer) of shared values: handles and public info."""

    def __init__(self, workers: Sequence[Any], dealer: Any | None) -> None:
        self.cores = [_core(w) for w in workers]
        self.dealer = _core(dealer) if dealer is not None else None
        if len(self.cores) < 2:
            raise ValueError("SMPC needs at least two computing parties")
        if len({id(c) for c in self.cores}) != len(self.cores):
            raise ValueError("the parties must be distinct workers")
        if self.dealer is not None and any(c is self.dealer for c in self.cores):
            raise ValueError("the dealer must not be one of the computing parties")
        self.infos: list[dict[str, Any]] = []
        self.dealer_info: dict[str, Any] | None = None

    async def resolve(self) -> _Parties:
        if not self.infos:
            self.infos = list(await asyncio.gather(*(_info(c) for c in self.cores)))
            if self.dealer is not None:
                self.dealer_info = await _info(self.dealer)
                if self.dealer_info.get("role") != "dealer":
                    raise SMPCError(f"{self.dealer.name} is not a dealer "
                                    "(start it with --dealer / kb.launch(..., dealer=True))")
        return self

    @property
    def names(self) -> list[str]:
        return [i["name"] for i in self.infos]

    @property
    def wire(self) -> list[dict[str, str]]:
        return [{"name": i["name"], "url": i["url"]} for i in self.infos]

    def same(self, other: _Parties) -> bool:
        return [id(c) for c in self.cores] == [id(c) for c in other.cores]

    async def run_all(self, calls: list[Coroutine[Any, Any, dict[str, Any]]],
                      cid: str | None) -> list[dict[str, Any]]:
        """Run calls concurrently; on the first failure cancel the rest (and the computation)."""
        tasks = [asyncio.ensure_future(c) for c in calls]
        for t in tasks:
            # A call cancelled after the first failure may still end with its own error
            # (its reply had arrived): retrieved here, not logged as never retrieved.
            t.add_done_callback(_retrieve)
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if t.exception() is not None]
            if not failed:
                return [t.result() for t in tasks]
            for t in pending:
                t.cancel()
            if cid is not None:
                await self._abort(cid)
            errors = [t.exception() for t in failed]
            # The most telling error first: a party's own report over a lost connection.
            errors.sort(key=lambda e: isinstance(e, PartyUnavailable) and
                        isinstance(e.__cause__, ConnectionLost))
            raise errors[0]  # type: ignore[misc]
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()

    async def _abort(self, cid: str) -> None:
        async def one(core: Any) -> None:
            with contextlib.suppress(Exception):
                await core.call_once(Op.SMPC_ABORT, reply_timeout=2.0, cid=cid,
                                     parties=self.wire)
        await asyncio.gather(*(one(c) for c in self.cores))


def _taint_text(taint: dict[str, list[str]]) -> str:
    return "{" + ", ".join(f"{o}:{a}" for o, assets in sorted(taint.items())
                           for a in assets) + "}"


def _public(value: Any) -> Any:
    """A public operand as the protocol takes it (a float or a list of floats)."""
    if isinstance(value, bool | int | float | np.integer | np.floating):
        return float(value)
    t = torch.as_tensor(value, dtype=torch.float64)
    return t.tolist()


class SharedTensor:
    """A value secret-shared among workers; operators run the protocols among them.

    Attributes
    ----------
    shape : tuple of int
        The value's shape (public to every party and to you).
    taint : dict of str to list of str
        Per owner (worker name), the assets the value derives from; empty when
        it derives only from your own values (then :meth:`reveal` is free).
    """

    def __init__(self, parties: _Parties, sid: str, shape: Sequence[int],
                 taint: dict[str, list[str]]) -> None:
        self._parties, self.sid = parties, sid
        self.shape = tuple(int(s) for s in shape)
        self.taint = {k: list(v) for k, v in taint.items()}
        #: Timings of the op that made this value: ``offline_s`` (dealer), ``online_s``
        #: (this client's round trip), ``party_online_s`` (the slowest party's own time
        #: with its material at hand) and ``material_s`` (the longest a party still waited
        #: for the dealer's material).
        self.timings: dict[str, float] = {}

    def __repr__(self) -> str:
        taint = _taint_text(self.taint) if self.taint else "clean"
        shape = "()" if not self.shape else str(self.shape)
        return (f"<SharedTensor on {', '.join(self._parties.names)}: shape {shape}, "
                f"taint {taint}>")

    @property
    def parties(self) -> list[str]:
        """The computing parties' names, in share order."""
        return self._parties.names

    def _blocking(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self._parties.cores[0].blocking(coro)

    # -- running ops ------------------------------------------------------------------
    async def _arun(self, op: str, others: Sequence[SharedTensor] = (),
                    params: dict[str, Any] | None = None, sequential: bool = False
                    ) -> SharedTensor:
        inputs = [self, *others]
        p = self._parties
        for o in others:
            if not o._parties.same(p):
                raise ValueError("shared values of different parties cannot be combined")
        spec = core_api.OPS.get(op)
        if spec is None:
            raise SMPCError(f"no SMPC op {op!r}")
        params = dict(params or {})
        shapes = tuple(tuple(v.shape) for v in inputs)
        recipes = list(spec.recipes(shapes, params, len(p.cores)))
        if recipes and p.dealer is None:
            raise SMPCError("this op needs a dealer: share with dealer=<a dealer worker>")
        cid, out = new_id("c"), new_id("v")
        runs = [_call(c, Op.SMPC_RUN, cid=cid, protocol=op, inputs=[v.sid for v in inputs],
                      params=params, out=out, parties=p.wire,
                      dealer=p.dealer_info["name"] if p.dealer_info else None)
                for c in p.cores]
        timings: dict[str, float] = {}
        if recipes:
            assert p.dealer is not None
            deal = _call(p.dealer, Op.SMPC_DEAL, cid=cid, parties=p.wire, recipes=[
                {"kind": r.kind, "shapes": [list(s) for s in r.shapes],
                 "params": dict(r.params)} for r in recipes])
            if sequential:
                t0 = time.perf_counter()
                await p.run_all([deal], cid)
                timings["offline_s"] = time.perf_counter() - t0
            else:
                runs.append(deal)
        t0 = time.perf_counter()
        replies = await p.run_all(runs, cid)
        timings["online_s" if sequential else "total_s"] = time.perf_counter() - t0
        party = [float(r["online_s"]) for r in replies[:len(p.cores)] if "online_s" in r]
        if party:
            timings["party_online_s"] = max(party)  # as each party timed its own run
            timings["material_s"] = max(float(r.get("material_s", 0.0))
                                        for r in replies[:len(p.cores)])
        result = SharedTensor(p, out, replies[0]["shape"], replies[0]["taint"])
        result.timings = timings
        return result

    def _run(self, op: str, others: Sequence[SharedTensor] = (),
             params: dict[str, Any] | None = None) -> SharedTensor:
        out: SharedTensor = self._blocking(self._arun(op, others, params))
        return out

    def _binary(self, other: Any, shared_op: str, public_op: str,
                transform: Any = None) -> SharedTensor:
        if isinstance(other, SharedTensor):
            return self._run(shared_op, [other])
        value = _public(other)
        return self._run(public_op, params={"value": transform(value) if transform else value})

    def __add__(self, other: Any) -> SharedTensor:
        return self._binary(other, "add", "add_public")

    __radd__ = __add__

    def __sub__(self, other: Any) -> SharedTensor:
        if isinstance(other, SharedTensor):
            return self._run("sub", [other])
        return self._run("add_public", params={"value": _neg(_public(other))})

    def __rsub__(self, other: Any) -> SharedTensor:
        out: SharedTensor = (-self) + other
        return out

    def __neg__(self) -> SharedTensor:
        return self._run("neg")

    def __mul__(self, other: Any) -> SharedTensor:
        return self._binary(other, "mul", "mul_public")

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> SharedTensor:
        if isinstance(other, SharedTensor):
            raise SMPCError("division by a shared value is not supported; divide by a public "
                            "number")
        return self._run("div_public", params={"value": _public(other)})

    def __matmul__(self, other: SharedTensor) -> SharedTensor:
        if not isinstance(other, SharedTensor):
            raise SMPCError("share the other operand first (kb.smpc.share)")
        return self._run("matmul", [other])

    def __gt__(self, other: Any) -> SharedTensor:
        """``[x > y]`` elementwise as shared 0.0/1.0 (the comparison protocol)."""
        if isinstance(other, SharedTensor):
            return self._run("gt", [other])
        base = self if _is_zero(other) else self - other
        return base._run("gtz")

    def __lt__(self, other: Any) -> SharedTensor:
        """``[x < y]`` elementwise as shared 0.0/1.0."""
        if isinstance(other, SharedTensor):
            return self._run("lt", [other])
        base = self if _is_zero(other) else self - other
        return base._run("ltz")

    def relu(self) -> SharedTensor:
        """``max(x, 0)`` elementwise (a comparison, then a multiplication)."""
        return self._run("relu")

    def sum(self, dim: int | None = None, keepdim: bool = False) -> SharedTensor:
        """The sum of all elements (or along ``dim``): local, no communication."""
        return self._run("sum", params={"dim": None if dim is None else int(dim),
                                        "keepdim": bool(keepdim)})

    def max(self, dim: int | None = None) -> SharedTensor:
        """The largest element (or along ``dim``), by a tree of comparisons."""
        return self._run("max", params={} if dim is None else {"dim": int(dim)})

    def argmax(self, dim: int | None = None) -> SharedTensor:
        """The index of the largest element (or along ``dim``), as a shared value."""
        return self._run("argmax", params={} if dim is None else {"dim": int(dim)})

    def conv2d(self, weight: SharedTensor, stride: int = 1, padding: int = 0,
               dilation: int = 1) -> SharedTensor:
        """2-D convolution of this (N, C, H, W) input with a shared (O, C, kh, kw) weight."""
        return self._run("conv2d", [weight], params={"stride": stride, "padding": padding,
                                                     "dilation": dilation})

    def reshape(self, *shape: int) -> SharedTensor:
        """The same elements in another shape (local, no communication)."""
        dims = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple | list) else shape
        return self._run("reshape", params={"shape": [int(d) for d in dims]})

    def transpose(self, dim0: int = 0, dim1: int = 1) -> SharedTensor:
        """Swap two dimensions (local)."""
        return self._run("transpose", params={"dim0": int(dim0), "dim1": int(dim1)})

    @property
    def T(self) -> SharedTensor:  # noqa: N802 - torch's spelling
        """The transpose of a matrix (local)."""
        return self.transpose(0, 1)

    # -- revealing ----------------------------------------------------------------------
    async def _areveal(self) -> torch.Tensor:
        p = self._parties
        try:
            replies = await p.run_all([_call(c, Op.SMPC_REVEAL, sid=self.sid)
                                       for c in p.cores], None)
        except ApprovalRequired as exc:
            exc.pointer = self
            raise
        return _reconstruct([r["share"] for r in replies], self.shape)

    def reveal(self) -> torch.Tensor:
        """The value, if it derives only from your own (clean) inputs.

        Raises
        ------
        ApprovalRequired
            It derives from an owner's data: ``.request(reason=...)`` asks every
            owner involved at once.
        """
        out: torch.Tensor = self._blocking(self._areveal())
        return out

    get = reveal

    async def _arequest(self, reason: str = "") -> SharedRequest:
        p = self._parties
        group = new_id("g")
        replies = await p.run_all([_call(c, Op.SMPC_REQUEST, sid=self.sid, group=group,
                                         reason=reason, parties=p.wire) for c in p.cores], None)
        requests = {c.name: Request(c, r["request"]) for c, r in zip(p.cores, replies,
                                                                     strict=True)
                    if r.get("request") is not None}
        return SharedRequest(self, group, requests)

    def request(self, reason: str = "") -> SharedRequest:
        """Ask every owner whose data this value derives from to approve revealing it.

        One request per involved owner, all with the same group id (shown in
        each owner's approval panel and ``syftlab requests``); the value comes
        back only when all of them approved.
        """
        out: SharedRequest = self._blocking(self._arequest(reason))
        return out

    def free(self) -> None:
        """Forget the shares on every party."""
        p = self._parties
        self._blocking(p.run_all([_call(c, Op.SMPC_FREE, sids=[self.sid]) for c in p.cores],
                                 None))


class SharedRequest:
    """A reveal request across the owners of a shared value (one group id)."""

    def __init__(self, value: SharedTensor, group: str, requests: dict[str, Request]) -> None:
        self.value, self.group, self.requests = value, group, requests

    @property
    def status(self) -> str:
        """``approved`` once every owner approved, ``denied`` if one denied, else ``pending``."""
        states = [r.status for r in self.requests.values()]
        if "denied" in states:
            return "denied"
        return "approved" if all(s == "approved" for s in states) else "pending"

    def __repr__(self) -> str:
        each = ", ".join(f"{n} #{r.id}: {r.status}" for n, r in self.requests.items())
        return f"<SharedRequest {self.group[:10]}… {self.status} ({each or 'no owner involved'})>"

    async def _await(self, timeout: float | None = 600.0) -> SharedRequest:
        deadline = None if timeout is None else time.monotonic() + timeout
        for r in self.requests.values():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            await r._await(left)
            if r.status == "denied":
                break
        return self

    def wait(self, timeout: float | None = 600.0) -> SharedRequest:
        """Wait until every owner decided (or one denied, or ``timeout`` s passed)."""
        out: SharedRequest = self.value._blocking(self._await(timeout))
        return out

    def refresh(self) -> SharedRequest:
        """The owners' decisions as they stand now."""
        for r in self.requests.values():
            r.refresh()
        return self

    async def _aresult(self) -> torch.Tensor:
        p = self.value._parties
        replies = await p.run_all([_call(c, Op.SMPC_RESULT, group=self.group)
                                   for c in p.cores], None)
        return _reconstruct([r["share"] for r in replies], self.value.shape)

    def result(self) -> torch.Tensor:
        """The revealed value (float64 tensor).

        Raises
        ------
        RequestPending
            An owner has not approved yet.
        RequestDenied
            An owner said no.
        """
        try:
            out: torch.Tensor = self.value._blocking(self._aresult())
        except (RequestPending, RequestDenied):
            with contextlib.suppress(SyftError):
                self.refresh()
            raise
        return out


def _reconstruct(shares: list[Any], shape: tuple[int, ...]) -> torch.Tensor:
    for s in shares:
        if not isinstance(s, torch.Tensor) or s.dtype != torch.int64 or tuple(s.shape) != shape:
            raise ProtocolError("a party sent a malformed share")
    return core_api.decode(core_api.reconstruct(shares))


def _neg(v: Any) -> Any:
    return -v if isinstance(v, float) else (-torch.tensor(v, dtype=torch.float64)).tolist()


def _is_zero(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == 0


async def _ashare_pointer(pointer: Any, parties: Sequence[Any], dealer: Any | None
                          ) -> SharedTensor:
    p = await _Parties(parties, dealer).resolve()
    owner = pointer._session
    if not any(c is owner for c in p.cores):
        raise ValueError(f"the pointer's worker ({owner.name}) must be one of the parties")
    src = p.infos[[id(c) for c in p.cores].index(id(owner))]["name"]
    cid, sid = new_id("c"), new_id("v")
    info = await pointer._aresolved()
    calls = [_call(c, Op.SMPC_SHARE, pointer=info["id"], cid=cid, sid=sid, parties=p.wire)
             if c is owner else
             _call(c, Op.SMPC_ACCEPT, cid=cid, sid=sid, source=src, parties=p.wire)
             for c in p.cores]
    replies = await p.run_all(calls, cid)
    return SharedTensor(p, sid, replies[0]["shape"], replies[0]["taint"])


def share_pointer(pointer: Any, parties: Sequence[Any], dealer: Any | None = None
                  ) -> SharedTensor:
    """``pointer.share(alice, bob, dealer=dave)``: see :meth:`Pointer.share`."""
    out: SharedTensor = pointer._session.blocking(_ashare_pointer(pointer, parties, dealer))
    return out


async def _ashare_value(value: Any, parties: Sequence[Any], dealer: Any | None
                        ) -> SharedTensor:
    p = await _Parties(parties, dealer).resolve()
    x = torch.as_tensor(value, dtype=torch.float64)
    shares = core_api.share(core_api.encode(x), len(p.cores))
    sid = new_id("v")
    replies = await p.run_all([_call(c, Op.SMPC_PUT, sid=sid, share=s, parties=p.wire)
                               for c, s in zip(p.cores, shares, strict=True)], None)
    return SharedTensor(p, sid, replies[0]["shape"], {})


def share(value: Any, parties: Sequence[Any], dealer: Any | None = None) -> SharedTensor:
    """Secret-share one of your own values (clean: revealing results of it alone is free).

    Parameters
    ----------
    value : tensor, ndarray, list or number
        Encoded in fixed point (``FRAC_BITS`` fractional bits) and split in your
        client with the CSPRNG; each party gets one share.
    parties : list of Worker
        The computing parties (two or more).
    dealer : Worker, optional
        A dealer worker (needed for multiplications, comparisons, ...).

    Returns
    -------
    SharedTensor
    """
    if not parties:
        raise ValueError("give the computing parties")
    out: SharedTensor = _core(parties[0]).blocking(_ashare_value(value, parties, dealer))
    return out
