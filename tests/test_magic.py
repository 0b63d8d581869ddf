"""``%%remote`` in a real IPython shell: what reaches the scientist's outputs, and what not.

Every private cell below tries to leak the values planted in alice's ``secret``
asset (print, display, the cell's result, an error message, a forged traceback);
the captured stdout, stderr and display outputs must not contain them. Mock
cells show their outputs in full.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import CapturedIO, capture_output

import kernel_bridge as kb
from kernel_bridge.errors import Interrupted
from kernel_bridge.owner import gate
from kernel_bridge.scientist.magic import Receipts, RemoteRun

from .conftest import PLANTED_NUMBER, PLANTED_TEXT

#: A 1x1 PNG, base64 (as a kernel puts images on iopub).
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
       "rkJggg==")

SECRETS = (str(PLANTED_NUMBER), PLANTED_TEXT, f"{PLANTED_NUMBER:,}", "987,654,321",
           "9.87654321e+08", "9.876543e+08")


@pytest.fixture
def shell(session: kb.Worker) -> Iterator[InteractiveShell]:
    """The IPython shell with the extension loaded and ``alice`` bound to a fresh session."""
    ip = InteractiveShell.instance()
    ip.extension_manager.load_extension("kernel_bridge")
    ip.user_ns["alice"] = session
    yield ip
    for k in ("alice", "bob"):
        ip.user_ns.pop(k, None)


def run(ip: InteractiveShell, cell: str) -> tuple[Any, CapturedIO]:
    """Run a cell as a notebook would (displayhook included); returns (result, captured)."""
    with capture_output() as cap:
        res = ip.run_cell(cell, store_history=True)
    return res, cap


def seen(cap: CapturedIO, res: Any) -> str:
    """Everything the scientist could see from a cell."""
    parts = [cap.stdout, cap.stderr]
    for o in cap.outputs:
        parts.extend(str(v) for v in o.data.values())
    if res.result is not None:
        parts += [repr(res.result), getattr(res.result, "_repr_html_", lambda: "")()]
    if res.error_in_exec is not None:
        parts.append(repr(res.error_in_exec))
    return "\n".join(parts)


def assert_no_secret(text: str) -> None:
    for s in SECRETS:
        assert s not in text, f"planted value {s!r} reached the scientist"


def test_private_cell_shows_a_receipt_and_no_private_output(shell: InteractiveShell) -> None:
    cell = ("%%remote alice\n"
            "from IPython.display import display, HTML\n"
            "print(secret)\n"
            "import sys; print(secret.note.tolist(), file=sys.stderr)\n"
            "display(secret.value.max())\n"
            "display(HTML(f'<b>{secret.to_html()}</b>'))\n"
            "top = secret.value.max()\n"
            "secret.value.max()\n")
    res, cap = run(shell, cell)
    r = res.result
    assert isinstance(r, kb.Receipt) and r.ok and not r.mock
    assert len(r.held) == 1
    text = seen(cap, res)
    assert "alice · ok" in text and "1 output held" in text
    assert "assigned display, HTML, sys, top" in text
    assert_no_secret(text)
    # The value really was there: the held bundle has it (only the owner may release it).
    assert shell.user_ns["_"] is r


def test_private_error_shows_type_and_line_never_the_message(shell: InteractiveShell) -> None:
    res, cap = run(shell, "%%remote alice --allow-error\n"
                          "x = 1\n"
                          "raise ValueError(f'leak {secret.value.max()} {secret.note[3]}')\n")
    r = res.result
    assert r.status == "error" and r.error_type == "ValueError" and r.error_line == 2
    text = seen(cap, res)
    assert "error: ValueError (line 2)" in text
    assert "leak" not in text
    assert_no_secret(text)


def test_error_line_is_the_deepest_frame_in_the_cell(shell: InteractiveShell) -> None:
    res, _ = run(shell, "%%remote alice --allow-error\n"
                        "def f(v):\n"
                        "    return v / 0\n"
                        "\n"
                        "f(1)\n")
    assert res.result.error_type == "ZeroDivisionError" and res.result.error_line == 2


def test_forged_traceback_cannot_carry_more_than_a_line_number(shell: InteractiveShell) -> None:
    """A cell rewrites its own traceback to smuggle the planted number as the line."""
    forge = ("%%remote alice --allow-error\n"
             "ip = get_ipython()\n"
             "orig = ip._showtraceback\n"
             "n = ip.execution_count\n"
             "v = int(secret.value.max())\n"
             "def fake(etype, evalue, stb):\n"
             "    orig(etype, evalue, [f'Cell In[{n}], line {v}', 'Cell In[{n}], line 3'\n"
             "                         + ' ' * 10 + str(v), f'Cell In[{n}], line {v % 7 + 1}0'])\n"
             "ip._showtraceback = fake\n"
             "raise RuntimeError(str(v))\n")
    res, cap = run(shell, forge)
    r = res.result
    n_lines = len(forge.splitlines()) - 1
    assert r.status == "error"
    assert r.error_line is None or 1 <= r.error_line <= n_lines
    assert_no_secret(json.dumps(r.data, default=str) + seen(cap, res))
    # A later cell in the same (tampered) kernel still only yields a bounded integer.
    res2, _ = run(shell, "%%remote alice --allow-error\n1/0\n")
    assert res2.result.error_line in (None, 1)


@given(st.lists(st.text(max_size=200), max_size=8), st.integers(-5, 10**9),
       st.integers(1, 40))
def test_error_line_is_bounded_by_the_cell(tb: list[str], count: int, n_lines: int) -> None:
    code = "\n".join(f"x{i} = {i}" for i in range(n_lines))
    forged = tb + [f"Cell In[{count}], line {PLANTED_NUMBER}", f"Cell In[{count}], line -3"]
    line = gate.error_line(forged, count, code)
    assert line is None or (isinstance(line, int) and 1 <= line <= n_lines)
    assert gate.error_line(["Cell In[1], line 2"], "1", code) is None  # count must be an int


def test_mock_cell_shows_its_outputs_marked_mock(shell: InteractiveShell) -> None:
    res, cap = run(shell, "%%remote alice --mock --allow-error\n"
                          "from IPython.display import display, HTML\n"
                          "print(secret.note.tolist())\n"
                          "display(HTML('<i>mock-html-marker</i>'))\n"
                          "raise KeyError(f'mock message {len(secret)}')\n")
    r = res.result
    assert r.mock and r.status == "error" and r.error_type == "KeyError"
    assert "['mock', 'mock', 'mock', 'mock', 'mock']" in cap.stdout
    assert "mock message 5" in cap.stderr  # the mock traceback, in full
    html = [o.data.get("text/html", "") for o in cap.outputs]
    assert any("<i>mock-html-marker</i>" in h for h in html)
    assert any("alice · MOCK" in h for h in html)
    assert "alice (MOCK) · error: KeyError" in repr(r)
    assert_no_secret(seen(cap, res))


def test_one_receipt_per_worker(shell: InteractiveShell,
                                fresh_worker: Callable[..., kb.Worker]) -> None:
    bob = fresh_worker("bob")
    shell.user_ns["bob"] = bob
    res, cap = run(shell, "%%remote alice bob\nrows = len(secret)\nprint(rows)\n")
    receipts = res.result
    assert isinstance(receipts, Receipts) and len(receipts) == 2
    assert [r.worker.name for r in receipts] == ["alice", "bob"]
    assert all(r.ok and len(r.held) == 1 for r in receipts)
    assert receipts["bob"].worker is bob
    text = seen(cap, res)
    assert text.count("alice · ok") >= 1 and text.count("bob · ok") >= 1
    assert receipts._repr_html_().count('class="syftlab-receipt"') == 2
    assert_no_secret(text)
    # The pointer to each worker's variable stays on that worker.
    assert receipts["alice"]["rows"].worker is shell.user_ns["alice"]


def test_receipt_html_escapes_what_the_worker_sent(session: kb.Worker) -> None:
    r = kb.Receipt(session, {"status": "error", "error_type": "<script>x</script>",
                             "duration": 0.01, "kernel": "private",
                             "names": [{"name": "<b>n</b>", "type": "a<img src=x>",
                                        "change": "created"}]}, [])
    html = r._repr_html_()
    assert "<script>" not in html and "<img" not in html and "<b>n</b>" not in html
    assert "&lt;script&gt;" in html


def test_interrupt_stops_a_while_true_cell_and_keeps_variables(shell: InteractiveShell
                                                                ) -> None:
    res, _ = run(shell, "%%remote alice\nkept = 41\n")
    assert res.result.ok
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    res, cap = run(shell, "%%remote alice\nwhile True:\n    pass\n")
    after_signal = time.monotonic() - t0 - 1.0
    timer.join()
    assert isinstance(res.error_in_exec, Interrupted)
    assert after_signal < 2.0, f"the cell went on {after_signal:.1f}s after Ctrl-C"
    assert "alice · interrupted" in seen(cap, res)
    res, _ = run(shell, "%%remote alice\nkept2 = kept + 1\n")
    assert res.result.ok and res.result.names[0]["name"] == "kept2"
    assert shell.user_ns["alice"].vars["kept"].type_name == "int"


def test_timeout_stops_the_cell_and_keeps_variables(shell: InteractiveShell) -> None:
    run(shell, "%%remote alice\nkept = 1\n")
    t0 = time.monotonic()
    res, cap = run(shell, "%%remote alice --timeout 1\nwhile True:\n    pass\n")
    assert time.monotonic() - t0 < 8
    r = res.result
    assert r.status == "timeout" and r.error_type == "TimeoutError"
    res, _ = run(shell, "%%remote alice\nkept += 1\n")
    assert res.result.ok and res.result.names == [{"name": "kept", "change": "assigned"}]


def test_noblock_returns_a_handle(shell: InteractiveShell) -> None:
    res, _ = run(shell, "%%remote alice --noblock\nimport time\ntime.sleep(0.5)\nlate = 3\n")
    handle = res.result
    assert isinstance(handle, RemoteRun) and "alice" in repr(handle)
    receipt = handle.result(timeout=60)
    assert handle.done() and receipt.ok and receipt.names[-1]["name"] == "late"


def test_approved_held_output_is_republished(shell: InteractiveShell, owner: kb.Owner) -> None:
    res, cap = run(shell, "%%remote alice\n"
                          "from IPython.display import display, HTML\n"
                          "print('total rows', len(secret))\n"
                          "display(HTML('<b>approved-html</b>'))\n"
                          f"display({{'image/png': {PNG!r}}}, raw=True)\n")
    r = res.result
    assert "total rows" not in seen(cap, res)
    req = r.request("row count for the methods section")
    owner.approve(req.id)
    shell.user_ns["req"] = req
    res, cap = run(shell, "req.wait(timeout=30); req.show();")
    assert res.error_in_exec is None
    assert "total rows 20" in cap.stdout
    html = [o.data.get("text/html", "") for o in cap.outputs]
    assert any("alice · approved" in h for h in html)
    assert any("<b>approved-html</b>" in h for h in html)
    assert any(o.data.get("image/png") == PNG for o in cap.outputs)  # images come back too


def test_line_magic_connect_list_status_disconnect(
        shell: InteractiveShell, alice: kb.Worker, owner: kb.Owner,
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    token = owner.add_token("t-linemagic")
    conn = tmp_path / "connections.json"
    conn.write_text(json.dumps({"alice2": {"url": alice.process.url, "token": token}}))
    monkeypatch.setenv("SYFTLAB_CONNECTIONS", str(conn))
    res, cap = run(shell, "%remote connect alice2")
    assert res.error_in_exec is None and "connected to alice2" in cap.stdout
    w = shell.user_ns["alice2"]
    assert isinstance(w, kb.Worker) and w.scientist == "t-linemagic"
    res, cap = run(shell, f"%remote connect alice3 {alice.process.url} --token {token}")
    assert "connected to alice3" in cap.stdout
    res, cap = run(shell, "%remote list")
    assert "alice2" in cap.stdout and "alice3" in cap.stdout and "connected" in cap.stdout
    res, cap = run(shell, "%remote status alice2")
    assert "ping" in cap.stdout and "pending" in cap.stdout
    res, cap = run(shell, "%%remote alice2\nq = 1\n")
    assert res.result.ok
    res, cap = run(shell, "%remote disconnect alice2 alice3")
    assert not w.connected
    res, cap = run(shell, "%%remote nobody\n1\n")
    assert "no worker called 'nobody'" in cap.stderr + cap.stdout
    for k in ("alice2", "alice3"):
        shell.user_ns.pop(k, None)


def test_notebook_stop_button_interrupts_the_remote_cell(
        alice: kb.Worker, owner: kb.Owner, tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The path a notebook's stop button takes: a real ipykernel, interrupted by jupyter_client."""
    from jupyter_client import KernelManager

    from kernel_bridge.notebook_runner import KERNEL_NAME, kernel_env, kernelspec_dir

    conn = tmp_path / "connections.json"
    conn.write_text(json.dumps({"alice": {"url": alice.process.url,
                                          "token": owner.add_token("t-stopbutton")}}))
    env = kernel_env(kernelspec_dir(tmp_path / "jupyter"), conn)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    km = KernelManager(kernel_name=KERNEL_NAME)
    km.start_kernel(env={**os.environ, **env})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)

        def execute(code: str, timeout: float = 60) -> tuple[dict[str, Any], str]:
            texts: list[str] = []

            def hook(msg: dict[str, Any]) -> None:
                c = msg["content"]
                texts.append(str(c.get("text", "")) + str(c.get("data", {}).get("text/plain", "")))

            reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook)
            return reply["content"], "".join(texts)

        content, text = execute("%load_ext kernel_bridge\n%remote connect alice")
        assert content["status"] == "ok", text
        content, text = execute("%%remote alice\nkept = 41\n")
        assert "alice · ok" in text and "assigned kept" in text
        msg_id = kc.execute("%%remote alice\nwhile True:\n    pass\n")
        time.sleep(1.5)  # the remote cell is spinning now
        t0 = time.monotonic()
        km.interrupt_kernel()
        while True:
            reply = kc.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        stopped_after = time.monotonic() - t0
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "Interrupted"
        assert stopped_after < 2.0, f"stopped {stopped_after:.1f}s after the interrupt"
        # ipykernel aborts requests that arrive right after an error (Run All stops there);
        # a user clicks again later, so does this test.
        for _ in range(10):
            content, text = execute("%%remote alice\nkept += 1\n")
            if content["status"] != "aborted":
                break
            time.sleep(0.5)
        assert content["status"] == "ok" and "assigned kept" in text
        content, text = execute("print(alice.vars['kept'].type_name, alice.connected)")
        assert "int True" in text
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_failed_private_cell_stops_with_one_line_after_its_receipt(
        shell: InteractiveShell) -> None:
    res, cap = run(shell, "%%remote alice\nx = 1\nundefined_name + x\n")
    err = res.error_in_exec
    assert type(err).__name__ == "RemoteError"  # raised: Run All stops here
    assert "the cell failed on alice (NameError, line 2)" in err.message
    assert "--mock-on-error" in err.message
    assert err._render_traceback_() == [f"\x1b[0;31mRemoteError\x1b[0m: {err.message}"]
    shown = [o.data.get("text/plain", "") for o in cap.outputs]
    assert any("alice · error: NameError (line 2)" in t for t in shown)  # the receipt first
    assert err.receipts[0].error_type == "NameError"


