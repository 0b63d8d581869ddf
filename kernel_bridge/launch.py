"""``kb.launch``: a real worker process on localhost, already connected.

It sits above both sides: it plays the data owner (starts the worker, adds a
token) and then the scientist (connects).

The equivalent of PySyft's VirtualWorker for tutorials and tests, except that
it is a real worker: its own process, kernels, sandbox and state directory.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

from . import forkserver
from .errors import ConfigError
from .owner.owner_api import Owner
from .owner.tls import fingerprint_of_file, generated_paths
from .scientist.worker import Worker

_children: list[WorkerProcess] = []


class WorkerProcess:
    """A worker started by :func:`launch`: its process, URL and state directory."""

    def __init__(self, argv: list[str], state: Path, log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.argv, self.state, self.log_path = argv, state, log
        self.env = env if env is not None else {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.url = ""
        self.proc: subprocess.Popen[bytes] | forkserver.ForkedProcess | None = None

    def start(self, timeout: float = 60.0) -> str:
        ready = self.state / ".ready"
        ready.unlink(missing_ok=True)
        argv = self.argv + ["--ready-file", str(ready)]
        self.proc = None
        if forkserver.enabled() and argv[:3] == [sys.executable, "-m", "kernel_bridge.cli"]:
            try:
                self.proc = forkserver.fork_worker(argv[3:], self.env, str(self.log_path))
            except (RuntimeError, TimeoutError) as exc:  # no fork server: a plain start
                warnings.warn(f"the fork server failed ({exc}); starting the worker as a "
                              "process of its own", RuntimeWarning, stacklevel=2)
        if self.proc is None:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                             env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not ready.exists() or not ready.read_text():
            if self.proc.poll() is not None:
                raise ConfigError(f"worker exited with {self.proc.returncode}:\n"
                                  f"{self.log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"worker did not start in {timeout}s; see {self.log_path}")
            time.sleep(0.05)
        self.url = ready.read_text().strip()
        return self.url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        """SIGKILL the worker (its kernels die with it), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker cleanly (SIGTERM, then SIGKILL)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def _cleanup() -> None:
    for p in _children:
        p.stop(timeout=3)
    forkserver.shutdown()


atexit.register(_cleanup)


#: SMPC identities of the workers this process launched: state dir -> (name, dealer?).
#: Keyed by state dir, not name: two workers of one name (a test's fresh "alice" next to a
#: long-lived one) must both stay pinned with the workers launched after them.
_launched: dict[Path, tuple[str, bool]] = {}
_launch_lock = threading.Lock()


def _trust_each_other(name: str, state_dir: Path, dealer: bool) -> None:
    """Pin ``name``'s SMPC key and those of the workers launched before it, both ways."""
    from .smpc import keys

    with _launch_lock:  # workers launched from several threads at once
        me = keys.load_or_create(state_dir, name)
        for other_dir, (other, other_dealer) in list(_launched.items()):
            if other_dir == state_dir.resolve() or not other_dir.exists():
                continue
            them = keys.load_or_create(other_dir, other)
            keys.trust(state_dir, other, them.fingerprint, "dealer" if other_dealer else "peer")
            keys.trust(other_dir, name, me.fingerprint, "dealer" if dealer else "peer")
        _launched[state_dir.resolve()] = (name, dealer)

def launch(
    name: str,
    assets: dict[str, str] | None = None,
    mocks: dict[str, str] | None = None,
    *,
    config: str | os.PathLike[str] | None = None,
    state: str | os.PathLike[str] | None = None,
    scientist: str = "scientist",
    port: int = 0,
    sandbox: bool = True,
    threads: int = 1,
    extra_args: list[str] | None = None,
    dealer: bool = False,
    trust_launched: bool = True,
) -> Worker:
    """Start a worker process on a free localhost port and connect to it.

    Parameters
    ----------
    name : str
        The worker's name.
    assets, mocks : dict of str to path, optional
        Private assets and their mocks (``{"heart": "datasets/heart/alice.csv"}``).
    config : path, optional
        A worker TOML file instead of (or besides) ``assets``.
    state : path, optional
        State directory; a fresh temporary one by default.
    scientist : str
        Name for the token this call creates and connects with.
    sandbox : bool
        False starts kernels without bubblewrap (loudly unsafe; for machines without it).
    dealer : bool
        Start an SMPC dealer (crypto provider, ``--dealer``): it holds no assets.
    trust_launched : bool
        Pin the SMPC keys of this worker and of every other worker this process
        launched in each other's trust files (peers, and dealers as dealers):
        the owner of all of them is whoever calls ``launch``.

    Returns
    -------
    Worker
        Connected; ``worker.process`` is the :class:`WorkerProcess` (``.stop()``, ``.kill()``).
    """
    state_dir = Path(state) if state else Path(tempfile.mkdtemp(prefix=f"syftlab-{name}-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "kernel_bridge.cli", "worker", name,
            "--state", str(state_dir), "--port", str(port), "--threads", str(threads)]
    if config:
        argv += ["--config", str(config)]
    for n, p in (assets or {}).items():
        argv += ["--asset", f"{n}={p}"]
    for n, p in (mocks or {}).items():
        argv += ["--mock", f"{n}={p}"]
    if not sandbox:
        argv.append("--unsafe-no-sandbox")
    if dealer:
        argv.append("--dealer")
    argv += extra_args or []
    if trust_launched:
        _trust_each_other(name, state_dir, dealer)
    owner = Owner(state_dir)
    token = owner.add_token(scientist)
    owner.close()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = WorkerProcess(argv, state_dir, state_dir / "worker.log", env)
    url = proc.start()
    _children.append(proc)
    fingerprint = None
    if url.startswith("wss://"):  # a worker started with --tls: pin its own certificate
        cert = extra_args[extra_args.index("--tls-cert") + 1] if extra_args and \
            "--tls-cert" in extra_args else generated_paths(state_dir)[0]
        fingerprint = fingerprint_of_file(cert)
    worker = Worker(url, token, name, fingerprint=fingerprint)
    worker.process = proc
    worker.token = token  # type: ignore[attr-defined]
    return worker


def relaunch(worker: Worker, timeout: float = 60.0) -> None:
    """Start a stopped or killed launched worker again on the same port."""
    proc: WorkerProcess = worker.process
    if "--port" in proc.argv:
        proc.argv[proc.argv.index("--port") + 1] = str(proc.port)
    proc.start(timeout)
    if proc not in _children:
        _children.append(proc)
