"""``syftlab demo``: the sample workers on localhost, and JupyterLab.

The workers: the hospitals alice, bob and carol, and dave, the SMPC dealer.

Starts one worker process per ``datasets/*.toml`` config (each with its own
state dir under ``.demo/``), gives scientist "ana" a token on each, writes
``.demo/connections.json`` (so the notebooks connect with no manual step),
starts JupyterLab on ``notebooks/`` and prints its URL. Ctrl-C stops all of
them. ``--execute`` runs the start-here notebook headless instead of Lab.

Every start is a clean start: the workers' state (tokens, requests, the privacy
budget ledger, audit log) and the Labs' workspaces from an earlier run are
removed first, unless ``keep_state`` (``syftlab demo --keep-state``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from .launch import WorkerProcess
from .owner.config import WorkerConfig
from .owner.owner_api import Owner
from .owner.store import DB_NAME
from .scientist import connections
from .smpc import keys

SCIENTIST = "ana"


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def default_datasets() -> Path:
    """The repository's ``datasets/`` folder (next to the package in a checkout)."""
    return repo_root() / "datasets"


def worker_configs(datasets: Path, names: list[str], state_root: Path | None = None
                   ) -> list[WorkerConfig]:
    """The sample workers' configs (state under ``state_root/NAME`` when given)."""
    out = []
    for name in names:
        config = WorkerConfig.from_toml(datasets / f"{name}.toml")
        if state_root is not None:
            config = config.with_overrides(state=(state_root / config.name).resolve())
        out.append(config)
    return out


def reset_state(configs: list[WorkerConfig], root: Path) -> list[Path]:
    """Remove an earlier run's worker state dirs and Lab workspaces; returns what went.

    Only folders that are a worker's state (they hold its database) or the
    demo's own Lab folders are removed, never anything else under ``root``.
    """
    removed = []
    for cfg in configs:
        state = Path(cfg.state)
        if state.is_dir() and ((state / DB_NAME).exists() or not any(state.iterdir())):
            shutil.rmtree(state)
            removed.append(state)
    for name in ("lab-scientist", *(f"lab-owner-{c.name}" for c in configs)):
        lab_dir = root / name
        if lab_dir.is_dir():
            shutil.rmtree(lab_dir)
            removed.append(lab_dir)
    for name in (connections.FILE_NAME, "tokens.json", "demo.json"):
        (root / name).unlink(missing_ok=True)
    return removed


