"""Which pointer operations may run remotely.

A pointer operation names an operator or a public method/attribute of the
remote object. The trusted worker checks the name against this allow-list
before anything reaches the kernel, and the kernel agent checks again against
the object's real type. Dunders, private names, I/O (``to_csv``, ``tofile``,
``dump``), code-taking methods (``eval``, ``query``, ``apply``, ``pipe``) and
anything that could hand back a module, a class or a function are left out.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

#: Binary operators by wire name; reflected forms are sent with swapped operands.
BINARY_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
    "pow": operator.pow,
    "matmul": operator.matmul,
    "and": operator.and_,
    "or": operator.or_,
    "xor": operator.xor,
    "lshift": operator.lshift,
    "rshift": operator.rshift,
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "getitem": operator.getitem,
}

UNARY_OPS: dict[str, Callable[[Any], Any]] = {
    "neg": operator.neg,
    "pos": operator.pos,
    "abs": operator.abs,
    "invert": operator.invert,
}

_REDUCTIONS = {
    "sum", "mean", "std", "var", "min", "max", "prod", "median", "all", "any",
    "argmin", "argmax", "cumsum", "cumprod", "round", "abs", "clip",
}

_TENSOR = _REDUCTIONS | {
    "reshape", "view", "flatten", "squeeze", "unsqueeze", "transpose", "permute", "t",
    "float", "double", "int", "long", "bool", "half", "to", "type_as", "clone", "detach",
    "contiguous", "numpy", "tolist", "item", "numel", "dim", "size", "matmul", "mm", "dot",
    "add", "sub", "mul", "div", "pow", "sqrt", "exp", "log", "log1p", "sin", "cos", "tanh",
    "sigmoid", "relu", "softmax", "log_softmax", "floor", "ceil", "sign", "norm", "sort",
    "argsort", "topk", "unique", "eq", "ne", "lt", "le", "gt", "ge", "masked_fill",
    "index_select", "gather", "split", "chunk", "expand", "repeat", "clamp", "nan_to_num",
    "isnan", "isfinite", "fill_", "zero_", "add_", "sub_", "mul_", "div_", "clamp_",
    "requires_grad_", "backward", "square", "amax", "amin", "logsumexp", "diff",
    "shape", "dtype", "T", "ndim", "grad", "requires_grad", "is_leaf", "real", "imag",
}

_NDARRAY = _REDUCTIONS | {
    "reshape", "flatten", "ravel", "squeeze", "transpose", "astype", "copy", "tolist",
    "item", "dot", "sort", "argsort", "nonzero", "repeat", "take", "fill", "ptp", "trace",
    "conj", "shape", "dtype", "T", "ndim", "size", "real", "imag", "nbytes",
}

_PANDAS = _REDUCTIONS | {
    "head", "tail", "describe", "count", "nunique", "value_counts", "unique", "groupby",
    "agg", "aggregate", "sort_values", "sort_index", "reset_index", "set_index", "drop",
    "dropna", "fillna", "isna", "notna", "isnull", "notnull", "astype", "copy", "corr",
    "cov", "quantile", "shift", "diff", "rename", "merge", "join", "to_numpy", "tolist",
    "to_list", "to_dict", "sample", "nlargest", "nsmallest", "between", "isin", "where",
    "mask", "duplicated", "drop_duplicates", "pct_change", "rank", "idxmin", "idxmax",
    "mode", "sem", "skew", "kurt", "cummax", "cummin", "add", "sub", "mul", "div",
    "get_dummies", "select_dtypes", "memory_usage", "info_dict", "item",
    "loc", "iloc", "at", "iat", "columns", "index", "shape", "dtypes", "dtype", "values",
    "T", "ndim", "size", "name", "empty", "str", "dt", "cat",
}

_GROUPBY = {
    "mean", "sum", "count", "size", "std", "var", "min", "max", "median", "agg",
    "aggregate", "first", "last", "nunique", "describe", "quantile", "prod", "sem",
    "cumsum", "cumcount", "ngroups", "groups", "indices", "value_counts",
}

_INDEXER = {"__getitem__"}  # .loc/.iloc objects: only subscription

_STRING_ACCESSOR = {
    "lower", "upper", "strip", "len", "contains", "startswith", "endswith", "replace",
    "split", "slice", "title", "capitalize",
}

_SCALAR = {"real", "imag", "conjugate", "is_integer", "item", "as_integer_ratio"}

_CONTAINER = {"keys", "values", "items", "get", "index", "count", "copy"}

_STR = {"lower", "upper", "strip", "split", "startswith", "endswith", "replace", "count"}

#: Allowed public names per family of remote type.
FAMILIES: dict[str, frozenset[str]] = {
    "tensor": frozenset(_TENSOR),
    "ndarray": frozenset(_NDARRAY),
    "dataframe": frozenset(_PANDAS),
    "series": frozenset(_PANDAS),
    "groupby": frozenset(_GROUPBY),
    "indexer": frozenset(_INDEXER),
    "strings": frozenset(_STRING_ACCESSOR),
    "scalar": frozenset(_SCALAR),
    "container": frozenset(_CONTAINER),
    "str": frozenset(_STR),
}

#: Families whose column names may be read as attributes (``heart.age``).
COLUMN_ATTR_FAMILIES = frozenset({"dataframe", "groupby"})

#: Type names the worker reports, mapped to families. The kernel cannot be
#: trusted to name types honestly once scientist code ran there, so anything
#: not in this table is reported as plain "object".
KNOWN_TYPES: dict[str, str] = {
    "torch.Tensor": "tensor",
    "torch.nn.parameter.Parameter": "tensor",
    "numpy.ndarray": "ndarray",
    "pandas.DataFrame": "dataframe",
    "pandas.Series": "series",
    "pandas.DataFrameGroupBy": "groupby",
    "pandas.SeriesGroupBy": "groupby",
    "pandas.Index": "series",
    "pandas.Indexer": "indexer",
    "pandas.StringMethods": "strings",
    "pandas.DatetimeProperties": "strings",
    "pandas.CategoricalAccessor": "strings",
    "int": "scalar",
    "float": "scalar",
    "complex": "scalar",
    "bool": "scalar",
    "numpy.scalar": "scalar",
    "str": "str",
    "bytes": "str",
    "NoneType": "scalar",
    "list": "container",
    "tuple": "container",
    "dict": "container",
    "torch.dtype": "scalar",
    "torch.Size": "container",
    "numpy.dtype": "scalar",
}

#: Names a cell's receipt may report as the type of a variable.
RECEIPT_TYPES = frozenset(KNOWN_TYPES) | frozenset(
    {"function", "module", "type", "set", "object", "torch.nn.Module", "outputs"}
)


#: Methods that look a *string argument* up as a method name on the object
#: (``df.agg("sum")``); such strings must themselves be allow-listed names, or
#: ``agg("__class__")`` would walk around :func:`check_name`.
STRING_DISPATCH = frozenset({"agg", "aggregate"})


def check_dispatch_strings(family: str | None, method: str, args: Any) -> None:
    """Refuse method names smuggled in as strings to a string-dispatching method.

    Raises
    ------
    MethodNotAllowed
        For a string argument that is not an allow-listed name of ``family``.
    """
    from ..errors import MethodNotAllowed

    if method not in STRING_DISPATCH:
        return
    allowed = FAMILIES.get(family or "", frozenset()) | FAMILIES["groupby"]

    def walk(v: Any, depth: int = 0) -> None:
        if depth > 8:
            raise MethodNotAllowed(f"arguments of {method}() nest too deeply")
        if isinstance(v, str):
            if v not in allowed or v.startswith("_"):
                raise MethodNotAllowed(
                    f"{method}() takes names of allow-listed reductions; {v[:60]!r} is not one",
                    name=v[:60])
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x, depth + 1)
        elif isinstance(v, dict):  # {column: function name(s)}: keys are columns
            for x in v.values():
                walk(x, depth + 1)

    walk(args)


def family_of(type_name: str) -> str | None:
    """The allow-list family of a reported type name, or None."""
    return KNOWN_TYPES.get(type_name)


def safe_type_name(type_name: Any, allowed: frozenset[str] = RECEIPT_TYPES) -> str:
    """Map a type name reported by a kernel onto the fixed vocabulary.

    A kernel that ran scientist code could name a type after a private value
    (``type(f"T{secret}", (), {})``); only names from a fixed set get through.
    """
    if isinstance(type_name, str) and type_name in allowed:
        return type_name
    return "object"


def check_name(family: str | None, name: str) -> str:
    """Return how ``name`` may be used on a ``family`` object: "member" or "column".

    Raises
    ------
    MethodNotAllowed
        For private/dunder names and names outside the family's allow-list.
    """
    from ..errors import MethodNotAllowed

    if not isinstance(name, str) or not name or name.startswith("_") or len(name) > 128:
        raise MethodNotAllowed(
            f"{name!r} is not allowed on a pointer: private and dunder names never run remotely",
            name=str(name)[:128],
        )
    if family is not None and name in FAMILIES.get(family, frozenset()):
        return "member"
    if family in COLUMN_ATTR_FAMILIES and name.isidentifier():
        return "column"
    raise MethodNotAllowed(
        f"{name!r} is not in the allow-list for remote {family or 'objects of this type'}; "
        "run it in a cell (alice.run) instead",
        name=name,
        family=family or "",
    )
