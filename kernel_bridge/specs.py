"""What an asset is declared to be: its file, its mock, its columns and its DP terms.

These declarations are public (they are shown to scientists) and are shared by the
owner side, which reads them from TOML (:mod:`kernel_bridge.owner.config`), and by
:mod:`kernel_bridge.dp`, which builds queries and mechanisms from them. Every
problem is a :class:`~kernel_bridge.errors.ConfigError` naming the key at fault.
"""

from __future__ import annotations

import keyword
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from kernel_bridge.errors import ConfigError

ColumnKind = Literal["int", "float", "category", "bool", "str"]

COLUMN_KINDS: tuple[str, ...] = get_args(ColumnKind)
#: File suffix -> the type of value it loads as.
ASSET_SUFFIXES: dict[str, str] = {
    ".csv": "DataFrame",
    ".parquet": "DataFrame",
    ".npy": "ndarray",
    ".pt": "Tensor",
}


def key_error(key: str, reason: str) -> ConfigError:
    """A :class:`ConfigError` about the setting ``key``."""
    return ConfigError(f"{key}: {reason}", key=key)


def is_int(value: object) -> bool:
    """Whether ``value`` is an int (and not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """Whether ``value`` is an int or a float (and not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_asset_name(name: object) -> str:
    """Check that ``name`` can be an asset name and return it.

    Asset names become Python variable names in the scientist's kernel, so they
    must be identifiers, not keywords, and not start with ``_`` (underscore names
    such as ``__builtins__`` are reserved by the kernel).

    Parameters
    ----------
    name : object
        The proposed name.

    Returns
    -------
    str
        ``name`` unchanged.

    Raises
    ------
    ConfigError
        If the name is not usable.
    """
    if not isinstance(name, str) or not name.isidentifier() or not name.isascii():
        raise ConfigError(
            f"asset name {name!r} is not a valid Python identifier "
            "(letters, digits and '_', not starting with a digit)",
            key="name",
        )
    if keyword.iskeyword(name):
        raise ConfigError(f"asset name {name!r} is a Python keyword", key="name")
    if name.startswith("_"):
        raise ConfigError(f"asset name {name!r} must not start with '_'", key="name")
    return name


@dataclass
class ColumnSpec:
    """A declared column of a table asset.

    Bounds apply to ``int`` and ``float`` columns, categories to ``category``
    columns. Declarations are public: they are shown to scientists and are all
    that mocks are generated from.
    """

    name: str
    kind: ColumnKind
    lower: float | None = None
    upper: float | None = None
    categories: list[str] | None = None

    def __post_init__(self) -> None:
        key = f"columns.{self.name}"
        if not isinstance(self.name, str) or not self.name:
            raise key_error(key, "column name must be a non-empty string")
        if self.kind not in COLUMN_KINDS:
            raise key_error(f"{key}.type", f"{self.kind!r} is not one of {', '.join(COLUMN_KINDS)}")
        numeric = self.kind in ("int", "float")
        for bound in ("lower", "upper"):
            value = getattr(self, bound)
            if value is None:
                continue
            if not numeric:
                raise key_error(
                    f"{key}.{bound}", f"bounds apply to int/float columns, not {self.kind}"
                )
            if not is_number(value) or not math.isfinite(value):
                raise key_error(f"{key}.{bound}", f"expected a finite number, got {value!r}")
        if self.lower is not None and self.upper is not None:
            if self.lower > self.upper:
                raise key_error(key, f"lower ({self.lower}) is greater than upper ({self.upper})")
            if self.kind == "int" and math.ceil(self.lower) > math.floor(self.upper):
                raise key_error(key, f"no integer lies between {self.lower} and {self.upper}")
        if self.kind == "category":
            if not self.categories:
                raise key_error(f"{key}.categories", "a category column needs a non-empty list")
            if not all(isinstance(c, str) for c in self.categories):
                raise key_error(f"{key}.categories", "categories must be strings")
            if len(set(self.categories)) != len(self.categories):
                raise key_error(f"{key}.categories", "categories must be unique")
            self.categories = list(self.categories)
        elif self.categories is not None:
            raise key_error(
                f"{key}.categories", f"categories apply to category columns, not {self.kind}"
            )

    @property
    def bounded(self) -> bool:
        """Whether both bounds are declared."""
        return self.lower is not None and self.upper is not None


@dataclass
class DPSpec:
    """An asset's differential-privacy declaration (the ``[assets.NAME.dp]`` table).

    Everything here is public. Budgets are in ε (and δ) under basic composition,
    see :mod:`kernel_bridge.owner.ledger`.

    Attributes
    ----------
    privacy_unit : str
        ``"row"`` (each row is one person) or the name of an id column.
    max_rows_per_id : int
        With an id column: rows per person kept (the rest are dropped before a query).
    max_rows : int
        A public upper bound on the number of rows (OpenDP needs one for sums).
    epsilon_per_scientist, delta_per_scientist : float
        Each scientist's default allowance on this asset.
    epsilon_total, delta_total : float
        The allowance of all scientists together.
    """

    privacy_unit: str = "row"
    max_rows_per_id: int = 1
    max_rows: int = 100_000_000
    epsilon_per_scientist: float = 1.0
    delta_per_scientist: float = 0.0
    epsilon_total: float = 10.0
    delta_total: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.privacy_unit, str) or not self.privacy_unit:
            raise key_error("privacy_unit", "expected \"row\" or the name of an id column")
        for key in ("max_rows_per_id", "max_rows"):
            if not is_int(getattr(self, key)) or getattr(self, key) < 1:
                raise key_error(key, "must be a positive integer")
        for key in ("epsilon_per_scientist", "epsilon_total", "delta_per_scientist",
                    "delta_total"):
            v = getattr(self, key)
            if not is_number(v) or not math.isfinite(v) or v < 0:
                raise key_error(key, "must be a finite number >= 0")
        for key in ("delta_per_scientist", "delta_total"):
            if getattr(self, key) >= 1:
                raise key_error(key, "a delta must be below 1")

    @property
    def id_column(self) -> str | None:
        """The id column of the privacy unit, or None when a row is one person."""
        return None if self.privacy_unit == "row" else self.privacy_unit


