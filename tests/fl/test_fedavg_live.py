"""FedAvg over three real workers: the result is plain-torch FedAvg of the same updates,
and with secure aggregation the client never receives an individual update."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import kernel_bridge as kb
from kernel_bridge import fl
from kernel_bridge.fl import secagg
from kernel_bridge.fl.encoding import encode_inputs

from .conftest import FEATURES, HOSPITALS, approve_all, private_table


def heart_model(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 2))


def replay(job: Any, model: nn.Sequential, rounds: int) -> tuple[list[dict], list[dict]]:
    """Each owner's updates, recomputed locally with the plan's code, and plain FedAvg."""
    ns: dict[str, Any] = {}
    exec(compile(job.plan()["code"], "<plan>", "exec"), ns)  # the code the owners approved
    # What each worker hands its runs: its table encoded by the plan's inputs.encoding.
    tables = {n: encode_inputs(private_table(n)[[*FEATURES, "target"]], job.plan()["inputs"])
              for n in HOSPITALS}
    w = {k: v.clone() for k, v in model.state_dict().items()}
    per_round, means = [], []
    for r in range(rounds):
        outs = {n: ns["run"]({k: v.copy() for k, v in tables[n].items()}, spec={},
                             weights=w, round=r) for n in HOSPITALS}
        total = sum(o["num_examples"] for o in outs.values())
        # Plain torch FedAvg: sum_k (n_k / n) * w_k, with w_k = update_k / n_k.
        w = {k: sum((o["num_examples"] / total) * (o["update"][k] / o["num_examples"])
                    for o in outs.values()) for k in w}
        per_round.append(outs)
        means.append({k: v.clone() for k, v in w.items()})
    return per_round, means


def test_fedavg_equals_plain_torch_fedavg_of_the_same_updates(
        hospitals: list[kb.Worker]) -> None:
    model = heart_model(1)
    job = fl.FedAvg(model, workers=hospitals, data="heart", features=FEATURES,
                    target="target", rounds=2, batch_size=32, lr=0.1, seed=1)
    approve_all(job, hospitals)
    history = job.run(progress=False)
    assert len(history) == 2 and not history.dropped and history.stopped is None
    per_round, means = replay(job, model, 2)
    for k, v in job.model.state_dict().items():
        torch.testing.assert_close(v, means[-1][k], rtol=1e-4, atol=1e-5)
    # The released metrics are the received global model's, summed over the hospitals.
    outs = per_round[0]
    total = sum(o["num_examples"] for o in outs.values())
    assert history[0].examples == total == 750
    assert history[0].loss == pytest.approx(sum(o["loss"] for o in outs.values()) / total,
                                            rel=1e-4)
    assert history.accuracy[0] == pytest.approx(
        sum(o["correct"] for o in outs.values()) / total)
    # The plan's runs are counted on every worker.
    assert all(p.refresh().runs_used == 2 for p in job.plans)
    # The workers checked and forwarded the weights and updates as numpy (WireTensor):
    # torch ran in the plan kernels only, never in a worker process (~180 MB each).
    # (bob is left out: his HE risk_model asset is a torch .pt file, loaded with torch.)
    for w in (h for h in hospitals if h.name != "bob"):
        maps = Path(f"/proc/{w.process.proc.pid}/maps").read_text()
        assert "libtorch" not in maps, w.name


def _arrays(value: Any) -> list[np.ndarray]:
    """Every array or tensor inside a received value (dicts, lists, nested)."""
    if isinstance(value, dict):
        return [a for v in value.values() for a in _arrays(v)]
    if isinstance(value, list | tuple):
        return [a for v in value for a in _arrays(v)]
    if isinstance(value, torch.Tensor):
        return [value.numpy()]
    if isinstance(value, np.ndarray) and value.size > 1:
        return [value]
    return []


def test_secure_aggregation_client_never_holds_an_individual_update(
        hospitals: list[kb.Worker]) -> None:
    received: list[Any] = []
    for w in hospitals:  # record everything each connection hands to the client
        conn = w.core.conn
        call, fetch = conn.call, conn.fetch_value

        async def rec_call(*a: Any, _call: Any = call, **k: Any) -> Any:
            reply = await _call(*a, **k)
            received.append(reply)
            return reply

        async def rec_fetch(reply: Any, _fetch: Any = fetch) -> Any:
            value = await _fetch(reply)
            received.append(value)
            return value

        conn.call, conn.fetch_value = rec_call, rec_fetch  # type: ignore[method-assign]
    try:
        model = heart_model(2)
        job = fl.FedAvg(model, workers=hospitals, data="heart", features=FEATURES,
                        target="target", rounds=1, lr=0.1, seed=2, secure_agg=True,
                        min_workers=2)
        approve_all(job, hospitals)
        received.clear()
        job.run(progress=False)
    finally:
        for w in hospitals:
            del w.core.conn.call, w.core.conn.fetch_value
    per_round, means = replay(job, model, 1)
    individual = [{k: v.numpy().astype(np.float64) for k, v in o["update"].items()}
                  for o in per_round[0].values()]
    arrays = [a for r in received for a in _arrays(r)]
    masked = [a for a in arrays if a.dtype == np.uint64]
    assert len(masked) >= 3 * 4  # the four tensors of each of the three masked updates
    for arr in arrays:
        values = (secagg.decode(arr) if arr.dtype == np.uint64 else arr.astype(np.float64))
        if arr.dtype == np.uint64:  # masked: spread over the ring, nothing like an update
            assert np.median(np.abs(values)) > 1e6
        for upd in individual:
            for param in upd.values():
                if param.shape == arr.shape:
                    assert not np.allclose(values, param, rtol=1e-3, atol=1e-3), "leaked"
                    if param.size >= 100:
                        assert abs(np.corrcoef(values.ravel(), param.ravel())[0, 1]) < 0.3
    for k, v in job.model.state_dict().items():  # the sum was right
        torch.testing.assert_close(v, means[0][k], rtol=1e-4, atol=1e-5)
    # Nothing the plan returned was released in the clear.
    runs = [r["run"] for r in received if isinstance(r, dict) and "run" in r]
    assert runs and all(r["status"] == "held" for r in runs)
    assert not any("frame" in r or "download" in r for r in received
                   if isinstance(r, dict) and "run" in r)


class _SlowAggregate:
    """FedAvg whose aggregation blocks the client's loop (no await) for a while."""

    prox_mu = 0.0

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def aggregate(self, current: dict[str, torch.Tensor], mean: dict[str, torch.Tensor],
                  server_round: int) -> dict[str, torch.Tensor]:
        time.sleep(self.seconds)
        return {k: v.clone() for k, v in mean.items()}


