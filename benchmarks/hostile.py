"""Availability under attack: scientists' round trips with and without a hostile client.

N scientists (20 by default) each run a loop of mixed work for S seconds (60):
a cell (on the mock side), a pointer op, a ``.get()`` and a DP query, each timed. The same load runs
twice on one worker: calm, then while one hostile client floods it with
oversized pre-authentication hellos, costly and junk frames after
authentication, huge and abandoned upload claims, and cells printing a lot.
The figure is the scientists' p99 round trip under attack, next to the calm
p99 (goal: at most 1.5x); any error of a scientist fails the benchmark.

``--quick`` runs 5 scientists for 10 s; ``--scientists`` and ``--seconds`` set
both (``python -m benchmarks --only hostile --scientists 20 --seconds 60``).
``SYFTLAB_HOSTILE_ATTACKS=preauth,junk,uploads,output`` picks the attacks (all by
default), to see what each costs.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .bridge import launched
from .core import Config, Goal, Result, benchmark, median, percentile, result

BOUNDS = (18, 90)


def _write_config(directory: Path, rows: int = 10_000) -> Path:
    """A worker with one DP-declared table and budgets no benchmark can exhaust."""
    rng = random.Random(7)
    (directory / "people.csv").write_text(
        "age\n" + "\n".join(str(rng.randint(*BOUNDS)) for _ in range(rows)) + "\n")
    (directory / "people_mock.csv").write_text("age\n30\n40\n")
    cfg = directory / "worker.toml"
    cfg.write_text(
        '[worker]\nname = "hostile"\nport = 0\nstate = "state"\n\n'
        '[assets.people]\npath = "people.csv"\nmock = "people_mock.csv"\n\n'
        f'[assets.people.dp]\nprivacy_unit = "row"\nmax_rows = {2 * rows}\n'
        'epsilon_per_scientist = 1e9\nepsilon_total = 1e12\n\n'
        f'[assets.people.columns.age]\ntype = "int"\nlower = {BOUNDS[0]}\n'
        f'upper = {BOUNDS[1]}\n')
    return cfg


class Scientist:
    """One scientist's connection and mixed loop; records each op's round trip."""

    def __init__(self, url: str, token: str, index: int) -> None:
        import torch

        import kernel_bridge as kb

        self.w = kb.connect(url, token, name="hostile")
        self.index = index
        self.t = self.w.send(torch.arange(64, dtype=torch.float32))
        self.q = self.w.asset("people").dp.mean("age", epsilon=0.01)
        self.times: dict[str, list[float]] = {"cell": [], "op": [], "get": [], "dp": []}
        self.errors: list[str] = []

    def one_round(self, record: bool) -> None:
        steps: list[tuple[str, Callable[[], Any]]] = [
            # The cell runs on the mock side: the private kernel stays free of cells,
            # so the tensor there stays clean and .get() needs no approval.
            ("cell", lambda: self.w.run(f"x{self.index} = sum(range(100))", mock=True)),
            ("op", lambda: self.t + 1),
            ("get", lambda: self.t.get()),
            ("dp", lambda: self.q.release()),
        ]
        for name, fn in steps:
            t0 = time.perf_counter()
            try:
                out = fn()
                if name == "cell" and out.status != "ok":
                    raise RuntimeError(f"cell status {out.status}")
            except Exception as exc:
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}"[:200])
                continue
            if record:
                self.times[name].append(time.perf_counter() - t0)

    def run_for(self, seconds: float, stop: threading.Event) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stop.is_set():
            self.one_round(record=True)

    def close(self) -> None:
        self.w.close()


class Hostile:
    """One hostile scientist (and unauthenticated peer) flooding the worker."""

    def __init__(self, url: str, token: str) -> None:
        import kernel_bridge as kb

        self.url, self.token = url, token
        self.w = kb.connect(url, token, name="hostile")
        self.counts: dict[str, int] = {}
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _preauth(self) -> None:
        from websockets.sync.client import connect

        from kernel_bridge.wire import frames

        n = 8 << 20
        hello = frames.pack_bytes(b"\xdd" + struct.pack(">I", n) + b"\x80" * n, [])
        while not self.stop.is_set():
            try:
                with connect(self.url, max_size=None, open_timeout=10) as ws:
                    ws.send(hello)
                    ws.recv(timeout=10)
            except Exception:
                pass
            self._count("8 MiB pre-auth hello")

    def _junk(self) -> None:
        from websockets.sync.client import connect

        from kernel_bridge.wire import codec, frames

        bomb = frames.pack_bytes(b"\xdd" + struct.pack(">I", 4 << 20) + b"\x80" * (4 << 20), [])
        small_bomb = frames.pack_bytes(b"\xdd" + struct.pack(">I", 60_000)
                                       + b"\x80" * 60_000, [])
        while not self.stop.is_set():
            try:
                with connect(self.url, max_size=None, open_timeout=10) as ws:
                    ws.send(codec.dumps({"op": "hello", "#": 0, "token": self.token,
                                         "versions": [1]}))
                    ws.recv(timeout=10)
                    for frame in (os.urandom(4096), bomb, small_bomb, b"SYFT\x01" + b"\xff" * 8,
                                  codec.dumps({"op": "run", "#": 1, "code": "1",
                                               "timeout": float("nan")})):
                        ws.send(frame)
                        ws.recv(timeout=30)
                        self._count("junk frame")
            except Exception:
                self._count("junk connection dropped")

    def _uploads(self) -> None:
        from kernel_bridge.scientist._loop import run_sync

        while not self.stop.is_set():
            for size in (1 << 40, 3 << 30):
                try:
                    t = run_sync(self.w._conn.call("upload_ticket", size=size))
                    s = socket.create_connection((self.w._conn.host, int(t["port"])), timeout=5)
                    s.sendall(b"U" + t["ticket"] + struct.pack("<Q", size) + b"\0" * (1 << 20))
                    s.close()  # abandoned
                    self._count("upload claim abandoned")
                except Exception:
                    self._count("upload claim refused")
            time.sleep(0.05)

    def _output(self) -> None:
        while not self.stop.is_set():
            try:
                self.w.run("for i in range(2000): print('y' * 500)")
                self._count("1 MB output cell")
            except Exception:
                self._count("output cell failed")

    def start(self, attacks: list[str]) -> None:
        table = {"preauth": self._preauth, "junk": self._junk, "uploads": self._uploads,
                 "output": self._output}
        for fn in (table[a] for a in attacks):
            th = threading.Thread(target=fn, daemon=True, name=f"hostile-{fn.__name__}")
            th.start()
            self._threads.append(th)


def _hostile_main(url: str, token: str, attacks: list[str], stop: Any, counts: Any) -> None:
    """The hostile client's process: attack until ``stop`` is set, then report counts."""
    h = Hostile(url, token)
    h.start(attacks)
    stop.wait()
    h.stop.set()
    counts.put(dict(h.counts))


