"""The worker's settings: one :class:`WorkerConfig` per worker process.

A config comes from a TOML file (:meth:`WorkerConfig.from_toml`) or from CLI
flags (:meth:`WorkerConfig.from_args`); CLI flags can then be laid over a TOML
config with :meth:`WorkerConfig.with_overrides`. Every problem is a
:class:`~kernel_bridge.errors.ConfigError` whose message names the file and the
key, so the owner can fix it without reading code.

The TOML keys each table accepts are listed once, in ``_WORKER_KEYS``,
``_ASSET_KEYS`` and ``_COLUMN_KEYS`` (the ``[sandbox]`` table takes every field
of :class:`SandboxLimits`): to add a setting, add a dataclass field and one
line there. Any other key is an error, so typos do not pass silently.

This module only checks settings; it never reads asset contents (see
:mod:`kernel_bridge.owner.assets`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from kernel_bridge.errors import ConfigError
from kernel_bridge.owner.he_spec import HESpec, parse_he

# The asset declarations live below the owner side (dp/ uses them too); re-exported here.
from kernel_bridge.specs import (
    ASSET_SUFFIXES,
    COLUMN_KINDS,
    AssetSpec,
    ColumnKind,
    ColumnSpec,
    DPSpec,
    validate_asset_name,
)
from kernel_bridge.specs import is_int as _is_int
from kernel_bridge.specs import is_number as _is_number
from kernel_bridge.specs import key_error as _fail

from .smpc_settings import SmpcSettings, parse_smpc

__all__ = [
    "ASSET_SUFFIXES",
    "COLUMN_KINDS",
    "SANDBOXES",
    "AssetSpec",
    "ColumnKind",
    "ColumnSpec",
    "DPSpec",
    "SandboxKind",
    "SandboxLimits",
    "WorkerConfig",
    "parse_asset_flags",
    "validate_asset_name",
]

SandboxKind = Literal["bwrap", "none"]

SANDBOXES: tuple[str, ...] = get_args(SandboxKind)
_MB = 2**20
_WORKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass
class SandboxLimits:
    """Resource and output limits of every sandboxed kernel (the ``[sandbox]`` TOML table).

    Limits are per kernel process tree: each kernel runs as a user id of its own, so
    the process limit counts only that kernel's processes and threads.

    Attributes
    ----------
    memory_mb : int
        Address space of each kernel process (``RLIMIT_AS``), in MiB.
    processes : int
        Processes and threads of one kernel (``RLIMIT_NPROC`` of its own user id).
    cpu_seconds : int
        CPU seconds of each kernel process (``RLIMIT_CPU``); past it the kernel is killed.
    file_size_mb : int
        Largest file a kernel may write (``RLIMIT_FSIZE``), in MiB.
    open_files : int
        Open file descriptors per kernel process (``RLIMIT_NOFILE``).
    scratch_mb : int
        Size of each of the kernel's private ``/tmp`` and ``/dev/shm`` (memory-backed), in MiB.
    output_mb : int
        Output a cell may produce (streams, displays, errors) before it is interrupted
        and :class:`~kernel_bridge.errors.OutputTooLarge` is raised, in MiB.
    message_mb : int
        Largest single message the worker accepts from a kernel, in MiB; a larger one is
        dropped unread and reported as :class:`~kernel_bridge.errors.OutputTooLarge`.
    uid_base : int
        First host user id handed to kernels when the worker runs as root (one per kernel).
    uid_count : int
        How many user ids from ``uid_base`` on may be used (most kernels at once).
    """

    memory_mb: int = 4096
    processes: int = 256
    cpu_seconds: int = 3600
    file_size_mb: int = 1024
    open_files: int = 1024
    scratch_mb: int = 1024
    output_mb: int = 32
    message_mb: int = 64
    uid_base: int = 200_000
    uid_count: int = 10_000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _is_int(value) or value < 1:
                raise _fail(f.name, f"must be a positive integer, got {value!r}")
        if self.processes < 16:
            raise _fail("processes", "a kernel needs at least 16 processes and threads")
        if self.memory_mb < 512:
            raise _fail("memory_mb", "a kernel needs at least 512 MiB")
        if self.uid_base + self.uid_count > 2**31 - 2:
            raise _fail("uid_base", "uid_base + uid_count must stay below 2**31 - 2")


@dataclass
class WorkerConfig:
    """Settings of one worker process.

    Parameters
    ----------
    name : str
        The worker's name, shown to scientists.
    host, port : str, int
        Where the worker listens (``port=0`` picks a free port).
    state : Path
        Directory for the worker's state (tokens, requests, logs).
    assets : dict of str to AssetSpec
        The datasets served, by name.
    threads : int
        Threads per kernel process (OMP/MKL/torch).
    frame_limit : int
        Largest wire frame accepted, in bytes.
    exec_timeout : float
        Seconds a cell may run before it is interrupted.
    sandbox : {"bwrap", "none"}
        How kernels are isolated from the host.
    session_grace : float
        Seconds a disconnected session's kernels are kept for a resume.
    bulk_threshold : int
        Values larger than this many bytes travel as bulk transfers.
    limits : SandboxLimits
        Resource and output limits of each kernel (the ``[sandbox]`` table).
    upload_quota, upload_quota_worker : int
        Upload bytes one session, and all sessions together, may have claimed
        and not yet used at once (see :class:`~kernel_bridge.wire.bulk.UploadQuotas`).
    upload_ttl : float
        Seconds an upload ticket lives (plus time for its size at a slow rate).
    tls : bool
        Serve ``wss://`` (and TLS on the bulk port).
    tls_cert, tls_key : Path or None
        The owner's certificate and key (PEM); without them, with ``tls``, a
        self-signed certificate is made once and kept in the state directory.
    he : dict of str to HESpec
        HE services by asset (:mod:`kernel_bridge.owner.he_spec`).
    """

    name: str
    _: KW_ONLY
    host: str = "127.0.0.1"
    port: int = 8765
    state: Path
    assets: dict[str, AssetSpec] = field(default_factory=dict)
    threads: int = 1
    frame_limit: int = 64 * _MB
    exec_timeout: float = 600.0
    sandbox: SandboxKind = "bwrap"
    session_grace: float = 300.0
    bulk_threshold: int = 1 * _MB
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    upload_quota: int = 4096 * _MB
    upload_quota_worker: int = 16384 * _MB
    upload_ttl: float = 60.0
    tls: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: HE services by asset name (``[assets.<name>.he]``, :mod:`.he_spec`).
    he: dict[str, HESpec] = field(default_factory=dict)
    # smpc: the [smpc] table (smpc_settings.py)
    smpc: SmpcSettings = field(default_factory=SmpcSettings)

    def __post_init__(self) -> None:
        if not isinstance(self.limits, SandboxLimits):
            raise _fail("sandbox", "expected SandboxLimits")
        if not isinstance(self.name, str) or not _WORKER_NAME.fullmatch(self.name):
            raise _fail("name", f"{self.name!r} is not a valid worker name (letters, digits, _.-)")
        if not isinstance(self.host, str) or not self.host:
            raise _fail("host", "must be a non-empty string")
        if not _is_int(self.port) or not 0 <= self.port <= 65535:
            raise _fail("port", f"{self.port!r} is not a port number (0-65535)")
        self.state = Path(self.state)
        for key in ("threads", "frame_limit", "bulk_threshold", "upload_quota",
                    "upload_quota_worker"):
            if not _is_int(getattr(self, key)) or getattr(self, key) < 1:
                raise _fail(key, "must be a positive integer")
        if not _is_number(self.exec_timeout) or not self.exec_timeout > 0:
            raise _fail("exec_timeout", "must be a positive number of seconds")
        if not _is_number(self.upload_ttl) or not 0 < self.upload_ttl < math.inf:
            raise _fail("upload_ttl", "must be a positive number of seconds")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise _fail("tls_cert", "give both tls_cert and tls_key (or neither)")
        if self.tls_cert is not None and self.tls_key is not None:
            self.tls, self.tls_cert, self.tls_key = True, Path(self.tls_cert), Path(self.tls_key)
        if not isinstance(self.tls, bool):
            raise _fail("tls", "expected true or false")
        if not _is_number(self.session_grace) or not self.session_grace >= 0:
            raise _fail("session_grace", "must be a non-negative number of seconds")
        if self.sandbox not in SANDBOXES:
            raise _fail("sandbox", f"{self.sandbox!r} is not one of {', '.join(SANDBOXES)}")
        if not isinstance(self.assets, Mapping):
            raise _fail("assets", "expected a mapping of name to AssetSpec")
        self.assets = dict(self.assets)
        if self.smpc.dealer and self.assets:  # smpc: a dealer holds no data
            raise _fail("smpc.dealer", "a dealer worker holds no assets")
        for name, spec in self.assets.items():
            if not isinstance(spec, AssetSpec) or spec.name != name:
                raise _fail(f"assets.{name}", "expected an AssetSpec with the same name")

    @classmethod
    def from_toml(cls, path: str | Path) -> WorkerConfig:
        """Read a worker config from a TOML file.

        Parameters
        ----------
        path : str or Path
            The TOML file. Relative paths inside it are relative to its directory.

        Returns
        -------
        WorkerConfig

        Raises
        ------
        ConfigError
            If the file is missing, not TOML, or any key is unknown or invalid;
            the message names the file and the key.
        """
        path = Path(path).resolve()
        try:
            with path.open("rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found", file=str(path)) from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config: {exc}", file=str(path)) from None
        try:
            return _parse_document(doc, path.parent)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc.message}", file=str(path), **exc.data) from None

    @classmethod
    def from_args(
        cls,
        name: str,
        *,
        port: int | None = None,
        state: str | Path | None = None,
        assets: Mapping[str, str | Path] | None = None,
        mocks: Mapping[str, str | Path] | None = None,
        host: str | None = None,
        **settings: Any,
    ) -> WorkerConfig:
        """Build a config from CLI flags.

        Parameters
        ----------
        name : str
            The worker's name.
        port : int, optional
            Listening port; defaults to 8765.
        state : str or Path, optional
            State directory; defaults to ``state/<name>`` under the current directory.
        assets : mapping of str to path
            Asset name to private file (see :func:`parse_asset_flags`).
        mocks : mapping of str to path
            Asset name to mock file; every asset needs one (no columns are declared).
        host : str, optional
            Listening address; defaults to 127.0.0.1.
        **settings
            Other :class:`WorkerConfig` fields (``threads``, ``sandbox``, ...);
            ``None`` values are ignored.

        Returns
        -------
        WorkerConfig

        Raises
        ------
        ConfigError
            On unknown settings, a mock for an unknown asset, missing files or
            invalid values.
        """
        assets = dict(assets or {})
        mocks = dict(mocks or {})
        extra = sorted(set(mocks) - set(assets))
        if extra:
            raise ConfigError(f"mock given for unknown asset(s): {', '.join(extra)}", key="mock")
        specs: dict[str, AssetSpec] = {}
        for asset_name, asset_path in assets.items():
            mock = mocks.get(asset_name)
            with _within(f"assets.{asset_name}"):
                spec = AssetSpec(
                    name=asset_name,
                    path=Path(asset_path).resolve(),
                    mock=None if mock is None else Path(mock).resolve(),
                )
                _check_files(spec)
            specs[asset_name] = spec
        base = cls(
            name,
            state=Path(state if state is not None else Path("state") / name).resolve(),
            assets=specs,
        )
        return base.with_overrides(host=host, port=port, **settings)

    def with_overrides(self, **overrides: Any) -> WorkerConfig:
        """Return a copy with some fields replaced, e.g. CLI flags over TOML values.

        Parameters
        ----------
        **overrides
            :class:`WorkerConfig` field names; ``None`` means "not given" and
            keeps the current value.

        Returns
        -------
        WorkerConfig
            A new, validated config.

        Raises
        ------
        ConfigError
            On an unknown field or an invalid value.
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(
                f"unknown setting(s): {', '.join(unknown)} (allowed: {', '.join(sorted(names))})",
                key=unknown[0],
            )
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **given)


