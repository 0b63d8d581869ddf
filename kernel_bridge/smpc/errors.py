"""Typed errors of the pure SMPC layer (values outside the fixed-point range, bad shapes).

They subclass :class:`~kernel_bridge.errors.SyftError` (and :class:`ValueError`),
so a worker can send them back by name; messages carry shapes and bounds, never
a value of the data.
"""

from __future__ import annotations

from ..errors import SyftError


class SMPCValueError(SyftError, ValueError):
    """An SMPC operation was given something it cannot compute (base class)."""


class PrecisionError(SMPCValueError):
    """A value outside the fixed-point range (or not finite); see :mod:`.fixed`."""


class ShapeError(SMPCValueError):
    """Shapes (or parameters) that the operation does not accept."""


class UnsupportedOp(SMPCValueError):
    """An operation name outside :data:`.protocols.OPS`, or parties it cannot run with."""
