"""Secure multi-party computation: SPDZ-style additive sharing over Z_2^64 with a dealer.

The pure protocol code lives here (importable by both sides). The client names
``kb.smpc.share``, :class:`SharedTensor` and :class:`SharedRequest` live on the
scientist side (:mod:`kernel_bridge.scientist.smpc`) and are re-exported lazily.
"""

from __future__ import annotations

from typing import Any

_CLIENT = {"share", "SharedTensor", "SharedRequest"}


def __getattr__(name: str) -> Any:  # PEP 562: the client side is loaded on first use
    if name in _CLIENT:
        from ..scientist import smpc as client  # the one edge upwards (pyproject ignore_imports)

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