def parse_asset_flags(flags: Iterable[str]) -> dict[str, str]:
    """Parse repeated ``NAME=PATH`` CLI flags (``--asset``, ``--mock``).

    Parameters
    ----------
    flags : iterable of str
        E.g. ``["heart=datasets/heart/alice.csv"]``. The path may contain ``=``.

    Returns
    -------
    dict of str to str
        Asset name to path, in the order given.

    Raises
    ------
    ConfigError
        If a flag is not ``NAME=PATH``, the name is not a valid asset name, or a
        name is repeated.
    """
    parsed: dict[str, str] = {}
    for flag in flags:
        name, sep, path = flag.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"expected NAME=PATH, got {flag!r}", key=flag)
        try:
            validate_asset_name(name)
        except ConfigError as exc:
            raise ConfigError(f"in {flag!r}: {exc.message}", key=flag) from None
        if name in parsed:
            raise ConfigError(f"asset {name!r} given more than once", key=flag)
        parsed[name] = path
    return parsed


# --- TOML parsing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    """How one TOML key fills one dataclass field."""

    field: str
    convert: Callable[[Any], Any]
    is_path: bool = False  # resolved relative to the TOML file


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _as_int(value: Any) -> int:
    if not _is_int(value):
        raise TypeError("expected an integer")
    return int(value)