def test_ctrl_c_during_aggregation_returns_only_after_the_round_is_recorded(
        hospitals: list[kb.Worker]) -> None:
    """A round past its last await completes after a Ctrl-C; run() must wait for it, or the
    history it returned would grow afterwards."""
    import _thread
    import threading

    job = fl.FedAvg(heart_model(4), workers=hospitals, data="heart", features=FEATURES,
                    target="target", rounds=5, lr=0.1, seed=4, strategy=_SlowAggregate(1.5))
    approve_all(job, hospitals)
    job.run(rounds=1, progress=False)  # kernels warm: the next round reaches its aggregation
    timer = threading.Timer(1.0, _thread.interrupt_main)  # lands inside that aggregation
    timer.start()
    history = job.run(progress=False)
    timer.join()
    done = len(history)
    time.sleep(2.0)  # nothing of the cancelled run may land after run() returned
    assert history.stopped == "interrupted (Ctrl-C)"
    assert len(history) == done == 2
    assert len(job.run(rounds=1, progress=False)) == done + 1


def test_ctrl_c_stops_the_job_cleanly(hospitals: list[kb.Worker]) -> None:
    import _thread
    import threading

    rounds = 400  # far more than run in the second before the Ctrl-C
    job = fl.FedAvg(heart_model(3), workers=hospitals, data="heart", features=FEATURES,
                    target="target", rounds=rounds, lr=0.1, seed=3)
    approve_all(job, hospitals)
    job.run(rounds=1, progress=False)
    timer = threading.Timer(1.0, _thread.interrupt_main)  # Ctrl-C a second in
    timer.start()
    t = time.monotonic()
    history = job.run(progress=False)
    timer.join()
    assert time.monotonic() - t < 20  # it stopped, it did not finish the rounds
    assert history.stopped == "interrupted (Ctrl-C)" and 1 <= len(history) < rounds
    # The model and the history keep the completed rounds only, and the job goes on.
    done = len(history)
    assert all(torch.isfinite(v).all() for v in job.model.state_dict().values())
    assert len(job.run(rounds=1, progress=False)) == done + 1
