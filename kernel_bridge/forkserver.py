"""A pre-imported parent that forks the workers :func:`kernel_bridge.launch` starts.

A worker spends most of its start-up importing (pandas, OpenDP, websockets,
jupyter_client): about 0.6 s of CPU before it does anything of its own. Ten
launched at once on a two-core machine queue for seconds. The fork server
imports the worker's modules once, then forks each launched worker from that
state (copy-on-write), so a launch costs only the worker's own set-up. (OpenDP's
polars API, another 0.25-0.5 s, is left to a worker's first DP query: the fork
server's imports are what every launch waits for.)

The child is what ``python -m kernel_bridge.cli worker ...`` would be: a session
of its own (``setsid``, so ``killpg`` reaches its kernels), stdin from
``/dev/null``, stdout and stderr appended to its log, the launch's environment
and working directory. Two differences, both on purpose: modules were imported
under the fork server's environment (it is restarted when a variable read at
import time changes, see :data:`IMPORT_ENV`), and the parent of the worker is
the fork server, which reports its exit status back (:class:`ForkedProcess`).
(``/proc/PID/environ`` shows the fork server's environment: the launch's is
applied to ``os.environ`` after the fork, without an ``exec``.)

Nothing another party sent goes through here: requests come from the launching
process over the fork server's stdin, as JSON lines.

``SYFTLAB_LAUNCH_FORK=0`` turns it off (each worker is a fresh ``python -m``).
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

#: Variables that modules read when imported (thread pools, traceback length):
#: a launch whose values differ gets a fork server started under its own.
IMPORT_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "SYFTLAB_FULL_TRACEBACKS", "PYTHONPATH", "PYTHONHASHSEED")
#: What the fork server imports before its first fork: the worker's own modules.
PRELOAD = ("kernel_bridge.cli", "kernel_bridge.owner.config", "kernel_bridge.owner.server")


def enabled() -> bool:
    """Whether :func:`kernel_bridge.launch` forks workers (``SYFTLAB_LAUNCH_FORK``; on)."""
    return os.environ.get("SYFTLAB_LAUNCH_FORK", "1") not in ("0", "", "false", "no")


# -- the launching side -----------------------------------------------------------------
class ForkedProcess:
    """What :mod:`kernel_bridge.launch` uses of :class:`subprocess.Popen`, for a forked worker.

    The worker is the fork server's child, so its exit status arrives from there.
    """

    def __init__(self, pid: int, server: ForkServer) -> None:
        self.pid, self._server = pid, server
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.exit_code(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        code = self._server.wait_exit(self.pid, timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
        self.returncode = code
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:  # exited just now; its status is on its way
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkServer:
    """One fork server process and the thread that reads its replies."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.key = import_key(env)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from kernel_bridge.forkserver import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=dict(env), start_new_session=True)
        self._lock = threading.Lock()  # one request and its reply at a time
        self._changed = threading.Condition()
        self._pids: list[int] = []
        self._exits: dict[int, int] = {}
        self._dead = False
        threading.Thread(target=self._read, name="syftlab-forkserver", daemon=True).start()

    def alive(self) -> bool:
        return not self._dead and self._proc.poll() is None

    def fork(self, argv: list[str], env: Mapping[str, str], log: str, cwd: str,
             timeout: float = 60.0) -> ForkedProcess:
        """Fork a worker running ``kernel_bridge.cli`` with ``argv``; returns its handle."""
        request = json.dumps({"argv": argv, "env": dict(env), "log": log, "cwd": cwd})
        with self._lock:
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.write(request.encode() + b"\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise RuntimeError("the fork server is gone") from exc
            with self._changed:
                if not self._changed.wait_for(lambda: self._pids or self._dead, timeout):
                    raise TimeoutError("the fork server did not answer")
                if not self._pids:
                    raise RuntimeError("the fork server exited")
                return ForkedProcess(self._pids.pop(0), self)

    def exit_code(self, pid: int) -> int | None:
        with self._changed:
            if pid in self._exits or not self._dead:
                return self._exits.get(pid)
        # The fork server died, so no status will come: alive or gone is all we can tell.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return -signal.SIGKILL
        return None

    def wait_exit(self, pid: int, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            code = self.exit_code(pid)
            left = None if deadline is None else deadline - time.monotonic()
            if code is not None or (left is not None and left <= 0):
                return code
            with self._changed:  # once the server is dead no status comes: poll the pid
                step = (0.05 if left is None else min(left, 0.05)) if self._dead else left
                self._changed.wait_for(lambda: pid in self._exits or self._dead, step)

    def close(self) -> None:
        """End the fork server (the workers it forked keep running until stopped)."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            msg = json.loads(line)
            with self._changed:
                if "pid" in msg:
                    self._pids.append(int(msg["pid"]))
                else:
                    self._exits[int(msg["exit"])] = int(msg["code"])
                self._changed.notify_all()
        with self._changed:
            # A fork server that died sends no more statuses: exit_code() asks the pid.
            self._dead = True
            self._changed.notify_all()


def import_key(env: Mapping[str, str]) -> tuple[str | None, ...]:
    return tuple(env.get(k) for k in IMPORT_ENV)


_server: ForkServer | None = None
_server_lock = threading.Lock()


def fork_worker(argv: list[str], env: Mapping[str, str], log: str) -> ForkedProcess:
    """Start ``kernel_bridge.cli`` with ``argv`` from the (lazily started) fork server."""
    global _server
    with _server_lock:
        if _server is None or not _server.alive() or _server.key != import_key(env):
            if _server is not None:
                _server.close()
            _server = ForkServer(env)
        server = _server
    return server.fork(argv, env, log, os.getcwd())


def shutdown() -> None:
    """Close the fork server, if one was started (at exit, after the workers stopped)."""
    global _server
    with _server_lock:
        if _server is not None:
            _server.close()
            _server = None


# -- the fork server ---------------------------------------------------------------------
def _child(request: dict[str, Any]) -> None:
    """In the forked child: become the worker. Never returns."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # The fork server's pipes are fds 0 and 1: replace them (which closes our ends).
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115  (fds 0-2 live as long as we do)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, errors="backslashreplace",  # noqa: SIM115
                          closefd=False)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        # What `python -m kernel_bridge.cli ARGV` runs. The CLI is this process's entry
        # point, as it is a launched subprocess's, not a module this one builds on: looked
        # up by name (the CLI sits above launch in the layers), already imported by PRELOAD.
        sys.argv = ["kernel_bridge.cli", *request["argv"]]
        code = importlib.import_module("kernel_bridge.cli").main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # the worker's own errors are in its log, as with python -m
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    """The fork server's loop: preload, then fork one worker per request line."""
    for name in PRELOAD:
        importlib.import_module(name)
    importlib.import_module("kernel_bridge.cli").build_parser()  # cached: every child uses it
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher's Ctrl-C is not ours
    buf = b""
    while True:
        ready, _, _ = select.select([requests, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
        while True:  # reap every exited child and say so
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            _reply(replies, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})
        if requests in ready:
            chunk = os.read(requests.fileno(), 65536)
            if not chunk:
                return  # the launcher closed us (or died): the workers carry on
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    os.close(wake_r)
                    os.close(wake_w)
                    _child(request)
                _reply(replies, {"pid": pid})


def _reply(out: IO[bytes], msg: dict[str, Any]) -> None:
    out.write(json.dumps(msg).encode() + b"\n")
    out.flush()