def start_workers(datasets: Path, names: list[str], scientist: str = SCIENTIST,
                  state_root: Path | None = None, any_port: bool = False,
                  unsafe_no_sandbox: bool = False,
                  ) -> list[tuple[WorkerProcess, WorkerConfig, str]]:
    """Start the named sample workers; returns (process, config, token) for each.

    ``state_root`` replaces the configs' state folders (``state_root/NAME``);
    ``any_port`` lets each worker take a free port instead of the configured one.
    """
    started = []
    try:
        for name in names:
            toml = datasets / f"{name}.toml"
            config = WorkerConfig.from_toml(toml)
            argv = [sys.executable, "-m", "kernel_bridge.cli", "worker",
                    "--config", str(toml)]
            if state_root is not None:
                config = config.with_overrides(state=(state_root / config.name).resolve())
                argv += ["--state", str(config.state)]
            if any_port:
                argv += ["--port", "0"]
            if unsafe_no_sandbox:
                argv.append("--unsafe-no-sandbox")
            Path(config.state).mkdir(parents=True, exist_ok=True)
            owner = Owner(config.state)
            token = owner.add_token(scientist)
            owner.close()
            proc = WorkerProcess(argv, Path(config.state), Path(config.state) / "worker.log")
            proc.start()
            started.append((proc, config, token))
        # smpc: the demo's workers (one owner, one machine) trust each other's SMPC keys
        keys.trust_each_other([(c.name, Path(c.state), c.smpc.dealer) for _, c, _ in started])
    except BaseException:
        for proc, _, _ in started:
            proc.stop()
        raise
    return started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Lab:
    """JupyterLab on 127.0.0.1 in its own process group (Ctrl-C reaches the demo only)."""

    def __init__(self, notebooks: Path, root: Path, env: dict[str, str],
                 port: int = 8888, side: list[str] | None = None, log_name: str = "lab.log",
                 lab_dir: Path | None = None) -> None:
        self.token = secrets.token_hex(24)
        self.port = port if port and port_free(port) else free_port()
        self.log_path = root / log_name
        # Each Lab keeps its own workspace (open tabs, layout) and user settings: the
        # owner's Lab must not reopen the scientist's notebook and start a kernel on it.
        self.lab_dir = lab_dir or root / log_name.removesuffix(".log")
        self.lab_dir.mkdir(parents=True, exist_ok=True)
        settings = self.lab_dir / "settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        news = settings / "notification.jupyterlab-settings"
        if not news.exists():
            news.write_text('{"fetchNews": "false"}')
        argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
                "--ip=127.0.0.1", f"--port={self.port}", "--ServerApp.port_retries=0",
                f"--ServerApp.root_dir={notebooks}", f"--IdentityProvider.token={self.token}",
                f"--LabApp.workspaces_dir={self.lab_dir / 'workspaces'}",
                f"--LabApp.user_settings_dir={self.lab_dir / 'settings'}",
                *(side or [])]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **env}, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/lab?token={self.token}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        api = f"http://127.0.0.1:{self.port}/api/status?token={self.token}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited ({self.proc.returncode}); "
                                   f"see {self.log_path}")
            try:
                with urllib.request.urlopen(api, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"JupyterLab did not answer in {timeout:.0f}s; see {self.log_path}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # jupyter_server shuts kernels down on TERM
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _print_intro(workers: list[tuple[WorkerProcess, WorkerConfig, str]], conn_file: Path
                 ) -> None:
    print("\nsyftlab demo: workers are up\n")
    for proc, cfg, _ in workers:
        print(f"  {cfg.name:<6} {proc.url}   assets: {', '.join(cfg.assets)}   "
              f"state: {cfg.state}")
    print("\nAs the data scientist, in a notebook:\n")
    print("    %load_ext kernel_bridge")
    print(f"    %remote connect {' '.join(cfg.name for _, cfg, _ in workers)}"
          f"      # reads {conn_file}")
    first = workers[0][1].name
    print(f"    %%remote {first}\n    s = heart.groupby('sex').age.mean()")
    print("\nAs the data owner:\n")
    print(f"    syftlab requests list --state {workers[0][1].state}")
    print(f"\nTokens are in {conn_file}.", flush=True)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def failure_text(exc: BaseException, max_lines: int = 25) -> str:
    """A headless run's failure, readable in a terminal: no ANSI codes, cut at the end.

    For a cell that raised (nbclient's ``CellExecutionError``) it is the error's
    type and message, then the last ``max_lines`` lines of its traceback.
    """
    ename = getattr(exc, "ename", None)
    if ename:
        head = f"{ename}: {_ANSI.sub('', str(getattr(exc, 'evalue', '')))}"
        tb = _ANSI.sub("", str(getattr(exc, "traceback", "") or "")).strip().splitlines()
        tail = tb[-max_lines:]
        more = [f"... ({len(tb) - max_lines} earlier lines)"] if len(tb) > max_lines else []
        return "\n".join([head, "", *more, *tail])
    lines = _ANSI.sub("", f"{type(exc).__name__}: {exc}").strip().splitlines()
    return "\n".join(lines[:max_lines] + (["..."] if len(lines) > max_lines else []))


def execute_notebook(notebook: Path, conn_file: Path, out_dir: Path) -> Path:
    """Run ``notebook`` against the live workers; returns the executed copy's path."""
    from .notebook_runner import execute

    out = out_dir / f"{notebook.stem}.executed.ipynb"
    execute(notebook, out, conn_file)
    return out


#: The hospitals alice, bob and carol (FL uses all three) and dave, the SMPC dealer.
DEFAULT_WORKERS = ("alice", "bob", "carol", "dave")


def main(datasets: Path | None = None, names: list[str] | None = None, *,
         state_root: Path | None = None, any_port: bool = False, lab: bool = True,
         lab_port: int = 8888, execute: Path | None = None,
         notebooks: Path | None = None, unsafe_no_sandbox: bool = False,
         keep_state: bool = False) -> int:
    """Run the demo until Ctrl-C (or, with ``execute``, until the notebook has run).

    It starts clean (see :func:`reset_state`) unless ``keep_state``.
    """
    datasets = datasets or default_datasets()
    names = names or list(DEFAULT_WORKERS)
    notebooks = notebooks or repo_root() / "notebooks"
    if not keep_state:
        configs = worker_configs(datasets, names, state_root)
        root0 = state_root.resolve() if state_root else Path(configs[0].state).parent
        if reset_state(configs, root0):
            print(f"fresh start: removed the previous demo state under {root0} "
                  "(--keep-state keeps it)", flush=True)
    workers = start_workers(datasets, names, state_root=state_root, any_port=any_port,
                            unsafe_no_sandbox=unsafe_no_sandbox)
    root = state_root.resolve() if state_root else Path(workers[0][1].state).parent
    conn = {cfg.name: {"url": proc.url, "token": token, "state": str(cfg.state),
                       "scientist": SCIENTIST} for proc, cfg, token in workers}
    conn_file = connections.write(root / connections.FILE_NAME, conn)
    (root / "tokens.json").write_text(json.dumps(
        {k: {"url": v["url"], "token": v["token"]} for k, v in conn.items()}, indent=2))
    info: dict[str, Any] = {"pid": os.getpid(), "connections": str(conn_file),
                            "workers": {cfg.name: proc.proc.pid if proc.proc else None
                                        for proc, cfg, _ in workers}}
    (root / "demo.json").write_text(json.dumps(info, indent=2))
    lab_proc: Lab | None = None
    owner_proc: Lab | None = None
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        _print_intro(workers, conn_file)
        if execute is not None:
            print(f"\nrunning {execute} headless ...", flush=True)
            try:
                out = execute_notebook(execute, conn_file, root)
            except Exception as exc:
                out = root / f"{execute.stem}.executed.ipynb"
                print(f"\nthe notebook failed:\n{failure_text(exc)}\n\n"
                      f"partial copy: {out}", file=sys.stderr)
                return 1
            print(f"\nexecuted notebook: {out}", flush=True)
            return 0
        if lab:
            from .notebook_runner import kernel_env, kernelspec_dir

            env = kernel_env(kernelspec_dir(root / ".jupyter-kernels"), conn_file)
            # The scientist's Lab: the "Remote data" sidebar reads the connection file.
            lab_proc = Lab(notebooks, root, env, port=lab_port,
                           side=[f"--Syftlab.connections_file={conn_file}"],
                           log_name="lab-scientist.log")
            info["lab"] = {"pid": lab_proc.proc.pid, "url": lab_proc.url}
            # The first worker's owner gets a Lab of their own: the "Approvals" panel.
            owner_cfg = workers[0][1]
            owner_proc = Lab(notebooks, root, env, port=lab_port + 1 if lab_port else 0,
                             side=[f"--Syftlab.owner_state={owner_cfg.state}"],
                             log_name=f"lab-owner-{owner_cfg.name}.log")
            info["owner_lab"] = {"pid": owner_proc.proc.pid, "url": owner_proc.url,
                                 "worker": owner_cfg.name}
            (root / "demo.json").write_text(json.dumps(info, indent=2))
            lab_proc.wait_ready()
            owner_proc.wait_ready()
            print(f"\nJupyterLab (data scientist): {lab_proc.url}\n"
                  "  (open notebooks/start_here.ipynb; the Remote data sidebar lists the workers)",
                  flush=True)
            print(f"JupyterLab (data owner {owner_cfg.name}): {owner_proc.url}\n"
                  "  (the Approvals panel: pending requests, history, privacy budget)",
                  flush=True)
        (root / "demo.json").write_text(json.dumps(info | {"ready": True}, indent=2))
        signal.signal(signal.SIGINT, on_signal)
        print("\nCtrl-C stops everything.", flush=True)
        while not stop:
            for proc, cfg, _ in workers:
                if proc.proc is not None and proc.proc.poll() is not None:
                    print(f"worker {cfg.name} exited; see {proc.log_path}", file=sys.stderr)
                    stop = True
            for lp in (lab_proc, owner_proc):
                if lp is not None and lp.proc.poll() is not None:
                    print(f"JupyterLab exited; see {lp.log_path}", file=sys.stderr)
                    stop = True
            time.sleep(0.2)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut cleanup
        for lp in (lab_proc, owner_proc):
            if lp is not None:
                lp.stop()
        for proc, _, _ in workers:
            proc.stop()
        print("demo stopped", flush=True)
    return 0