class HostileProcess:
    """The hostile client in a process of its own, so that its threads do not share
    the scientists' interpreter lock (the measurement is the worker's, not ours)."""

    def __init__(self, url: str, token: str) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        attacks = [a.strip() for a in os.environ.get(
            "SYFTLAB_HOSTILE_ATTACKS", "preauth,junk,uploads,output").split(",") if a.strip()]
        self._stop = ctx.Event()
        self._counts = ctx.Queue()
        self._proc = ctx.Process(target=_hostile_main, daemon=True,
                                 args=(url, token, attacks, self._stop, self._counts))
        self.counts: dict[str, int] = {}

    def __enter__(self) -> HostileProcess:
        self._proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            self.counts = self._counts.get(timeout=120)
        finally:
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()


def _phase(scientists: list[Scientist], seconds: float) -> dict[str, list[float]]:
    stop = threading.Event()
    for s in scientists:
        for v in s.times.values():
            v.clear()
    threads = [threading.Thread(target=s.run_for, args=(seconds, stop), daemon=True)
               for s in scientists]
    for th in threads:
        th.start()
    for th in threads:
        th.join(seconds + 300)
    stop.set()
    merged: dict[str, list[float]] = {"all": []}
    for s in scientists:
        for k, v in s.times.items():
            merged.setdefault(k, []).extend(v)
            merged["all"].extend(v)
    return merged


def _summary(times: dict[str, list[float]]) -> str:
    parts = []
    for k in ("cell", "op", "get", "dp"):
        xs = times.get(k) or [float("nan")]
        parts.append(f"{k} p50 {median(xs) * 1e3:.1f}/p99 {percentile(xs, 99) * 1e3:.1f} ms")
    return ", ".join(parts)


@benchmark("hostile")
def hostile_load(cfg: Config) -> Result:
    """Scientists' p99 round trip while a hostile client floods the worker, vs calm."""
    n, seconds = cfg.hostile_scientists, cfg.hostile_seconds
    import kernel_bridge as kb

    with tempfile.TemporaryDirectory(prefix="syftlab-hostile-") as tmp:
        config = _write_config(Path(tmp))
        with launched("hostile", config=config) as w:
            owner = kb.Owner(w.process.state)
            tokens = [owner.add_token(f"sci{i}") for i in range(n)]
            evil_token = owner.add_token("mallory")
            owner.close()
            scientists = [Scientist(w.process.url, tok, i) for i, tok in enumerate(tokens)]
            try:
                for s in scientists:  # warm: kernels started, asset loaded, DP cache filled
                    s.one_round(record=False)
                    s.one_round(record=False)
                for s in scientists:
                    s.errors.clear()
                calm = _phase(scientists, seconds)
                evil = HostileProcess(w.process.url, evil_token)
                with evil:
                    time.sleep(3.0)  # let the flood start (the process imports first)
                    attacked = _phase(scientists, seconds)
                flood = dict(evil.counts)
                errors = [e for s in scientists for e in s.errors]
            finally:
                for s in scientists:
                    s.close()
    if errors:
        raise RuntimeError(f"{len(errors)} error(s) among the {n} scientists, first: {errors[:3]}")
    p99_calm = percentile(calm["all"], 99) * 1e3
    p99_attack = percentile(attacked["all"], 99) * 1e3
    detail = (f"{n} scientists x {seconds:g} s, 0 errors; calm: {len(calm['all'])} ops, p50 "
              f"{median(calm['all']) * 1e3:.1f} ms, p99 {p99_calm:.1f} ms ({_summary(calm)}); "
              f"under attack: {len(attacked['all'])} ops, p50 "
              f"{median(attacked['all']) * 1e3:.1f} ms, p99 {p99_attack:.1f} ms "
              f"({_summary(attacked)}); the hostile client sent: "
              + ", ".join(f"{v} {k}" for k, v in sorted(flood.items())))
    return result(f"p99 round trip, {n} scientists, under attack", p99_attack, "ms",
                  "same load, no attacker", p99_calm, Goal("<=", 1.5), detail)
