"""Pointers: local names for objects that stay on a worker.

Operators, item access, attributes and method calls on a pointer run on the
worker (through its allow-list) and return new pointers. ``.get()`` brings a
value back when the worker's gate allows it; ``.request()`` asks the owner.
"""

from __future__ import annotations

from typing import Any

from ..errors import ApprovalRequired, ProtocolError
from ..wire.protocol import Op, OpKind
from ..wire.refs import PointerRef
from . import he
from ._session import Handle, Session, blocking
from .dp import DP
from .request import Request

_BINOPS = ["add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or",
           "xor", "lshift", "rshift"]
_COMPARE = ["eq", "ne", "lt", "le", "gt", "ge"]


async def _wire_arg(value: Any) -> Any:
    """Pointers inside arguments travel as references; everything else as a value."""
    if isinstance(value, Pointer):
        return PointerRef(str((await value._aresolved())["id"]))
    if isinstance(value, list):
        return [await _wire_arg(v) for v in value]
    if isinstance(value, tuple):
        return tuple([await _wire_arg(v) for v in value])
    if isinstance(value, dict):
        return {k: await _wire_arg(v) for k, v in value.items()}
    return value


def _pointers(value: Any) -> list[Pointer]:
    if isinstance(value, Pointer):
        return [value]
    if isinstance(value, list | tuple):
        return [p for v in value for p in _pointers(v)]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _pointers(v)]
    return []


