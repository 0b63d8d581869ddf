"""Running one party's protocol program in the worker: its torch threads, and each
:class:`~kernel_bridge.smpc.engine.Open` exchanged with the other parties over the
encrypted links (:mod:`.smpc_net`).

A program (:mod:`kernel_bridge.smpc`) never touches a socket: it yields its
contributions to an opening and is sent their combination. Here each round is
one step off the event loop (combine the last opening, run the program to its
next ``Open``, pack it), then a send to and a receive from every other party.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from typing import TYPE_CHECKING, Any

from ..errors import SMPCError
from ..smpc import elementwise
from .smpc_net import PeerNet
from .smpc_values import pack, unpack

if TYPE_CHECKING:
    import torch

#: Programs on at most this many input and output elements run on the event loop (a
#: step takes well under a millisecond; a thread hop would cost more than the step).
INLINE_ELEMENTS = 1 << 16


@functools.cache
def torch_threads(n: int) -> None:
    """Run this process's torch on ``n`` threads (once). Parties and the dealer compute
    in the worker process; two workers on two cores with torch's default of one thread
    per core make a 2 ms product take 40 ms now and then (threads spinning on each other),
    which is why kernels take ``threads`` too."""
    import torch

    torch.set_num_threads(max(1, int(n)))


def _combine(theirs: list[Any], mine: list[torch.Tensor], how: str) -> tuple[torch.Tensor, ...]:
    """Every party's contributions to one opening, summed (or XORed) into the first
    peer's receive buffer (ours): no new memory."""
    out = unpack(theirs[0], mine)
    for o, m in zip(out, mine, strict=True):
        elementwise.add_(o, m) if how == "add" else o.bitwise_xor_(m)
    for payload in theirs[1:]:
        for o, t in zip(out, unpack(payload, mine), strict=True):
            elementwise.add_(o, t) if how == "add" else o.bitwise_xor_(t)
    return tuple(out)


async def drive(program: Any, net: PeerNet, cid: str, urls: dict[str, str], timeout: float,
                inline: bool = False) -> Any:
    """Run a party program to its result, exchanging each Open with the other parties.

    Parameters
    ----------
    program : generator
        The party's program (yields Opens, is sent their combinations).
    net : PeerNet
        The worker's SMPC links.
    cid : str
        The computation's id (binds every message to it).
    urls : dict
        The other parties' names and SMPC URLs.
    timeout : float
        Seconds each wait for a peer's contribution may take.
    inline : bool
        Run the steps on the event loop (small tensors, where a thread hop would cost
        more than the step); otherwise in a thread, so the worker keeps serving other
        sessions.

    Returns
    -------
    Any
        What the program returns (the party's output share).
    """
    from ..smpc.engine import Open

    def step(last: tuple[list[Any], list[torch.Tensor], str] | None) -> tuple[Any, ...]:
        # StopIteration cannot cross a thread's future: the result comes back as
        # (True, value).
        try:
            opened = program.send(None if last is None else _combine(*last))
        except StopIteration as stop:
            return True, stop.value, [], None, ""
        if not isinstance(opened, Open):
            raise SMPCError("a protocol yielded something other than an Open")
        mine = [v.contiguous() for v in opened.values]
        return False, None, mine, pack(mine), opened.combine

    last = None
    for rnd in itertools.count():
        finished, value, mine, data, how = (step(last) if inline
                                            else await asyncio.to_thread(step, last))
        if finished:
            return value
        kind = f"open:{rnd}"
        sends = [net.send(p, urls[p], cid, kind, data) for p in urls]
        recvs = [net.recv(p, cid, kind, timeout) for p in urls]
        got = await asyncio.gather(*sends, *recvs)
        last = (list(got[len(sends):]), mine, how)
    raise AssertionError("unreachable")
