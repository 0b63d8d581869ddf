"""Plans end to end: submit, the owner's decision on the exact hash, runs under the policy.

A real worker process with real sandboxed kernels; the owner decides through
:class:`kernel_bridge.Owner` on the same state directory, as the CLI and the panel do.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import kernel_bridge as kb
from kernel_bridge.errors import (
    BudgetExhausted,
    InvalidPlan,
    PlanDenied,
    PlanOutputRejected,
    PlanPending,
    PlanRunsExhausted,
)
from kernel_bridge.fl.encoding import encode_inputs, encoding_decls
from kernel_bridge.plan_document import plan_hash
from kernel_bridge.scientist.plans import Plan
from tests.conftest import DATASETS, descendants

from .docs import DP, dp_plan, encoded_plan, means_plan, with_code

HEART = pd.read_csv(DATASETS / "heart" / "alice.csv")


def approved(w: kb.Worker, owner: kb.Owner, doc: dict, reason: str = "test") -> Plan:
    plan = w.submit_plan(doc, reason=reason)
    owner.approve_plan(plan.id, plan.hash)
    return plan.wait(timeout=10)


def test_a_plan_runs_only_once_its_exact_hash_is_approved(planw: kb.Worker,
                                                          plan_owner: kb.Owner) -> None:
    doc = means_plan(max_runs=5)
    plan = planw.submit_plan(doc, reason="column means for the study")
    assert plan.status == "pending" and plan.hash == plan_hash(doc)
    with pytest.raises(PlanPending):
        plan.run()
    # The reviewer's hash must be the stored one.
    with pytest.raises(InvalidPlan):
        plan_owner.approve_plan(plan.id, "0" * 64)
    review = plan_owner.plan(plan.id)
    assert review["document"]["code"] == doc["code"] and review["status"] == "pending"
    assert "at most 5 runs" in review["policy_words"]
    plan_owner.approve_plan(plan.id, review["hash"])
    assert plan.wait(timeout=10).status == "approved"
    result = plan.run(scale=2.0)
    want = HEART[["age", "chol"]].to_numpy(dtype="float32").mean(axis=0) * 2
    assert isinstance(result.outputs["mean"]["m"], torch.Tensor)
    assert result.outputs["mean"]["m"].dtype == torch.float32
    np.testing.assert_allclose(result.outputs["mean"]["m"].numpy(), want, rtol=1e-5)
    assert result.outputs["n"] == len(HEART) and result.outputs["loss"] == 2.0
    assert result.run["status"] == "released" and result.run["runs_used"] == 1
    events = [e for e in plan_owner.audit() if e["event"].startswith("plan_")]
    assert [e["event"] for e in events][-3:] == ["plan_approved", "plan_run",
                                                 "plan_run_released"]


def test_a_denied_plan_never_runs(planw: kb.Worker, plan_owner: kb.Owner) -> None:
    plan = planw.submit_plan(means_plan(max_runs=7), reason="r")
    plan_owner.deny_plan(plan.id, "too many runs")
    with pytest.raises(PlanDenied, match="too many runs"):
        plan.run()
    assert plan.refresh().status == "denied" and plan.runs_used == 0


def test_one_changed_byte_of_code_is_a_new_plan_that_needs_its_own_approval(
        planw: kb.Worker, plan_owner: kb.Owner) -> None:
    doc = means_plan(max_runs=4)
    first = approved(planw, plan_owner, doc)
    changed = with_code(doc, doc["code"].replace("scale=1.0", "scale=1.5"))
    assert len(changed["code"]) == len(doc["code"])
    second = planw.submit_plan(changed, reason="same, slightly changed")
    assert second.id != first.id and second.hash != first.hash
    assert second.status == "pending"
    with pytest.raises(PlanPending):
        second.run()
    # Asking to run the changed plan under the approved hash is refused too.
    with pytest.raises(kb.PermissionDenied):
        planw._call("plan_run", plan=second.id, hash=first.hash, value={})
    assert first.run().run["status"] == "released"
    # Submitting the approved document again is the same, approved plan.
    again = planw.submit_plan(doc, reason="again")
    assert again.id == first.id and again.status == "approved"


def test_runs_past_max_runs_are_refused_and_spend_nothing(planw: kb.Worker,
                                                          plan_owner: kb.Owner) -> None:
    plan = approved(planw, plan_owner, dp_plan(max_runs=2, epsilon_total=50.0))
    before = planw.budget()["heart"]["epsilon_spent"]
    plan.run()
    plan.run()
    spent = planw.budget()["heart"]["epsilon_spent"]
    with pytest.raises(PlanRunsExhausted):
        plan.run()
    assert planw.budget()["heart"]["epsilon_spent"] == spent > before
    assert plan.refresh().runs_used == 2
    assert len(plan_owner.plan(plan.id)["runs"]) == 2


def _epsilon(dp: dict, rows: int, runs: int = 1) -> float:
    """Opacus's RDP accountant over ``runs`` runs' steps (computed here independently)."""
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    q = dp["batch_size"] / rows
    acc.history = [(dp["noise_multiplier"], q, runs * dp["local_epochs"] *
                    math.ceil(rows / dp["batch_size"]))]
    return float(acc.get_epsilon(delta=dp["delta"]))


def test_epsilon_is_computed_by_the_worker_and_debited_before_release(
        planw: kb.Worker, plan_owner: kb.Owner) -> None:
    per_run, two, three = (_epsilon(DP, len(HEART), k) for k in (1, 2, 3))
    # The runs of a plan compose under one accountant: far less than adding them up.
    assert two < 2 * per_run * 0.9
    # epsilon_total fits two runs, not three.
    plan = approved(planw, plan_owner, dp_plan(epsilon_total=(two + three) / 2))
    before = planw.budget()["heart"]
    r1 = plan.run()
    assert r1.epsilon == pytest.approx(per_run, rel=1e-6)
    after = planw.budget()["heart"]
    assert after["epsilon_spent"] == pytest.approx(before["epsilon_spent"] + per_run)
    assert after["delta_spent"] == pytest.approx(before["delta_spent"] + DP["delta"])
    spend = plan_owner.ledger.spends("heart")[-1]
    assert spend["query"]["plan"] == plan.id and spend["query"]["run"] == r1.id
    r2 = plan.run(mode="spec")
    assert r2.outputs["n"] == DP["batch_size"]
    # The second run is debited what the accountant adds for it; δ only once.
    assert r2.epsilon == pytest.approx(two - per_run, rel=1e-6)
    after2 = planw.budget()["heart"]
    assert after2["epsilon_spent"] == pytest.approx(before["epsilon_spent"] + two)
    assert after2["delta_spent"] == pytest.approx(before["delta_spent"] + DP["delta"])
    spent = after2["epsilon_spent"]
    with pytest.raises(BudgetExhausted) as err:
        plan.run()
    assert err.value.data["scope"] == "plan"
    assert planw.budget()["heart"]["epsilon_spent"] == spent
    assert plan.refresh().runs_used == 2
    assert plan.epsilon_spent == pytest.approx(two)


def test_a_run_past_the_ledgers_budget_is_refused_and_spends_nothing(
        planw: kb.Worker, plan_owner: kb.Owner) -> None:
    per_run = _epsilon(DP, len(HEART))
    plan = approved(planw, plan_owner, dp_plan(epsilon_total=100.0))
    spent = planw.budget()["heart"]["epsilon_spent"]
    plan_owner.set_budget("ana", "heart", spent + per_run / 2, 1e-2)
    try:
        with pytest.raises(BudgetExhausted) as err:
            plan.run()
        assert err.value.data["scope"] == "scientist"
        assert planw.budget()["heart"]["epsilon_spent"] == spent
        assert plan.refresh().runs_used == 0
    finally:
        plan_owner.set_budget("ana", "heart", 100.0, 1e-2)


BAD_FORMS = ["shape", "float64", "nan", "extra", "extra_tensor", "missing", "bool_count",
             "negative_count", "string", "not_a_dict"]


def test_outputs_of_the_wrong_form_are_refused(planw: kb.Worker,
                                              plan_owner: kb.Owner) -> None:
    plan = approved(planw, plan_owner, dp_plan(epsilon_total=100.0))
    spent = planw.budget()["heart"]["epsilon_spent"]
    for mode in BAD_FORMS:
        with pytest.raises(PlanOutputRejected) as err:
            plan.run(mode=mode)
        # The error names the output and the problem, never a value.
        assert str(HEART.iloc[0, 0]) not in str(err.value)
    assert planw.budget()["heart"]["epsilon_spent"] == spent
    with pytest.raises(kb.RemoteError) as err2:
        plan.run(mode="raise")
    assert err2.value.data["error_type"] == "ValueError"
    assert str(HEART.iloc[0, 0]) not in str(err2.value)
    runs = plan_owner.plan(plan.id)["runs"]
    assert [r["status"] for r in runs] == ["rejected"] * len(BAD_FORMS) + ["failed"]
    assert all(r["epsilon"] == 0 for r in runs)


def test_the_plan_kernel_never_saw_the_scientists_session(planw: kb.Worker,
                                                           plan_owner: kb.Owner) -> None:
    receipt = planw.run("leak = 42\nimport builtins\nbuiltins.LEAK_FROM_SESSION = 1\n"
                        "LEAK_FROM_SESSION = 2")
    assert receipt.status == "ok"
    plan = approved(planw, plan_owner, means_plan())
    assert plan.run(mode="probe").outputs["n"] == 0
    # Nor does a run find what an earlier run of the plan left in its globals or in
    # builtins: the kernel is the plan's, but each run gets a fresh namespace.
    plan.run(mode="stash")
    assert plan.run(mode="probe").outputs["n"] == 0


def test_plan_kernels_reuse_their_memory_and_keep_the_collector_off_their_imports(
        planw: kb.Worker, plan_owner: kb.Owner) -> None:
    """A plan kernel runs one shape of work over and over: its malloc keeps freed memory
    (glibc's defaults gave every multi-MB buffer back, to be faulted in again next run)
    and what it imported before the plan is frozen (young objects of each run set off
    full collections over it). The scientist's own kernels keep glibc's defaults."""
    plan = approved(planw, plan_owner, means_plan())
    assert plan.run(mode="runtime").outputs["n"] == 3
    assert planw.run("x = 1").status == "ok"  # the scientist's session kernel is up
    kernels = {}
    for pid in descendants(planw.process.proc.pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ipykernel" in cmd and b"bwrap" not in cmd:
            tuned = any(e.startswith(b"GLIBC_TUNABLES=") for e in env)
            kernels[pid] = (b"/syk-plan-" in cmd, tuned)
    assert any(plan for plan, _ in kernels.values()) and any(
        not plan for plan, _ in kernels.values()), kernels
    assert all(tuned == plan for plan, tuned in kernels.values()), kernels


def test_an_encoded_plan_gets_the_workers_arrays_and_its_kernel_loads_no_pandas(
        planw: kb.Worker, plan_owner: kb.Owner) -> None:
    """With inputs.encoding the worker encodes the columns by the approved declarations;
    the plan's kernel gets {"X", "y"} arrays, imports no pandas (~65 MB), and a run that
    edits its arrays leaves the next run's alone."""
    schema = next(d for d in planw.datasets if d["name"] == "heart")["schema"]["columns"]
    doc = encoded_plan(encoding_decls(schema, ["age", "chol", "sex"]))
    plan = approved(planw, plan_owner, doc)
    assert any("the worker encodes them" in w for w in plan_owner.plan(plan.id)["policy_words"])
    want = encode_inputs(HEART[["age", "chol", "sex"]], doc["inputs"])
    assert 0 <= want["X"].min() < want["X"].max() <= 1  # scaled by the declared bounds
    for _ in range(2):  # the first run zeroed its X: the second still gets the data
        out = plan.run().outputs
        np.testing.assert_allclose(out["mean"]["m"].numpy(), want["X"].mean(axis=0),
                                   rtol=1e-5)
        assert out["n"] == len(want["y"]) and out["loss"] == 0.0  # no pandas in the kernel
    # The declarations must match the asset's own kinds.
    wrong = encoded_plan([{**d, "kind": "float"} if d["name"] == "age" else d
                          for d in doc["inputs"]["encoding"]])
    with pytest.raises(InvalidPlan, match="declares 'age' a float column"):
        planw.submit_plan(wrong, reason="r")


def test_a_plan_kernel_serves_one_plan_hash_for_one_scientist(planw: kb.Worker,
                                                              plan_owner: kb.Owner) -> None:
    doc = means_plan(max_runs=10)
    doc["name"] = "kernel per plan and scientist"
    plan = approved(planw, plan_owner, doc)
    # Kept across the scientist's runs (an FL job does not start a kernel per round) ...
    assert [plan.run(mode="mark").outputs["n"] for _ in range(3)] == [1, 2, 3]
    # ... but another scientist running the very same approved code gets a kernel of
    # their own, and so does a changed plan: neither sees the first kernel's state.
    token = plan_owner.add_token("cleo")
    cleo = kb.connect(planw.process.url, token, name="alice")
    try:
        theirs = cleo.submit_plan(doc, reason="same code, another scientist")
        assert theirs.hash == plan.hash and theirs.id != plan.id
        plan_owner.approve_plan(theirs.id, theirs.hash)
        assert theirs.wait(timeout=10).run(mode="mark").outputs["n"] == 1
    finally:
        cleo.close()
    changed = approved(planw, plan_owner, with_code(doc, doc["code"] + "\n# v2\n"))
    assert changed.run(mode="mark").outputs["n"] == 1
    # A worker keeps two plan kernels: the least recently used (the first) was stopped
    # for the third, so this run starts a fresh one.
    assert plan.run(mode="mark").outputs["n"] == 1


def test_fifty_concurrent_runs_of_a_five_run_plan_exactly_five_succeed(
        planw: kb.Worker, plan_owner: kb.Owner) -> None:
    doc = means_plan(max_runs=5)
    doc["name"] = "fifty at once"  # a plan of its own (no runs used yet)
    plan = approved(planw, plan_owner, doc)
    core = planw.core

    async def many() -> list[object]:
        return await asyncio.gather(*(core.run_plan(plan) for _ in range(50)),
                                    return_exceptions=True)

    results = core.blocking(many(), timeout=300)
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, PlanRunsExhausted)]
    assert len(ok) == 5 and len(refused) == 45, [type(r).__name__ for r in results]
    assert plan.refresh().runs_used == 5
    assert len(plan_owner.plan(plan.id)["runs"]) == 5