def _as_number(value: Any) -> float:
    if not _is_number(value) or not math.isfinite(value):
        raise TypeError("expected a finite number")
    number: float = value  # an int stays an int
    return number


def _as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected true or false")
    return value


def _as_str_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("expected a list of strings")
    return list(value)


def _as_megabytes(value: Any) -> int:
    if not _is_number(value) or not value > 0:
        raise TypeError("expected a positive number of megabytes")
    return int(value * _MB)


_WORKER_KEYS: dict[str, _Key] = {
    "name": _Key("name", _as_str),
    "host": _Key("host", _as_str),
    "port": _Key("port", _as_int),
    "state": _Key("state", _as_str, is_path=True),
    "threads": _Key("threads", _as_int),
    "frame_limit_mb": _Key("frame_limit", _as_megabytes),
    "exec_timeout": _Key("exec_timeout", _as_number),
    "sandbox": _Key("sandbox", _as_str),
    "session_grace": _Key("session_grace", _as_number),
    "bulk_threshold_mb": _Key("bulk_threshold", _as_megabytes),
    "upload_quota_mb": _Key("upload_quota", _as_megabytes),
    "upload_quota_worker_mb": _Key("upload_quota_worker", _as_megabytes),
    "upload_ttl": _Key("upload_ttl", _as_number),
    "tls": _Key("tls", _as_bool),
    "tls_cert": _Key("tls_cert", _as_str, is_path=True),
    "tls_key": _Key("tls_key", _as_str, is_path=True),
}
_ASSET_KEYS: dict[str, _Key] = {
    "path": _Key("path", _as_str, is_path=True),
    "mock": _Key("mock", _as_str, is_path=True),
    "description": _Key("description", _as_str),
    "show_row_count": _Key("show_row_count", _as_bool),
    "show_shape": _Key("show_shape", _as_bool),
    "mock_rows": _Key("mock_rows", _as_int),
}
_ASSET_TABLES = frozenset({"columns", "dp", "he"})  # sub-tables parsed on their own
_DP_KEYS: dict[str, _Key] = {
    "privacy_unit": _Key("privacy_unit", _as_str),
    "max_rows_per_id": _Key("max_rows_per_id", _as_int),
    "max_rows": _Key("max_rows", _as_int),
    "epsilon_per_scientist": _Key("epsilon_per_scientist", _as_number),
    "delta_per_scientist": _Key("delta_per_scientist", _as_number),
    "epsilon_total": _Key("epsilon_total", _as_number),
    "delta_total": _Key("delta_total", _as_number),
}
_COLUMN_KEYS: dict[str, _Key] = {
    "type": _Key("kind", _as_str),
    "lower": _Key("lower", _as_number),
    "upper": _Key("upper", _as_number),
    "categories": _Key("categories", _as_str_list),
}
_SANDBOX_KEYS: dict[str, _Key] = {
    f.name: _Key(f.name, _as_int) for f in dataclasses.fields(SandboxLimits)
}
_TOP_LEVEL = frozenset({"worker", "assets", "sandbox", "smpc"})
_REQUIRED_WORKER = ("name", "state")


