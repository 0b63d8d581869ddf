"""The privacy ledger: no overspending under concurrency, crash safety, owner controls."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kernel_bridge as kb
from kernel_bridge import cli
from kernel_bridge.launch import relaunch
from kernel_bridge.owner.ledger import Ledger
from kernel_bridge.owner.store import Store


def write_config(tmp_path: Path, rows: int = 300, per_scientist: float = 1.0,
                 total: float = 100.0) -> Path:
    rng = np.random.default_rng(11)
    lines = ["id,age,sex"] + [f"{i},{rng.integers(20, 80)},{rng.choice(['F', 'M'])}"
                              for i in range(rows)]
    (tmp_path / "people.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "people_mock.csv").write_text("id,age,sex\n1,30,F\n2,40,M\n")
    cfg = tmp_path / "worker.toml"
    cfg.write_text(
        '[worker]\nname = "ledgerw"\nport = 0\nstate = "state"\n\n'
        '[assets.people]\npath = "people.csv"\nmock = "people_mock.csv"\n\n'
        '[assets.people.dp]\nprivacy_unit = "id"\nmax_rows_per_id = 1\n'
        f'epsilon_per_scientist = {per_scientist}\nepsilon_total = {total}\n\n'
        '[assets.people.columns.id]\ntype = "int"\nlower = 0\nupper = 10000000\n'
        '[assets.people.columns.age]\ntype = "int"\nlower = 18\nupper = 90\n'
        '[assets.people.columns.sex]\ntype = "category"\ncategories = ["F", "M"]\n')
    return cfg


def connect(w: kb.Worker, scientist: str) -> kb.Worker:
    o = kb.Owner(w.process.state)
    token = o.add_token(scientist)
    o.close()
    return kb.connect(w.process.url, token)


def test_200_concurrent_queries_against_a_budget_for_10(
        tmp_path: Path, fresh_worker: Callable[..., kb.Worker]) -> None:
    w = fresh_worker("ledgerw", config=write_config(tmp_path, per_scientist=1.0),
                     assets={}, mocks={}, scientist="ana")
    # Several connections (sessions) of the same scientist, many calls in flight on each.
    conns = [w] + [kb.connect(w.process.url, w.token) for _ in range(4)]  # type: ignore[attr-defined]
    pointers = [c.asset("people") for c in conns]
    start = threading.Barrier(40)

    def one(i: int) -> str:
        if i < 40:
            start.wait()
        try:
            pointers[i % len(pointers)].dp.count(epsilon=0.1).release()
            return "ok"
        except kb.BudgetExhausted as exc:
            assert exc.data["epsilon"] == 0.1 and exc.data["epsilon_remaining"] < 0.1 + 1e-9
            return "refused"

    with ThreadPoolExecutor(max_workers=40) as pool:
        outcomes = list(pool.map(one, range(200)))
    assert outcomes.count("ok") == 10 and outcomes.count("refused") == 190
    owner = kb.Owner(w.process.state)
    spends = owner.ledger.spends("people")
    assert len(spends) == 10 and all(s["epsilon"] == 0.1 for s in spends)
    row = next(r for r in owner.budget() if r["scientist"] == "ana")
    assert row["epsilon_spent"] == pytest.approx(1.0) and row["epsilon_remaining"] < 1e-9
    assert w.budget()["people"]["epsilon_spent"] == pytest.approx(1.0)
    events = [e["event"] for e in owner.audit()]
    assert events.count("dp_release") == 10 and events.count("dp_refused") == 190
    for c in conns[1:]:
        c.close()


def test_total_budget_binds_across_scientists(
        tmp_path: Path, fresh_worker: Callable[..., kb.Worker]) -> None:
    w = fresh_worker("ledgerw", config=write_config(tmp_path, per_scientist=1.0, total=0.5),
                     assets={}, mocks={}, scientist="ana")
    bo = connect(w, "bo")
    a, b = w.asset("people"), bo.asset("people")
    for _ in range(3):
        a.dp.count(epsilon=0.1).release()
    b.dp.count(epsilon=0.2).release()
    with pytest.raises(kb.BudgetExhausted, match="total budget") as err:
        b.dp.count(epsilon=0.1).release()
    assert err.value.data["scope"] == "total"
    assert err.value.data["epsilon_remaining"] == pytest.approx(0.0, abs=1e-9)
    assert bo.budget()["people"]["epsilon_remaining"] == pytest.approx(0.8)
    owner = kb.Owner(w.process.state)
    total = next(r for r in owner.budget() if r["scientist"] is None)
    assert total["epsilon_spent"] == pytest.approx(0.5) and total["epsilon_limit"] == 0.5
    bo.close()


def test_sigkill_mid_query_never_shows_less_spent_than_released(
        tmp_path: Path, fresh_worker: Callable[..., kb.Worker]) -> None:
    # A larger table so that each release spends time between debit and reply.
    w = fresh_worker("ledgerw", config=write_config(tmp_path, rows=30_000, per_scientist=1e6,
                                                    total=1e6),
                     assets={}, mocks={}, scientist="ana")
    people = w.asset("people")
    people.dp.mean("age", epsilon=0.25).release()  # warm: the frame is loaded
    received: list[float] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                received.append(people.dp.mean("age", epsilon=0.25).release().epsilon)
            except kb.SyftError:
                return

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(received) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    w.process.kill()  # SIGKILL with queries in flight
    stop.set()
    for t in threads:
        t.join(30)
    released = 0.25 * (1 + len(received))
    assert len(received) >= 6
    relaunch(w)
    w.reconnect()
    spent = w.budget()["people"]["epsilon_spent"]
    assert spent >= released - 1e-9
    owner = kb.Owner(w.process.state)
    spends = owner.ledger.spends("people")
    assert len(spends) >= 1 + len(received)
    assert sum(e["event"] == "dp_release" for e in owner.audit()) == len(spends)
    # The worker goes on from the recorded spend after the restart.
    again = w.asset("people").dp.count(epsilon=0.5).release()
    assert again.budget["epsilon_spent"] == pytest.approx(spent + 0.5)


def test_invalid_queries_get_typed_errors_and_spend_nothing(
        tmp_path: Path, fresh_worker: Callable[..., kb.Worker]) -> None:
    w = fresh_worker("ledgerw", config=write_config(tmp_path), assets={}, mocks={},
                     scientist="ana")
    people = w.asset("people")
    derived = people[people["age"] > 50]  # computed in the kernel: not an asset
    sent = w.send(np.arange(10))
    mock = w.asset("people", mock=True)
    bad = {
        "unknown column": lambda: people.dp.mean("salary", epsilon=0.1),
        "bounds outside": lambda: people.dp.mean("age", epsilon=0.1, bounds=(0, 200)),
        "lower >= upper": lambda: people.dp.sum("age", epsilon=0.1, bounds=(60, 30)),
        "eps zero": lambda: people.dp.count(epsilon=0),
        "eps negative": lambda: people.dp.count(epsilon=-1),
        "eps nan": lambda: people.dp.count(epsilon=float("nan")),
        "eps inf": lambda: people.dp.count(epsilon=float("inf")),
        "eps text": lambda: people.dp.count(epsilon="0.1"),  # type: ignore[arg-type]
        "undeclared keys": lambda: people.dp.group_by("age").mean("age", epsilon=0.1),
        "id as keys": lambda: people.dp.group_by("id").count(epsilon=0.1),
        "unknown keys": lambda: people.dp.histogram("region", epsilon=0.1),
        "quantile q": lambda: people.dp.quantile("age", 1.5, epsilon=0.1),
        "derived pointer": lambda: derived.dp.count(epsilon=0.1),
        "sent value": lambda: sent.dp.count(epsilon=0.1),
        "mock pointer": lambda: mock.dp.count(epsilon=0.1),
    }
    for what, make in bad.items():
        for call in (lambda q: q.accuracy(), lambda q: q.release()):
            with pytest.raises(kb.InvalidQuery) as err:
                call(make())
            assert err.value.message, what
    # A forged pointer id and a tainted copy of the asset are refused just the same.
    w.run("people2 = people; people['age'] = 90")
    tainted = w.vars["people2"]
    with pytest.raises(kb.InvalidQuery):
        tainted.dp.count(epsilon=0.1).release()
    forged = kb.Pointer(w, {"id": "asset_people_private_0x", "type": "DataFrame",
                            "taint": [], "kernel": "private"})
    with pytest.raises(kb.InvalidQuery):
        forged.dp.count(epsilon=0.1).release()
    assert w.budget()["people"]["epsilon_spent"] == 0.0
    owner = kb.Owner(w.process.state)
    assert owner.ledger.spends() == []
    assert not any(e["event"] == "dp_release" for e in owner.audit())


def test_dp_runs_on_the_original_asset_not_the_kernel_copy(
        tmp_path: Path, fresh_worker: Callable[..., kb.Worker]) -> None:
    w = fresh_worker("ledgerw", config=write_config(tmp_path, per_scientist=1000.0,
                                                    total=1000.0),
                     assets={}, mocks={}, scientist="ana")
    people = w.asset("people")
    # The scientist overwrites the asset in their kernel; DP must not see it.
    assert w.run("people['age'] = 90\npeople.drop(people.index[:200], inplace=True)").ok
    r = people.dp.mean("age", epsilon=200.0).release()
    ages = pd.read_csv(tmp_path / "people.csv")["age"]
    assert abs(r.value - ages.mean()) < 2 and abs(ages.mean() - 90) > 20
    assert abs(people.dp.count(epsilon=200.0).release().value - 300) < 3


def test_owner_cli_and_api_change_budgets_live(
        tmp_path: Path, fresh_worker: Callable[..., kb.Worker],
        capsys: pytest.CaptureFixture[str]) -> None:
    w = fresh_worker("ledgerw", config=write_config(tmp_path, per_scientist=0.3),
                     assets={}, mocks={}, scientist="ana")
    people = w.asset("people")
    people.dp.count(epsilon=0.3).release()
    with pytest.raises(kb.BudgetExhausted, match="asks for epsilon=0.1 .* has epsilon=0 left"):
        people.dp.count(epsilon=0.1).release()
    state = str(w.process.state)
    assert cli.main(["budget", "--state", state]) == 0
    out = capsys.readouterr().out
    assert "people" in out and "ana" in out and "(total)" in out
    assert cli.main(["budget", "set", "ana", "people", "--epsilon", "3", "--state", state]) == 0
    assert "epsilon limit 3" in capsys.readouterr().out
    # The running worker sees the new allowance at once.
    assert w.budget()["people"] == {"epsilon_spent": pytest.approx(0.3), "epsilon_limit": 3.0,
                                    "epsilon_remaining": pytest.approx(2.7),
                                    "delta_spent": 0.0, "delta_limit": 0.0}
    people.dp.count(epsilon=0.1).release()
    assert cli.main(["budget", "set-total", "people", "--epsilon", "0.5",
                     "--state", state]) == 0
    with pytest.raises(kb.BudgetExhausted, match="total budget"):
        people.dp.count(epsilon=0.2).release()
    owner = kb.Owner(state)
    owner.set_budget("bo", "people", epsilon=2.0, delta=1e-6)
    rows = {(r["scientist"], r["asset"]): r for r in owner.budget()}
    assert rows[("bo", "people")]["epsilon_limit"] == 2.0
    assert rows[("bo", "people")]["delta_limit"] == 1e-6
    assert rows[(None, "people")]["epsilon_limit"] == 0.5
    changes = [e["detail"] for e in owner.audit() if e["event"] == "budget_set"]
    assert [c["scientist"] for c in changes] == ["ana", None, "bo"]
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            owner.set_budget("ana", "people", epsilon=bad)
    with pytest.raises(KeyError):
        owner.set_budget("ana", "nosuch", epsilon=1.0)
    assert cli.main(["budget", "set", "ana", "nosuch", "--epsilon", "1", "--state", state]) == 2


def test_debit_is_one_transaction_across_processes(tmp_path: Path) -> None:
    """Two ledgers on one file (worker + owner tool): the check and debit cannot interleave."""
    from kernel_bridge.owner.config import DPSpec

    a, b = Ledger(Store(tmp_path)), Ledger(Store(tmp_path))
    a.declare({"t": DPSpec(epsilon_per_scientist=1.0, epsilon_total=1.0)})
    outcomes: list[str] = []

    def spend(ledger: Ledger) -> None:
        for _ in range(20):
            try:
                ledger.debit("ana", "t", 0.1, 0.0, {"aggregate": "count"})
                outcomes.append("ok")
            except kb.BudgetExhausted:
                outcomes.append("refused")

    threads = [threading.Thread(target=spend, args=(x,)) for x in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 10
    assert a.status("ana", "t")["epsilon_spent"] == pytest.approx(1.0)
    assert json.loads(json.dumps(a.spends()))[0]["query"] == {"aggregate": "count"}
