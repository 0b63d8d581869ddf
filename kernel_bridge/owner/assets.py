"""Trusted loading of assets: runs in the worker, never in the scientist's kernel.

An :class:`Asset` holds the private value (loaded lazily, only for the owner's
kernels), its mock (from the mock file, or generated from the declared columns
alone) and :meth:`Asset.describe`, the only view of an asset a scientist gets
before running code. ``describe`` is built from the config and the mock; from
the private value it takes only the row count (if ``show_row_count``) and an
array's dtype and trailing shape (if ``show_shape``).
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kernel_bridge.errors import ConfigError, UnknownAsset
from kernel_bridge.owner.config import ASSET_SUFFIXES, AssetSpec, ColumnSpec, WorkerConfig

#: What an asset loads as.
Value = Any  # pd.DataFrame | np.ndarray | torch.Tensor; torch is imported only when needed

_ARRAY_PREVIEW = 10  # numbers of an array mock shown in describe()
_BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False}


def load_value(path: Path, columns: list[ColumnSpec] | None = None) -> Value:
    """Load an asset file.

    Parameters
    ----------
    path : Path
        ``.csv`` or ``.parquet`` (DataFrame), ``.npy`` (ndarray, no pickles) or
        ``.pt`` (a single tensor, or a model's state_dict of tensors, loaded
        with ``weights_only=True``).
    columns : list of ColumnSpec, optional
        Declared columns of a table: they are given their declared kinds
        (category columns become Categorical with the declared categories), in
        the declared order. The file must hold exactly these columns.

    Returns
    -------
    DataFrame, ndarray or Tensor

    Raises
    ------
    ConfigError
        On a missing file, an unsupported suffix, an unreadable file, a ``.pt``
        file that does not hold exactly one tensor, or data that does not match
        the declared columns. Messages never quote the file's values.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ASSET_SUFFIXES:
        supported = ", ".join(ASSET_SUFFIXES)
        raise ConfigError(f"{path}: unsupported file type {suffix!r} (supported: {supported})")
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        if suffix == ".csv":
            # Text columns are read as text so that e.g. "007" keeps its zeros.
            text = {c.name: "str" for c in columns or () if c.kind in ("str", "category")}
            value: Value = pd.read_csv(path, dtype=text or None)
        elif suffix == ".parquet":
            value = pd.read_parquet(path)
        elif suffix == ".npy":
            value = np.load(path, allow_pickle=False)
        else:
            value = _load_tensor(path)
    except ConfigError:
        raise
    except Exception as exc:
        # The parser's own message may quote file contents; keep it in the chain only.
        raise ConfigError(f"{path}: cannot read file ({type(exc).__name__})") from exc
    if isinstance(value, pd.DataFrame) and columns:
        value = _apply_columns(value, columns, path)
    return value


def _load_tensor(path: Path) -> Any:
    import torch

    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # weights_only refuses pickled code and custom classes: that is the point.
        raise ConfigError(
            f"{path}: not a plain tensor file (loaded with weights_only=True: {type(exc).__name__})"
        ) from exc
    if isinstance(value, dict) and value and all(
            isinstance(k, str) and k.rpartition(".")[2] in ("weight", "bias")
            and isinstance(v, torch.Tensor) for k, v in value.items()):
        return value  # a model: a state_dict of layers' weight/bias (served by HE, he_spec.py)
    if not isinstance(value, torch.Tensor):
        raise ConfigError(
            f"{path}: holds a {type(value).__name__}, expected a single tensor "
            "(save one with torch.save(tensor, path)) or a model's state_dict of layers' "
            "weight and bias"
        )
    return value


def _apply_columns(df: pd.DataFrame, columns: list[ColumnSpec], path: Path) -> pd.DataFrame:
    declared = [c.name for c in columns]
    missing = [n for n in declared if n not in df.columns]
    extra = [str(n) for n in df.columns if n not in declared]
    if missing or extra:
        raise ConfigError(
            f"{path}: columns do not match the declared ones"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; undeclared: {', '.join(extra)}" if extra else "")
        )
    out = {}
    for col in columns:
        try:
            out[col.name] = _as_kind(df[col.name], col)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: column {col.name!r}: {exc}") from None
    return pd.DataFrame(out, index=df.index)


