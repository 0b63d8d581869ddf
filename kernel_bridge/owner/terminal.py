"""Scientist-supplied text made safe for the owner's terminal.

Reasons, code, names and values reach ``syftlab requests list/show`` and
``syftlab audit``; printed raw, an escape sequence in them could rewrite what
the owner sees (hide a line of code, fake an approval prompt, retitle the
window). :func:`clean` is the one filter every such print goes through.
"""

from __future__ import annotations

import re

# ESC-introduced sequences (CSI, OSC, DCS, ...) first, then any single control
# character: C0 except tab and newline, DEL, C1, and the Unicode bidi controls
# that reorder what is displayed (CVE-2021-42574, "Trojan Source").
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"          # CSI ... final byte
    r"|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, DCS, SOS, PM, APC ... terminator
    r"|\x1b[ -/]*[0-~]?"                # other ESC sequences (or a lone ESC)
)
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(text: object) -> str:
    """``text`` as a string without terminal escape sequences or control characters.

    Newlines and tabs stay; every other C0/C1 control, DEL and Unicode bidi
    control is replaced by ``?`` (escape sequences are removed whole), so the
    owner sees that something was there.

    Parameters
    ----------
    text : object
        Anything printable; ``str()`` is applied first.

    Returns
    -------
    str
        Safe to print to a terminal.
    """
    s = str(text)
    s = s.replace("\r\n", "\n")
    s = _ESCAPES.sub("?", s)
    return _CONTROLS.sub("?", s)
