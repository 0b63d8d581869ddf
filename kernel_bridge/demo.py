"""``syftlab demo``: the sample workers alice and bob on localhost.

Starts one worker process per ``datasets/*.toml`` config (each with its own
state dir under ``.demo/``), gives scientist "ana" a token on each, prints how
to connect, and stops everything on Ctrl-C.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from .owner.config import WorkerConfig
from .owner.owner_api import Owner
from .scientist.launch import WorkerProcess


def default_datasets() -> Path:
    """The repository's ``datasets/`` folder (next to the package in a checkout)."""
    return Path(__file__).resolve().parent.parent / "datasets"


def start_workers(datasets: Path, names: list[str], scientist: str = "ana"
                  ) -> list[tuple[WorkerProcess, WorkerConfig, str]]:
    """Start the named sample workers; returns (process, config, token) for each."""
    started = []
    try:
        for name in names:
            toml = datasets / f"{name}.toml"
            config = WorkerConfig.from_toml(toml)
            owner = Owner(config.state)
            token = owner.add_token(scientist)
            owner.close()
            argv = [sys.executable, "-m", "kernel_bridge.owner.cli", "worker",
                    "--config", str(toml)]
            proc = WorkerProcess(argv, Path(config.state), Path(config.state) / "worker.log")
            proc.start()
            started.append((proc, config, token))
    except BaseException:
        for proc, _, _ in started:
            proc.stop()
        raise
    return started


def main(datasets: Path | None = None, names: list[str] | None = None) -> int:
    datasets = datasets or default_datasets()
    names = names or ["alice", "bob"]
    workers = start_workers(datasets, names)
    tokens = {cfg.name: {"url": proc.url, "token": token} for proc, cfg, token in workers}
    demo_dir = Path(workers[0][1].state).parent
    (demo_dir / "tokens.json").write_text(json.dumps(tokens, indent=2))
    print("\nsyftlab demo: workers are up\n")
    for proc, cfg, _ in workers:
        print(f"  {cfg.name:<6} {proc.url}   assets: {', '.join(cfg.assets)}   "
              f"state: {cfg.state}")
    print("\nAs the data scientist (Python or a notebook):\n")
    print("    import kernel_bridge as kb")
    for proc, cfg, token in workers:
        print(f"    {cfg.name} = kb.connect({proc.url!r}, token={token!r})")
    first = workers[0][1].name
    print(f"    {first}.datasets")
    print(f"    heart = {first}.asset('heart'); m = heart['age'].mean(); "
          "req = m.request(reason='mean age')")
    print("\nAs the data owner:\n")
    print(f"    syftlab requests list --state {workers[0][1].state}")
    print(f"\nTokens are also in {demo_dir / 'tokens.json'}. Ctrl-C stops everything.",
          flush=True)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop:
            for proc, cfg, _ in workers:
                if proc.proc is not None and proc.proc.poll() is not None:
                    print(f"worker {cfg.name} exited; see {proc.log_path}", file=sys.stderr)
                    stop = True
            time.sleep(0.2)
    finally:
        for proc, _, _ in workers:
            proc.stop()
        print("demo stopped")
    return 0