def _as_kind(s: pd.Series, col: ColumnSpec) -> pd.Series:
    """Convert one column to its declared kind; errors name counts, never values."""
    if col.kind == "category":
        unknown = int((s.notna() & ~s.isin(col.categories or [])).sum())
        if unknown:
            raise ValueError(f"{unknown} value(s) outside the declared categories")
        return pd.Series(pd.Categorical(s, categories=col.categories), index=s.index, name=s.name)
    if col.kind == "str":
        return s.astype("str").where(s.notna())
    if col.kind == "bool":
        if pd.api.types.is_bool_dtype(s):
            flags = s
        else:
            words = s.astype("str").str.strip().str.lower().where(s.notna())
            flags = words.map(_BOOL_WORDS)
            if int((flags.isna() & s.notna()).sum()):
                raise ValueError("values that are not true/false/0/1")
        return flags.astype("boolean" if flags.isna().any() else bool)
    numbers = pd.to_numeric(s, errors="coerce")
    if int((numbers.isna() & s.notna()).sum()):
        raise ValueError(f"non-numeric values in a {col.kind} column")
    if col.kind == "float":
        return numbers.astype("float64")
    if not (numbers.dropna() % 1 == 0).all():
        raise ValueError("fractional values in an int column")
    return numbers.astype("Int64" if numbers.isna().any() else "int64")


