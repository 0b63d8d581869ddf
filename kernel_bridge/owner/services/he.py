"""The worker's HE operations: contexts, encrypted predictions, encrypted evaluation.

* ``he_context``: a scientist sends the public part of a CKKS context once; the
  worker checks it (no secret key, CKKS, keys present, bounded inflate) and keeps
  it for the session under its id.
* ``he_predict``: the owner's model (a ``.pt`` state_dict declared with
  ``[assets.<name>.he] predictions_per_scientist``) on the scientist's encrypted
  input. The prediction is counted (SQLite, atomic with its audit record)
  before it is computed; past the limit, :class:`PredictionLimitReached`.
* ``he_evaluate``: the scientist's encrypted linear model scored on the owner's
  rows; the noisy mean squared error (DP noise added under encryption, from
  OpenDP draws) after ε is debited on the ledger.
* ``he_services``: the HE services of this worker and the caller's counts.

Everything sent back is a ciphertext under the scientist's key. Evaluation
runs in worker threads (SEAL releases no lock the event loop needs), so other
sessions keep being served. Errors, logs and audit records carry asset names,
sizes and counts, never values derived from the model or the rows.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from opendp.domains import atom_domain
from opendp.measurements import make_laplace
from opendp.metrics import absolute_distance
from opendp.mod import enable_features

from ...errors import HEError, InvalidQuery, UnknownObject
from ...he import evaluate as he_evaluate
from ...he.context import context_id
from ...he.linear import period_of
from ...he.mlp import PolyMLP, layers_of
from ...he.seal import Evaluator
from ...he.validate import load_context, load_vector
from ...wire import codec, frames
from ...wire.protocol import Op
from ...wire.sealed import HEContextBytes, HEVectorBytes
from ..assets import Asset
from ..context import WorkerContext
from ..he_counter import PredictionCounter
from ..he_spec import HESpec
from ..ledger import Ledger
from ..session import Session
from .base import Handler, Service

log = logging.getLogger("syftlab.worker.he")

#: Contexts kept per session, and by the whole worker (each holds tens of MB of keys).
CONTEXTS_PER_SESSION = 2
CONTEXTS_PER_WORKER = 8


class HEService(Service):
    """HE for one worker: the scientists' public contexts, the models, the counters."""

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx)
        self.specs: dict[str, HESpec] = dict(ctx.config.he)
        self.counter = PredictionCounter(ctx.store)
        self.counter.declare([spec.to_doc() for spec in self.specs.values()])
        self.ledger = Ledger(ctx.store)
        #: (session id, context id) -> Evaluator, least recently used first.
        self._contexts: collections.OrderedDict[tuple[str, str], Evaluator] = \
            collections.OrderedDict()
        self._models: dict[str, PolyMLP] = {}
        self._rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._load_lock = asyncio.Lock()

    def ops(self) -> Mapping[Op, Handler]:
        return {Op.HE_CONTEXT: self.op_he_context, Op.HE_PREDICT: self.op_he_predict,
                Op.HE_EVALUATE: self.op_he_evaluate, Op.HE_SERVICES: self.op_he_services}

    # -- what the owner declared ----------------------------------------------
    def _service(self, session: Session, pointer: Any, kind: str) -> tuple[Asset, HESpec]:
        """The asset a pointer names and its HE service of ``kind``."""
        try:
            obj = session.get(pointer)
        except UnknownObject:
            raise InvalidQuery("HE services run on a pointer to a registered asset "
                               "(worker.asset(name)); this pointer is unknown",
                               field="pointer") from None
        if obj.asset is None or obj.asset not in self.ctx.assets or obj.is_output \
                or obj.kernel != "private":
            raise InvalidQuery("HE services run on registered assets (worker.asset(name)), "
                               "not on values computed in a kernel or on mocks",
                               field="pointer")
        spec = self.specs.get(obj.asset)
        if spec is None or spec.kind != kind:
            what = "encrypted predictions" if kind == "predict" else "encrypted evaluation"
            raise InvalidQuery(f"the owner offers no {what} on {obj.asset!r}", field="pointer")
        return self.ctx.assets[obj.asset], spec

    async def _model(self, asset: Asset, spec: HESpec) -> PolyMLP:
        async with self._load_lock:
            model = self._models.get(asset.name)
            if model is None:
                def load() -> PolyMLP:
                    state = asset.private()
                    if not isinstance(state, dict):
                        raise HEError(f"asset {asset.name!r} is not a model (state_dict)")
                    try:
                        return PolyMLP(layers_of(state), spec.activation)
                    except ValueError:
                        raise HEError(f"asset {asset.name!r} is not a model of linear "
                                      "layers") from None
                model = self._models[asset.name] = await asyncio.to_thread(load)
            return model

    async def _table(self, asset: Asset, spec: HESpec) -> tuple[np.ndarray, np.ndarray]:
        """Features scaled into [0, 1] by the declared bounds (clipped) and labels in [0, 1]."""
        async with self._load_lock:
            rows = self._rows.get(asset.name)
            if rows is None:
                def load() -> tuple[np.ndarray, np.ndarray]:
                    df = asset.private()
                    cols = {c.name: c for c in asset.spec.columns}

                    def scaled(name: str) -> np.ndarray:
                        col = cols[name]
                        v = df[name].astype(float).to_numpy()
                        if col.kind != "bool":
                            lo, hi = float(col.lower), float(col.upper)  # type: ignore[arg-type]
                            v = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
                        out: np.ndarray = np.clip(np.nan_to_num(v, nan=0.0), 0.0, 1.0)
                        return out

                    x = np.stack([scaled(c) for c in spec.columns], axis=1)
                    return x, scaled(spec.label)
                rows = self._rows[asset.name] = await asyncio.to_thread(load)
            return rows

    async def _value(self, session: Session, msg: dict[str, Any]) -> Any:
        """The message's ``value``, or the value uploaded on the bulk path (``upload``)."""
        if "upload" not in msg:
            return msg.get("value")
        assert self.ctx.bulk is not None
        data = await self.ctx.bulk.take(msg["upload"], owner=session.id)
        return await self.ctx.decoder.run(_decode_upload, data)

    # -- contexts ----------------------------------------------------------------
    def _evaluator(self, session: Session, cid: Any) -> Evaluator:
        key = (session.id, cid if isinstance(cid, str) else "")
        ev = self._contexts.get(key)
        if ev is None:
            raise HEError("unknown HE context: send it first (the client does this for you)",
                          reason="unknown_context")
        self._contexts.move_to_end(key)
        return ev

    async def op_he_context(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Register the public part of a scientist's CKKS context for this session.

        Takes ``value`` (:class:`HEContextBytes`, or a bulk ``upload``). Refuses one with a secret
        key, a non-CKKS one or one without relinearisation/Galois keys
        (:class:`HEError`). Returns its ``id``, ``depth`` and ``slots``.
        """
        value = await self._value(session, msg)
        if type(value) is not HEContextBytes:
            raise HEError("expected an HE context (kb.he.context(...).public())")
        cid = context_id(value.data)
        key = (session.id, cid)
        if key not in self._contexts:
            try:
                tctx = await asyncio.to_thread(load_context, value, 1)
            except HEError as exc:
                self.ctx.store.audit(session.scientist, "he_context_refused",
                                     {"reason": exc.data.get("reason") or "invalid"})
                raise
            ev = await asyncio.to_thread(Evaluator, tctx)
            mine = [k for k in self._contexts if k[0] == session.id]
            for old in mine[:max(0, len(mine) - CONTEXTS_PER_SESSION + 1)]:
                del self._contexts[old]
            while len(self._contexts) >= CONTEXTS_PER_WORKER:
                self._contexts.popitem(last=False)
            self._contexts[key] = ev
            self.ctx.store.audit(session.scientist, "he_context",
                                 {"context": cid, "slots": ev.slots})
        ev = self._evaluator(session, cid)
        return {"context": cid, "slots": ev.slots,
                "depth": int(ev.seal.first_context_data().chain_index())}

    # -- predictions ---------------------------------------------------------------
    async def op_he_predict(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """The owner's model on the scientist's encrypted input.

        Takes ``pointer`` (to a model asset with an HE prediction service),
        ``context`` (an id from ``he_context``) and ``value`` (:class:`HEVectorBytes`
        of the model's input size, with ``size`` its number of values). Counts
        the prediction (refused past the owner's limit), then evaluates. Releases a
        ciphertext under the
        scientist's key and how many predictions remain.
        """
        asset, spec = self._service(session, msg.get("pointer"), "predict")
        ev = self._evaluator(session, msg.get("context"))
        model = await self._model(asset, spec)
        depth = int(ev.seal.first_context_data().chain_index())
        if depth < model.depth:
            raise HEError(f"this model needs a context of depth {model.depth} "
                          f"(kb.he.context(depth={model.depth})); yours has {depth}",
                          depth=depth, needed=model.depth)
        ct, size = await asyncio.to_thread(load_vector, ev, await self._value(session, msg))
        # kb.he.encrypt pads to a power of two and says how many values are real.
        if size != period_of(model.n_in) or msg.get("size") != model.n_in:
            raise HEError(f"the model takes {model.n_in} inputs (encrypted with "
                          "kb.he.encrypt, which pads them)", needed=model.n_in)
        remaining = self.counter.take(session.scientist, asset.name,
                                      spec.predictions_per_scientist, {"session": session.id})

        def run() -> bytes:
            return ev.dump(model.predict(ev, ct), model.n_out)

        try:
            data = await asyncio.to_thread(run)
        except Exception as exc:
            log.warning("he_predict on %s failed (%s)", asset.name, type(exc).__name__)
            raise HEError("the encrypted prediction failed (the ciphertext may not fit the "
                          "model); it was counted") from None
        return {"y": HEVectorBytes(data), "size": model.n_out, "remaining": remaining}

    # -- evaluation -------------------------------------------------------------
    async def op_he_evaluate(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """The scientist's encrypted linear model scored on the owner's rows, DP-noised.

        Takes ``pointer`` (to a table with an HE evaluation service), ``context``
        and ``value`` (:class:`HEVectorBytes`: one weight per declared column,
        then the bias; ``size`` their number). Debits ``epsilon_per_evaluation`` on the ledger
        (committed) before computing; releases the ciphertext of the noisy mean
        squared error (see :mod:`kernel_bridge.he.evaluate`) and the budget left.
        """
        asset, spec = self._service(session, msg.get("pointer"), "evaluate")
        metric = msg.get("metric", "mse")
        if metric != "mse":
            raise InvalidQuery("the encrypted evaluation offers metric='mse'", field="metric")
        ev = self._evaluator(session, msg.get("context"))
        depth = int(ev.seal.first_context_data().chain_index())
        if depth < he_evaluate.DEPTH:
            raise HEError(f"an encrypted evaluation needs a context of depth "
                          f"{he_evaluate.DEPTH}; yours has {depth}", depth=depth,
                          needed=he_evaluate.DEPTH)
        d = len(spec.columns)
        ct, size = await asyncio.to_thread(load_vector, ev, await self._value(session, msg))
        if size != period_of(d + 1) or msg.get("size") != d + 1:
            raise HEError(f"send {d + 1} weights ({d} columns, then the bias), encrypted "
                          "with kb.he.encrypt", needed=d + 1)
        x, y = await self._table(asset, spec)
        eps = spec.epsilon_per_evaluation
        doc = {"he": "evaluate", "metric": metric, "columns": spec.columns, "label": spec.label}
        # Committed before anything is computed, let alone released.
        spend = self.ledger.debit(session.scientist, asset.name, eps, 0.0, doc)
        shown = asset.spec.show_row_count
        eps_sum = eps if shown else eps / 2
        noise = _laplace(1.0 / eps_sum)
        n_hat = float(len(x)) if shown else float(max(1, len(x) + _int_laplace(2.0 / eps)))

        def run() -> bytes:
            return ev.dump(he_evaluate.evaluate_mse(ev, ct, x, y, noise, n_hat), 1)

        try:
            data = await asyncio.to_thread(run)
        except Exception as exc:
            log.warning("he_evaluate on %s failed (%s)", asset.name, type(exc).__name__)
            raise HEError("the encrypted evaluation failed; its ε was spent") from None
        return {"result": HEVectorBytes(data), "metric": metric, "epsilon": eps,
                "spend": spend, "rows_exact": shown,
                "mechanism": "Laplace (OpenDP), scaled by the model's norm under encryption",
                "budget": self.ledger.status(session.scientist, asset.name)}

    async def op_he_services(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """This worker's HE services, with the caller's predictions used and budget."""
        out = []
        for name, spec in self.specs.items():
            row = spec.to_doc()
            if spec.kind == "predict":
                used = self.counter.used(session.scientist, name)
                row.update(used=used, remaining=max(0, spec.predictions_per_scientist - used))
            else:
                row.update(depth=he_evaluate.DEPTH,
                           budget=self.ledger.status(session.scientist, name))
            out.append(row)
        return {"services": out}


def _decode_upload(data: bytearray) -> Any:
    """Decode an uploaded frame (blocking; the bulk path bounds its size)."""
    header, buffers = frames.unpack(memoryview(data), limit=None)
    codec.check_cost(header)
    return codec.decode(header, buffers)


def _laplace(scale: float) -> float:
    """One draw of Laplace(0, scale), from OpenDP's sampler."""
    enable_features("contrib")
    meas = make_laplace(atom_domain(T=float, nan=False), absolute_distance(T=float),
                        scale=scale)
    value = float(meas(0.0))
    if not math.isfinite(value):
        raise HEError("noise sampling failed")
    return value


def _int_laplace(scale: float) -> int:
    """One draw of the discrete Laplace of ``scale`` (for a DP row count), from OpenDP."""
    enable_features("contrib")
    meas = make_laplace(atom_domain(T=int), absolute_distance(T=int), scale=scale)
    return int(meas(0))