@contextmanager
def _within(table: str) -> Iterator[None]:
    """Make the keys of errors raised by dataclass checks full TOML keys."""
    try:
        yield
    except ConfigError as exc:
        inner = exc.data.get("key")
        if inner is None:
            raise _fail(table, exc.message) from None
        raise _fail(f"{table}.{inner}", exc.message.removeprefix(f"{inner}: ")) from None


def _table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(key, "expected a table")
    return value


def _check_keys(table: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    allowed = sorted(allowed)
    for key in table:
        if key not in allowed:
            name = f"{where}.{key}" if where else key
            raise _fail(name, f"unknown key (allowed: {', '.join(allowed)})")


def _convert(
    table: Mapping[str, Any],
    keys: Mapping[str, _Key],
    where: str,
    base: Path,
    subtables: Iterable[str] = (),
) -> dict[str, Any]:
    """Turn a TOML table into dataclass keyword arguments (``subtables`` are left to the caller)."""
    _check_keys(table, [*keys, *subtables], where)
    kwargs: dict[str, Any] = {}
    for key, spec in keys.items():
        if key not in table:
            continue
        try:
            value = spec.convert(table[key])
        except TypeError as exc:
            raise _fail(f"{where}.{key}", f"{exc}, got {table[key]!r}") from None
        kwargs[spec.field] = (base / value).resolve() if spec.is_path else value
    return kwargs


def _check_files(spec: AssetSpec) -> None:
    if not spec.path.is_file():
        raise _fail("path", f"asset file not found: {spec.path}")
    if spec.mock is not None and not spec.mock.is_file():
        raise _fail("mock", f"mock file not found: {spec.mock}")


def _parse_asset(name: str, raw: Any, base: Path) -> AssetSpec:
    where = f"assets.{name}"
    try:
        validate_asset_name(name)
    except ConfigError as exc:
        raise _fail(where, exc.message) from None
    table = _table(raw, where)
    kwargs = _convert(table, _ASSET_KEYS, where, base, subtables=_ASSET_TABLES)
    if "path" not in kwargs:
        raise _fail(f"{where}.path", "missing: the private data file is required")
    columns = []
    for col_name, col_raw in _table(table.get("columns", {}), f"{where}.columns").items():
        col_where = f"{where}.columns.{col_name}"
        col_kwargs = _convert(_table(col_raw, col_where), _COLUMN_KEYS, col_where, base)
        if "kind" not in col_kwargs:
            raise _fail(f"{col_where}.type", f"missing (one of {', '.join(COLUMN_KINDS)})")
        with _within(where):
            columns.append(ColumnSpec(name=col_name, **col_kwargs))
    if "dp" in table:
        dp_where = f"{where}.dp"
        dp_kwargs = _convert(_table(table["dp"], dp_where), _DP_KEYS, dp_where, base)
        with _within(dp_where):
            kwargs["dp"] = DPSpec(**dp_kwargs)
    with _within(where):
        spec = AssetSpec(name=name, columns=columns, **kwargs)
        _check_files(spec)
    return spec


def _parse_document(doc: Mapping[str, Any], base: Path) -> WorkerConfig:
    _check_keys(doc, _TOP_LEVEL, "")
    if "worker" not in doc:
        raise _fail("worker", "missing [worker] table")
    worker = _convert(_table(doc["worker"], "worker"), _WORKER_KEYS, "worker", base)
    for key in _REQUIRED_WORKER:
        if _WORKER_KEYS[key].field not in worker:
            raise _fail(f"worker.{key}", "missing")
    assets = {
        name: _parse_asset(name, raw, base)
        for name, raw in _table(doc.get("assets", {}), "assets").items()
    }
    # HE: each asset's [assets.<name>.he] table, parsed by .he_spec
    for name, raw in _table(doc.get("assets", {}), "assets").items():
        if "he" in raw:
            with _within(f"assets.{name}"):
                worker.setdefault("he", {})[name] = parse_he(raw["he"], assets[name])
    if "sandbox" in doc:
        limits = _convert(_table(doc["sandbox"], "sandbox"), _SANDBOX_KEYS, "sandbox", base)
        with _within("sandbox"):
            worker["limits"] = SandboxLimits(**limits)
    if "smpc" in doc:  # smpc
        worker["smpc"] = parse_smpc(doc["smpc"])
    with _within("worker"):
        return WorkerConfig(assets=assets, **worker)
