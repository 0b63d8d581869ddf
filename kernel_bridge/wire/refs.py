"""References that travel inside encoded values."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_POINTER_ID_LEN", "PointerRef"]

MAX_POINTER_ID_LEN = 64


@dataclass(frozen=True)
class PointerRef:
    """A pointer to an object held by the worker, as it travels inside a value.

    The worker resolves it to the remote object it names (in the caller's
    session only); the client never sees the object itself.

    Parameters
    ----------
    id : str
        The object's id, at most ``MAX_POINTER_ID_LEN`` characters.

    Raises
    ------
    TypeError
        ``id`` is not a ``str``.
    ValueError
        ``id`` is longer than ``MAX_POINTER_ID_LEN`` characters.
    """

    id: str

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise TypeError(f"PointerRef id must be a str, not {type(self.id).__name__!r}")
        if len(self.id) > MAX_POINTER_ID_LEN:
            raise ValueError(
                f"PointerRef id is {len(self.id)} characters; "
                f"at most {MAX_POINTER_ID_LEN} are allowed"
            )