def test_plans_list_the_scientists_own_plans_only(planw: kb.Worker,
                                                   plan_owner: kb.Owner) -> None:
    token = plan_owner.add_token("bea")
    bea = kb.connect(planw.process.url, token)
    try:
        mine = {p.id for p in planw.plans()}
        assert mine and not bea.plans()
        with pytest.raises(kb.PermissionDenied):
            bea.plan_by_id(min(mine))
        with pytest.raises(kb.PermissionDenied):
            bea._call("plan_run", plan=min(mine), value={})
    finally:
        bea.close()


def test_documents_are_checked_before_they_are_stored(planw: kb.Worker) -> None:
    bad = means_plan()
    bad["inputs"]["columns"] = ["age", "no_such_column"]
    with pytest.raises(InvalidPlan, match="no_such_column"):
        planw._call("plan_submit", plan=bad, reason="")
    bad = means_plan()
    bad["policy"]["outputs"]["mean"]["dtype"] = "float64"
    with pytest.raises(InvalidPlan):
        planw._call("plan_submit", plan=bad, reason="")
    bad = means_plan()
    bad["policy"]["surprise"] = 1
    with pytest.raises(InvalidPlan):
        planw._call("plan_submit", plan=bad, reason="")
    bad = means_plan()
    bad["entry"] = "train"
    with pytest.raises(InvalidPlan):
        planw._call("plan_submit", plan=bad, reason="")


