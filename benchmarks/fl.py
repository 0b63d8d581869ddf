"""FL figures: FedAvg over 10 real workers vs Flower 1.42's ``run_simulation``, and DP-SGD.

The workload is the anchor's: the 1,011,010-parameter MLP (1000 -> 1000 -> 10),
one local SGD step on a 32 x 1000 batch per client, 10 clients. Ours are 10
worker processes on this machine (``kb.launch``, sandboxed kernels), each with
a 32-row table of 1000 float columns and a label, running the approved plan
that :mod:`kernel_bridge.fl` generates; the scientist's client drives the
rounds concurrently. Flower runs in its own venv (``.bench-venvs/flwr``, made
here with pip on first use: ``flwr[simulation]==1.42.*`` pins packaging==25.0
and brings Ray, so it cannot share ours), measured in the same run.

Figures (one measurement session, shared by the lines):

* ``fl-round``: median seconds per round (after one warm-up round), ours vs Flower's
  (Flower's first round, which starts its Ray actors, is left out too);
* ``fl-startup``: 10 workers started and connected vs Flower's start to first round;
* ``fl-secagg`` / ``fl-dp``: a round with secure aggregation / with DP-SGD, vs ours
  without (their extra cost);
* ``fl-memory``: peak PSS of one worker with its kernels during a round vs the 300 MB goal
  (RSS in the details);
* ``fl-dpsgd``: one DP-SGD epoch through the generated plan code vs Opacus called
  directly on the same tensors (in this process);
* ``fl-strategies``: our FedAvg/FedAdam/FedYogi/FedAdagrad vs Flower's own on the same
  updates (max abs difference; must be ~0).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .anchors import one_thread_env
from .core import Config, Goal, Result, benchmark, median, result

ROOT = Path(__file__).resolve().parent.parent
FLWR_VENV = ROOT / ".bench-venvs" / "flwr"
FLOWER_SCRIPT = Path(__file__).resolve().parent / "flower" / "flower_sim.py"
CLIENTS, ROWS, WIDTH = 10, 32, 1000
FEATURES = [f"f{i}" for i in range(WIDTH)]


# -- the anchor: Flower in its own venv ------------------------------------------------------
def flower_python() -> Path:
    """Flower's venv interpreter, creating the venv with pip on first use."""
    py = FLWR_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(FLWR_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "flwr[simulation]==1.42.*",
                        "torch==2.13.0"], check=True)
    return py


