"""``make demo``: both workers and JupyterLab come up; Ctrl-C stops all of them.

The demo runs through the real Makefile target (the virtualenv already exists,
so make goes straight to ``syftlab demo``), in its own process group, and is
stopped the way a terminal's Ctrl-C stops it: SIGINT to the whole group.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import nbformat
import pytest

import kernel_bridge as kb
from kernel_bridge.notebook_runner import output_text

from .conftest import ROOT


def make_env() -> dict[str, str]:
    """The environment of a terminal, not of the ``make test`` this may run under."""
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}


def wait_for(path: Path, key: str, proc: subprocess.Popen[bytes], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the demo exited early ({proc.returncode})")
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError:
                data = {}
            if data.get(key):
                return data
        time.sleep(0.3)
    raise AssertionError(f"{path} never said {key!r}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (its parent has not reaped it yet).
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def port_open(url: str) -> bool:
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, int(port))) == 0


def test_make_demo_target_sets_up_a_fresh_checkout(tmp_path: Path) -> None:
    """On a checkout without .venv, ``make demo`` creates it, installs, then runs the demo."""
    out = subprocess.run(["make", "--no-print-directory", "-n", "demo",
                          f"VENV={tmp_path / 'venv'}"], cwd=ROOT, env=make_env(),
                         capture_output=True, text=True, check=True).stdout
    steps = [line for line in out.splitlines() if line.strip() and not line.startswith("#")]
    assert any("-m venv" in s for s in steps)
    assert any('"torch==2.13.0"' in s for s in steps)
    assert any('install -q -e ".[test]"' in s for s in steps)
    assert steps[-1].strip().endswith("/python -m kernel_bridge demo")


def test_make_demo_brings_up_workers_and_lab_and_ctrl_c_stops_them(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    args = f"--state-root {root} --any-port --lab-port 0"
    log = open(tmp_path / "demo.out", "wb")
    proc = subprocess.Popen(["make", "demo", f"DEMO_ARGS={args}"], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=make_env(), start_new_session=True)
    try:
        info = wait_for(root / "demo.json", "ready", proc, timeout=240)
        conn = json.loads((root / "connections.json").read_text())
        assert set(conn) == {"alice", "bob", "carol", "dave"}
        for name, c in conn.items():
            w = kb.connect(c["url"], c["token"], name=name)
            held = {d["name"] for d in w.datasets}
            assert w.scientist == "ana" and (held >= {"heart"} if name != "dave" else not held)
            w.close()
        lab_url = info["lab"]["url"]
        with urllib.request.urlopen(lab_url, timeout=10) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()
        base, token = lab_url.split("/lab?token=")
        with urllib.request.urlopen(f"{base}/api/contents?token={token}", timeout=10) as r:
            names = {c["name"] for c in json.loads(r.read())["content"]}
        assert "start_here.ipynb" in names
        with urllib.request.urlopen(f"{base}/api/kernelspecs?token={token}", timeout=10) as r:
            specs = json.loads(r.read())
        # Lab's notebooks run on the Python that has kernel_bridge installed.
        assert specs["kernelspecs"]["python3"]["spec"]["argv"][0] == sys.executable
        # The owner's Lab serves alice's approvals; the scientist's lists both workers.
        obase, otoken = info["owner_lab"]["url"].split("/lab?token=")
        with urllib.request.urlopen(f"{obase}/syftlab/info?token={otoken}", timeout=10) as r:
            assert json.loads(r.read())["side"] == "owner"
        with urllib.request.urlopen(f"{base}/syftlab/info?token={token}", timeout=10) as r:
            assert json.loads(r.read())["side"] == "scientist"
        pids = [info["lab"]["pid"], info["owner_lab"]["pid"], *info["workers"].values()]
        assert all(alive(p) for p in pids)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        proc.wait(60)
        deadline = time.monotonic() + 20
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(p) for p in pids)
        assert not any(port_open(c["url"]) for c in conn.values())
        assert not port_open(base) and not port_open(obase)
        text = (tmp_path / "demo.out").read_text()
        assert "JupyterLab (data scientist): http://127.0.0.1:" in text
        assert "JupyterLab (data owner alice): http://127.0.0.1:" in text
        assert "demo stopped" in text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_headless_demo_executes_start_here(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    out = subprocess.run([sys.executable, "-m", "kernel_bridge.cli", "demo", "--execute",
                          "--state-root", str(root), "--any-port"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("executed notebook: "))
    executed = Path(line.split(": ", 1)[1])
    assert executed.exists() and executed.parent == root.resolve()
    text = output_text(nbformat.read(executed, as_version=4))
    for expected in ("alice · ok", "assigned s", "1 output held", "alice · MOCK",
                     "bob · ok", "error: ValueError (line 2)", "alice · approved",
                     "timeout: TimeoutError",
                     "alice · MOCK re-run: ValueError: the oldest patient is"):
        assert expected in text, expected
    info = json.loads((root / "demo.json").read_text())
    assert not any(alive(p) for p in info["workers"].values())
    assert "demo stopped" in out.stdout


def run_headless(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernel_bridge.cli", "demo", "--execute",
                           "--state-root", str(root), "--any-port", *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_headless_demo_runs_five_times_in_a_row_each_from_a_clean_start(tmp_path: Path
                                                                         ) -> None:
    """Each run spends ε 0.7 of 3.0: kept state would fail the fifth with BudgetExhausted."""
    root = tmp_path / "demo"
    for i in range(5):
        out = run_headless(root)
        assert out.returncode == 0, f"run {i + 1}:\n" + out.stdout[-3000:] + out.stderr[-3000:]
        assert ("fresh start: removed the previous demo state" in out.stdout) == (i > 0)
        text = output_text(nbformat.read(root / "start_here.executed.ipynb", as_version=4))
        assert "ε left 2.50" in text, f"run {i + 1} did not start with a full budget"
        assert "request #1 (ana): approved" in text  # request ids restart too
    # --keep-state keeps what the last run spent (and its requests).
    out = run_headless(root, "--keep-state")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "fresh start" not in out.stdout
    owner = kb.Owner(root / "alice")
    try:
        spent = {r["scientist"]: r["epsilon_spent"] for r in owner.budget()
                 if r["asset"] == "heart"}
        assert spent["ana"] == pytest.approx(1.4)
        assert len(owner.requests(None)) == 2
    finally:
        owner.close()


def test_a_failing_headless_run_prints_the_error_readably(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell(
                    "def deep(n):\n    return deep(n - 1) if n else 1 / 0\n"
                    "raise ValueError('budget ' + 'x' * 3000 + ' timeout at the end') "
                    "from ZeroDivisionError()")]
    path = tmp_path / "fails.ipynb"
    nbformat.write(nb, path)
    root = tmp_path / "demo"
    out = run_headless(root, "--workers", "alice", "--execute", str(path))
    assert out.returncode == 1
    err = out.stderr.split("the notebook failed:\n", 1)[1]
    assert "\x1b" not in err  # no ANSI colour codes
    # The message starts at its beginning (not cut at the front) and names the type.
    assert err.startswith("ValueError: budget xxx")
    assert "timeout at the end" in err
    assert f"partial copy: {root.resolve() / 'fails.executed.ipynb'}" in err


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_start_here_reads_well_when_the_owner_decided_in_the_panel(tmp_path: Path,
                                                                   decision: str) -> None:
    """The owner decides (as in the Approvals panel) right after the request cell."""
    from kernel_bridge import demo
    from kernel_bridge.notebook_runner import execute
    from kernel_bridge.scientist import connections

    root = tmp_path / "demo"
    workers = demo.start_workers(demo.default_datasets(), ["alice", "bob"], state_root=root,
                                 any_port=True)
    try:
        conn = connections.write(root / connections.FILE_NAME, {
            cfg.name: {"url": proc.url, "token": token, "state": str(cfg.state)}
            for proc, cfg, token in workers})
        decided: list[int] = []

        def owner_clicks(index: int, cell: Any) -> None:
            if "receipt.request(" not in str(cell.source) or decided:
                return
            owner = kb.Owner(workers[0][1].state)
            try:
                (rid,) = [r.id for r in owner.requests("pending")]
                if decision == "approve":
                    owner.approve(rid)
                else:
                    owner.deny(rid, "group means of 2 patients identify them")
                decided.append(rid)
            finally:
                owner.close()

        nb = execute(ROOT / "notebooks" / "start_here.ipynb", root / "out.ipynb", conn,
                     progress=False, after_cell=owner_clicks)
    finally:
        for proc, _, _ in workers:
            proc.stop()
    assert decided == [1]
    text = output_text(nb)
    assert "AlreadyDecided" not in text and "ValueError: request" not in text
    if decision == "approve":
        assert "request #1 (ana): already approved (at " in text
        assert "alice · approved" in text
    else:
        assert "request #1 (ana): denied: group means of 2 patients identify them" in text
        assert "alice denied the request: group means of 2 patients identify them" in text
        assert "alice · approved" not in text
