"""kb.launch forks workers from a pre-imported fork server: each is still a worker of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import kernel_bridge as kb
from kernel_bridge import forkserver
from kernel_bridge.errors import ConfigError
from kernel_bridge.launch import relaunch


def test_a_launched_worker_is_forked_and_behaves_as_its_own_process(
        fresh_worker: Callable[..., kb.Worker], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    w = fresh_worker("carol")
    proc = w.process.proc
    assert isinstance(proc, forkserver.ForkedProcess)
    assert proc.poll() is None
    # It serves: a cell runs in its sandboxed kernel and its asset is there.
    assert w.send(41).get() == 41
    w.asset("secret")  # raises if the asset is not there
    # The launch's working directory, a session of its own (killpg reaches its kernels), a log.
    assert Path(f"/proc/{proc.pid}/cwd").resolve() == tmp_path.resolve()
    assert os.getsid(proc.pid) == proc.pid
    assert "ready at ws://127.0.0.1" in w.process.log_path.read_text()
    # Two launches are two processes with their own state, not one shared.
    other = fresh_worker("dave")
    assert other.process.proc.pid != proc.pid
    assert other.send(7).get() == 7
    # Stopping reports its exit status; a kill reports the signal.
    w.close()
    w.process.stop()
    assert proc.returncode == 0
    kids = other.process.proc
    other.process.kill()
    assert kids.poll() == -signal.SIGKILL


def test_a_killed_worker_relaunches_through_the_fork_server(
        fresh_worker: Callable[..., kb.Worker]) -> None:
    w = fresh_worker("carol")
    ptr = w.send(5)
    old = w.process.proc.pid
    w.process.kill()
    relaunch(w)
    assert w.process.proc.pid != old
    w.reconnect()
    assert w.send(6).get() == 6
    with pytest.raises(kb.SyftError):
        ptr.get()  # objects lived in the killed kernel; a restart forgets them


def test_a_worker_that_fails_to_start_says_why(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="worker exited with 2(.|\n)*no-such-flag"):
        kb.launch("carol", state=tmp_path / "s", extra_args=["--no-such-flag"])


def test_a_dead_fork_server_blocks_no_one(fresh_worker: Callable[..., kb.Worker]) -> None:
    w = fresh_worker("carol")
    server = forkserver._server
    assert server is not None
    server._proc.kill()
    server._proc.wait()
    deadline = time.monotonic() + 10
    while server.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    # Its worker lives on and is still known to be alive; a stop does not hang.
    assert w.process.proc.poll() is None
    assert w.send(3).get() == 3
    w.close()
    w.process.stop(timeout=10)
    assert w.process.proc.poll() is not None
    # The next launch starts a new fork server.
    again = fresh_worker("dave")
    assert again.send(4).get() == 4
    assert forkserver._server is not server


def test_a_fork_server_that_cannot_start_falls_back_to_a_plain_process(
        fresh_worker: Callable[..., kb.Worker], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "site"
    broken.mkdir()
    # Kills only `python -c ...` (the fork server), not `python -m kernel_bridge.cli`.
    (broken / "sitecustomize.py").write_text(
        "import sys\nif sys.argv[:1] == ['-c']:\n    raise SystemExit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(broken))  # an import-time variable: a new server
    with pytest.warns(RuntimeWarning, match="fork server failed"):
        w = fresh_worker("carol")
    assert isinstance(w.process.proc, subprocess.Popen)
    assert w.send(8).get() == 8


def test_without_the_fork_server_workers_are_plain_processes(
        fresh_worker: Callable[..., kb.Worker], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYFTLAB_LAUNCH_FORK", "0")
    w = fresh_worker("carol")
    assert isinstance(w.process.proc, subprocess.Popen)
    assert w.send(2).get() == 2


def test_the_fork_server_imports_no_torch() -> None:
    """What it preloads every worker inherits: the worker's modules, nothing heavier."""
    code = ("import sys; from kernel_bridge import forkserver as f; import importlib\n"
            "[importlib.import_module(m) for m in f.PRELOAD]\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'tenseal', 'ipykernel') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"


def test_the_fork_server_builds_the_command_line_once_for_every_worker() -> None:
    """Building the 30-subcommand parser cost each forked worker ~35 ms of CPU (ten at
    once queue for it on two cores): the fork server builds it before its first fork,
    and every worker's ``main`` parses its argv with that one (cached) parser."""
    code = ("from kernel_bridge import cli, forkserver\n"
            "forkserver.serve()  # preloads, then returns at once: its stdin is empty\n"
            "print(cli.build_parser.cache_info().currsize)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, stdin=subprocess.DEVNULL,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip().splitlines()[-1] == "1"
    from kernel_bridge import cli

    assert cli.build_parser() is cli.build_parser()
    args = cli.build_parser().parse_args(["worker", "--state", "/tmp/x"])
    assert args.command == "worker" and args.state == "/tmp/x"
