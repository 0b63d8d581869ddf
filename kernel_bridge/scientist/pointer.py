"""Pointers: local names for objects that stay on a worker.

Operators, item access, attributes and method calls on a pointer run on the
worker (through its allow-list) and return new pointers. ``.get()`` brings a
value back when the worker's gate allows it; ``.request()`` asks the owner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ApprovalRequired
from ..wire.refs import PointerRef

if TYPE_CHECKING:
    from .dp import DP
    from .request import Request
    from .worker import Worker

_BINOPS = ["add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or",
           "xor", "lshift", "rshift"]
_COMPARE = ["eq", "ne", "lt", "le", "gt", "ge"]


def _wire_arg(value: Any) -> Any:
    """Pointers inside arguments travel as references; everything else as a value."""
    if isinstance(value, Pointer):
        return value.ref
    if isinstance(value, list):
        return [_wire_arg(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_wire_arg(v) for v in value)
    if isinstance(value, dict):
        return {k: _wire_arg(v) for k, v in value.items()}
    return value


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

    __slots__ = ("_worker", "_info", "_pending", "__weakref__")

    def __init__(self, worker: Worker, info: dict[str, Any] | None,
                 pending: tuple[Pointer, str] | None = None) -> None:
        self._worker = worker
        self._info = info
        self._pending = pending

    # -- identity -------------------------------------------------------------
    def _resolved(self) -> dict[str, Any]:
        if self._info is None:
            assert self._pending is not None
            target, name = self._pending
            self._info = self._worker._op(target, "attr", name)
            self._pending = None
        return self._info

    @property
    def id(self) -> str:
        return str(self._resolved()["id"])

    @property
    def ref(self) -> PointerRef:
        return PointerRef(self.id)

    @property
    def worker(self) -> Worker:
        return self._worker

    @property
    def type_name(self) -> str:
        return str(self._resolved()["type"])

    @property
    def taint(self) -> frozenset[str]:
        return frozenset(self._resolved()["taint"])

    @property
    def kernel(self) -> str:
        return str(self._resolved()["kernel"])

    @property
    def shape(self) -> tuple[int, ...] | None:
        s = self._resolved().get("shape")
        return None if s is None else tuple(s)

    @property
    def dtype(self) -> str | None:
        return self._resolved().get("dtype")

    def __repr__(self) -> str:
        if self._info is None and self._pending is not None:
            return f"<Pointer {self._worker.name}: {self._pending[0]!r}.{self._pending[1]}>"
        info = self._resolved()
        bits = [f"{self._worker.name}:{info['id']}", info["type"]]
        if info.get("shape") is not None:
            bits.append(f"shape={tuple(info['shape'])}")
        if info.get("kernel") == "mock":
            bits.append("MOCK")
        bits.append(f"tainted={{{', '.join(info['taint'])}}}" if info["taint"] else "clean")
        return f"<Pointer {' '.join(bits)}>"

    @property
    def dp(self) -> DP:
        """DP queries on this asset (``ptr.dp.mean("age", epsilon=0.2)``); see :mod:`.dp`."""
        from .dp import DP

        return DP(self)

    # -- values ---------------------------------------------------------------
    def get(self) -> Any:
        """The value, if it may leave the worker without approval.

        Raises
        ------
        ApprovalRequired
            The value derives from private data; ``err.request(reason)`` asks the owner.
        """
        try:
            return self._worker._get(self)
        except ApprovalRequired as exc:
            exc.pointer = self
            raise

    def request(self, reason: str = "") -> Request:
        """Ask the data owner to release this value (a snapshot taken now)."""
        return self._worker._request(self, reason)

    def delete(self) -> None:
        """Free the remote object."""
        self._worker._delete([self.id])

    # -- remote operations ------------------------------------------------------
    def __getattr__(self, name: str) -> Pointer:
        if name.startswith("_"):
            # Dunders never travel; Python's own protocols get a plain AttributeError.
            raise AttributeError(name)
        return _Member(self._worker, self, name)

    def __getitem__(self, key: Any) -> Pointer:
        return Pointer(self._worker, self._worker._op(self, "getitem", "getitem", [key]))

    def __setitem__(self, key: Any, value: Any) -> None:
        self._worker._op(self, "setitem", "setitem", [key, value])

    def __neg__(self) -> Pointer:
        return Pointer(self._worker, self._worker._op(self, "unop", "neg"))

    def __pos__(self) -> Pointer:
        return Pointer(self._worker, self._worker._op(self, "unop", "pos"))

    def __abs__(self) -> Pointer:
        return Pointer(self._worker, self._worker._op(self, "unop", "abs"))

    def __invert__(self) -> Pointer:
        return Pointer(self._worker, self._worker._op(self, "unop", "invert"))

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
        return Pointer(self._worker, self._worker._op(self, "binop", name, [other],
                                                      reflected=reflected))
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

    def __init__(self, worker: Worker, target: Pointer, name: str) -> None:
        super().__init__(worker, None, (target, name))

    def __call__(self, *args: Any, **kwargs: Any) -> Pointer:
        assert self._pending is not None, "an attribute already fetched cannot be called"
        target, name = self._pending
        return Pointer(self._worker, self._worker._op(target, "method", name, list(args), kwargs))