def test_the_approvals_widget_shows_plans_and_decides_them(planw: kb.Worker,
                                                          plan_owner: kb.Owner) -> None:
    from syft_widgets import Approvals

    doc = means_plan(max_runs=9)
    doc["name"] = "<b>widget</b> plan"
    plan = planw.submit_plan(doc, reason="for the widget")
    doomed_doc = means_plan(max_runs=8)
    doomed_doc["name"] = "widget plan to deny"
    doomed = planw.submit_plan(doomed_doc, reason="deny me")
    widget = Approvals(plan_owner, start=False)
    try:
        row = next(p for p in widget.plans if p["id"] == plan.id)
        assert row["status"] == "pending" and row["hash"] == plan.hash
        assert "at most 9 runs" in row["policy_words"] and "def run(data" in row["code"]
        assert row["progress"] == "runs 0/9"
        assert f"plan #{plan.id} '<b>widget</b> plan' by ana: pending" in widget.text()
        # A hash other than the one shown is refused: a message, still pending.
        assert "not the" in widget.handle_action({"action": "approve_plan", "id": plan.id,
                                                  "hash": "f" * 64})
        assert planw.plan_by_id(plan.id).status == "pending"
        widget._on_frontend_msg(widget, {"action": "approve_plan", "id": plan.id,
                                         "hash": row["hash"]}, [])  # the button
        assert plan.wait(timeout=10).status == "approved"
        assert "a denial needs a reason" in widget.handle_action(
            {"action": "deny_plan", "id": doomed.id, "reason": " "})
        widget.handle_action({"action": "deny_plan", "id": doomed.id, "reason": "no"})
        assert doomed.wait(timeout=10).status == "denied"
        assert widget.message.startswith(f"denied plan #{doomed.id}")
        plan.run()
        widget.refresh()
        row = next(p for p in widget.plans if p["id"] == plan.id)
        assert row["status"] == "approved" and row["progress"] == "runs 1/9"
    finally:
        widget.close()


