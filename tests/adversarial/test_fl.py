"""FL under failure and misuse: a worker killed mid-round, a scientist poking at secure
aggregation's ops, and the ledger never showing less ε than was released."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from torch import nn

import kernel_bridge as kb
from kernel_bridge import fl
from kernel_bridge.errors import PermissionDenied, ProtocolError, RoundFailed, UntrustedParty
from kernel_bridge.wire.protocol import Op

from ..conftest import descendants
from ..fl.conftest import approve_all, start

PIXELS = [f"p{i}" for i in range(64)]
RELEASED = ("released", "held", "aggregated")


def digits_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 10))


def kill_when_running(worker: kb.Worker, round_no: int) -> threading.Thread:
    """SIGKILL ``worker`` once its ``round_no``-th plan run is in flight (mid-round)."""
    def watch() -> None:
        owner = kb.Owner(worker.process.state)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                runs = [r for p in owner.plans() for r in owner.plan_store.runs(p["id"])]
                if len(runs) >= round_no and runs[-1]["status"] == "running":
                    time.sleep(0.3)  # inside the run's kernel
                    worker.process.kill()
                    return
                time.sleep(0.05)
        finally:
            owner.close()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stall_plan_kernel(worker: kb.Worker) -> list[int]:
    """SIGSTOP ``worker``'s plan kernel: its next plan run stays in flight (a slow owner)."""
    stalled = []
    for pid in descendants(worker.process.proc.pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"/syk-plan-" in cmd:  # the plan kernel's socket directory (KernelHost("plan"))
            os.kill(pid, signal.SIGSTOP)
            stalled.append(pid)
    assert stalled, "the worker has no plan kernel"
    return stalled


def ledger_and_released(state: Path, scientist: str = "ana") -> tuple[float, float]:
    """ε the owner's ledger shows spent on digits, and ε of the runs whose outputs left
    (or are held to leave) — read from the state directory, as after a crash."""
    owner = kb.Owner(state)
    try:
        spent = next(r["epsilon_spent"] for r in owner.budget()
                     if r["scientist"] == scientist and r["asset"] == "digits")
        released = sum(r["epsilon"] for p in owner.plans()
                       for r in owner.plan_store.runs(p["id"]) if r["status"] in RELEASED)
        return spent, released
    finally:
        owner.close()


def test_worker_killed_mid_round_round_completes_and_ledger_covers_releases(
        tmp_path: Path) -> None:
    workers = start(("alice", "bob", "carol"), tmp_path)
    try:
        job = fl.FedAvg(digits_model(), workers=workers, data="digits", features=PIXELS,
                        target="label", rounds=3, batch_size=64, lr=0.5, secure_agg=True,
                        min_workers=2, dp=fl.DP(noise_multiplier=2.0, max_grad_norm=1.0,
                                                delta=1e-5, epsilon_total=20.0))
        approve_all(job, workers)
        job.run(rounds=1, progress=False)
        # carol's round-2 run hangs in its kernel until she is killed (rounds are faster
        # than any sleep the watcher could take).
        stalled = stall_plan_kernel(workers[2])
        watcher = kill_when_running(workers[2], round_no=2)
        history = job.run(rounds=1, progress=False)
        watcher.join(5)
        assert workers[2].process.proc.poll() is not None  # carol really died mid-round
        second = history[1]
        assert second.workers == ["alice", "bob"]  # the round went on without carol
        assert "carol" in second.dropped and second.examples > 0
        assert "carol" in history.dropped[2]
        assert all(torch.isfinite(v).all() for v in job.model.state_dict().values())
        # Round 3 goes on with the two left (carol is still down).
        history = job.run(progress=False)
        assert len(history) == 3 and history[2].workers == ["alice", "bob"]
        for w in workers:
            spent, released = ledger_and_released(w.process.state)
            assert spent >= released - 1e-9 and released > 0, (w.name, spent, released)
        assert history[2].epsilon["alice"] > history[0].epsilon["alice"] > 0
        # bwrap --die-with-parent took the stopped kernel with the worker.
        assert not any(_running(pid) for pid in stalled)
    finally:
        for w in workers:
            w.close()


def test_too_few_workers_left_stops_the_job_with_a_clear_error(tmp_path: Path) -> None:
    workers = start(("alice", "bob"), tmp_path)
    try:
        job = fl.FedAvg(digits_model(), workers=workers, data="digits", features=PIXELS,
                        target="label", rounds=3, batch_size=64, lr=0.5, min_workers=2)
        approve_all(job, workers)
        job.run(rounds=1, progress=False)
        before = {k: v.clone() for k, v in job.model.state_dict().items()}
        workers[1].process.kill()
        with pytest.raises(RoundFailed, match=r"round 2: 1 worker\(s\) finished, the policy "
                                              r"needs 2 \(bob: ConnectionLost"):
            job.run(progress=False)
        assert len(job.history) == 1  # the model keeps round 1, untouched by round 2
        for k, v in job.model.state_dict().items():
            assert torch.equal(v, before[k])
    finally:
        for w in workers:
            w.close()


def _peers(workers: list[kb.Worker]) -> dict[str, dict[str, Any]]:
    """The ``peers`` of a round over ``workers`` (index i + 1), as the client builds them."""
    out = {}
    for i, w in enumerate(workers, start=1):
        info = w._call(Op.SMPC_INFO)["smpc"]
        out[str(i)] = {"name": info["name"], "ident": info["public"]}
    return out


def test_secure_aggregation_ops_refuse_misuse(tmp_path: Path) -> None:
    workers = start(("alice", "bob"), tmp_path)
    try:
        job = fl.FedAvg(digits_model(), workers=workers, data="digits", features=PIXELS,
                        target="label", rounds=2, secure_agg=True, min_workers=2)
        approve_all(job, workers)
        alice, bob = workers
        weights = {k: v for k, v in job.model.state_dict().items()}
        run = job.plans[0].run(weights=weights, round=0)
        assert run.held and run.outputs is None
        # Masking with a made-up round (no keys, no shares) is refused, as is a run
        # the scientist does not own or that does not exist.
        with pytest.raises(PermissionDenied, match="no secure-aggregation round"):
            alice._call(Op.SECAGG_MASK, round="nope", run=run.id, shares={})
        peers = _peers(workers)
        keys = alice._call(Op.SECAGG_KEYS, round="r1", index=1, peers=peers)
        mine = {"c": keys["c"], "s": keys["s"]}
        # A key list of one worker (the scientist alone with alice) is refused: a
        # mask shared with nobody else would unmask at once.
        with pytest.raises(ProtocolError, match="every worker of the round"):
            alice._call(Op.SECAGG_SHARE, round="r1", keys={"1": mine}, threshold=1)
        # Keys the scientist made up for bob carry no tag of bob's pinned identity.
        fake = {"c": bytes(range(1, 33)), "s": bytes(range(2, 34)), "tag": bytes(32)}
        with pytest.raises(PermissionDenied, match="tag of its pinned identity"):
            alice._call(Op.SECAGG_SHARE, round="r1", keys={"1": mine, "2": fake}, threshold=2)
        # Nothing was shared: mask refuses before releasing anything.
        with pytest.raises(Exception, match="shares|authenticate|keys"):
            alice._call(Op.SECAGG_MASK, round="r1", run=run.id, shares={})
        other = kb.Owner(alice.process.state)
        token = other.add_token("mallory")
        other.close()
        mallory = kb.connect(alice.process.url, token)
        try:
            with pytest.raises(PermissionDenied):  # ana's round and held run are not mallory's
                mallory._call(Op.SECAGG_MASK, round="r1", run=run.id, shares={})
        finally:
            mallory.close()
        # Unmasking a round whose keys were never shared reveals nothing either.
        with pytest.raises(PermissionDenied, match="fewer than the threshold|unknown workers"):
            alice._call(Op.SECAGG_UNMASK, round="r1", survivors=[1])
    finally:
        for w in workers:
            w.close()


def test_the_client_cannot_swap_a_workers_round_keys_for_its_own(tmp_path: Path) -> None:
    """A scientist relaying the keys puts its own X25519 keys in bob's place (a
    man in the middle): alice would then seal her Shamir shares to the scientist.
    She refuses, because bob's real keys carry a tag from bob's pinned identity
    and the scientist holds no identity alice's owner pinned."""
    workers = start(("alice", "bob"), tmp_path)
    try:
        alice, bob = workers
        peers = _peers(workers)
        # Round keys as the protocol makes them, then bob's swapped for the scientist's.
        a_keys = alice._call(Op.SECAGG_KEYS, round="mitm", index=1, peers=peers)
        b_keys = bob._call(Op.SECAGG_KEYS, round="mitm", index=2, peers=peers)
        honest = {"1": {"c": a_keys["c"], "s": a_keys["s"]},
                  "2": {"c": b_keys["c"], "s": b_keys["s"], "tag": b_keys["tags"]["1"]}}
        def raw() -> bytes:
            return X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw,
                                                                         PublicFormat.Raw)

        for swapped in ({"c": raw(), "s": b_keys["s"]}, {"c": b_keys["c"], "s": raw()},
                        {"c": raw(), "s": raw()}):
            forged = {**honest, "2": {**swapped, "tag": b_keys["tags"]["1"]}}  # bob's tag kept
            with pytest.raises(PermissionDenied, match="tag of its pinned identity"):
                alice._call(Op.SECAGG_SHARE, round="mitm", keys=forged, threshold=2)
        # Peers the owner never pinned are refused when the round opens.
        stranger = {**peers, "2": {"name": "bob", "ident": raw().hex()}}
        with pytest.raises(UntrustedParty, match="trusts"):
            alice._call(Op.SECAGG_KEYS, round="mitm2", index=1, peers=stranger)
        # The honest list goes through: the tags are what made the difference.
        shares = alice._call(Op.SECAGG_SHARE, round="mitm", keys=honest, threshold=2)
        assert set(shares["shares"]) == {"2"}
    finally:
        for w in workers:
            w.close()


def test_a_round_past_the_budget_stops_the_job_cleanly_and_spends_nothing(
        tmp_path: Path) -> None:
    """heart's budget is ε = 3 per scientist; DP-SGD with noise 1.0 costs ~3.6 per run."""
    workers = start(("alice", "bob"), tmp_path)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 2))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        job = fl.FedAvg(model, workers=workers, data="heart", target="target",
                        features=["age", "sex", "cp", "trestbps", "chol", "thalach", "exang",
                                  "oldpeak"], rounds=3, min_workers=2,
                        dp=fl.DP(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5))
        approve_all(job, workers)
        history = job.run(progress=False)  # no exception: a clean stop
        assert len(history) == 0 and "BudgetExhausted" in (history.stopped or "")
        for k, v in job.model.state_dict().items():
            assert torch.equal(v, before[k])
        for w in workers:
            owner = kb.Owner(w.process.state)
            assert all(r["epsilon_spent"] == 0 for r in owner.budget())
            owner.close()
    finally:
        for w in workers:
            w.close()
