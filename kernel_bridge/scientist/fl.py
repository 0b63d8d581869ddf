"""Federated learning, the scientist's side: one plan per owner, rounds run concurrently.

::

    from kernel_bridge import fl
    job = fl.FedAvg(model, workers=[alice, bob, carol], data="heart", features=features,
                    target="target", rounds=20, local_epochs=1, batch_size=32, lr=0.05,
                    secure_agg=True, dp=fl.DP(noise_multiplier=1.0, max_grad_norm=1.0))
    job.submit(reason="heart-disease risk model")   # one plan request per owner
    job.wait_approved()                             # each owner approves the plan's hash once
    history = job.run()                             # tqdm per round; Ctrl-C stops cleanly
    history.plot()
    trained = job.model

Each round sends the global weights (tensors, through the codec; never a
pickle) to every worker's plan at once over the
:class:`~kernel_bridge.scientist.async_worker.AsyncWorker` core, so one slow
worker does not hold up the others. A worker that fails during a round is
skipped and reported in the history; the round goes on while at least
``min_workers`` remain, else the job stops with :class:`~kernel_bridge.errors.RoundFailed`.
With ``secure_agg`` every update stays on its worker until it is masked
(:mod:`kernel_bridge.fl.secagg`): this client receives masked vectors whose sum
is the sum of updates, and nothing else about any single one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import (
    BudgetExhausted,
    InvalidQuery,
    PlanRunsExhausted,
    RoundFailed,
    SyftError,
)
from ..fl import secagg
from ..fl.encoding import merge_specs
from ..fl.strategies import FedAdagrad as _FedAdagrad
from ..fl.strategies import FedAdam as _FedAdam
from ..fl.strategies import FedAvg as _FedAvg
from ..fl.strategies import FedProx as _FedProx
from ..fl.strategies import FedYogi as _FedYogi
from ..fl.strategies import Strategy, weighted_mean
from ..fl.training_plan import DP, TrainingConfig, training_plan
from ..wire.protocol import Op
from .fl_history import History, RoundRecord
from .torch_hook import ModelPointer, send_model

__all__ = ["DP", "FLJob", "FedAvg", "FedProx", "FedAdam", "FedYogi", "FedAdagrad", "History",
           "ModelPointer", "send_model"]

#: Errors that mean "this worker is out of this round" rather than "stop the job".
_STOPPING = (BudgetExhausted, PlanRunsExhausted)


class _JobStopped(Exception):
    """Every worker left for a budget or run limit: the job ends cleanly (not an error)."""


@dataclass
class _Member:
    worker: Any  # the handle the user passed (Worker or AsyncWorker)
    core: Any  # its AsyncWorker
    plan: Any = None
    index: int = 0
    epsilon: float = 0.0
    out: bool = False  # stopped taking part (budget or runs exhausted)


@dataclass
class _Outcome:
    ok: dict[str, Any] = field(default_factory=dict)  # name -> outputs (clear) / run (held)
    dropped: dict[str, str] = field(default_factory=dict)
    stop: str | None = None


class FLJob:
    """A federated training job over several owners' workers (see the module doc).

    Parameters
    ----------
    model : torch.nn.Sequential
        The initial global model; :attr:`model` holds the trained one.
    workers : list of Worker
        Each owner's worker (blocking ``Worker`` or ``AsyncWorker``).
    data : str
        The table asset, by the same name on every worker.
    features : list of str
        Feature columns (encoded from their public declarations).
    target : str
        The class column.
    rounds : int
        Rounds to run (and the most runs each plan allows).
    local_epochs, batch_size, lr : int, int, float
        Each worker's local SGD.
    secure_agg : bool
        Release only the sum of updates (secure aggregation).
    dp : DP, optional
        DP-SGD (Opacus) in each worker's training; ε debited per round per owner.
    min_workers : int, optional
        Fewest workers a round may aggregate (default: all but one with secure
        aggregation, at least 2; else 1).
    strategy : Strategy, optional
        Aggregation strategy (default: this class's).
    name : str, optional
        The plan's name.
    seed : int
        Seeds the workers' shuffling (the plan's code is deterministic per round).
    """

    def __init__(self, model: Any, workers: Sequence[Any], data: str,
                 features: Sequence[str], target: str, rounds: int = 10,
                 local_epochs: int = 1, batch_size: int = 32, lr: float = 0.05,
                 secure_agg: bool = False, dp: DP | None = None,
                 min_workers: int | None = None, strategy: Strategy | None = None,
                 name: str | None = None, seed: int = 0) -> None:
        if not workers:
            raise InvalidQuery("an FL job needs at least one worker")
        if secure_agg and len(workers) < 2:
            raise InvalidQuery("secure aggregation needs at least two workers")
        self.model = copy.deepcopy(model)
        self.members = [_Member(w, getattr(w, "core", w), index=i + 1)
                        for i, w in enumerate(workers)]
        self.data, self.features, self.target = data, list(features), target
        self.rounds = int(rounds)
        self.secure_agg, self.dp = bool(secure_agg), dp
        self.strategy: Strategy = strategy if strategy is not None else self._default_strategy()
        self.config = TrainingConfig(local_epochs=int(local_epochs), batch_size=int(batch_size),
                                     lr=float(lr), prox_mu=float(self.strategy.prox_mu),
                                     seed=int(seed))
        n = len(workers)
        default_min = max(2, n - 1) if secure_agg else 1
        self.min_workers = int(min_workers if min_workers is not None else default_min)
        if self.min_workers > n:
            raise InvalidQuery(f"min_workers={self.min_workers} but the job has {n} workers")
        self.name = name or f"fl_{type(self).__name__.lower()}_{data}"
        self.history = History([m.worker.name for m in self.members], dp=dp is not None)
        self._doc: dict[str, Any] | None = None
        #: The merged public declarations the plan encodes with (set by :meth:`plan`).
        self.spec: list[dict[str, Any]] = []
        self._job_id = secrets.token_hex(6)
        self._round = 0

    def _default_strategy(self) -> Strategy:
        return _FedAvg()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.data!r} on "
                f"{', '.join(m.worker.name for m in self.members)}: round {self._round}/"
                f"{self.rounds}{', secure' if self.secure_agg else ''}"
                f"{', DP' if self.dp else ''}>")

    # -- the plan --------------------------------------------------------------------
    def _blocking(self, coro: Any) -> Any:
        return self.members[0].core.blocking(coro)

    async def aplan(self) -> dict[str, Any]:
        """The plan document every owner reviews (the same for all)."""
        if self._doc is None:
            sets = await asyncio.gather(*(m.core.datasets() for m in self.members))
            specs = []
            for m, datasets in zip(self.members, sets, strict=True):
                found = [d for d in datasets if d["name"] == self.data]
                if not found or "columns" not in found[0].get("schema", {}):
                    raise InvalidQuery(f"{m.worker.name} has no table asset {self.data!r}")
                specs.append(found[0]["schema"]["columns"])
            spec = merge_specs(specs, [*self.features, self.target])
            self.spec = spec
            self._doc = training_plan(
                self.model, name=self.name, asset=self.data, spec=spec,
                features=self.features, target=self.target, rounds=self.rounds,
                config=self.config, dp=self.dp, secure_agg=self.secure_agg,
                min_workers=self.min_workers, epsilon_total=self._epsilon_cap())
        return self._doc

    def _epsilon_cap(self) -> float | None:
        if self.dp is None:
            return None
        return self.dp.epsilon_total if self.dp.epsilon_total is not None else 1e6

    def plan(self) -> dict[str, Any]:
        """The plan document (blocking)."""
        return self._blocking(self.aplan())  # type: ignore[no-any-return]

    async def asubmit(self, reason: str = "") -> list[Any]:
        """Submit the plan to every owner at once; returns their ``Plan`` objects."""
        doc = await self.aplan()
        plans = await asyncio.gather(*(m.core.submit_plan(doc, reason=reason)
                                       for m in self.members))
        for m, p in zip(self.members, plans, strict=True):
            m.plan = p
        return list(plans)

    def submit(self, reason: str = "") -> list[Any]:
        """Submit the plan to every owner (one request each); returns the ``Plan`` objects."""
        return self._blocking(self.asubmit(reason))  # type: ignore[no-any-return]

    async def await_approved(self, timeout: float | None = 600.0) -> None:
        if any(m.plan is None for m in self.members):
            raise InvalidQuery("submit() the job first")
        await asyncio.gather(*(m.plan._await_approved(timeout) for m in self.members))

    def wait_approved(self, timeout: float | None = 600.0) -> FLJob:
        """Wait until every owner approved the plan (PlanDenied / PlanPending otherwise)."""
        self._blocking(self.await_approved(timeout))
        return self

    @property
    def plans(self) -> list[Any]:
        """Each owner's ``Plan`` (after :meth:`submit`)."""
        return [m.plan for m in self.members]

    # -- running ---------------------------------------------------------------------
    def run(self, rounds: int | None = None, progress: bool = True) -> History:
        """Run the remaining rounds (or ``rounds`` of them); returns the :class:`History`.

        Ctrl-C stops after cancelling the round in flight: the model and history
        keep the rounds that completed (``history.stopped`` says why it stopped).
        """
        bar = _progress(self, rounds, progress)
        started, ended = threading.Event(), threading.Event()

        async def body() -> History:
            started.set()
            try:
                return await self.arun(rounds, bar)
            finally:
                ended.set()

        fut = self.members[0].core.submit(body())
        try:
            while True:  # short waits: a Ctrl-C (SIGINT) is handled between them
                try:
                    return fut.result(timeout=0.25)  # type: ignore[no-any-return]
                except concurrent.futures.TimeoutError:
                    continue
        except KeyboardInterrupt:
            fut.cancel()  # this future is done at once; the task stops at its next await
            if started.is_set():
                # Wait for it: a round past its last await still completes (and is kept),
                # so the history must not be read before the task has ended.
                ended.wait(30)
            self.history.stopped = "interrupted (Ctrl-C)"
            return self.history
        finally:
            if bar is not None:
                bar.close()

    async def arun(self, rounds: int | None = None, bar: Any = None) -> History:
        """The coroutine behind :meth:`run` (await it from an asyncio program)."""
        if any(m.plan is None for m in self.members):
            await self.asubmit()
            await self.await_approved()
        end = self.rounds if rounds is None else min(self.rounds, self._round + int(rounds))
        self.history.stopped = None
        while self._round < end:
            try:
                record = await self.around(self._round)
            except _JobStopped as stop:
                self.history.stopped = str(stop)
                break
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(record.summary())
            if record.stop:
                self.history.stopped = record.stop
                break
        return self.history

    async def around(self, r: int) -> RoundRecord:
        """One round: runs on every worker at once, aggregation, strategy step."""
        t0 = time.perf_counter()
        members = [m for m in self.members if not m.out]
        weights = {k: v.detach().clone().float() for k, v in self.model.state_dict().items()}
        if self.secure_agg:
            sums, used, outcome = await self._secure_round(members, weights, r)
        else:
            outcome = await self._clear_round(members, weights, r)
            used = sorted(outcome.ok)
            if len(used) < self.min_workers:
                raise self._round_failed(r, outcome, len(used))
            sums = _sum_clear([outcome.ok[n] for n in used])
        total = float(sums["num_examples"])
        mean = weighted_mean({k: torch.as_tensor(v) for k, v in sums["update"].items()}, total)
        new = self.strategy.aggregate(weights, mean, r + 1)
        self.model.load_state_dict(new)
        self._round = r + 1
        record = RoundRecord(
            round=r + 1, workers=used, dropped=dict(outcome.dropped),
            examples=int(round(total)), seconds=time.perf_counter() - t0,
            loss=float(sums["loss"]) / total if "loss" in sums else None,
            accuracy=float(sums["correct"]) / total if "correct" in sums else None,
            epsilon={m.worker.name: m.epsilon for m in self.members}, stop=outcome.stop)
        self.history.add(record)
        return record

    def _round_failed(self, r: int, outcome: _Outcome, got: int) -> Exception:
        if outcome.stop is not None:  # refused for budget or runs: stop cleanly, spend nothing
            return _JobStopped(f"round {r + 1} refused: {outcome.stop}")
        why = "; ".join(f"{k}: {v}" for k, v in outcome.dropped.items())
        return RoundFailed(f"round {r + 1}: {got} worker(s) finished, the policy needs "
                           f"{self.min_workers} ({why}); the job stopped after "
                           f"{r} round(s)", round=r + 1, finished=got,
                           min_workers=self.min_workers)

    async def _run_plan(self, m: _Member, weights: dict[str, torch.Tensor], r: int) -> Any:
        run = await m.plan._arun(weights=weights, round=r)
        m.epsilon = float(run.run.get("epsilon_spent") or 0.0)
        return run

    async def _gather(self, members: list[_Member], coros: list[Any]) -> tuple[
            dict[str, Any], dict[str, str], str | None]:
        results = await asyncio.gather(*coros, return_exceptions=True)
        ok: dict[str, Any] = {}
        dropped: dict[str, str] = {}
        stop = None
        for m, res in zip(members, results, strict=True):
            if isinstance(res, asyncio.CancelledError):
                raise res
            if isinstance(res, BaseException):
                if isinstance(res, KeyboardInterrupt | SystemExit):
                    raise res
                dropped[m.worker.name] = _reason(res)
                if isinstance(res, _STOPPING):
                    m.out = True
                    stop = f"{m.worker.name}: {_reason(res)}"
            else:
                ok[m.worker.name] = res
        return ok, dropped, stop

    async def _clear_round(self, members: list[_Member], weights: dict[str, torch.Tensor],
                           r: int) -> _Outcome:
        ok, dropped, stop = await self._gather(
            members, [self._run_plan(m, weights, r) for m in members])
        return _Outcome({k: v.outputs for k, v in ok.items()}, dropped, stop)

    async def _secure_round(self, members: list[_Member], weights: dict[str, torch.Tensor],
                            r: int) -> tuple[dict[str, Any], list[str], _Outcome]:
        """Train (outputs held) while the keys are set up; mask; unmask the sum."""
        train = asyncio.ensure_future(self._gather(
            members, [self._run_plan(m, weights, r) for m in members]))
        try:
            keyed, keys, sealed, name, dropped = await self._setup_keys(members, r)
        except BaseException:
            train.cancel()
            raise
        ran, run_dropped, stop = await train
        dropped.update(run_dropped)
        by_name = {m.worker.name: m for m in members}
        threshold = max(self.min_workers, len(keyed) // 2 + 1)
        to_mask = [m for m in keyed if m.worker.name in ran]
        for m in members:  # held runs that cannot join this round's aggregate
            if m.worker.name in ran and m not in keyed:
                dropped.setdefault(m.worker.name, "left during key setup")
        masked_ok, mask_dropped, _ = await self._gather(to_mask, [
            self._mask(m, name, ran[m.worker.name].id,
                       {str(i): s[m.index] for i, s in sealed.items() if m.index in s})
            for m in to_mask])
        dropped.update(mask_dropped)
        outcome = _Outcome(masked_ok, dropped, stop)
        survivors = [by_name[n] for n in masked_ok]
        if len(survivors) < max(threshold, self.min_workers):
            raise self._round_failed(r, outcome, len(survivors))
        alive = sorted(m.index for m in survivors)
        revealed_ok, _, _ = await self._gather(survivors, [
            m.core.call(Op.SECAGG_UNMASK, round=name, survivors=alive) for m in survivors])
        revealed = {by_name[n].index: {k: {int(j): int(v) for j, v in d.items()}
                                       for k, d in rep.items() if k in ("b", "s")}
                    for n, rep in revealed_ok.items()}
        if len(revealed) < threshold:
            raise self._round_failed(r, outcome, len(revealed))
        forms = (await self.aplan())["policy"]["outputs"]
        ring = {by_name[n].index: secagg.flatten_ring(v, forms) for n, v in masked_ok.items()}
        total = secagg.unmask(ring, keys, revealed, threshold, secagg.context_for(name))
        sums = secagg.split_outputs(secagg.decode(total), forms)
        return sums, sorted(masked_ok), outcome

    async def _setup_keys(self, members: list[_Member], r: int) -> tuple[
            list[_Member], dict[int, dict[str, bytes]], dict[int, dict[int, bytes]], str,
            dict[str, str]]:
        """Steps 1-2 of the protocol; a worker that fails here is left out and it restarts."""
        dropped: dict[str, str] = {}
        infos, lost, _ = await self._gather(members, [
            m.core.call(Op.SMPC_INFO) for m in members])  # each worker's pinned identity
        dropped.update(lost)
        current = [m for m in members if m.worker.name in infos]
        for attempt in range(len(members)):
            name = f"{self._job_id}|{r + 1}|{attempt}"
            peers = {str(m.index): {"name": infos[m.worker.name]["smpc"]["name"],
                                    "ident": infos[m.worker.name]["smpc"]["public"]}
                     for m in current}
            got, lost, _ = await self._gather(current, [
                m.core.call(Op.SECAGG_KEYS, round=name, index=m.index, peers=peers)
                for m in current])
            dropped.update(lost)
            if lost:  # the others' keys were tagged for a peer list without them: again
                current = [m for m in current if m.worker.name in got]
                if len(current) < max(2, self.min_workers):
                    break
                continue
            keys = {m.index: {"c": bytes(got[m.worker.name]["c"]),
                              "s": bytes(got[m.worker.name]["s"])} for m in current}
            tags = {m.index: got[m.worker.name]["tags"] for m in current}
            if len(current) < max(2, self.min_workers):
                break
            threshold = max(self.min_workers, len(current) // 2 + 1)
            shared, lost, _ = await self._gather(current, [
                m.core.call(Op.SECAGG_SHARE, round=name, keys=_keys_for(keys, tags, m.index),
                            threshold=threshold)
                for m in current])
            dropped.update(lost)
            if not lost:
                sealed = {m.index: {int(j): bytes(v) for j, v in
                                    shared[m.worker.name]["shares"].items()} for m in current}
                return current, keys, sealed, name, dropped
            current = [m for m in current if m.worker.name in shared]
        raise RoundFailed(f"round {r + 1}: fewer than {max(2, self.min_workers)} workers "
                          f"could set up secure aggregation ({dropped})", round=r + 1,
                          finished=len(current), min_workers=self.min_workers)

    async def _mask(self, m: _Member, name: str, run_id: int, shares: dict[str, bytes]) -> Any:
        reply = await m.core.call(Op.SECAGG_MASK, round=name, run=run_id, shares=shares)
        return await m.core.fetch_value(reply)


def _keys_for(keys: dict[int, dict[str, bytes]], tags: dict[int, dict[str, Any]], j: int
              ) -> dict[str, dict[str, bytes]]:
    """The round's key list as worker ``j`` gets it: each other's keys with the tag for ``j``."""
    return {str(i): {**k, **({"tag": bytes(tags[i][str(j)])} if i != j else {})}
            for i, k in keys.items()}


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:160]}" if isinstance(exc, SyftError | OSError) \
        else type(exc).__name__


