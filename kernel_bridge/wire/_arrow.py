"""pandas DataFrames and Series as Arrow IPC streams: the safe column types, the
encoding, and the checked decoding (compressed streams refused by
:mod:`kernel_bridge.wire._arrow_guard`).

pandas and pyarrow are imported only when a DataFrame or Series is encoded or
decoded.
"""

from __future__ import annotations

from typing import Any

from kernel_bridge.errors import CodecError, UnsupportedType
from kernel_bridge.wire._arrow_guard import refuse_compressed
from kernel_bridge.wire._codes import MAX_DEPTH

#: The Arrow column a Series travels in.
SERIES_COLUMN = "__series_values__"


def dataframe_ipc(v: Any) -> tuple[memoryview, list[Any] | None, list[Any] | None]:
    """A DataFrame's Arrow IPC stream, and its column labels and level names when
    they are not unique strings (Arrow field names must be), else None."""
    import pandas as pd

    labels: list[Any] | None = None
    names: list[Any] | None = None
    cols = v.columns
    if isinstance(cols, pd.MultiIndex) or not (
        cols.is_unique and all(type(c) is str for c in cols)
    ):
        # Arrow field names are unique strings: send the real labels beside the table.
        labels = list(cols)
        names = list(cols.names)
        v = v.set_axis([f"__col{i}__" for i in range(len(cols))], axis=1)
    return to_arrow_ipc(v, "DataFrame"), labels, names


def series_ipc(v: Any) -> memoryview:
    """A Series' Arrow IPC stream (one column, named :data:`SERIES_COLUMN`)."""
    return to_arrow_ipc(v.to_frame(name=SERIES_COLUMN), "Series")


def to_arrow_ipc(df: Any, what: str) -> memoryview:
    """An Arrow IPC stream of ``df`` (index kept); ``what`` names it in errors."""
    import pyarrow as pa

    try:
        table = pa.Table.from_pandas(df, preserve_index=True)
    except Exception as exc:
        # Arrow's message may quote cell values; keep them out of an error that may travel.
        raise UnsupportedType(
            f"cannot send this {what}: Arrow cannot convert one of its columns or its index "
            f"({type(exc).__name__}); convert object columns to str or numbers first",
            type=f"pandas.{what}",
        ) from exc
    bad = unsafe_fields(table.schema)
    if bad:
        raise UnsupportedType(
            f"cannot send this {what}: unsupported column type(s) {', '.join(bad)}",
            type=f"pandas.{what}",
        )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        if table.num_rows:
            writer.write_table(table)
        else:
            # An empty table has no batches, and without one no dictionary is written:
            # send an empty batch so categorical columns keep their categories.
            arrays = [c.chunk(0) if c.num_chunks else pa.array([], c.type) for c in table.columns]
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=table.schema))
    return memoryview(sink.getvalue())


def from_arrow_ipc(buf: memoryview) -> Any:
    """A DataFrame from a received Arrow IPC stream, after checking it is uncompressed,
    of safe column types only, and valid."""
    import pyarrow as pa

    refuse_compressed(buf)
    reader = pa.ipc.open_stream(pa.py_buffer(buf))
    bad = unsafe_fields(reader.schema)
    if bad:
        raise CodecError(f"malformed value: unsupported Arrow column type(s) {', '.join(bad)}")
    table = reader.read_all()
    table.validate(full=True)
    return table.to_pandas()


def _safe_arrow_field(field: Any, depth: int = 0) -> bool:
    meta = field.metadata
    if meta and any(k.startswith(b"ARROW:extension") for k in meta):
        return False  # an extension type the reader did not know, kept as its storage
    return safe_arrow_type(field.type, depth)


def safe_arrow_type(tp: Any, depth: int = 0) -> bool:
    """Whether an Arrow type is in the safe set the codec accepts.

    The safe set: null, bool, ints, uints, floats, decimal, string/large_string,
    binary/large_binary, date, time, timestamp, duration, dictionaries of those
    (integer indices), and list/large_list/struct of safe types. Extension types
    and everything else (map, union, views, run-end encoded...) are refused.
    """
    import pyarrow as pa

    types = pa.types
    if depth > MAX_DEPTH or isinstance(tp, pa.BaseExtensionType):
        return False
    if (
        types.is_null(tp)
        or types.is_boolean(tp)
        or types.is_integer(tp)
        or types.is_floating(tp)
        or types.is_decimal(tp)
        or types.is_string(tp)
        or types.is_large_string(tp)
        or types.is_binary(tp)
        or types.is_large_binary(tp)
        or types.is_date(tp)
        or types.is_time(tp)
        or types.is_timestamp(tp)
        or types.is_duration(tp)
    ):
        return True
    if types.is_dictionary(tp):
        return bool(types.is_integer(tp.index_type)) and safe_arrow_type(tp.value_type, depth + 1)
    if types.is_list(tp) or types.is_large_list(tp):
        return _safe_arrow_field(tp.value_field, depth + 1)
    if types.is_struct(tp):
        return all(_safe_arrow_field(tp.field(i), depth + 1) for i in range(tp.num_fields))
    return False


def unsafe_fields(schema: Any) -> list[str]:
    """``'name': type`` of each field of ``schema`` outside the safe set."""
    return [f"{f.name!r}: {f.type}" for f in schema if not _safe_arrow_field(f)]
