"""The scientist's everyday path against a real worker: pointers, taint, cells, mock runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import kernel_bridge as kb

from .conftest import PLANTED_NUMBER, PLANTED_TEXT


def test_seed_example(session: kb.Worker) -> None:
    """The design card's first example: send, multiply remotely, get the clean result."""
    data = session.send(torch.tensor([1, 2, 3, 4.0]))
    assert isinstance(data, kb.Pointer)
    assert data.type_name == "torch.Tensor" and data.taint == frozenset()
    result = data * 2
    assert isinstance(result, kb.Pointer)
    assert torch.equal(result.get(), torch.tensor([2.0, 4.0, 6.0, 8.0]))


def test_pointer_arithmetic_and_methods(session: kb.Worker) -> None:
    a = session.send(np.arange(6, dtype=np.float64))
    b = (a.reshape(2, 3) + 1).sum(axis=0)
    assert np.array_equal(b.get(), np.arange(6.0).reshape(2, 3).sum(axis=0) + 2)
    assert (10 - a).get()[0] == 10.0  # reflected operator
    t = session.send(torch.ones(3))
    t2 = session.send(torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal((t @ t2).get(), torch.tensor(6.0))
    assert torch.equal((t2 > 1.5).get(), torch.tensor([False, True, True]))
    assert torch.equal(t2[t2 > 1.5].get(), torch.tensor([2.0, 3.0]))


def test_dataframe_pointer(session: kb.Worker) -> None:
    df = pd.DataFrame({"a": [1, 2, 3], "g": ["x", "y", "x"]})
    p = session.send(df)
    assert p.a.mean().get() == pytest.approx(2.0)  # column as attribute
    grouped = p.groupby("g").a.sum().get()
    assert grouped.to_dict() == {"x": 4, "y": 2}
    assert p.shape == (3, 2)


def test_datasets_show_schema_and_mock_never_private_rows(alice: kb.Worker) -> None:
    ds = {d["name"]: d for d in alice.datasets}
    assert {"heart", "ecg", "secret"} <= set(ds)
    heart = ds["heart"]
    assert heart["rows"] == 300  # alice's policy shows the row count
    cols = {c["name"]: c for c in heart["schema"]["columns"]}
    assert cols["age"]["lower"] == 29 and cols["sex"]["categories"] == ["F", "M"]
    private = pd.read_csv("datasets/heart/alice.csv")
    mock = pd.read_csv("datasets/heart/alice_mock.csv")
    preview = pd.DataFrame(heart["mock_preview"])
    assert list(preview["patient_id"]) == list(mock["patient_id"][: len(preview)])
    assert not set(preview["patient_id"]) & set(private["patient_id"])
    text = repr(alice.datasets)
    assert str(PLANTED_NUMBER) not in text and PLANTED_TEXT not in text


def test_asset_pointer_is_tainted_and_needs_approval(session: kb.Worker) -> None:
    heart = session.asset("heart")
    assert heart.taint == {"heart"}
    m = heart["age"].mean()
    assert m.taint == {"heart"}
    with pytest.raises(kb.ApprovalRequired) as info:
        m.get()
    assert info.value.data["taint"] == ["heart"]
    req = info.value.request(reason="mean age for the report")
    assert isinstance(req, kb.Request) and req.status == "pending"


def test_unknown_asset_is_a_clear_error(session: kb.Worker) -> None:
    with pytest.raises(kb.SyftError, match="no asset named 'nope'"):
        session.asset("nope")


def test_cell_receipt_and_vars(session: kb.Worker) -> None:
    r = session.run("s = heart.groupby('sex').age.mean()\nprint(s)")
    assert isinstance(r, kb.Receipt)
    assert r.ok and r.error_type is None
    # Names as parsed from the source: not whether they exist, not their types.
    assert r.names == [{"name": "s", "change": "assigned"}]
    assert len(r.held) == 1
    text = repr(r)
    assert "ok" in text and "assigned s" in text and "1 output held" in text
    assert "Series" not in text
    assert "<div" in r._repr_html_()
    s = session.vars["s"]
    assert s.type_name == "pandas.Series" and s.taint == {"heart"}
    with pytest.raises(kb.ApprovalRequired):
        s.get()
    again = session.run("s = s * 2")
    assert again.names == [{"name": "s", "change": "assigned"}]
    assert r["s"].taint == {"heart"}  # a receipt hands out pointers to what it made


def test_cell_error_reports_type_only(session: kb.Worker) -> None:
    r = session.run(f"raise ValueError('the value is {PLANTED_NUMBER}')")
    assert r.status == "error" and r.error_type == "ValueError"
    assert str(PLANTED_NUMBER) not in repr(r)
    assert str(PLANTED_NUMBER) not in repr(r.data)


def test_mock_run_returns_outputs_in_full(session: kb.Worker) -> None:
    r = session.run("print(heart.head())\nheart.shape", mock=True)
    assert r.ok and r.mock and r.held == []
    texts = [o["content"].get("text") or o["content"].get("data", {}).get("text/plain", "")
             for o in r.outputs]
    joined = "".join(texts)
    assert "patient_id" in joined and "(50, 10)" in joined
    private_ids = set(pd.read_csv("datasets/heart/alice.csv")["patient_id"].astype(str))
    assert not any(pid in joined for pid in private_ids if len(pid) == 5
                   and pid not in set(pd.read_csv("datasets/heart/alice_mock.csv")
                                      ["patient_id"].astype(str)))
    assert session.mock_vars["heart"].get().shape == (50, 10)  # mock values are free


def test_private_kernel_taints_all_it_holds_clean_values_stay_clean(
        session: kb.Worker) -> None:
    early = session.run("x = 1")  # a private cell before any asset: nothing private yet
    assert early.ok and session.vars["x"].get() == 1
    clean = session.send(torch.arange(3.0))
    session.asset("secret")  # private data is now in the private kernel
    assert session.run("y = 2").ok
    # Everything in the private kernel is tainted now, even what was made before.
    for name in ("x", "y"):
        with pytest.raises(kb.ApprovalRequired):
            session.vars[name].get()
    # Sent values live in the clean kernel, which never receives private data.
    assert torch.equal(clean.get(), torch.arange(3.0))
    assert torch.equal((clean + 1).get(), torch.arange(1.0, 4.0))
    mixed = clean + session.asset("secret")["value"].mean()
    assert "secret" in mixed.taint
    with pytest.raises(kb.ApprovalRequired):
        mixed.get()
    assert torch.equal(clean.get(), torch.arange(3.0))  # mixing copied it, clean stays clean


def test_restart_clears_taint_and_objects(session: kb.Worker) -> None:
    session.asset("secret")
    session.run("y = 2")
    old = session.vars["y"]
    assert old.taint == {"secret"}
    kept = session.send(1)
    session.restart()
    with pytest.raises(kb.UnknownObject):
        old.get()
    assert session.run("y = 3").ok
    assert session.vars["y"].get() == 3  # a fresh kernel holds nothing private
    assert kept.get() == 1  # the clean kernel was not restarted
    assert session.send(torch.ones(2)).get().sum().item() == 2.0


def test_mutating_method_taints_receiver(session: kb.Worker) -> None:
    t = session.send(torch.zeros(3))
    secret_mean = session.asset("heart")["age"].mean()
    t.add_(secret_mean)  # in-place: t now holds private data
    with pytest.raises(kb.ApprovalRequired):
        t.get()


def test_large_values_round_trip_over_bulk_path(session: kb.Worker) -> None:
    big = torch.arange(3 * 2**20, dtype=torch.float32)  # 12 MiB: above the bulk threshold
    p = session.send(big)
    back = (p * 1).get()
    assert back.shape == big.shape and torch.equal(back, big)


def test_launch_unsandboxed_says_so(fresh_worker) -> None:  # type: ignore[no-untyped-def]
    w = fresh_worker("dora", sandbox=False)
    assert w.send(2).get() == 2
    log = (w.process.state / "worker.log").read_text()
    assert "UNSAFE" in log
