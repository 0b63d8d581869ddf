"""SMPC over real workers: alice and bob compute, carol deals; results against plaintext torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import kernel_bridge as kb
from kernel_bridge.errors import ApprovalRequired, RequestDenied, RequestPending, SMPCError
from kernel_bridge.smpc import keys
from kernel_bridge.smpc.fixed import ULP
from kernel_bridge.wire.protocol import Op
from tests.conftest import DATASETS

Workers = tuple[kb.Worker, kb.Worker, kb.Worker]


def _approve_all(worker: kb.Worker, approve: bool = True) -> list[int]:
    owner = kb.Owner(worker.process.state)
    try:
        ids = []
        for r in owner.requests("pending"):
            if r.kind == "smpc":
                if approve:
                    owner.approve(r.id)
                else:
                    owner.deny(r.id, reason="not this one")
                ids.append(r.id)
        return ids
    finally:
        owner.close()


def test_pooled_mean_needs_every_owner(smpc_workers: Workers) -> None:
    alice, bob, carol = smpc_workers
    x = alice.asset("heart")["chol"].sum()
    y = bob.asset("heart")["chol"].sum()
    xs = x.share(alice, bob, dealer=carol)
    ys = y.share(alice, bob, dealer=carol)
    mean = (xs + ys) / 600
    assert repr(mean) == ("<SharedTensor on alice, bob: shape (), "
                          "taint {alice:heart, bob:heart}>")
    with pytest.raises(ApprovalRequired):
        mean.reveal()
    req = mean.request(reason="pooled mean cholesterol")
    assert set(req.requests) == {"alice", "bob"}
    assert _approve_all(alice)
    with pytest.raises(RequestPending):  # alice approved, bob has not
        req.result()
    assert _approve_all(bob)
    req.wait(timeout=30)
    assert req.status == "approved"
    value = float(req.result())
    a = pd.read_csv(DATASETS / "heart" / "alice.csv")["chol"].sum()
    b = pd.read_csv(DATASETS / "heart" / "bob.csv")["chol"].sum()
    assert value == pytest.approx((a + b) / 600, abs=1e-3)
    # each owner's request says which group it belongs to, and the other owner
    o = kb.Owner(bob.process.state)
    row = o.request(req.requests["bob"].id)
    o.close()
    assert req.group in row.reason and "alice:heart" in row.reason


def test_denied_by_one_owner(smpc_workers: Workers) -> None:
    alice, bob, carol = smpc_workers
    xs = alice.asset("heart")["age"].mean().share(alice, bob, dealer=carol)
    ys = bob.asset("heart")["age"].mean().share(alice, bob, dealer=carol)
    req = ((xs + ys) / 2).request(reason="mean of means")
    _approve_all(alice)
    _approve_all(bob, approve=False)
    req.wait(timeout=30)
    assert req.status == "denied"
    with pytest.raises(RequestDenied):
        req.result()


def test_taint_is_per_owner(smpc_workers: Workers) -> None:
    alice, bob, carol = smpc_workers
    xs = alice.asset("heart")["chol"].sum().share(alice, bob, dealer=carol)
    c = kb.smpc.share(torch.tensor(2.0), parties=[alice, bob], dealer=carol)
    out = xs * c
    assert out.taint == {"alice": ["heart"]}
    req = out.request(reason="only alice's data")
    assert set(req.requests) == {"alice"}  # bob's owner has nothing in it


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(12)


def test_ops_against_plaintext(smpc_workers: Workers, rng: np.random.Generator) -> None:
    alice, bob, carol = smpc_workers
    x = torch.tensor(rng.normal(0, 3, (6, 5)))
    y = torch.tensor(rng.normal(0, 3, (6, 5)))
    w = torch.tensor(rng.normal(0, 1, (5, 4)))
    xs, ys, ws = (kb.smpc.share(t, parties=[alice, bob], dealer=carol) for t in (x, y, w))
    tol = 1e-3
    cases = {
        "add": (xs + ys, x + y),
        "sub": (xs - ys, x - y),
        "add_public": (xs + 1.5, x + 1.5),
        "mul": (xs * ys, x * y),
        "mul_public": (xs * 0.25, x * 0.25),
        "div_public": (xs / 7, x / 7),
        "matmul": (xs @ ws, x @ w),
        "gtz": (xs > 0, (x > 0).double()),
        "lt": (xs < ys, (x < y).double()),
        "relu": (xs.relu(), x.relu()),
        "sum": (xs.sum(), x.sum()),
        "max": (xs.max(), x.max()),
        "argmax": (xs.argmax(), torch.tensor(float(x.argmax()))),
        "argmax_dim": (xs.argmax(dim=1), x.argmax(dim=1).double()),
        "reshape": (xs.reshape(5, 6), x.reshape(5, 6)),
        "transpose": (xs.T, x.T),
    }
    for name, (shared, plain) in cases.items():
        assert shared.taint == {}
        got = shared.reveal()  # clean inputs: free
        assert got.shape == plain.shape, name
        assert torch.allclose(got, plain.double(), atol=tol), name
    img = torch.tensor(rng.normal(0, 1, (1, 2, 6, 6)))
    ker = torch.tensor(rng.normal(0, 1, (3, 2, 3, 3)))
    conv = kb.smpc.share(img, [alice, bob], carol).conv2d(
        kb.smpc.share(ker, [alice, bob], carol), padding=1)
    assert torch.allclose(conv.reveal(), torch.nn.functional.conv2d(img, ker, padding=1),
                          atol=tol)
    assert ULP == 2.0 ** -16


def test_share_checks(smpc_workers: Workers) -> None:
    alice, bob, carol = smpc_workers
    text = alice.asset("heart")["sex"]  # a column of strings/categories
    with pytest.raises((SMPCError, kb.SyftError)):
        alice.asset("secret")["note"].share(alice, bob, dealer=carol)
    with pytest.raises(ValueError):  # the pointer's worker must be a party
        text.share(bob, carol)
    xs = kb.smpc.share(torch.ones(3), parties=[alice, bob], dealer=carol)
    xs.free()
    with pytest.raises(kb.PermissionDenied):
        xs.reveal()


def test_parties_and_the_dealer_compute_on_the_workers_threads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torch's own default here would be two threads per worker: two parties on two cores
    # then spin on each other's threads
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    names = [("alice", False), ("bob", False), ("carol", True)]
    ws = [kb.launch(n, dealer=d, state=tmp_path / n, threads=1, trust_launched=False)
          for n, d in names]
    try:
        keys.trust_each_other([(n, tmp_path / n, d) for n, d in names])
        x = kb.smpc.share(torch.arange(6.0).reshape(2, 3), parties=ws[:2], dealer=ws[2])
        t = torch.arange(6.0).reshape(2, 3)
        assert torch.allclose((x @ x.transpose()).reveal().float(), t @ t.T, atol=1e-3)
        assert [w._call(Op.SMPC_INFO)["smpc"]["threads"] for w in ws] == [1, 1, 1]
    finally:
        for w in ws:
            w.close()
