"""Expected errors, as a notebook shows them: one line, not 30 lines of client internals.

A real ipykernel (the notebook's kernel, started by jupyter_client) runs the
cells; the error reply's ``traceback`` is exactly what Jupyter renders.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest

import kernel_bridge as kb
from kernel_bridge.errors import InvalidURL, WorkerUnreachable

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Kernel:
    def __init__(self, kc: Any) -> None:
        self.kc = kc

    def run(self, code: str) -> tuple[dict[str, Any], str]:
        texts: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            c = msg["content"]
            texts.append(str(c.get("text", "")) + str(c.get("data", {}).get("text/plain", "")))
            texts.extend(c.get("traceback") or [])

        reply = self.kc.execute_interactive(code, timeout=60, output_hook=hook)
        return reply["content"], ANSI.sub("", "\n".join(texts))


@pytest.fixture(scope="module")
def kernel(alice: kb.Worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    from jupyter_client import KernelManager

    from kernel_bridge.notebook_runner import KERNEL_NAME, kernel_env, kernelspec_dir

    tmp = tmp_path_factory.mktemp("errors-kernel")
    owner = kb.Owner(alice.process.state)
    token = owner.add_token("t-errors-shown")
    owner.close()
    conn = tmp / "connections.json"
    conn.write_text(json.dumps({"alice": {"url": alice.process.url, "token": token}}))
    env = kernel_env(kernelspec_dir(tmp / "jupyter"), conn)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    km = KernelManager(kernel_name=KERNEL_NAME)
    km.start_kernel(env={**os.environ, **env})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        k = Kernel(kc)
        content, text = k.run("%load_ext kernel_bridge\n%remote connect alice")
        assert content["status"] == "ok", text
        yield k
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        for key, v in saved.items():
            if v is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = v


def shown(kernel: Kernel, code: str) -> tuple[str, list[str]]:
    content, _ = kernel.run(code)
    assert content["status"] == "error", content
    return content["ename"], [ANSI.sub("", t) for t in content["traceback"]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_expected_errors_show_as_their_one_line(kernel: Kernel, alice: kb.Worker) -> None:
    url = alice.process.url
    cases = {
        f"kb.connect({url!r}, token='syft_wrong')": ("AuthenticationError", "token"),
        "alice.vars['s'].get()": ("ApprovalRequired", ""),
        "alice.vars['s'].request('why').result()": ("RequestPending", ""),
        "alice.asset('heart').dp.mean('age', epsilon=50).release()": ("BudgetExhausted", ""),
        f"kb.connect('ws://127.0.0.1:{free_port()}', token='t')":
            ("WorkerUnreachable", "connection refused: is the worker running"),
        f"kb.connect({url.replace('ws://', 'http://')!r}, token='t')":
            ("InvalidURL", "use ws://HOST:PORT"),
    }
    content, text = kernel.run("%%remote alice\ns = heart.age.mean()")
    assert content["status"] == "ok" and "alice · ok" in text
    for code, (ename, hint) in cases.items():
        name, tb = shown(kernel, code)
        assert name == ename, (code, name, tb)
        assert len(tb) == 1, (code, tb)  # no run_sync / concurrent.futures frames
        assert tb[0].startswith(f"{ename}: ") and hint in tb[0], (code, tb)
        assert "run_sync" not in tb[0] and "concurrent" not in tb[0]


def test_connection_errors_are_typed_and_say_what_to_check(alice: kb.Worker) -> None:
    port = free_port()
    with pytest.raises(WorkerUnreachable, match=f"127.0.0.1:{port}: connection refused"):
        kb.connect(f"ws://127.0.0.1:{port}", token="t")
    with pytest.raises(InvalidURL, match="is not a worker address"):
        kb.connect(alice.process.url.replace("ws://", "http://"), token="t")
    with pytest.raises(WorkerUnreachable, match="unknown host"):
        kb.connect("ws://no-such-host.invalid:8765", token="t")
    # Something that answers HTTP but is not a worker.
    import http.server
    import threading

    srv = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(WorkerUnreachable, match="not a syftlab worker"):
            kb.connect(f"ws://127.0.0.1:{srv.server_address[1]}", token="t")
    finally:
        srv.shutdown()
        srv.server_close()


def test_full_tracebacks_come_back_on_request(kernel: Kernel) -> None:
    content, _ = kernel.run("import kernel_bridge.errors as E; E.SHORT_TRACEBACKS = False")
    assert content["status"] == "ok"
    try:
        name, tb = shown(kernel, "alice.vars['s'].get()")
        assert name == "ApprovalRequired" and len(tb) > 3
    finally:
        kernel.run("E.SHORT_TRACEBACKS = True")


