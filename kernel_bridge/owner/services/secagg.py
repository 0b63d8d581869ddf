"""Secure aggregation on the worker: mask a held plan run's outputs, reveal shares.

The worker's half of :mod:`kernel_bridge.fl.secagg` (Bonawitz et al.'s
protocol), in trusted code. A plan whose policy says ``aggregate.secure`` has
its outputs *held* in this process by :class:`~.plans.PlanService`; the only
way they leave is :meth:`~.plans.PlanService.release_masked`, called here with
the outputs masked by pairwise and self masks, so the scientist learns nothing
from one worker's reply and only the sum from all of them.

Ops (per scientist, per ``round``: a string the scientist picks, e.g. job id
and round number, which is bound into every key and mask):

* ``secagg_keys`` -> two fresh X25519 public keys, tagged for each peer under the
  key this worker shares with that peer's pinned SMPC identity
  (:func:`~kernel_bridge.fl.secagg.key_tag`);
* ``secagg_share`` -> this worker's Shamir shares for each peer, encrypted to it,
  once every peer's keys carry that peer's tag (the scientist relays the keys
  and cannot substitute its own);
* ``secagg_mask`` -> the held run's outputs, masked (released once, recorded);
* ``secagg_unmask`` -> shares for the survivors' self masks and the dropped
  workers' mask keys (never both for the same worker), then the round is forgotten.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import PermissionDenied, ProtocolError
from ...fl import secagg
from ...smpc import keys as identity_keys
from ...wire import codec
from ...wire.protocol import Op
from ..context import WorkerContext
from ..session import Session
from .base import Handler, Service
from .plans import PlanService

#: Rounds a scientist may have open on one worker at once, and how long one may stay open.
MAX_ROUNDS = 16
ROUND_TTL = 3600.0


@dataclass
class _Round:
    participant: secagg.Participant
    opened: float
    peers: dict[int, tuple[str, bytes]]  # index -> (worker name, identity public key)


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
        cfg = ctx.config
        self.identity = identity_keys.load_or_create(cfg.state, cfg.name)
        self.trust = identity_keys.TrustStore(cfg.state, cfg.smpc.pins())
        self._rounds: dict[tuple[str, str], _Round] = {}

    def ops(self) -> Mapping[Op, Handler]:
        return {Op.SECAGG_KEYS: self.op_keys, Op.SECAGG_SHARE: self.op_share,
                Op.SECAGG_MASK: self.op_mask, Op.SECAGG_UNMASK: self.op_unmask}

    def _round_of(self, session: Session, msg: dict[str, Any]) -> _Round:
        key = (session.scientist, _round(msg))
        got = self._rounds.get(key)
        if got is None:
            raise PermissionDenied(f"no secure-aggregation round {key[1][:40]!r} of yours here "
                                   "(never opened, finished, or lost in a restart)")
        return got

    def _participant(self, session: Session, msg: dict[str, Any]) -> secagg.Participant:
        return self._round_of(session, msg).participant

    # -- ops ---------------------------------------------------------------------------
    async def op_keys(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Open a round: takes ``round``, ``index`` (1..n) and ``peers`` (``{index:
        {"name", "ident"}}`` of every worker in the round: names and hex SMPC identity
        public keys, this one's included, each checked against this owner's pins);
        returns ``c`` and ``s``, two fresh X25519 public keys, and ``tags`` (one per
        peer, see :func:`~kernel_bridge.fl.secagg.key_tag`). Releases nothing private.
        Refused (UntrustedParty) when a peer is not pinned as a peer with that key."""
        name = _round(msg)
        index = msg.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= 10_000:
            raise ProtocolError("index is an integer from 1 to 10000")
        peers = _peers(msg.get("peers"))
        me = self.ctx.config.name
        if peers.get(index) != (me, self.identity.public):
            raise ProtocolError(f"peers[{index}] must be this worker ({me!r}, its SMPC key)")
        for j, (peer, ident) in peers.items():
            if j != index:
                self.trust.check(peer, ident, "peer")
        now = time.monotonic()
        for k, r in list(self._rounds.items()):
            if now - r.opened > ROUND_TTL:
                del self._rounds[k]
        mine = [k for k in self._rounds if k[0] == session.scientist]
        if len(mine) >= MAX_ROUNDS and (session.scientist, name) not in self._rounds:
            del self._rounds[min(mine, key=lambda k: self._rounds[k].opened)]
        context = secagg.context_for(name)
        p = secagg.Participant(index, context)
        self._rounds[(session.scientist, name)] = _Round(p, now, peers)
        mine_keys = p.advertise()
        tags = {str(j): secagg.key_tag(self.identity.exchange(ident), context, (index, me),
                                       (j, peer), mine_keys["c"], mine_keys["s"])
                for j, (peer, ident) in peers.items() if j != index}
        return {**mine_keys, "tags": tags}

    async def op_share(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """Takes ``keys`` (``{index: {"c", "s"}}`` of every worker in the round) and
        ``threshold``; returns ``shares``: Shamir shares of this worker's self-mask
        seed and mask key, one ciphertext per peer (only that peer can open it)."""
        rnd = self._round_of(session, msg)
        p = rnd.participant
        keys = _keys(msg.get("keys"))
        threshold = msg.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise ProtocolError("threshold is an integer")
        if set(keys) != set(rnd.peers):
            raise PermissionDenied("secure aggregation: the key list names other workers than "
                                   "the round was opened with; nothing was shared")
        me = (p.index, self.ctx.config.name)
        for j, k in keys.items():
            if j == p.index:
                continue
            peer, ident = rnd.peers[j]
            want = secagg.key_tag(self.identity.exchange(ident), p.context, (j, peer), me,
                                  k["c"], k["s"])
            if not hmac.compare_digest(want, k.get("tag") or b""):
                raise PermissionDenied(
                    f"secure aggregation: worker {j} ({peer!r})'s round keys do not carry the "
                    "tag of its pinned identity (the key list was altered on the way); nothing "
                    "was shared")
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
        raise ProtocolError("keys is a dict of index -> {c, s, tag} for every worker of the "
                            "round")
    out = {}
    for j, k in raw.items():
        try:
            c, s, tag = bytes(k["c"]), bytes(k["s"]), bytes(k.get("tag") or b"")
            out[int(j)] = {"c": c, "s": s, "tag": tag}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ProtocolError("malformed public keys") from None
        if len(c) != 32 or len(s) != 32:
            raise ProtocolError("an X25519 public key is 32 bytes")
    return out


def _peers(raw: Any) -> dict[int, tuple[str, bytes]]:
    if not isinstance(raw, dict) or not 1 < len(raw) <= 10_000:
        raise ProtocolError("peers is a dict of index -> {name, ident} for every worker of "
                            "the round")
    out = {}
    for j, v in raw.items():
        try:
            name, ident = v["name"], bytes.fromhex(v["ident"])
            out[int(j)] = (name, ident)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ProtocolError("malformed peers") from None
        if not isinstance(name, str) or not 0 < len(name) <= 200 or len(ident) != 32:
            raise ProtocolError("a peer is a worker name and a 32-byte X25519 key")
    return out
