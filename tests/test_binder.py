"""``binder/``: the start script brings the demo workers up and execs into the given command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import ROOT
from .test_demo import alive

CHECK = """
import json, os, sys
import kernel_bridge as kb
conn = json.load(open(os.environ["SYFTLAB_CONNECTIONS"]))
names = []
for name, c in sorted(conn.items()):
    w = kb.connect(c["url"], c["token"], name=name)
    if name != "dave":  # dave is the SMPC dealer: no data
        r = w.run("n = len(heart)")
        assert r.ok and r.names[0]["name"] == "n", r
    names.append(name)
    w.close()
print("ok", *names, "pid", os.getpid())
sys.exit(7)
"""


def test_binder_files_are_complete() -> None:
    req = (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    pins = [line for line in req if line.strip() and not line.startswith(("#", "-"))]
    assert pins[0] == "torch==2.13.0"  # first, pinned: a CPU build, never a CUDA range
    assert "pip install" in (ROOT / "binder" / "postBuild").read_text()
    for script in ("postBuild", "start"):
        assert os.access(ROOT / "binder" / script, os.X_OK)
    assert (ROOT / "binder" / "start").read_text().rstrip().endswith('exec "$@"')


def test_start_script_launches_workers_and_execs_the_command(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    env = {**os.environ, "SYFTLAB_DEMO_ROOT": str(root), "SYFTLAB_DEMO_ARGS": "--any-port",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([str(ROOT / "binder" / "start"), sys.executable, "-c", CHECK],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=300)
        # The command's own exit status and pid: the script exec'd into it.
        assert proc.returncode == 7, out + err
        assert "workers alice, bob, carol and dave (the dealer) are up" in out
        assert f"ok alice bob carol dave pid {proc.pid}" in out
        info = json.loads((root / "demo.json").read_text())
        assert all(alive(p) for p in info["workers"].values())  # still serving the notebooks
    finally:
        if proc.poll() is None:
            proc.kill()
        info = json.loads((root / "demo.json").read_text()) if (root / "demo.json").exists() \
            else {}
        if info.get("pid"):
            os.kill(info["pid"], signal.SIGTERM)  # what the container's end does
    deadline = time.monotonic() + 30
    pids = [info["pid"], *info["workers"].values()]
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in pids)
    assert "demo stopped" in (root / "demo.log").read_text()
