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
    assert steps[-1].strip().endswith("syftlab demo")


def test_make_demo_brings_up_workers_and_lab_and_ctrl_c_stops_them(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    args = f"--state-root {root} --any-port --lab-port 0"
    log = open(tmp_path / "demo.out", "wb")
    proc = subprocess.Popen(["make", "demo", f"DEMO_ARGS={args}"], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=make_env(), start_new_session=True)
    try:
        info = wait_for(root / "demo.json", "ready", proc, timeout=240)
        conn = json.loads((root / "connections.json").read_text())
        assert set(conn) == {"alice", "bob"}
        for name, c in conn.items():
            w = kb.connect(c["url"], c["token"], name=name)
            assert w.scientist == "ana" and {d["name"] for d in w.datasets} >= {"heart"}
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
                     "timeout: TimeoutError"):
        assert expected in text, expected
    info = json.loads((root / "demo.json").read_text())
    assert not any(alive(p) for p in info["workers"].values())
    assert "demo stopped" in out.stdout
