"""HE from the scientist's side: encrypted predictions and encrypted evaluation.

``pointer.he_predict(enc_x)`` asks the owner's trusted code to run its model on
your encrypted input; ``pointer.he_evaluate(enc_weights)`` asks it to score
your encrypted linear model on its rows and send back a DP aggregate, still
encrypted. Your context's public part is sent once per session (the first call
does it); the secret key never leaves :class:`kernel_bridge.he.Context`.
Coroutines here; the pointer's blocking twins call them.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._format import format_epsilon
from ..errors import HEError
from ..he.context import Context
from ..he.vector import EncryptedVector
from ..wire.protocol import Op
from ._session import RemoteObject, Session

__all__ = ["HEEvaluation", "evaluate", "predict", "register", "services"]

#: Per session object: the (session id, context id) pairs the worker has.
_REGISTERED: weakref.WeakKeyDictionary[Any, set[tuple[str, str]]] = \
    weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class HEEvaluation:
    """An encrypted evaluation's result: a ciphertext only you can decrypt.

    Attributes
    ----------
    ciphertext : EncryptedVector
        The noisy aggregate (one value), under your key.
    metric : str
        What was computed (``"mse"``: mean squared error of the score against the label).
    epsilon : float
        What it cost on the owner's ledger.
    budget : dict
        Your budget on the asset afterwards.
    rows_exact : bool
        Whether the mean divides by the exact row count (the owner shows it)
        or by a DP count.
    """

    ciphertext: EncryptedVector
    metric: str
    epsilon: float
    budget: dict[str, Any] = field(default_factory=dict)
    rows_exact: bool = True

    def decrypt(self) -> float:
        """The noisy aggregate."""
        return float(self.ciphertext.decrypt()[0])

    def __repr__(self) -> str:
        left = self.budget.get("epsilon_remaining")
        tail = f"; ε left {format_epsilon(left)}" if isinstance(left, int | float) else ""
        return (f"<HEEvaluation {self.metric} (encrypted; .decrypt()); "
                f"ε={format_epsilon(self.epsilon)}{tail}>")


async def register(session: Session, ctx: Context, force: bool = False) -> str:
    """Send ``ctx``'s public part to the worker (once per session); returns its id."""
    if not isinstance(ctx, Context):
        raise HEError("expected a context from kb.he.context()")
    core = getattr(session, "core", session)
    seen = _REGISTERED.setdefault(core, set())
    key = (str(getattr(core, "session_id", "")), ctx.id)
    if force or key not in seen:
        reply = await session.send_value(Op.HE_CONTEXT, ctx.public())
        if reply["context"] != ctx.id:
            raise HEError("the worker named the context differently; is it the same key?")
        seen.add(key)
    return ctx.id


async def _call(session: Session, op: Op, ctx: Context, value: Any, **fields: Any
                ) -> dict[str, Any]:
    for attempt in (0, 1):
        cid = await register(session, ctx, force=attempt == 1)
        try:
            return await session.send_value(op, value, context=cid, **fields)
        except HEError as exc:
            if attempt or exc.data.get("reason") != "unknown_context":
                raise
    raise AssertionError("unreachable")


def _vector(enc: Any, what: str) -> EncryptedVector:
    if not isinstance(enc, EncryptedVector):
        raise HEError(f"{what} must be encrypted first: kb.he.encrypt(ctx, values)")
    return enc


async def predict(pointer: RemoteObject, enc_x: EncryptedVector) -> EncryptedVector:
    """The owner's model on ``enc_x``; the result is encrypted under your key.

    Raises
    ------
    PredictionLimitReached
        You have used the predictions the owner allows.
    HEError
        The context is too shallow for the model, or the input has the wrong size.
    """
    enc = _vector(enc_x, "the input")
    reply = await _call(pointer._session, Op.HE_PREDICT, enc.context, enc.to_wire(),
                        pointer=pointer.id, size=enc.size)
    return EncryptedVector.from_wire(enc.context, reply["y"], int(reply["size"]))


async def evaluate(pointer: RemoteObject, enc_weights: EncryptedVector, metric: str = "mse"
                   ) -> HEEvaluation:
    """Score your encrypted linear model on the owner's rows; spends the owner's ε.

    ``enc_weights`` holds one weight per column the owner declared for
    evaluation (``he_services()`` lists them, in order), then the bias. The
    features are the columns scaled into [0, 1] by their declared bounds.

    Raises
    ------
    BudgetExhausted
        Your budget on the asset (or its total) would be exceeded; nothing was spent.
    """
    enc = _vector(enc_weights, "the weights")
    reply = await _call(pointer._session, Op.HE_EVALUATE, enc.context, enc.to_wire(),
                        pointer=pointer.id, metric=metric, size=enc.size)
    return HEEvaluation(EncryptedVector.from_wire(enc.context, reply["result"], 1),
                        reply["metric"], float(reply["epsilon"]), dict(reply.get("budget") or {}),
                        bool(reply.get("rows_exact", True)))


async def services(session: Session) -> list[dict[str, Any]]:
    """The worker's HE services, with your predictions used and your budgets."""
    return list((await session.call(Op.HE_SERVICES))["services"])


def plain_mse(weights: Any, x: Any, y: Any) -> float:
    """The same metric in plaintext (for your own data): mean of ``(x·w + b − y)²``."""
    w = np.asarray(weights, dtype=float)
    s = np.asarray(x, dtype=float) @ w[:-1] + w[-1]
    return float(np.mean((s - np.asarray(y, dtype=float)) ** 2))