def test_mock_on_error_shows_the_mock_message_next_to_the_receipt(
        shell: InteractiveShell) -> None:
    res, cap = run(shell, "%%remote alice --mock-on-error --allow-error\n"
                          "v = int(secret.value.max())\n"
                          "raise ValueError(f'max is {v}, rows {len(secret)}')\n")
    r = res.result
    assert r.status == "error" and r.error_type == "ValueError" and not r.mock
    assert r.mock_rerun is not None and r.mock_rerun.mock
    # The mock data's max is 4 over 5 rows: its message is free to show.
    assert r.mock_message() == "ValueError: max is 4, rows 5 (line 2)"
    text = repr(r)
    assert text.splitlines()[1] == "  alice · MOCK re-run: ValueError: max is 4, rows 5 (line 2)"
    html = r._repr_html_()
    assert "alice · MOCK</b> re-run: ValueError: max is 4, rows 5" in html
    assert "mock traceback" in html and "\x1b" not in html
    assert_no_secret(seen(cap, res) + text + html)


def test_remote_config_sets_mock_on_error_and_stop_on_error(shell: InteractiveShell) -> None:
    res, cap = run(shell, "%remote config mock_on_error=on stop_on_error=off")
    assert "stop_on_error=off  mock_on_error=on" in cap.stdout
    try:
        res, cap = run(shell, "%%remote alice\ny = 1\nok_on_mock = heart.age + missing\n")
        r = res.result  # no raise: stop_on_error is off
        assert res.error_in_exec is None and r.status == "error"
        assert r.mock_message() == "NameError: name 'missing' is not defined (line 2)"
        res, cap = run(shell, "%%remote alice\nassert len(heart) == 50\n")  # the mock has 50
        # Fails on the private data only: the mock re-run passes, and says what that means.
        assert res.result.mock_message().startswith("ok on mock data: the error depends on")
    finally:
        run(shell, "%remote config mock_on_error=off stop_on_error=on")
    res, _ = run(shell, "%remote config stop_on_error=maybe")
    assert res.error_in_exec is not None and "on|off" in str(res.error_in_exec)


