"""A request's lineage, as the owner reviews it: the producing step first, the rest folded.

The session below mixes mock cells, private cells, pointer operations and a
later cell; the requested value comes from one pointer operation (the worker
marks it ``target``). The API, the CLI and the widget show the same arrangement.
"""

from __future__ import annotations

import subprocess
import sys

import kernel_bridge as kb
from kernel_bridge.owner import lineage
from syft_widgets import Approvals


def _session_with_a_request(session: kb.Worker) -> kb.Request:
    session.run("print(heart.head())", mock=True)                     # mock: folded
    session.run("young = heart[heart.age < 40]")                       # leads to it
    session.run("unrelated = heart.chol.max()")                       # private, earlier
    m = session.vars["young"]["age"].mean()                            # the value: an op
    session.run("later = 1")                                           # after it: folded
    return m.request("mean age of the under-40s")


def test_producing_step_first_then_what_led_to_it_the_rest_folded(
        session: kb.Worker, owner: kb.Owner) -> None:
    req = _session_with_a_request(session)
    r = owner.request(req.id)
    view = r.lineage_view()
    assert view["target"] is not None and view["target"]["kind"] == "op"
    assert ".mean()" in view["target"]["code"]
    target_seq = view["target"]["seq"]
    assert all(e["kernel"] == "private" and e["seq"] < target_seq for e in view["leading"])
    assert any("young = heart[heart.age < 40]" in e["code"] for e in view["leading"])
    folded = view["rest"]
    assert {e["kernel"] for e in folded if e["seq"] < target_seq} == {"mock"}
    assert any(e["code"] == "later = 1" for e in folded)
    text = r.code().splitlines()
    assert text[0] == "# ── requested value: produced by ──"
    assert ".mean()" in text[1] and "# [" in text[1]
    assert "later = 1" not in r.code() and "print(heart.head())" not in r.code()
    assert text[-1].startswith(f"# ── {len(folded)} more steps folded")
    full = r.code(full=True)
    assert "later = 1" in full and "print(heart.head())" in full
    assert full.index(".mean()") < full.index("young = heart") < full.index("later = 1")


def test_cli_requests_show_prints_the_producing_step_first(
        session: kb.Worker, owner: kb.Owner, alice: kb.Worker) -> None:
    req = _session_with_a_request(session)
    out = subprocess.run([sys.executable, "-m", "kernel_bridge.cli", "requests", "show",
                          str(req.id), "--state", str(alice.process.state)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    listing = out.split("lineage (the step that produced the value first):\n", 1)[1]
    first = listing.splitlines()[:2]
    assert first[0].strip() == "# ── requested value: produced by ──"
    assert ".mean()" in first[1]
    assert listing.index("young = heart") < listing.index("# ── the rest of the session")
    assert listing.index("# ── the rest of the session") < listing.index("later = 1")


def test_widget_rows_carry_the_arranged_lineage(session: kb.Worker, alice: kb.Worker) -> None:
    req = _session_with_a_request(session)
    widget = Approvals(kb.Owner(alice.process.state), start=False)
    try:
        (row,) = [r for r in widget.requests if r["id"] == req.id]
        lin = row["lineage"]
        assert ".mean()" in lin["target"]["code"] and lin["target"]["title"].endswith("op")
        assert any("young = heart" in e["code"] for e in lin["leading"])
        assert any(e["code"] == "later = 1" for e in lin["rest"])
    finally:
        widget.close()


def test_a_cell_marked_as_target_comes_first_and_later_cells_fold() -> None:
    """How the worker marks a cell whose output is held: the same arrangement."""
    entries = [
        {"seq": 1, "kind": "asset", "kernel": "private", "code": "heart = <asset>"},
        {"seq": 2, "kind": "cell", "kernel": "mock", "code": "print(heart)"},
        {"seq": 3, "kind": "cell", "kernel": "private", "code": "s = heart.age.mean()"},
        {"seq": 4, "kind": "cell", "kernel": "private", "code": "print(s)", "target": True},
        {"seq": 5, "kind": "cell", "kernel": "private", "code": "t = 2"},
    ]
    view = lineage.arrange(entries)
    assert view["target"]["seq"] == 4
    assert [e["seq"] for e in view["leading"]] == [1, 3]
    assert [e["seq"] for e in view["rest"]] == [2, 5]
    assert lineage.render(entries).splitlines() == [
        "# ── requested value: produced by ──", "# [4] cell", "print(s)",
        "# ── what led to it (private kernel, in order) ──",
        "heart = <asset>  # [1] asset", "# [3] cell", "s = heart.age.mean()",
        "# ── 2 more steps folded (later steps, mock kernel) ──"]
    # Nothing marked (an older worker): the private session, the mock folded, said so.
    unmarked = lineage.render([dict(e, target=False) for e in entries])
    assert unmarked.startswith("# ── (no step is marked")
    assert "print(heart)" not in unmarked and "t = 2" in unmarked
