"""Secure aggregation on the worker: mask a held plan run's outputs, reveal shares.

The worker's half of :mod:`kernel_bridge.fl.secagg` (Bonawitz et al.'s
protocol), in trusted code. A plan whose policy says ``aggregate.secure`` has
its outputs *held* in this process by :class:`~.plans.PlanService`; the only
way they leave is :meth:`~.plans.PlanService.release_masked`, called here with
the outputs masked by pairwise and self masks, so the scientist learns nothing
from one worker's reply and only the sum from all of them.

Ops (per scientist, per ``round``: a string the scientist picks, e.g. job id
and round number, which is bound into every key and mask):

* ``secagg_keys`` -> two fresh X25519 public keys;
* ``secagg_share`` -> this worker's Shamir shares for each peer, encrypted to it;
* ``secagg_mask`` -> the held run's outputs, masked (released once, recorded);
* ``secagg_unmask`` -> shares for the survivors' self masks and the dropped
  workers' mask keys (never both for the same worker), then the round is forgotten.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ...errors import PermissionDenied, ProtocolError
from ...fl import secagg
from ...wire import codec
from ...wire.protocol import Op
from ..context import WorkerContext
from ..session import Session
from .base import Handler, Service
from .plans import PlanService

#: Rounds a scientist may have open on one worker at once, and how long one may stay open.
MAX_ROUNDS = 16
ROUND_TTL = 3600.0


class SecAggService(Service):
    """The worker's side of secure aggregation over held plan runs.

    Parameters
    ----------
    ctx : WorkerContext
    plans : PlanService
        Holds the runs' outputs; releases them masked.
    """

    def __init__(self, ctx: WorkerContext, plans: PlanService) -> None:
        super().__init__(ctx)
        self.plans = plans
        self._rounds: dict[tuple[str, str], tuple[secagg.Participant, float]] = {}

    def ops(self) -> Mapping[Op, Handler]:
        return {Op.SECAGG_KEYS: self.op_keys, Op.SECAGG_SHARE: self.op_share,
                Op.SECAGG_MASK: self.op_mask, Op.SECAGG_UNMASK: self.op_unmask}

    def _participant(self, session: Session, msg: dict[str, Any]) -> secagg.Participant:
        key = (session.scientist, _round(msg))
        got = self._rounds.get(key)
        if got is None:
            raise PermissionDenied(f"no secure-aggregation round {key[1][:40]!r} of yours here "
                                   "(never opened, finished, or lost in a restart)")
        return got[0]

    # -- ops ---------------------------------------------------------------------------
    async def op_keys(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Open a round: takes ``round`` and ``index`` (1..n); returns ``c`` and ``s``,
        two fresh X25519 public keys. Releases nothing private."""
        name = _round(msg)
        index = msg.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= 10_000:
            raise ProtocolError("index is an integer from 1 to 10000")
        now = time.monotonic()
        for k, (_, t) in list(self._rounds.items()):
            if now - t > ROUND_TTL:
                del self._rounds[k]
        mine = [k for k in self._rounds if k[0] == session.scientist]
        if len(mine) >= MAX_ROUNDS and (session.scientist, name) not in self._rounds:
            del self._rounds[min(mine, key=lambda k: self._rounds[k][1])]
        p = secagg.Participant(index, secagg.context_for(name))
        self._rounds[(session.scientist, name)] = (p, now)
        return p.advertise()

    async def op_share(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Takes ``keys`` (``{index: {"c", "s"}}`` of every worker in the round) and
        ``threshold``; returns ``shares``: Shamir shares of this worker's self-mask
        seed and mask key, one ciphertext per peer (only that peer can open it)."""
        p = self._participant(session, msg)
        keys = _keys(msg.get("keys"))
        threshold = msg.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise ProtocolError("threshold is an integer")
        sealed = p.share_keys(keys, threshold)
        return {"shares": {str(j): v for j, v in sealed.items()}}

    async def op_mask(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Takes ``run`` (a held run of a secure plan) and ``shares`` (the peers'
        ciphertexts for this worker); releases the run's outputs **masked**, once
        (:meth:`PlanService.release_masked` records it first), as a frame."""
        p = self._participant(session, msg)
        shares = msg.get("shares")
        if not isinstance(shares, dict):
            raise ProtocolError("shares is a dict of index -> ciphertext")
        try:
            p.receive_shares({int(j): bytes(v) for j, v in shares.items()})
        except (ValueError, TypeError):
            raise ProtocolError("malformed shares") from None
        except Exception as exc:  # cryptography's InvalidTag: a share was tampered with
            raise PermissionDenied(f"a share failed to authenticate ({type(exc).__name__})"
                                   ) from None
        run_id = msg.get("run")
        held = self.plans.held_outputs(session, run_id)  # type: ignore[arg-type]
        vector = secagg.flatten_outputs(held.outputs, held.forms)
        masked = secagg.split_outputs(p.mask(secagg.encode(vector)), held.forms)
        checked = self.plans.release_masked(session, int(run_id), masked,  # type: ignore[arg-type]
                                            participants=len(p.keys),
                                            protocol="secagg-bonawitz")
        data = codec.dumps(checked)
        out, _ = self.ctx.deliver([data], len(data))
        return out

    async def op_unmask(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Takes ``survivors`` (indices whose masked outputs arrived); returns this
        worker's shares of the survivors' self-mask seeds (``b``) and of the dropped
        workers' mask keys (``s``), as decimal strings, once; the round is then closed.
        Refused with fewer survivors than the threshold or a second time."""
        p = self._participant(session, msg)
        survivors = msg.get("survivors")
        if not isinstance(survivors, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in survivors):
            raise ProtocolError("survivors is a list of indices")
        revealed = p.reveal(survivors)
        del self._rounds[(session.scientist, _round(msg))]
        return {kind: {str(j): str(v) for j, v in d.items()} for kind, d in revealed.items()}


def _round(msg: dict[str, Any]) -> str:
    name = msg.get("round")
    if not isinstance(name, str) or not 0 < len(name) <= 200:
        raise ProtocolError("round is a string of 1 to 200 characters")
    return name


def _keys(raw: Any) -> dict[int, dict[str, bytes]]:
    if not isinstance(raw, dict) or not 1 < len(raw) <= 10_000:
        raise ProtocolError("keys is a dict of index -> {c, s} for every worker of the round")
    out = {}
    for j, k in raw.items():
        try:
            c, s = bytes(k["c"]), bytes(k["s"])
            out[int(j)] = {"c": c, "s": s}
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("malformed public keys") from None
        if len(c) != 32 or len(s) != 32:
            raise ProtocolError("an X25519 public key is 32 bytes")
    return out
