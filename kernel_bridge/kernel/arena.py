"""A shared-memory file both the worker and its kernel map, for large values.

Sending a 256 MiB tensor through ZeroMQ or a fresh temporary file costs page
faults on every transfer; one file that grows to the largest value and is then
reused keeps its pages, so a transfer is a plain memory copy on each side.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable


class Arena:
    """A growable, reusable shared-memory file.

    Parameters
    ----------
    path : str
        The file, normally under ``/dev/shm`` in the kernel's socket directory.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._map: mmap.mmap | None = None
        self._size = 0
        self._remap()

    def _remap(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == self._size and self._map is not None:
            return
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                # A view is still alive; leave the old map to the garbage collector.
                pass
        self._map = mmap.mmap(self._fd, size) if size else None
        self._size = size

    def reserve(self, size: int) -> None:
        """Grow the file to hold at least ``size`` bytes."""
        self._remap()
        if size > self._size:
            # Round up so that slowly growing values do not remap every time.
            os.ftruncate(self._fd, max(size, self._size * 5 // 4, 1 << 20))
            self._remap()

    def write(self, pieces: Iterable[bytes | bytearray | memoryview]) -> int:
        """Write ``pieces`` back to back from offset 0; returns the byte count."""
        views = [memoryview(p).cast("B") for p in pieces]
        total = sum(v.nbytes for v in views)
        self.reserve(total)
        assert self._map is not None or total == 0
        pos = 0
        for v in views:
            if v.nbytes:
                self._map[pos : pos + v.nbytes] = v  # type: ignore[index]
                pos += v.nbytes
        return total

    def view(self, size: int) -> memoryview:
        """A view of the first ``size`` bytes (valid until the next write)."""
        self._remap()
        if size < 0 or size > self._size:
            raise ValueError(f"arena holds {self._size} bytes, {size} asked")
        if size == 0 or self._map is None:
            return memoryview(b"")
        return memoryview(self._map)[:size]

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass
            self._map = None
        os.close(self._fd)