@dataclass
class AssetSpec:
    """One dataset the worker serves: its private file, its mock, what scientists may see.

    ``mock`` may be omitted for tables whose columns are all declared (with
    bounds for numbers): a mock is then generated from the declarations.
    """

    name: str
    path: Path
    mock: Path | None = None
    description: str = ""
    columns: list[ColumnSpec] = field(default_factory=list)
    show_row_count: bool = False
    show_shape: bool = True
    mock_rows: int = 100
    dp: DPSpec | None = None

    def __post_init__(self) -> None:
        validate_asset_name(self.name)
        self.path = Path(self.path)
        self.mock = None if self.mock is None else Path(self.mock)
        self.columns = list(self.columns)
        kind = suffix_kind("path", self.path)
        if self.mock is not None:
            mock_kind = suffix_kind("mock", self.mock)
            if (mock_kind == "DataFrame") != (kind == "DataFrame"):
                raise key_error(
                    "mock", f"a {kind} asset needs a mock of the same kind, not {mock_kind}"
                )
        if not isinstance(self.mock_rows, int) or self.mock_rows < 1:
            raise key_error("mock_rows", "must be a positive integer")
        if not all(isinstance(c, ColumnSpec) for c in self.columns):
            raise key_error("columns", "expected ColumnSpec objects")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise key_error("columns", "column names must be unique")
        if self.columns and kind != "DataFrame":
            raise key_error("columns", f"columns apply to tables (.csv, .parquet), not {kind}")
        if self.dp is not None:
            if kind != "DataFrame" or not self.columns:
                raise key_error(
                    "dp", "DP queries need a table (.csv, .parquet) with declared columns"
                )
            if self.dp.id_column is not None and self.dp.id_column not in names:
                raise key_error(
                    "dp.privacy_unit", f"{self.dp.id_column!r} is not a declared column"
                )
        if self.mock is None:
            # No private data may go into a mock, so without a file we need full declarations.
            if not self.columns:
                raise key_error("mock", "no mock file and no declared columns to generate one from")
            for col in self.columns:
                if col.kind in ("int", "float") and not col.bounded:
                    raise key_error(
                        f"columns.{col.name}",
                        "needs lower and upper to generate a mock (or give a mock file)",
                    )

    @property
    def value_type(self) -> str:
        """``"DataFrame"``, ``"ndarray"`` or ``"Tensor"``, from the file suffix."""
        return ASSET_SUFFIXES[self.path.suffix.lower()]



def suffix_kind(key: str, path: Path) -> str:
    """The type of value a file loads as, from its suffix (``key`` names it in errors)."""
    kind = ASSET_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        supported = ", ".join(ASSET_SUFFIXES)
        raise key_error(key, f"unsupported file type {path.suffix!r} (supported: {supported})")
    return kind

