"""Plans: submit, review state, wait, and run under the owner's approved policy.

A plan (:mod:`kernel_bridge.plan_document`) is code plus declared inputs plus an
output policy; the owner approves its exact hash once (CLI, Lab panel, widget,
:class:`~kernel_bridge.owner.owner_api.Owner`). Every run is enforced here, in
trusted code:

1. the run is *reserved* in SQLite (approved hash, runs left, the plan's ε left;
   :mod:`kernel_bridge.owner.plans`), and with ``policy.dp`` the ledger is checked
   first, so a refused run spends nothing;
2. the code runs in the plan's **own sandboxed kernel** (the same sandbox as
   session kernels; only this approved hash's code and the worker's agent ever
   run in it, for this scientist only: :mod:`kernel_bridge.owner.plan_kernels`),
   with a copy of the asset's declared columns bound to ``data`` by this worker,
   the asset's public spec to ``spec`` and the scientist's args (tensors and
   plain values only) as keyword arguments: ``run(data, spec=spec, **args)``;
3. what it returns comes back through the typed codec and is checked against
   the declared form (:mod:`kernel_bridge.owner.plan_outputs`);
4. with ``policy.dp`` the run's ε, computed here by Opacus's RDP accountant from
   the declared DP-SGD settings and the asset's row count, is debited on the
   ledger (committed) before anything leaves;
5. the outputs are released in the clear and recorded, or, with
   ``policy.aggregate.secure``, **held** in this process by run id for secure
   aggregation (:meth:`PlanService.held_outputs`, :meth:`PlanService.release_masked`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import (
    BudgetExhausted,
    InvalidPlan,
    PermissionDenied,
    ProtocolError,
    RemoteError,
    SecureAggregationRequired,
    SyftError,
)
from ...fl.encoding import encode_inputs
from ...wire import codec, frames
from ...wire.protocol import Op
from .. import limits
from ..assets import Asset
from ..context import WorkerContext
from ..ledger import Ledger
from ..plan_kernels import PlanKernels
from ..plan_outputs import check_masked, check_outputs
from ..plans import PlanRow, PlanStore, run_epsilon
from ..session import Session
from .base import Handler, Service

#: Held (secure-aggregation) runs one scientist may have waiting on a worker; past it a
#: run is refused before it is reserved (nothing spent) until some are aggregated or dropped.
MAX_HELD = 64
#: Args a run takes: names and values (tensors, arrays, numbers, strings, lists of them).
MAX_ARGS = 64
_RESERVED_ARGS = {"data", "spec"}


@dataclass
class HeldRun:
    """The outputs of one secure-policy run, kept in the worker for secure aggregation.

    Attributes
    ----------
    run_id, plan_id : int
    scientist : str
        Who ran it (only their sessions may aggregate it).
    outputs : dict
        The checked outputs, in the declared form (``{name: {param: float32
        tensor}}``, floats, ints). Never sent to anyone as they are.
    aggregate : dict
        The plan's ``policy.aggregate`` (``secure``, ``min_workers``).
    forms : dict
        The plan's ``policy.outputs``.
    created : float
    """

    run_id: int
    plan_id: int
    scientist: str
    outputs: dict[str, Any]
    aggregate: dict[str, Any]
    forms: dict[str, Any]
    created: float = field(default_factory=time.time)


class PlanService(Service):
    """Plans on one worker: the scientist's ops and the secure-aggregation hook.

    Parameters
    ----------
    ctx : WorkerContext
    ledger : Ledger
        The worker's DP ledger (shared with :class:`~.dp.DPService`).
    """

    def __init__(self, ctx: WorkerContext, ledger: Ledger) -> None:
        super().__init__(ctx)
        self.store = PlanStore(ctx.store, shared_documents=True)  # this service only reads
        self.ledger = ledger
        self.store.interrupted()  # runs of a previous process: counted, never released
        self._held: dict[int, HeldRun] = {}
        self.plan_kernels = PlanKernels(ctx.config, [ctx.store.dir] +
                                   [a.spec.path for a in ctx.assets.values()])
        self._rows: dict[str, int] = {}

    def ops(self) -> Mapping[Op, Handler]:
        return {Op.PLAN_SUBMIT: self.op_plan_submit, Op.PLAN_STATUS: self.op_plan_status,
                Op.PLANS: self.op_plans, Op.WAIT_PLAN: self.op_wait_plan,
                Op.PLAN_RUN: self.op_plan_run}

    # -- documents -------------------------------------------------------------------
    def _asset(self, name: Any) -> Asset:
        asset = self.ctx.assets.get(name) if isinstance(name, str) else None
        if asset is None:
            raise InvalidPlan(f"this worker has no asset {str(name)[:60]!r}",
                              field="inputs.asset")
        if asset.value_type != "DataFrame":
            raise InvalidPlan("plans read table assets (DataFrame) only", field="inputs.asset")
        return asset

    @staticmethod
    def public_spec(asset: Asset, doc: dict[str, Any]) -> dict[str, Any]:
        """The spec a run gets: the asset's public declaration of the columns it reads.

        ``{"asset", "columns": [{"name", "kind", "lower", "upper", "categories"}],
        "features": [names], "target": name or None, "dp": policy.dp or None,
        "outputs": policy.outputs}``; the same on every worker that declares the
        asset the same way, so an encoding built from it is too. ``dp`` holds the
        approved DP-SGD settings the worker accounts ε by: training code should
        take them from here, not from args.
        """
        schema = {c["name"]: c for c in asset.describe(0)["schema"]["columns"]}
        inputs = doc["inputs"]
        names = list(inputs["columns"]) + ([inputs["target"]] if inputs.get("target") else [])
        return {"asset": asset.name, "columns": [dict(schema[n]) for n in names],
                "features": list(inputs["columns"]), "target": inputs.get("target"),
                "dp": doc["policy"].get("dp"), "outputs": doc["policy"]["outputs"]}

    def _check_inputs(self, doc: dict[str, Any]) -> None:
        asset = self._asset(doc["inputs"]["asset"])
        known = {c["name"] for c in asset.describe(0)["schema"]["columns"]}
        inputs = doc["inputs"]
        for col in [*inputs["columns"], *([inputs["target"]] if inputs.get("target") else [])]:
            if col not in known:
                raise InvalidPlan(f"asset {asset.name!r} has no column {col[:60]!r}",
                                  field="inputs.columns")
        kinds = {c["name"]: c["kind"] for c in asset.describe(0)["schema"]["columns"]}
        for decl in inputs.get("encoding") or []:
            if kinds[decl["name"]] != decl["kind"]:
                raise InvalidPlan(f"inputs.encoding declares {decl['name'][:60]!r} a "
                                  f"{decl['kind']} column; asset {asset.name!r} declares it "
                                  f"{kinds[decl['name']]}", field="inputs.encoding")
        if doc["policy"].get("dp") is not None and asset.spec.dp is None:
            raise InvalidPlan(f"asset {asset.name!r} has no DP budget declared; a plan with "
                              "policy.dp cannot be debited on it", field="policy.dp")

    # -- ops ----------------------------------------------------------------------------
    async def op_plan_submit(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Submit a plan for the owner's review.

        Takes ``plan`` (the document) and ``reason``. Returns ``plan``: its id,
        hash, status (``pending``; the same document submitted again returns the
        same plan while it is not denied) and progress. Releases nothing.
        """
        reason = msg.get("reason") or ""
        if not isinstance(reason, str) or len(reason) > 4000:
            raise ProtocolError("a reason is a string of at most 4000 characters")
        from ...plan_document import check

        doc = check(msg.get("plan"))
        self._check_inputs(doc)
        row = self.store.submit(session.scientist, doc, reason)
        return {"plan": row.public()}

    async def op_plan_status(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """One of the scientist's plans: status, runs used, ε spent."""
        return {"plan": self.store.own(session.scientist, msg.get("plan")).public()}

    async def op_plans(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """The scientist's plans on this worker, oldest first."""
        return {"plans": [p.public() for p in self.store.plans(scientist=session.scientist)]}

    async def op_wait_plan(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Wait until the owner decides a plan, or ``timeout`` (bounded) seconds pass."""
        timeout = limits.timeout_arg(msg.get("timeout"), default=0.0,
                                     maximum=limits.MAX_WAIT_TIMEOUT, allow_zero=True)
        deadline = time.monotonic() + timeout
        while True:
            row = self.store.own(session.scientist, msg.get("plan"))
            if row.status == "approved":  # its first run will not wait for a kernel
                doc = row.document
                self.plan_kernels.warm(doc["code"], (row.hash, session.scientist),
                                       self._columns(doc), self._spec(doc))
            if row.status != "pending" or time.monotonic() >= deadline:
                return {"plan": row.public()}
            await asyncio.sleep(0.1)

    async def op_plan_run(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Run an approved plan once, under its policy.

        Takes ``plan`` (its id), ``hash`` (optional: the hash the scientist
        expects; a mismatch is refused), ``value`` or ``upload`` (the args: a
        dict of names to tensors, arrays, numbers or strings) and ``release``
        (``"clear"``, the default without secure aggregation, or ``"hold"``, the
        only choice with it). Returns ``run`` (id, status, ε of the run, runs
        used...) and, for a clear release, the outputs as a frame (inline or
        bulk). Refused before anything runs or is spent: an unapproved or
        changed plan, no runs left, ε past the plan's or the ledger's budget,
        a clear release of a secure plan.
        """
        plan = self.store.own(session.scientist, msg.get("plan"))
        expected = msg.get("hash")
        if expected is not None and expected != plan.hash:
            raise PermissionDenied(f"plan {plan.id} has hash {plan.hash[:12]}…, not the "
                                   f"{str(expected)[:12]}… you expect", plan=plan.id)
        release = msg.get("release") or ("hold" if plan.secure else "clear")
        if release not in ("clear", "hold"):
            raise ProtocolError("release is 'clear' or 'hold'")
        if plan.secure and release == "clear":
            raise SecureAggregationRequired(
                f"plan {plan.id}'s outputs leave only securely aggregated over "
                f"≥ {plan.policy['aggregate']['min_workers']} workers, never in the clear; "
                "nothing was run or spent", plan=plan.id)
        if not plan.secure and release == "hold":
            raise ProtocolError("only plans with secure aggregation hold their outputs")
        if plan.secure and sum(h.scientist == session.scientist
                               for h in self._held.values()) >= MAX_HELD:
            raise PermissionDenied(f"{MAX_HELD} runs of yours are held for secure aggregation "
                                   "on this worker; aggregate or drop them first; nothing was "
                                   "run or spent", plan=plan.id)
        args = await self._args(session, msg)
        asset = self._asset(plan.document["inputs"]["asset"])
        dp = plan.policy.get("dp")
        epsilon = delta = 0.0
        rows = 0
        if dp is not None:
            rows = await self._row_count(asset)
            epsilon, delta, _ = await self._next_cost(plan, dp, rows)
            self._precheck_ledger(session.scientist, asset.name, epsilon, delta)
        rid = self.store.reserve(session.scientist, plan.id, plan.hash, epsilon, delta)
        try:
            value = await self._execute(plan, session.scientist, args)
        except SyftError as exc:
            self.store.finish(rid, "failed", error_type=type(exc).__name__
                              if not isinstance(exc, RemoteError) else
                              str(exc.data.get("error_type")), spent=False)
            raise
        except BaseException:
            self.store.finish(rid, "failed", error_type="Internal", spent=False)
            raise
        try:
            outputs = check_outputs(value, plan.policy["outputs"], owned=True)
        except SyftError as exc:
            self.store.finish(rid, "rejected", error_type=type(exc).__name__, spent=False)
            raise
        if dp is not None:
            try:  # committed before any form of the outputs leaves
                await self._debit(session.scientist, plan, asset.name, rid, dp, rows)
            except BudgetExhausted:
                self.store.finish(rid, "refused", spent=False)
                raise
        summary = _summary(outputs)
        if plan.secure:
            self._held[rid] = HeldRun(rid, plan.id, session.scientist, outputs,
                                      dict(plan.policy["aggregate"]),
                                      dict(plan.policy["outputs"]))
            self.store.finish(rid, "held", released={"held": summary})
            return {"run": self._run_info(rid)}
        self.store.finish(rid, "released", released=summary)  # committed before release
        header, buffers = codec.encode(outputs)
        out, _ = self.ctx.deliver(frames.pack(header, buffers), frames.frame_size(header, buffers))
        return {**out, "run": self._run_info(rid)}

    # -- secure aggregation hook -------------------------------------------------------
    def held_outputs(self, session: Session, run_id: int) -> HeldRun:
        """The held outputs of a secure-policy run, for trusted aggregation code only.

        Parameters
        ----------
        session : Session
            The scientist's session asking to aggregate; the run must be theirs.
        run_id : int
            ``run["id"]`` from the ``plan_run`` reply.

        Returns
        -------
        HeldRun
            ``outputs`` hold the run's values in the declared form. The caller
            (the worker's secure-aggregation service) may mask them, but must
            never put them on the wire unmasked; only :meth:`release_masked`
            releases, and only once.

        Raises
        ------
        PermissionDenied
            No held run of this id for this scientist (unknown, another's,
            already released or dropped, or lost in a worker restart).
        """
        held = self._held.get(run_id) if isinstance(run_id, int) else None
        if held is None or held.scientist != session.scientist:
            raise PermissionDenied(f"no held run {str(run_id)[:20]} of yours on this worker "
                                   "(unknown, released, dropped or lost in a restart)",
                                   run=str(run_id)[:20])
        return held

    def release_masked(self, session: Session, run_id: int, masked: dict[str, Any], *,
                       participants: int, protocol: str = "pairwise-masks") -> dict[str, Any]:
        """Release a held run's *masked* outputs once; records the release first.

        Parameters
        ----------
        session : Session
            The run's scientist's session.
        run_id : int
            The held run.
        masked : dict
            The outputs after masking, the same names as ``policy.outputs``: per
            tensors output a dict of the declared tensor names and shapes (any
            numeric dtype: masks may live in an integer ring), per scalar/count
            output one (masked) number or 0-d array.
        participants : int
            Workers whose masks are in this aggregation round; it must be at least
            ``policy.aggregate.min_workers``, or nothing is released.
        protocol : str
            Recorded in the audit log.

        Returns
        -------
        dict
            ``masked``, checked, for the caller to send. The run is then
            ``aggregated`` in SQLite and the audit log (committed before return)
            and its clear outputs are dropped from memory.

        Raises
        ------
        PermissionDenied, SecureAggregationRequired, PlanOutputRejected
        """
        held = self.held_outputs(session, run_id)
        need = int(held.aggregate["min_workers"])
        if isinstance(participants, bool) or not isinstance(participants, int) or \
                participants < need:
            raise SecureAggregationRequired(
                f"the plan's outputs leave only in an aggregate of ≥ {need} workers; this "
                f"round has {participants}", plan=held.plan_id, run=run_id)
        checked = check_masked(masked, held.forms)
        self._held.pop(run_id, None)
        self.store.finish(run_id, "aggregated", released={
            "masked": _summary(checked), "participants": participants, "protocol": protocol})
        return checked

    def drop_held(self, session: Session, run_id: int) -> None:
        """Forget a held run without releasing anything (a round that was abandoned)."""
        self.held_outputs(session, run_id)
        self._held.pop(run_id, None)
        self.store.finish(run_id, "dropped", released={"dropped": True})

    # -- helpers -----------------------------------------------------------------------
    async def _next_cost(self, plan: PlanRow, dp: dict[str, Any], rows: int
                         ) -> tuple[float, float, tuple[int, float, float]]:
        """What the plan's next debited run costs: ``(ε, δ, debited so far)``.

        One RDP accountant over all the plan's debited runs and this one
        (:func:`~kernel_bridge.owner.plans.run_epsilon`), less what they were
        debited; δ once, with the plan's first debit.
        """
        while True:
            before = self.store.debited(plan.id)
            total = await asyncio.to_thread(run_epsilon, dp, rows, before[0] + 1)
            if self.store.debited(plan.id) == before:  # no other run debited meanwhile
                return max(0.0, total - before[1]), 0.0 if before[0] else float(dp["delta"]), \
                    before

    async def _debit(self, scientist: str, plan: PlanRow, asset: str, rid: int,
                     dp: dict[str, Any], rows: int) -> None:
        """Debit a run's composed ε on the ledger and record it (before anything leaves)."""
        epsilon, delta, before = await self._next_cost(plan, dp, rows)
        # No await from here on: counting, checking and debiting are one step.
        total = plan.epsilon_total
        if total is not None and before[1] + epsilon > total + 1e-9:
            raise BudgetExhausted(
                f"this run would bring plan {plan.id} to epsilon={before[1] + epsilon:.4g}, "
                f"past its {total:g}; its outputs were not released", asset=asset,
                scope="plan", epsilon=epsilon, delta=delta,
                epsilon_remaining=max(0.0, total - before[1]), delta_remaining=0.0)
        self.ledger.debit(scientist, asset, epsilon, delta, {
            "plan": plan.id, "run": rid, "hash": plan.hash, "dp_sgd": dp,
            "composed_runs": before[0] + 1})
        self.store.set_cost(rid, epsilon, delta)

    def _precheck_ledger(self, scientist: str, asset: str, epsilon: float,
                         delta: float) -> None:
        """Refuse early (nothing reserved, nothing run) when the ledger could not pay."""
        for who, scope in ((scientist, "scientist"), (None, "total")):
            st = self.ledger.status(who, asset)
            if st["epsilon_spent"] + epsilon > st["epsilon_limit"] + 1e-9 or \
                    st["delta_spent"] + delta > st["delta_limit"] + 1e-9:
                self.ctx.store.audit(scientist, "plan_run_refused", {
                    "asset": asset, "why": f"ledger {scope}", "epsilon": epsilon})
                raise BudgetExhausted(
                    f"this run would cost epsilon={epsilon:.4g}, delta={delta:g} on {asset!r} "
                    f"but the {'scientist' if who else 'total'} budget has "
                    f"epsilon={st['epsilon_remaining']:.4g} and "
                    f"delta={max(0.0, st['delta_limit'] - st['delta_spent']):g} left; "
                    "nothing was run or spent", asset=asset, scope=scope, epsilon=epsilon,
                    delta=delta, epsilon_remaining=st["epsilon_remaining"],
                    delta_remaining=max(0.0, st["delta_limit"] - st["delta_spent"]))

    async def _row_count(self, asset: Asset) -> int:
        if asset.name not in self._rows:
            frame = await asyncio.to_thread(asset.private)
            self._rows[asset.name] = len(frame)
        return self._rows[asset.name]

    async def _args(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        if "upload" in msg:
            assert self.ctx.bulk is not None
            data = await self.ctx.bulk.take(msg["upload"], owner=session.id)
            header, buffers = await self.ctx.decoder.run(limits.validate_upload, data)
            args = codec.decode(header, buffers, tensors="wire")
        else:
            args = msg.get("value", {})
        if args is None:
            args = {}
        if not isinstance(args, dict) or len(args) > MAX_ARGS:
            raise ProtocolError(f"a plan run's args are a dict of at most {MAX_ARGS} names")
        for k, v in args.items():
            if not isinstance(k, str) or not k.isidentifier() or k.startswith("_") or \
                    k in _RESERVED_ARGS:
                raise ProtocolError(f"arg name {str(k)[:40]!r} is not allowed (identifiers; "
                                    "not 'data' or 'spec', which the worker binds)")
            _check_arg(k, v)
        return args

    def _run_info(self, rid: int) -> dict[str, Any]:
        run = self.store.run(rid)
        assert run is not None
        plan = self.store.plan(int(run["plan_id"]))
        assert plan is not None
        return {"id": rid, "plan": plan.id, "status": run["status"],
                "epsilon": run["epsilon"], "delta": run["delta"],
                "runs_used": plan.runs_used, "max_runs": plan.max_runs,
                "epsilon_spent": plan.epsilon_spent, "epsilon_total": plan.epsilon_total}

    def _columns(self, doc: dict[str, Any]) -> Callable[[], Any]:
        """The declared columns of the plan's asset (read when a plan kernel needs them)."""
        inputs = doc["inputs"]
        asset = self._asset(inputs["asset"])
        cols = list(inputs["columns"]) + ([inputs["target"]] if inputs.get("target") else [])
        if inputs.get("encoding") is not None:
            # Encoded here, in trusted code, by the approved declarations: the kernel
            # gets arrays (and needs no pandas).
            return lambda: encode_inputs(asset.private()[cols], inputs)
        return lambda: asset.private()[cols].copy()

    def _spec(self, doc: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        """The plan's public spec of its asset (made when a plan kernel needs it)."""
        return lambda: self.public_spec(self._asset(doc["inputs"]["asset"]), doc)

    async def close(self) -> None:
        """Stop the plan kernels (the worker calls this when it stops)."""
        await self.plan_kernels.close()

    async def _execute(self, plan: PlanRow, scientist: str, args: dict[str, Any]) -> Any:
        """Run the plan once in its sandboxed kernel; returns the decoded result."""
        doc = plan.document
        return await self.plan_kernels.run(doc["code"], doc["entry"], (plan.hash, scientist),
                                           self._columns(doc), self._spec(doc), args)


def _check_arg(name: str, v: Any, depth: int = 0) -> None:
    """Args are tensors, arrays, numbers, strings, bools, None, and lists/dicts of them."""
    if depth > 4:
        raise ProtocolError(f"arg {name!r} is nested too deeply")
    if v is None or isinstance(v, bool | int | float | str | np.ndarray | np.generic):
        return
    if isinstance(v, codec.WireTensor):
        return
    if isinstance(v, list | tuple):
        for x in v:
            _check_arg(name, x, depth + 1)
        return
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise ProtocolError(f"arg {name!r}: dict keys are strings")
            _check_arg(name, x, depth + 1)
        return
    raise ProtocolError(f"arg {name!r} has type {type(v).__name__}; plan args are tensors, "
                        "arrays, numbers, strings and lists/dicts of them")


def _summary(outputs: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps about released outputs: their form, not their values."""
    out: dict[str, Any] = {}
    for name, v in outputs.items():
        if isinstance(v, dict):
            out[name] = {p: list(getattr(t, "shape", ())) for p, t in v.items()}
        else:
            out[name] = type(v).__name__
    return out