def test_receipt_without_type_names_shows_just_the_name(session: kb.Worker) -> None:
    """Private cells' receipts will carry no type names (a covert channel)."""
    r = kb.Receipt(session, {"status": "ok", "duration": 0.01, "kernel": "private",
                             "names": [{"name": "s", "change": "created"},
                                       {"name": "t", "change": "changed"}]}, [])
    assert repr(r) == "alice · ok · 10 ms · created s · changed t"
    assert "created s · changed t" in r._repr_html_()


def test_failed_remote_cell_stops_a_headless_run_all(alice: kb.Worker, owner: kb.Owner,
                                                      tmp_path: Any) -> None:
    import nbformat
    from nbclient.exceptions import CellExecutionError

    from kernel_bridge.notebook_runner import execute

    conn = tmp_path / "connections.json"
    conn.write_text(json.dumps({"alice": {"url": alice.process.url,
                                          "token": owner.add_token("t-runall")}}))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext kernel_bridge\n%remote connect alice"),
                nbformat.v4.new_code_cell("%%remote alice\nheart.no_such_column"),
                nbformat.v4.new_code_cell("print('after')")]
    nbformat.write(nb, tmp_path / "stops.ipynb")
    with pytest.raises(CellExecutionError) as err:
        execute(tmp_path / "stops.ipynb", tmp_path / "out.ipynb", conn, progress=False)
    assert err.value.ename == "RemoteError"
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert out.cells[2].get("execution_count") is None and not out.cells[2].outputs


def test_receipt_bundle_carries_a_request_token_the_button_sends_back(
        session: kb.Worker, owner: kb.Owner) -> None:
    from kernel_bridge.scientist.receipt import RECEIPT_MIME, request_from_ui

    r = session.run("print(heart.age.max())")
    data = r._repr_mimebundle_()[RECEIPT_MIME]
    assert data["parts"][:2] == [session.name, "ok"] and data["held"] == 1
    assert len(data["token"]) == 16 and r._repr_mimebundle_()[RECEIPT_MIME]["token"] == \
        data["token"]  # one token per receipt
    assert "error" in request_from_ui(data["token"], "   ")  # a reason is required
    assert "no longer known" in request_from_ui("0" * 16, "why")["error"]
    reply = request_from_ui(data["token"], "max age, from the button")
    assert reply["status"] == "pending" and reply["worker"] == session.name
    assert reply._repr_json_() == dict(reply)
    assert owner.request(reply["id"]).reason == "max age, from the button"
    # A receipt without held output has no button (no token).
    assert "token" not in session.run("x = 1")._repr_mimebundle_()[RECEIPT_MIME]