def _sum_clear(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum of the workers' outputs, in float64 (what a secure aggregate would reveal)."""
    out: dict[str, Any] = {}
    for o in outputs:
        for name, v in o.items():
            if isinstance(v, dict):
                acc = out.setdefault(name, {})
                for k, t in v.items():
                    if k in acc:  # in place, in numpy (twice torch's speed on mixed dtypes)
                        np.add(acc[k], np.asarray(t), out=acc[k])
                    else:
                        acc[k] = np.asarray(t).astype(np.float64)  # a copy of its own
            else:
                out[name] = out.get(name, 0.0) + float(v)
    return {name: {k: torch.from_numpy(t) for k, t in v.items()} if isinstance(v, dict) else v
            for name, v in out.items()}


def _progress(job: FLJob, rounds: int | None, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    todo = job.rounds - job._round if rounds is None else min(rounds, job.rounds - job._round)
    return tqdm(total=todo, desc=f"{type(job).__name__} {job.data}", unit="round")


class FedAvg(FLJob):
    """An FL job aggregating by federated averaging (weighted by sample counts)."""


class FedProx(FLJob):
    """FedAvg with FedProx's proximal term in each worker's loss (``proximal_mu``)."""

    def __init__(self, *args: Any, proximal_mu: float = 0.01, **kwargs: Any) -> None:
        kwargs.setdefault("strategy", _FedProx(proximal_mu))
        super().__init__(*args, **kwargs)


class FedAdam(FLJob):
    """FedAvg's mean as a pseudo-gradient for server-side Adam (Flower's FedAdam)."""

    def __init__(self, *args: Any, eta: float = 0.1, beta_1: float = 0.9,
                 beta_2: float = 0.99, tau: float = 1e-3, **kwargs: Any) -> None:
        kwargs.setdefault("strategy", _FedAdam(eta, beta_1, beta_2, tau))
        super().__init__(*args, **kwargs)


class FedYogi(FLJob):
    """Server-side Yogi on the pseudo-gradient (Flower's FedYogi)."""

    def __init__(self, *args: Any, eta: float = 1e-2, beta_1: float = 0.9,
                 beta_2: float = 0.99, tau: float = 1e-3, **kwargs: Any) -> None:
        kwargs.setdefault("strategy", _FedYogi(eta, beta_1, beta_2, tau))
        super().__init__(*args, **kwargs)


class FedAdagrad(FLJob):
    """Server-side Adagrad on the pseudo-gradient (Flower's FedAdagrad)."""

    def __init__(self, *args: Any, eta: float = 0.1, tau: float = 1e-3, **kwargs: Any) -> None:
        kwargs.setdefault("strategy", _FedAdagrad(eta, tau))
        super().__init__(*args, **kwargs)