def generate_mock(spec: AssetSpec, rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Generate a mock table from the declared columns alone.

    The private file is never opened: values are drawn uniformly within the
    declared bounds and categories, so the mock carries no private information.

    Parameters
    ----------
    spec : AssetSpec
        The asset; its columns must be declared, numeric ones with both bounds.
    rows : int, optional
        Number of rows; defaults to ``spec.mock_rows``.
    seed : int
        Seed of the random generator.

    Returns
    -------
    DataFrame
        Columns in declared order, with the same dtypes the private table loads with.

    Raises
    ------
    ConfigError
        If no columns are declared or a numeric column lacks bounds.
    """
    if not spec.columns:
        raise ConfigError(f"asset {spec.name!r}: no declared columns to generate a mock from")
    n = spec.mock_rows if rows is None else rows
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    for col in spec.columns:
        if col.kind in ("int", "float") and not col.bounded:
            raise ConfigError(
                f"asset {spec.name!r}: column {col.name!r} needs lower and upper to generate a mock"
            )
        if col.kind == "int":
            lo, hi = math.ceil(col.lower), math.floor(col.upper)  # type: ignore[arg-type]
            data[col.name] = rng.integers(lo, hi, size=n, endpoint=True, dtype=np.int64)
        elif col.kind == "float":
            # Rounded for a readable preview, clipped so rounding cannot leave the bounds.
            x = np.round(rng.uniform(col.lower, col.upper, size=n), 3)  # type: ignore[arg-type]
            data[col.name] = np.clip(x, col.lower, col.upper).astype(np.float64)
        elif col.kind == "category":
            picks = rng.choice(len(col.categories or []), size=n)
            data[col.name] = pd.Categorical.from_codes(picks, categories=col.categories)
        elif col.kind == "bool":
            data[col.name] = rng.random(n) < 0.5
        else:
            codes = rng.integers(0, 10**6, size=n)
            data[col.name] = pd.Series([f"{col.name}_{c:06d}" for c in codes], dtype="str")
    return pd.DataFrame(data)


class Asset:
    """One asset as the worker holds it.

    Parameters
    ----------
    spec : AssetSpec
        The asset's settings.
    """

    def __init__(self, spec: AssetSpec) -> None:
        self.spec = spec
        self._lock = threading.Lock()
        self._private: Value | None = None
        self._mock: Value | None = None

    def __repr__(self) -> str:
        return f"Asset({self.name!r}, {self.value_type})"

    @property
    def name(self) -> str:
        """The asset's name (a Python identifier)."""
        return self.spec.name

    @property
    def value_type(self) -> str:
        """``"DataFrame"``, ``"ndarray"`` or ``"Tensor"``."""
        return self.spec.value_type

    def private(self) -> Value:
        """Return the private value, loading it on first use.

        Returns
        -------
        DataFrame, ndarray or Tensor
            The real data. Never send it to a scientist.
        """
        with self._lock:
            if self._private is None:
                self._private = load_value(self.spec.path, self.spec.columns or None)
            return self._private

    def mock(self) -> Value:
        """Return the mock value: the mock file if given, else one generated from the columns.

        Returns
        -------
        DataFrame, ndarray or Tensor
            Public stand-in data with the private value's schema.
        """
        with self._lock:
            if self._mock is None:
                if self.spec.mock is not None:
                    self._mock = load_value(self.spec.mock, self.spec.columns or None)
                else:
                    self._mock = generate_mock(self.spec)
            return self._mock

    def describe(self, mock_preview_rows: int = 5) -> dict[str, Any]:
        """What a scientist may see about this asset, as JSON-friendly types only.

        Parameters
        ----------
        mock_preview_rows : int
            How many rows of the mock to include.

        Returns
        -------
        dict
            ``name``, ``description``, ``type`` ("DataFrame", "ndarray" or
            "Tensor"), ``schema``, ``rows`` (None unless ``show_row_count``) and
            ``mock_preview``. For tables ``schema`` is ``{"columns": [{"name",
            "kind", "lower", "upper", "categories"}]}`` (declared columns, else
            inferred from the mock) and ``mock_preview`` a list of records; for
            arrays ``schema`` is ``{"dtype", "shape"}`` (shape None unless
            ``show_shape``, its first dimension None unless ``show_row_count``)
            and ``mock_preview`` is ``{"shape", "dtype", "head"}``.
        """
        spec = self.spec
        mock = self.mock()
        rows: int | None = None
        if spec.show_row_count:
            rows = _row_count(self.private())
        if self.value_type == "DataFrame":
            columns = spec.columns or [_infer_column(str(n), mock[n]) for n in mock.columns]
            schema: dict[str, Any] = {"columns": [_column_schema(c) for c in columns]}
            head = mock.head(max(mock_preview_rows, 0))
            preview: Any = json.loads(head.to_json(orient="records", date_format="iso"))
        elif isinstance(mock, dict):  # a model (state_dict): parameter shapes only
            shapes = {k: [int(d) for d in v.shape] for k, v in mock.items()}
            schema = {"dtype": "model (state_dict)", "shape": None,
                      "parameters": shapes if spec.show_shape else None}
            preview = {"parameters": shapes}
        else:
            private = self.private()
            shape: list[int | None] | None = None
            if spec.show_shape:
                shape = [int(d) for d in private.shape]
                if shape and not spec.show_row_count:
                    shape[0] = None  # the first dimension is the row count
            schema = {"dtype": _dtype_name(private), "shape": shape}
            preview = {
                "shape": [int(d) for d in mock.shape],
                "dtype": _dtype_name(mock),
                "head": [_json_number(x) for x in mock.flatten()[:_ARRAY_PREVIEW].tolist()],
            }
        return {
            "name": spec.name,
            "description": spec.description,
            "type": self.value_type,
            "schema": schema,
            "rows": rows,
            "mock_preview": preview,
        }


def load_assets(config: WorkerConfig, *, eager: bool = False) -> dict[str, Asset]:
    """Build the worker's assets from its config.

    Parameters
    ----------
    config : WorkerConfig
        The worker's settings.
    eager : bool
        Load every private value and mock now, so that bad files fail at startup.

    Returns
    -------
    dict of str to Asset
        By asset name.

    Raises
    ------
    ConfigError
        If a file is missing or (with ``eager``) cannot be loaded.
    """
    assets = {}
    for name, spec in config.assets.items():
        for path in (spec.path, spec.mock):
            if path is not None and not path.is_file():
                raise ConfigError(f"asset {name!r}: file not found: {path}")
        asset = Asset(spec)
        if eager:
            asset.private()
            asset.mock()
        assets[name] = asset
    return assets


def get_asset(assets: dict[str, Asset], name: str) -> Asset:
    """Look up an asset by name.

    Parameters
    ----------
    assets : dict of str to Asset
        As returned by :func:`load_assets`.
    name : str
        The asset's name.

    Returns
    -------
    Asset

    Raises
    ------
    UnknownAsset
        If there is no such asset; the message lists the available names.
    """
    try:
        return assets[name]
    except KeyError:
        available = ", ".join(sorted(assets)) or "none"
        raise UnknownAsset(f"no asset named {name!r} (available: {available})") from None


def _row_count(value: Value) -> int | None:
    shape: tuple[int, ...] = tuple(getattr(value, "shape", ()))
    return int(shape[0]) if len(shape) else None


def _dtype_name(value: Value) -> str:
    return str(value.dtype).removeprefix("torch.")


def _json_number(x: Any) -> Any:
    if isinstance(x, bool | int):
        return x
    if isinstance(x, float):
        # Six significant digits: float32 values printed as float64 are noisy to read.
        return float(f"{x:.6g}") if math.isfinite(x) else None
    return str(x)  # complex and other exotic scalars


def _column_schema(col: ColumnSpec) -> dict[str, Any]:
    return {
        "name": col.name,
        "kind": col.kind,
        "lower": col.lower,
        "upper": col.upper,
        "categories": list(col.categories) if col.categories is not None else None,
    }


def _infer_column(name: str, s: pd.Series) -> ColumnSpec:
    """A column's kind read off the (public) mock, for tables without declarations."""
    if isinstance(s.dtype, pd.CategoricalDtype) and len(s.cat.categories):
        return ColumnSpec(name, "category", categories=[str(c) for c in s.cat.categories])
    if pd.api.types.is_bool_dtype(s):
        return ColumnSpec(name, "bool")
    if pd.api.types.is_integer_dtype(s):
        return ColumnSpec(name, "int")
    if pd.api.types.is_float_dtype(s):
        return ColumnSpec(name, "float")
    return ColumnSpec(name, "str")
