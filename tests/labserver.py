"""Real JupyterLab servers for the extension's tests (scientist or owner side).

Each server is a ``jupyter lab`` subprocess from this venv on a free
127.0.0.1 port, with a random token and a config file of ``c.Syftlab`` traits;
its user settings and workspaces live in a temporary directory.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LabServer:
    """``jupyter lab`` with ``syftlab`` settings; ``.url``, ``.token``, ``.call()``.

    Parameters
    ----------
    root : Path
        The server's root directory (notebooks, logs, settings).
    syftlab : dict
        ``Syftlab`` traits, e.g. ``{"owner_state": "/tmp/state"}``.
    launcher : list of str, optional
        The command in place of ``jupyter lab``.
    """

    def __init__(self, root: Path, syftlab: dict[str, Any],
                 launcher: list[str] | None = None) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        home = root.parent / f".{root.name}-jupyter"
        home.mkdir(exist_ok=True)
        self.config = home / "syftlab_config.py"
        self.config.write_text("".join(f"c.Syftlab.{k} = {v!r}\n" for k, v in syftlab.items()))
        # No "get notified about Jupyter news?" prompt over the screenshots.
        notes = home / "settings" / "@jupyterlab" / "apputils-extension"
        notes.mkdir(parents=True, exist_ok=True)
        (notes / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
        self.log = home / "lab.log"
        self.env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
                    "JUPYTER_CONFIG_DIR": str(home / "config"), "OMP_NUM_THREADS": "1"}
        # ``launcher`` replaces ``jupyter lab`` (e.g. ``syftlab lab --owner-state DIR --``).
        self.argv = [*(launcher or [sys.executable, "-m", "jupyterlab"]), "--no-browser",
                     "--allow-root",
                     "--ServerApp.ip=127.0.0.1", f"--port={self.port}",
                     "--ServerApp.port_retries=0", f"--ServerApp.token={self.token}",
                     f"--ServerApp.root_dir={root}", f"--config={self.config}",
                     f"--LabApp.user_settings_dir={home / 'settings'}",
                     f"--LabApp.workspaces_dir={home / 'workspaces'}",
                     "--LabApp.news_url=", "--LabServerApp.announcements_url=",
                     "--ServerApp.open_browser=False"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> LabServer:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, cwd=self.root, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited:\n{self.log.read_text()[-4000:]}")
            try:
                if self.call("GET", "/api/status")[0] == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"jupyter lab did not start:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def call(self, method: str, path: str, body: Any = None, token: str | None = "",
             raw: bytes | None = None) -> tuple[int, Any]:
        """``(status, json)`` of one HTTP call; ``token=None`` sends no credentials."""
        headers = {"Content-Type": "application/json"}
        tok = self.token if token == "" else token
        if tok is not None:
            headers["Authorization"] = f"token {tok}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, text = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read()
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text.decode(errors="replace")