def flower_simulation(rounds: int) -> dict[str, Any]:
    out = subprocess.run([str(flower_python()), str(FLOWER_SCRIPT), str(rounds), str(CLIENTS)],
                         capture_output=True, text=True, env=one_thread_env(), timeout=1200,
                         cwd=tempfile.gettempdir())
    if out.returncode != 0:
        raise RuntimeError(f"Flower simulation failed: {out.stderr[-2000:]}")
    _await_ray_exit()
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _await_ray_exit(timeout: float = 30.0) -> None:
    """Wait for the Ray processes Flower leaves behind (its actors take ~2 s to stop
    after the simulation returns): timed while they still ran, our start-up shared
    the two cores with them (1.7 s alone, 2.0-2.4 s right after Flower)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = []
        for p in psutil.process_iter(["name", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if (p.info["name"] or "").startswith("ray::") or str(FLWR_VENV) in cmd:
                left.append(p)
        if not left:
            return
        time.sleep(0.1)


# -- ours ------------------------------------------------------------------------------------
def write_workers(directory: Path) -> list[Path]:
    """10 worker configs, each with a 32 x 1000 table (and a DP budget for the DP job)."""
    rng = np.random.default_rng(2026)
    header = ",".join([*FEATURES, "label"])
    columns = "".join(f'{f} = {{ type = "float" }}\n' for f in FEATURES)
    mock = directory / "mock.csv"
    rows = [",".join(f"{v:.4f}" for v in rng.normal(size=WIDTH)) + f",{i % 10}"
            for i in range(5)]
    mock.write_text(header + "\n" + "\n".join(rows) + "\n")
    configs = []
    for k in range(CLIENTS):
        data = directory / f"w{k}.csv"
        x, y = rng.normal(size=(ROWS, WIDTH)), rng.integers(0, 10, ROWS)
        data.write_text(header + "\n" + "\n".join(
            ",".join(f"{v:.4f}" for v in row) + f",{int(c)}" for row, c in zip(x, y, strict=True)
        ) + "\n")
        cfg = directory / f"w{k}.toml"
        cfg.write_text(
            f'[worker]\nname = "w{k}"\nport = 0\nstate = "state-w{k}"\nthreads = 1\n'
            'frame_limit_mb = 64\n\n'
            f'[assets.mlp]\npath = "{data.name}"\nmock = "{mock.name}"\n\n'
            '[assets.mlp.dp]\nprivacy_unit = "row"\nmax_rows = 1000\n'
            'epsilon_per_scientist = 1e9\nepsilon_total = 1e9\n'
            'delta_per_scientist = 0.5\ndelta_total = 0.5\n\n'
            f'[assets.mlp.columns]\n{columns}label = {{ type = "int", lower = 0, upper = 9 }}\n')
        configs.append(cfg)
    return configs


def start_workers(configs: list[Path], state: Path) -> tuple[list[Any], float]:
    """Start the workers at once (threads); returns them and the seconds to all connected."""
    import kernel_bridge as kb

    workers: list[Any] = [None] * len(configs)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            workers[i] = kb.launch(f"w{i}", config=configs[i], state=state / f"w{i}",
                                   scientist="bench", threads=1)
        except BaseException as exc:  # reported below
            errors.append(exc)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(configs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    if errors:
        for w in workers:
            if w is not None:
                w.close()
        raise errors[0]
    return workers, took


@contextmanager
def peak_memory(pids: list[int]) -> Iterator[dict[int, dict[str, float]]]:
    """Sample each process tree (the worker and its kernels) every 100 ms; peaks in MB.

    ``rss`` counts every page a process maps, shared or not; ``pss`` (proportional
    set size, from ``/proc/PID/smaps_rollup``) splits each shared page between the
    processes that map it, so the ten workers' PSS add up to what they cost the
    machine together (the fork server's imports and libtorch's pages are shared).
    """
    import psutil

    peaks = {pid: {"rss": 0.0, "pss": 0.0} for pid in pids}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for pid in pids:
                try:
                    proc = psutil.Process(pid)
                    tree = [proc, *proc.children(recursive=True)]
                    full = [p.memory_full_info() for p in tree if p.is_running()]
                except psutil.Error:
                    continue
                for key in ("rss", "pss"):
                    total = sum(getattr(m, key) for m in full) / 2**20
                    peaks[pid][key] = max(peaks[pid][key], total)
            stop.wait(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield peaks
    finally:
        stop.set()
        t.join()


def mlp() -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(WIDTH, 1000), nn.ReLU(), nn.Linear(1000, 10))


def timed_job(workers: list[Any], rounds: int, **kwargs: Any) -> tuple[list[float], Any]:
    """An approved FL job: one warm-up round, then ``rounds`` timed ones (seconds each)."""
    import kernel_bridge as kb
    from kernel_bridge import fl

    job = fl.FedAvg(mlp(), workers=workers, data="mlp", features=FEATURES, target="label",
                    rounds=rounds + 1, local_epochs=1, batch_size=ROWS, lr=0.01, **kwargs)
    for w, plan in zip(workers, job.submit(reason="benchmark"), strict=True):
        owner = kb.Owner(w.process.state)
        owner.approve_plan(plan.id, plan.hash)
        owner.close()
    job.wait_approved(timeout=60)
    job.run(rounds=1, progress=False)
    history = job.run(progress=False)
    return [r.seconds for r in history.rounds[1:]], history


# -- DP-SGD: the plan's code vs Opacus called directly ------------------------------------
def dpsgd_epochs(repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of one DP-SGD epoch: the generated plan's ``run`` vs Opacus called directly.

    6,400 samples of 64 columns, an MLP 64 -> 256 -> 10, batch 64, noise 1.0, clip 1.0;
    both include ``make_private`` and Poisson sampling. Ours also encodes the table.
    """
    import warnings

    import pandas as pd
    import torch
    from opacus import PrivacyEngine
    from torch import nn

    from kernel_bridge.fl.encoding import encode_inputs
    from kernel_bridge.fl.training_plan import DP, TrainingConfig, training_plan

    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(0)
    n, d = 6400, 64
    frame = pd.DataFrame(rng.normal(size=(n, d)), columns=[f"c{i}" for i in range(d)])
    frame["y"] = rng.integers(0, 10, n)
    spec = [{"name": f"c{i}", "kind": "float", "lower": None, "upper": None}
            for i in range(d)] + [{"name": "y", "kind": "int", "lower": 0, "upper": 9}]

    def model() -> nn.Sequential:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 10))

    doc = training_plan(model(), name="b", asset="a", spec=spec,
                        features=[f"c{i}" for i in range(d)], target="y", rounds=1,
                        config=TrainingConfig(batch_size=64, lr=0.1),
                        dp=DP(1.0, 1.0, 1e-5, epsilon_total=100.0))
    ns: dict[str, Any] = {}
    exec(compile(doc["code"], "<plan>", "exec"), ns)  # our own generated code
    weights = model().state_dict()
    data = encode_inputs(frame, doc["inputs"])  # as the worker binds it in the plan's kernel

    def fresh() -> dict[str, Any]:  # each run's own copy, as the kernel hands it
        return {k: v.copy() for k, v in data.items()}

    X = torch.tensor(frame.iloc[:, :d].values, dtype=torch.float32)
    y = torch.tensor(frame["y"].values)

    def direct() -> None:
        m = model()
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y),
                                             batch_size=64, shuffle=True)
        m, opt, loader = PrivacyEngine(accountant="rdp").make_private(
            module=m, optimizer=opt, data_loader=loader, noise_multiplier=1.0,
            max_grad_norm=1.0, poisson_sampling=True)
        for xb, yb in loader:
            if len(yb) == 0:
                continue
            opt.zero_grad()
            nn.functional.cross_entropy(m(xb), yb).backward()
            opt.step()

    ns["run"](fresh(), weights=weights, round=0, spec={})  # warm-up, untimed
    direct()
    ours, theirs = [], []
    for _ in range(repeats):  # interleaved, so load drifts hit both
        t = time.perf_counter()
        ns["run"](fresh(), weights=weights, round=0, spec={})
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        direct()
        theirs.append(time.perf_counter() - t)
    return ours, theirs


