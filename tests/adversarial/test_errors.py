"""Attacks through errors: messages, invented type names, tracebacks and lines."""

from __future__ import annotations

import kernel_bridge as kb
from kernel_bridge.owner.gate import MAX_ERROR_LINE

from ..conftest import PLANTED_NUMBER, PLANTED_TEXT

#: 4,000 one-line branches: the line that raises is 2 + (secret mod 4000).
LINE_SPELLER = "v = int(secret['value'].max())\n" + "".join(
    f"if v % 4000 == {i}: raise ValueError('x')\n" for i in range(4000))


def test_the_error_line_stays_within_its_bound(session: kb.Worker) -> None:
    r = session.run(LINE_SPELLER)
    assert r.status == "error" and r.error_type == "ValueError"
    assert PLANTED_NUMBER % 4000 + 2 > MAX_ERROR_LINE  # what an unbounded line would say
    assert r.error_line is None


def test_an_error_line_within_the_bound_is_still_reported(session: kb.Worker) -> None:
    r = session.run("x = 1\ny = 2\nraise KeyError('k')\n")
    assert r.error_type == "KeyError" and r.error_line == 3


def test_invented_exception_names_and_messages_stay_inside(session: kb.Worker) -> None:
    code = ("v = int(secret['value'].max())\n"
            "E = type(f'Leak{v}', (Exception,), {})\n"
            "raise E(f'{v} {secret.note[3]}')\n")
    r = session.run(code)
    assert r.status == "error" and r.error_type == "Exception"
    wire = repr(r.data)
    assert str(PLANTED_NUMBER) not in wire and PLANTED_TEXT not in wire


def test_a_forged_traceback_cannot_choose_the_line(session: kb.Worker) -> None:
    # The kernel's traceback text is scientist-controlled: print a fake frame.
    code = ("import sys\n"
            "v = int(secret['value'].max())\n"
            "class Fake(Exception):\n"
            "    def _render_traceback_(self):\n"
            "        return [f'Cell In[{get_ipython().execution_count}], line {v % 1000}']\n"
            "raise Fake()\n")
    r = session.run(code)
    assert r.status == "error"
    assert r.error_line is None or 1 <= r.error_line <= len(code.splitlines())
