"""Typed errors of the pure SMPC layer (values outside the fixed-point range, bad shapes).

They subclass :class:`~kernel_bridge.errors.SyftError` (and :class:`ValueError`)
and are added to :data:`~kernel_bridge.errors.WIRE_ERRORS` when this module is
imported (by anything that uses the SMPC layer), so a worker's error comes back
to the client as the same type; messages carry shapes and bounds, never a value
of the data.
"""

from __future__ import annotations

from ..errors import WIRE_ERRORS, SyftError


class SMPCValueError(SyftError, ValueError):
    """An SMPC operation was given something it cannot compute (base class)."""


class PrecisionError(SMPCValueError):
    """A value outside the fixed-point range (or not finite); see :mod:`.fixed`."""


class ShapeError(SMPCValueError):
    """Shapes (or parameters) that the operation does not accept."""


class UnsupportedOp(SMPCValueError):
    """An operation name outside :data:`.protocols.OPS`, or parties it cannot run with."""


# Known to the wire's error codec, so the client re-raises the worker's type.
WIRE_ERRORS.update({cls.__name__: cls for cls in (SMPCValueError, PrecisionError, ShapeError,
                                                  UnsupportedOp)})