class Pointer:
    """A reference to an object held in a session on a worker.

    Attributes
    ----------
    id : str
        The object's id in the session (unguessable; meaningless elsewhere).
    type_name : str
        The remote type, from a fixed vocabulary.
    taint : frozenset of str
        The private assets the value may derive from; empty means it may be fetched.
    """

    __slots__ = ("_session", "_info", "_pending", "__weakref__")

    def __init__(self, worker: Handle, info: dict[str, Any] | None,
                 pending: tuple[Pointer, str] | None = None) -> None:
        self._session: Session = worker.core
        self._info = info
        self._pending = pending

    # -- identity -------------------------------------------------------------
    async def _aresolved(self) -> dict[str, Any]:
        if self._info is None:
            assert self._pending is not None
            target, name = self._pending
            self._info = await target._aop(OpKind.ATTR, name)
            self._pending = None
        return self._info

    def _resolved(self) -> dict[str, Any]:
        if self._info is None:
            return self._session.blocking(self._aresolved())
        return self._info

    @property
    def id(self) -> str:
        """The object's id in your session (unguessable; meaningless elsewhere)."""
        return str(self._resolved()["id"])

    @property
    def ref(self) -> PointerRef:
        """The reference a pointer travels as inside another call's arguments."""
        return PointerRef(self.id)

    @property
    def worker(self) -> Any:
        """The worker handle this pointer came from (a ``Worker`` or an ``AsyncWorker``)."""
        return self._session.handle

    @property
    def type_name(self) -> str:
        """The remote value's type, from a fixed vocabulary."""
        return str(self._resolved()["type"])

    @property
    def taint(self) -> frozenset[str]:
        """The private assets the value may derive from; empty means it may be fetched."""
        return frozenset(self._resolved()["taint"])

    @property
    def kernel(self) -> str:
        """The session kernel holding it: ``clean``, ``private`` or ``mock``."""
        return str(self._resolved()["kernel"])

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The value's shape, for arrays, tensors and tables (None otherwise)."""
        s = self._resolved().get("shape")
        return None if s is None else tuple(s)

    @property
    def dtype(self) -> str | None:
        """The value's dtype, for arrays and tensors (None otherwise)."""
        return self._resolved().get("dtype")

    def __repr__(self) -> str:
        name = self._session.name
        if self._info is None and self._pending is not None:
            return f"<Pointer {name}: {self._pending[0]!r}.{self._pending[1]}>"
        info = self._resolved()
        bits = [f"{name}:{info['id']}", info["type"]]
        if info.get("shape") is not None:
            bits.append(f"shape={tuple(info['shape'])}")
        if info.get("kernel") == "mock":
            bits.append("MOCK")
        bits.append(f"tainted={{{', '.join(info['taint'])}}}" if info["taint"] else "clean")
        return f"<Pointer {' '.join(bits)}>"

    @property
    def dp(self) -> DP:
        """DP queries on this asset (``ptr.dp.mean("age", epsilon=0.2)``); see :mod:`.dp`."""
        return DP(self)

    # -- values (coroutines, and their blocking twins) ------------------------------
    async def _aget(self) -> Any:
        """The value, if it may leave the worker without approval.

        Raises
        ------
        ApprovalRequired
            The value derives from private data; ``err.request(reason)`` asks the owner.
        """
        try:
            reply = await self._session.call_once(Op.GET, id=(await self._aresolved())["id"])
            return await self._session.fetch_value(reply)
        except ApprovalRequired as exc:
            exc.pointer = self
            raise

    async def _arequest(self, reason: str = "") -> Request:
        """Ask the data owner to release this value (a snapshot taken now)."""
        reply = await self._session.call(Op.REQUEST, id=(await self._aresolved())["id"],
                                         reason=reason)
        return Request(self._session, reply["request"])

    async def _adelete(self) -> None:
        """Free the remote object."""
        await self._session.call(Op.DELETE, ids=[(await self._aresolved())["id"]])

    async def _aop(self, kind: OpKind, name: str, args: list[Any] | None = None,
                   kwargs: dict[str, Any] | None = None, reflected: bool = False
                   ) -> dict[str, Any]:
        """Run one operation on this object on the worker; the result's pointer info."""
        for v in _pointers([args or [], kwargs or {}]):
            if v._session is not self._session:
                raise ProtocolError("pointers from different workers cannot be combined; "
                                    "move data with send() or use SMPC")
        info = await self._aresolved()
        reply = await self._session.call(Op.OP, target=info["id"], kind=str(kind), name=name,
                                         args=await _wire_arg(list(args or [])),
                                         kwargs=await _wire_arg(dict(kwargs or {})),
                                         reflected=reflected)
        return reply["pointer"] or info

    async def _anew(self, kind: OpKind, name: str, args: list[Any] | None = None,
                    kwargs: dict[str, Any] | None = None, reflected: bool = False) -> Pointer:
        """:meth:`_aop`, as a new pointer."""
        return Pointer(self._session, await self._aop(kind, name, args, kwargs, reflected))

    # HE (kernel_bridge/scientist/he.py)
    async def _ahe_predict(self, enc_x: Any) -> Any:
        """The owner's model (this asset) on your encrypted input; encrypted result.

        See :func:`kernel_bridge.scientist.he.predict`.
        """
        return await he.predict(self, enc_x)

    async def _ahe_evaluate(self, enc_weights: Any, metric: str = "mse") -> Any:
        """Your encrypted linear model scored on this asset's rows: an encrypted DP aggregate.

        See :func:`kernel_bridge.scientist.he.evaluate`.
        """
        return await he.evaluate(self, enc_weights, metric)

    he_predict = blocking(_ahe_predict)
    he_evaluate = blocking(_ahe_evaluate)
    def share(self, *parties: Any, dealer: Any = None) -> Any:  # smpc
        """Secret-share this (numeric) value among ``parties``, this pointer's worker included.

        The worker reads the value from your session with trusted code, encodes
        it in fixed point and sends each other party its share, encrypted to
        that party; the result is a :class:`~kernel_bridge.smpc.SharedTensor`
        carrying this pointer's taint. ``dealer`` names the dealer worker.
        """
        # Lazy on purpose: SMPC pulls in torch (~1.5 s), which a session that
        # never shares should not pay for (tests/test_scientist_imports.py).
        from .smpc import share_pointer

        return share_pointer(self, parties, dealer)

    get = blocking(_aget)
    request = blocking(_arequest)
    delete = blocking(_adelete)
    _op = blocking(_aop)
    _new = blocking(_anew)

    # -- remote operations ------------------------------------------------------
    def __getattr__(self, name: str) -> Pointer:
        if name.startswith("_"):
            # Dunders never travel; Python's own protocols get a plain AttributeError.
            raise AttributeError(name)
        return _Member(self._session, self, name)

    def __getitem__(self, key: Any) -> Pointer:
        return self._new(OpKind.GETITEM, "getitem", [key])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._op(OpKind.SETITEM, "setitem", [key, value])

    def __neg__(self) -> Pointer:
        return self._new(OpKind.UNOP, "neg")

    def __pos__(self) -> Pointer:
        return self._new(OpKind.UNOP, "pos")

    def __abs__(self) -> Pointer:
        return self._new(OpKind.UNOP, "abs")

    def __invert__(self) -> Pointer:
        return self._new(OpKind.UNOP, "invert")

    def __bool__(self) -> bool:
        raise TypeError("a Pointer has no truth value here: the value is on the worker "
                        "(use .get() where allowed)")

    def __len__(self) -> int:
        raise TypeError("len() of a Pointer would need the remote value; "
                        "use ptr.shape or a remote op")

    def __iter__(self) -> Any:
        raise TypeError("a Pointer cannot be iterated locally")

    __hash__ = object.__hash__


def _binop(name: str, reflected: bool = False) -> Any:
    def op(self: Pointer, other: Any) -> Pointer:
        return self._new(OpKind.BINOP, name, [other], reflected=reflected)
    op.__name__ = f"__{'r' if reflected else ''}{name.rstrip('_')}__"
    return op


for _n in _BINOPS:
    _dunder = {"and": "and", "or": "or"}.get(_n, _n)
    setattr(Pointer, f"__{_dunder}__", _binop(_n))
    setattr(Pointer, f"__r{_dunder}__", _binop(_n, reflected=True))
for _n in _COMPARE:
    setattr(Pointer, f"__{_n}__", _binop(_n))


class _Member(Pointer):
    """``ptr.name``: a method when called, an attribute (resolved on use) otherwise."""

    __slots__ = ()

    def __init__(self, worker: Handle, target: Pointer, name: str) -> None:
        super().__init__(worker, None, (target, name))

    def __call__(self, *args: Any, **kwargs: Any) -> Pointer:
        assert self._pending is not None, "an attribute already fetched cannot be called"
        target, name = self._pending
        return target._new(OpKind.METHOD, name, list(args), kwargs)
