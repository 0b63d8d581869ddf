"""Held cell outputs, read once for every place that shows them.

A cell's outputs travel as the kernel's iopub messages (``{"msg_type",
"content"}``). Three places show them: the owner's terminal
(:func:`outputs_text`, for ``syftlab requests show`` and the Approvals
widget), the scientist's notebook once released or from a mock run
(:func:`kernel_bridge.scientist.display.republish`) and the Lab approval
panel (:mod:`kernel_bridge.lab.preview`). They all read the messages through
:func:`read_outputs`, so they agree on what an output is. This module sits
below the owner and the scientist sides and imports neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

#: iopub message types that carry a MIME bundle.
DISPLAY_TYPES = ("display_data", "execute_result", "update_display_data")


@dataclass(frozen=True)
class Output:
    """One iopub message, read.

    Attributes
    ----------
    kind : {"stream", "data", "error", "other"}
        A stream write, a MIME bundle (display data or a result), an error, or
        anything else (``msg_type`` is then in ``text``).
    name : str
        The stream's name (``stdout`` or ``stderr``).
    text : str
        The stream's text, ``"ename: evalue"`` of an error, or the message type.
    data, metadata : dict
        The MIME bundle and its metadata.
    traceback : list of str
        An error's traceback lines (with the kernel's ANSI colours).
    """

    kind: Literal["stream", "data", "error", "other"]
    name: str = ""
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    traceback: list[str] = field(default_factory=list)

    @property
    def plain(self) -> str:
        """A bundle's ``text/plain`` (or ``<its MIME types>``); other kinds' text."""
        if self.kind != "data":
            return self.text
        return str(self.data.get("text/plain", f"<{', '.join(self.data)}>"))


def is_outputs(value: Any) -> bool:
    """Whether a released value is a held cell's outputs (a list of iopub messages)."""
    return isinstance(value, list) and all(isinstance(o, dict) and "msg_type" in o
                                           for o in value)


def read_outputs(messages: Iterable[Any]) -> Iterator[Output]:
    """Each iopub message as an :class:`Output` (anything not a dict is skipped)."""
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        kind, content = msg.get("msg_type"), msg.get("content") or {}
        if not isinstance(content, dict):
            content = {}
        if kind == "stream":
            yield Output("stream", name=str(content.get("name") or "stdout"),
                         text=str(content.get("text", "")))
        elif kind in DISPLAY_TYPES:
            data, meta = content.get("data") or {}, content.get("metadata") or {}
            yield Output("data", data=dict(data) if isinstance(data, dict) else {},
                         metadata=dict(meta) if isinstance(meta, dict) else {})
        elif kind == "error":
            tb = content.get("traceback")
            yield Output("error", text=f"{content.get('ename')}: {content.get('evalue')}",
                         traceback=[str(t) for t in tb] if isinstance(tb, list) else [])
        else:
            yield Output("other", text=str(kind))


def clip(text: str, max_chars: int, mark: str = "\n... (truncated)") -> str:
    """``text``, cut at ``max_chars`` with ``mark`` appended when it was longer."""
    return text if len(text) <= max_chars else text[:max_chars] + mark


def outputs_text(messages: Iterable[Any], max_chars: int = 4000) -> str:
    """Held cell outputs as plain text, in order (for terminals)."""
    parts = []
    for o in read_outputs(messages):
        if o.kind == "stream":
            parts.append(o.text)
        elif o.kind == "other":
            parts.append(f"<{o.text}>\n")
        else:
            parts.append(o.plain + "\n")
    return clip("".join(parts), max_chars)