def test_the_cli_lists_shows_approves_and_denies_plans(
        planw: kb.Worker, capsys: pytest.CaptureFixture[str]) -> None:
    from kernel_bridge.cli import main

    state = str(planw.process.state)
    doc = means_plan(max_runs=11)
    doc["name"] = "cli plan"
    plan = planw.submit_plan(doc, reason="from the terminal\x1b[2J")
    other = means_plan(max_runs=12)
    other["name"] = "cli plan to deny"
    doomed = planw.submit_plan(other, reason="deny")
    assert main(["plans", "list", "--state", state]) == 0
    out = capsys.readouterr().out
    assert f"#{plan.id} [pending] ana: 'cli plan' on heart, runs 0/11" in out
    assert "    - at most 11 runs" in out and "\x1b" not in out
    assert main(["plans", "show", str(plan.id), "--state", state]) == 0
    out = capsys.readouterr().out
    assert f"hash: {plan.hash}" in out and "    6 | def run(data, spec" in out
    assert main(["plans", "approve", str(plan.id), "--hash", "0" * 64, "--state", state]) == 2
    assert "not the" in capsys.readouterr().err
    assert main(["plans", "approve", str(plan.id), "--hash", plan.hash, "--state", state]) == 0
    assert "approved plan" in capsys.readouterr().out
    assert main(["plans", "approve", str(plan.id), "--state", state]) == 0
    assert "already approved" in capsys.readouterr().out
    assert main(["plans", "deny", str(doomed.id), "--reason", "no", "--state", state]) == 0
    assert plan.wait(timeout=10).status == "approved"
    assert doomed.wait(timeout=10).status == "denied"


def test_the_owner_can_revoke_an_approved_plan(planw: kb.Worker,
                                               plan_owner: kb.Owner) -> None:
    doc = means_plan(max_runs=13)
    plan = approved(planw, plan_owner, doc)
    plan.run()
    with pytest.raises(kb.SyftError):  # AlreadyDecided: only approved plans are revoked
        plan_owner.revoke_plan(planw.submit_plan(means_plan(max_runs=14)).id, "x")
    plan_owner.revoke_plan(plan.id, "the study ended")
    with pytest.raises(PlanDenied, match="revoked: the study ended"):
        plan.run()
    assert plan.refresh().status == "revoked" and plan.runs_used == 1
    # Submitting the same document again is a new plan, pending review.
    again = planw.submit_plan(doc)
    assert again.id != plan.id and again.status == "pending"