# -- strategies vs Flower's own ---------------------------------------------------------------
def strategy_differences(workdir: Path) -> dict[str, float]:
    """Max |ours - Flower's| over 3 rounds of each strategy on the same random updates."""
    import torch

    from kernel_bridge.fl import strategies as st

    rng = np.random.default_rng(1)
    current = rng.normal(size=1000).astype(np.float32)
    updates = rng.normal(size=(3, 4, 1000)).astype(np.float32)
    counts = np.array([10, 20, 30, 40])
    path = workdir / "updates.npz"
    np.savez(path, current=current, updates=updates, counts=counts)
    out = subprocess.run([str(flower_python()), str(FLOWER_SCRIPT), "--strategies", str(path)],
                         capture_output=True, text=True, env=one_thread_env(), timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"Flower strategies failed: {out.stderr[-2000:]}")
    flower = json.loads(out.stdout.strip().splitlines()[-1])
    diffs = {}
    for name, cls in (("fedavg", st.FedAvg), ("fedadam", st.FedAdam), ("fedyogi", st.FedYogi),
                      ("fedadagrad", st.FedAdagrad)):
        strategy = cls()
        x = {"w": torch.from_numpy(current)}
        for t, ups in enumerate(updates, start=1):
            summed = {"w": torch.from_numpy((ups.astype(np.float64) * counts[:, None]).sum(0))}
            x = strategy.aggregate(x, st.weighted_mean(summed, float(counts.sum())), t)
        diffs[name] = float(np.abs(x["w"].numpy() - np.asarray(flower[name])).max())
    return diffs


# -- one session, shared by the lines ---------------------------------------------------------
_SESSION: dict[str, Any] = {}


def session(cfg: Config) -> dict[str, Any]:
    """Measure everything once (the lines below read from it)."""
    if _SESSION:
        return _SESSION
    rounds = 1 if cfg.quick else 8  # timed rounds of each job (and of Flower): medians of 8
    work = Path(tempfile.mkdtemp(prefix="syftlab-flbench-"))
    out: dict[str, Any] = {"rounds": rounds}
    out["flower"] = flower_simulation(rounds + 1)
    out["strategies"] = strategy_differences(work)
    workers, out["startup"] = start_workers(write_workers(work), work / "state")
    try:
        # Memory first (each worker with the one plan kernel of this job), in rounds of
        # their own: sampling every tree's smaps would slow the timed ones.
        with peak_memory([w.process.proc.pid for w in workers]) as peaks:
            timed_job(workers, 2)
        out["peak_mb"] = dict(peaks)
        out["plain"], _ = timed_job(workers, rounds)
        out["secure"], _ = timed_job(workers, rounds, secure_agg=True)
        from kernel_bridge import fl

        out["dp"], history = timed_job(workers, rounds, dp=fl.DP(1.0, 1.0, 1e-5))
        out["dp_epsilon"] = history.rounds[-1].epsilon
    finally:
        for w in workers:
            try:
                w.close()
            except Exception:
                pass
    out["dpsgd"] = dpsgd_epochs(5 if cfg.quick else 9)
    _SESSION.update(out)
    return _SESSION


