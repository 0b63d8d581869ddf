"""Snapshot previews for the approval panel: data only, never markup."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import numpy as np
import pandas as pd
import torch

from kernel_bridge.lab.preview import MAX_ROWS, preview


def png(width: int = 2, height: int = 2) -> bytes:
    """A real (tiny, grey) PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                               0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_table_preview_is_clipped_and_json() -> None:
    df = pd.DataFrame({"age": np.arange(100), "x": np.linspace(0, 1, 100),
                       "s": ["<b>x</b>"] * 100})
    df.loc[3, "x"] = np.nan
    p = preview(df)
    assert p["kind"] == "table" and p["shape"] == [100, 3]
    assert p["columns"] == ["age", "x", "s"] and len(p["rows"]) == MAX_ROWS
    assert p["rows"][1] == [1, df.x[1], "<b>x</b>"] and p["rows"][3][1] == "nan"
    json.dumps(p, allow_nan=False)
    assert preview(df.age)["kind"] == "table"


def test_tensor_previews_have_shape_dtype_and_stats() -> None:
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    p = preview(t)
    assert p["kind"] == "tensor" and p["type"] == "Tensor"
    assert p["shape"] == [3, 4] and p["dtype"] == "torch.float32"
    assert (p["min"], p["max"], p["mean"]) == (0.0, 11.0, 5.5)
    assert p["std"] == float(np.std(np.arange(12)))
    assert preview(t.to(torch.bfloat16))["max"] == 11.0
    a = preview(np.ones((2, 3), dtype=np.int16))
    assert a["type"] == "ndarray" and a["dtype"] == "int16" and a["mean"] == 1.0
    assert preview(np.array([], dtype=np.float64))["numel"] == 0


def test_outputs_keep_images_and_drop_html() -> None:
    image = base64.b64encode(png()).decode()
    outputs = [
        {"msg_type": "stream", "content": {"name": "stdout", "text": "54.2\n"}},
        {"msg_type": "display_data", "content": {"data": {
            "image/png": image, "text/plain": "<Figure>"}}},
        {"msg_type": "display_data", "content": {"data": {
            "text/html": "<script>alert(1)</script>", "text/plain": "plain view"}}},
        {"msg_type": "display_data", "content": {"data": {"image/png": "not base64 <svg>"}}},
        {"msg_type": "error", "content": {"ename": "ValueError", "evalue": "bad"}},
    ]
    items = preview(outputs)["items"]
    assert items[0] == {"type": "text", "name": "stdout", "text": "54.2\n"}
    assert items[1]["type"] == "image" and base64.b64decode(items[1]["data"]) == png()
    assert items[2] == {"type": "text", "text": "plain view"}
    assert items[3]["type"] == "text" and "image/png" in items[3]["text"]
    assert items[4] == {"type": "error", "text": "ValueError: bad"}
    assert "<script>" not in json.dumps(items)


def test_other_values_are_text() -> None:
    assert preview(np.float64(2.5)) == {"kind": "text", "type": "float", "text": "2.5"}
    p = preview("x" * 10_000)
    assert p["kind"] == "text" and p["text"].endswith("(truncated)")
