"""An in-process engine: all parties' programs in lockstep, for tests and benchmarks.

:func:`run_local` makes the dealer material, starts one program per party,
and answers each round of :class:`~.engine.Open` requests with the combination
of every party's contribution, exactly as the networked engine does over its
channels (but in memory). :func:`execute` does the same and also returns the
timings and, on request, each party's *view* (its input shares, its material
and every combined value it received), which the security tests examine.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from . import dealer, protocols
from .engine import Material, Open, Program
from .errors import ShapeError
from .prng import Stream
from .spec import Params


@dataclass
class View:
    """What one party saw: its inputs, its material, every other party's contribution to
    each opening (the messages a networked party receives) and every opened value."""

    inputs: tuple[torch.Tensor, ...]
    material: list[Material]
    received: list[torch.Tensor] = field(default_factory=list)
    opened: list[torch.Tensor] = field(default_factory=list)


@dataclass
class LocalRun:
    """The outputs of :func:`execute`, with timings and (optionally) views.

    Attributes
    ----------
    outputs : list
        Each party's output share, by party.
    offline_s : float
        Dealer time (making all material).
    online_s : float
        Wall time of the online phase, all parties run one after another.
    critical_s : float
        Online time if the parties ran in parallel: per round, the slowest
        party's computation, summed (what a deployment with one core per party
        and a free network would take).
    rounds : int
        Communication rounds (opens).
    views : list of View or None
        Per party, when ``record=True``.
    """

    outputs: list[Any]
    offline_s: float
    online_s: float
    critical_s: float
    rounds: int
    views: list[View] | None = None


def _combine(req: Sequence[Open]) -> tuple[torch.Tensor, ...]:
    first = req[0]
    for r in req[1:]:
        if r.combine != first.combine or len(r.values) != len(first.values) or any(
                a.shape != b.shape for a, b in zip(r.values, first.values, strict=True)):
            raise ShapeError("parties opened different shapes (inconsistent programs)")
    out = []
    for i in range(len(first.values)):
        acc = first.values[i].clone()
        for r in req[1:]:
            if first.combine == "xor":
                acc ^= r.values[i]
            else:
                acc += r.values[i]
        out.append(acc)
    return tuple(out)


def execute(op_name: str, shares_per_input: Sequence[Sequence[torch.Tensor]],
            params: Params | None = None, n: int | None = None, *,
            record: bool = False, stream: Stream | None = None) -> LocalRun:
    """Run one operation among ``n`` in-process parties and a dealer.

    Parameters
    ----------
    op_name : str
        A key of :data:`.protocols.OPS`.
    shares_per_input : sequence of sequences of torch.Tensor
        ``shares_per_input[i][p]``: party ``p``'s share of input ``i``.
    params : dict, optional
        The op's public parameters.
    n : int, optional
        Number of parties (default: the number of shares given).
    record : bool
        Keep every party's :class:`View`.
    stream : Stream, optional
        The dealer's randomness (fresh CSPRNG when omitted).

    Returns
    -------
    LocalRun
    """
    spec = protocols.get(op_name)
    params = dict(params or {})
    if len(shares_per_input) != spec.arity:
        raise ShapeError(f"{op_name} takes {spec.arity} input(s), got {len(shares_per_input)}")
    n = n if n is not None else len(shares_per_input[0])
    if any(len(s) != n for s in shares_per_input):
        raise ShapeError("every input needs one share per party")
    shapes = tuple(tuple(s[0].shape) for s in shares_per_input)
    t0 = time.perf_counter()
    material = dealer.make_all(spec.recipes(shapes, params, n), n, stream)
    offline = time.perf_counter() - t0

    inputs = [tuple(s[p] for s in shares_per_input) for p in range(n)]
    # programs use their material up in place: a view keeps it as the dealer sent it
    views = [View(inputs[p], [{k: t.clone() for k, t in m.items()} for m in material[p]])
             for p in range(n)] if record else None
    t0 = time.perf_counter()
    critical = 0.0
    programs: list[Program] = []
    requests: list[Open | None] = []
    outputs: list[Any] = [None] * n
    slowest = 0.0
    for p in range(n):
        t = time.perf_counter()
        prog = spec.program(p, n, inputs[p], material[p], params)
        try:
            requests.append(next(prog))
        except StopIteration as stop:
            requests.append(None)
            outputs[p] = stop.value
        programs.append(prog)
        slowest = max(slowest, time.perf_counter() - t)
    critical += slowest
    rounds = 0
    while any(r is not None for r in requests):
        if any(r is None for r in requests):
            raise ShapeError("a party finished while others still open values")
        opens = [r for r in requests if r is not None]
        combined = _combine(opens)
        rounds += 1
        slowest = 0.0
        for p in range(n):
            if views is not None:
                views[p].received.extend(t for q, o in enumerate(opens) if q != p
                                         for t in o.values)
                views[p].opened.extend(combined)
            t = time.perf_counter()
            try:
                requests[p] = programs[p].send(combined)
            except StopIteration as stop:
                requests[p] = None
                outputs[p] = stop.value
            slowest = max(slowest, time.perf_counter() - t)
        critical += slowest
    online = time.perf_counter() - t0
    return LocalRun(outputs, offline, online, critical, rounds, views)


def run_local(op_name: str, shares_per_input: Sequence[Sequence[torch.Tensor]],
              params: Params | None = None, n: int | None = None) -> list[Any]:
    """Run one operation among ``n`` in-process parties; each party's output share.

    Parameters
    ----------
    op_name : str
        A key of :data:`.protocols.OPS`.
    shares_per_input : sequence of sequences of torch.Tensor
        ``shares_per_input[i][p]``: party ``p``'s share of input ``i``.
    params : dict, optional
        The op's public parameters.
    n : int, optional
        Number of parties (default: the number of shares given).

    Returns
    -------
    list
        Party ``p``'s output share at index ``p``.
    """
    return execute(op_name, shares_per_input, params, n).outputs