def _line(cfg: Config, make: Callable[[dict[str, Any]], Result]) -> Result:
    return make(session(cfg))


@benchmark("fl-round")
def fl_round(cfg: Config) -> Result:
    """FedAvg round, 10 workers, 1M-param MLP, 1 SGD step each vs Flower run_simulation"""
    def make(s: dict[str, Any]) -> Result:
        ours = median(s["plain"])
        flower = median(s["flower"]["rounds_s"][1:])
        return result("FL round (10 workers, 1M MLP)", ours, "s", "Flower 1.42 sim", flower,
                      Goal("<=", 0.5), f"ours {[round(x, 2) for x in s['plain']]} s; Flower "
                      f"{[round(x, 2) for x in s['flower']['rounds_s']]} s (first: Ray actors)")
    return _line(cfg, make)


@benchmark("fl-startup")
def fl_startup(cfg: Config) -> Result:
    """10 workers started and connected vs Flower's start to its first round"""
    def make(s: dict[str, Any]) -> Result:
        return result("FL start-up (10 workers)", s["startup"], "s", "Flower 1.42 sim",
                      s["flower"]["startup_s"], Goal("<=", 2.0 / s["flower"]["startup_s"]),
                      "goal: <= 2 s absolute")
    return _line(cfg, make)


@benchmark("fl-secagg")
def fl_secagg(cfg: Config) -> Result:
    """FedAvg round with secure aggregation vs without (its extra cost)"""
    def make(s: dict[str, Any]) -> Result:
        ours, plain = median(s["secure"]), median(s["plain"])
        return result("FL round + secure aggregation", ours, "s", "ours, clear", plain,
                      Goal("<=", 1.5), f"extra {ours - plain:+.2f} s per round")
    return _line(cfg, make)


@benchmark("fl-dp")
def fl_dp(cfg: Config) -> Result:
    """FedAvg round with DP-SGD (Opacus, ε debited) vs without (its extra cost)"""
    def make(s: dict[str, Any]) -> Result:
        ours, plain = median(s["dp"]), median(s["plain"])
        eps = max(s["dp_epsilon"].values())
        return result("FL round + DP-SGD", ours, "s", "ours, no DP", plain, Goal("<=", 1.5),
                      f"extra {ours - plain:+.2f} s per round; ε spent per worker {eps:.2f}")
    return _line(cfg, make)


@benchmark("fl-memory")
def fl_memory(cfg: Config) -> Result:
    """Peak memory (PSS) of one worker with its kernels during a round vs the 300 MB goal"""
    def make(s: dict[str, Any]) -> Result:
        pss = sorted(round(v["pss"]) for v in s["peak_mb"].values())
        rss = sorted(round(v["rss"]) for v in s["peak_mb"].values())
        return result("FL worker peak PSS in a round", float(pss[-1]), "MB", "goal", 300.0,
                      Goal("<=", 1.0), f"PSS per worker (its share of the machine's "
                      f"memory, shared pages split): {pss}; RSS per worker (shared pages "
                      f"counted in full, what a lone worker would take): {rss}")
    return _line(cfg, make)


@benchmark("fl-dpsgd")
def fl_dpsgd(cfg: Config) -> Result:
    """One DP-SGD epoch through the plan's code vs Opacus called directly"""
    def make(s: dict[str, Any]) -> Result:
        ours, theirs = s["dpsgd"]
        return result("DP-SGD epoch (plan code)", median(ours), "s", "Opacus 1.6 direct",
                      median(theirs), Goal("<=", 1.05),
                      f"ours {[round(x, 3) for x in ours]}, Opacus {[round(x, 3) for x in theirs]}")
    return _line(cfg, make)


@benchmark("fl-strategies")
def fl_strategies(cfg: Config) -> Result:
    """Our strategies vs Flower's own on the same updates (max abs difference)"""
    def make(s: dict[str, Any]) -> Result:
        worst = max(s["strategies"].values())
        return result("FL strategies vs Flower's", worst + 1e-12, "abs", "tolerance", 1e-5,
                      Goal("<=", 1.0), ", ".join(f"{k} {v:.1e}" for k, v in
                                                  s["strategies"].items()))
    return _line(cfg, make)

