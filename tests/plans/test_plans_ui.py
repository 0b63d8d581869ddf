"""The Plans tab of the owner's Approvals panel and the scientist's plans in the sidebar,
in a real headless Chromium (Debian's) driven by Playwright, against real JupyterLab
servers and a real worker. Screenshots go to ``test-artifacts/lab/``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from labserver import LabServer
from playwright.sync_api import Page, expect, sync_playwright
from test_lab_ui import ARGS, CHROMIUM, SHOTS, open_lab, open_sidebar, shot

import kernel_bridge as kb
from kernel_bridge.errors import PlanDenied
from tests.conftest import DATASETS

from .docs import means_plan

pytestmark = pytest.mark.timeout(900)
HOSTILE = 'risk model <img src=x onerror="window.__pwned=1"><b>joint study</b>'


@pytest.fixture(scope="module")
def uiw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kb.Worker]:
    w = kb.launch("alice", config=DATASETS / "alice.toml",
                  state=tmp_path_factory.mktemp("plans-ui") / "alice", scientist="ana")
    owner = kb.Owner(w.process.state)
    owner.set_budget("ana", "heart", 3.0, 1e-3)
    owner.set_budget(None, "heart", 10.0, 1e-3)
    owner.close()
    yield w
    w.close()


@pytest.fixture(scope="module")
def labs(uiw: kb.Worker, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[LabServer, LabServer]]:
    base = tmp_path_factory.mktemp("plans-labs")
    sci_root = base / "scientist"
    sci_root.mkdir()
    conns = [{"name": "alice", "url": uiw.process.url, "token": uiw.token}]  # type: ignore[attr-defined]
    (sci_root / "connections.json").write_text(json.dumps(conns))
    sci = LabServer(sci_root, {"connections_file": str(sci_root / "connections.json")})
    own = LabServer(base / "owner", {"owner_state": str(uiw.process.state)})
    for lab in (sci, own):
        lab.start()
    yield sci, own
    for lab in (sci, own):
        lab.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_owner_reviews_approves_and_denies_plans_in_the_plans_tab(
        labs: tuple[LabServer, LabServer], browser: Any, uiw: kb.Worker) -> None:
    sci, own = labs
    fl = means_plan(max_runs=20, aggregate={"secure": True, "min_workers": 3},
                    dp={"noise_multiplier": 2.0, "max_grad_norm": 1.0, "delta": 1e-5,
                        "batch_size": 30, "local_epochs": 1, "epsilon_total": 2.0})
    fl["name"] = "heart FedAvg"
    plan = uiw.submit_plan(fl, reason=HOSTILE)
    other = means_plan(max_runs=1000)
    other["name"] = "all the rows"
    doomed = uiw.submit_plan(other, reason="exact means, many times")
    pages: list[Page] = []
    try:
        opage = open_lab(browser, own)
        pages.append(opage)
        opage.locator(".syftlab-tab[data-tab='plans']").click()
        card = opage.locator(".syftlab-plan.syftlab-status-pending").filter(
            has_text="heart FedAvg")
        expect(card).to_have_count(1, timeout=60_000)
        # The code, highlighted; the inputs; the policy in words; the progress.
        expect(card.locator(".syftlab-code .cm-keyword").first).to_be_visible()
        expect(card.locator(".syftlab-code")).to_contain_text("def run(data, spec")
        expect(card.locator(".syftlab-plan-inputs")).to_contain_text(
            "asset 'heart': columns age, chol")
        policy = card.locator(".syftlab-plan-policy")
        expect(policy).to_contain_text("of ≥ 3 workers, securely aggregated")
        expect(policy).to_contain_text("at most 20 runs")
        expect(policy).to_contain_text("ε ≤ 2.0 on 'heart' in total")
        expect(card.locator(".syftlab-plan-progress")).to_have_text("runs 0/20 · ε 0.00 of 2.00")
        # Scientist-written text stays text.
        expect(card.locator(".syftlab-reason")).to_have_text(HOSTILE)
        assert card.locator("img, b").count() == 0
        shot(opage, "plans-1-owner-pending")

        card.locator(".syftlab-approve").click()
        expect(card).to_have_count(0, timeout=30_000)
        assert plan.wait(timeout=30).status == "approved"
        run = plan.run()
        assert run.held and run.epsilon > 0
        decided = opage.locator(".syftlab-plan-decided").filter(has_text="heart FedAvg")
        expect(decided.locator("summary .syftlab-plan-progress")).to_contain_text(
            f"runs 1/20 · ε {run.epsilon:.2f} of 2.00", timeout=30_000)

        card2 = opage.locator(".syftlab-plan.syftlab-status-pending").filter(
            has_text="all the rows")
        expect(card2).to_have_count(1, timeout=30_000)
        expect(card2.locator(".syftlab-plan-policy")).to_contain_text(
            "no differential privacy: released values are exact")
        expect(card2.locator(".syftlab-deny")).to_be_disabled()
        card2.locator(".syftlab-deny-reason").fill("exact values 1000 times: use DP")
        card2.locator(".syftlab-deny").click()
        expect(card2).to_have_count(0, timeout=30_000)
        assert doomed.wait(timeout=30).status == "denied"
        shot(opage, "plans-2-owner-decided")
        assert opage.evaluate("window.__pwned === undefined")

        spage = open_lab(browser, sci)
        pages.append(spage)
        open_sidebar(spage)
        items = spage.locator(".syftlab-sidebar .syftlab-plan-item")
        expect(items.filter(has_text="heart FedAvg")).to_contain_text("approved",
                                                                       timeout=60_000)
        expect(items.filter(has_text="heart FedAvg")).to_contain_text("runs 1/20")
        expect(items.filter(has_text="all the rows")).to_contain_text(
            "exact values 1000 times: use DP")
        shot(spage, "plans-3-scientist-sidebar")

        # The owner stops the approved plan: no further run starts.
        decided.locator("summary").click()
        revoke = decided.locator(".syftlab-revoke")
        expect(revoke).to_be_disabled()
        decided.locator(".syftlab-revoke-reason").fill("study closed")
        revoke.click()
        expect(opage.locator(".syftlab-plan-decided").filter(has_text="heart FedAvg").locator(
            "summary .syftlab-plan-status")).to_have_text("revoked", timeout=30_000)
        with pytest.raises(PlanDenied, match="revoked: study closed"):
            plan.run()
        expect(items.filter(has_text="heart FedAvg")).to_contain_text("revoked",
                                                                       timeout=60_000)
    finally:
        for p in pages:
            if not p.is_closed():
                p.close()


def test_plan_handlers_need_the_token_and_the_reviewed_hash(
        labs: tuple[LabServer, LabServer], uiw: kb.Worker) -> None:
    sci, own = labs
    doc = means_plan(max_runs=3)
    doc["name"] = "over http"
    plan = uiw.submit_plan(doc, reason="http")
    status, _ = own.call("GET", "/syftlab/plans?status=all", token=None)
    assert status == 403
    status, _ = own.call("POST", f"/syftlab/plans/{plan.id}/approve", {}, token=None)
    assert status == 403
    status, body = own.call("GET", "/syftlab/plans?status=pending")
    assert status == 200 and plan.id in [p["id"] for p in body["plans"]]
    status, body = own.call("GET", f"/syftlab/plans/{plan.id}")
    assert status == 200 and body["plan"]["document"]["code"] == doc["code"]
    assert "at most 3 runs" in body["plan"]["policy_words"]
    # Approval names the reviewed hash: none, or another one, is refused.
    assert own.call("POST", f"/syftlab/plans/{plan.id}/approve", {})[0] == 400
    assert own.call("POST", f"/syftlab/plans/{plan.id}/approve", {"hash": "0" * 64})[0] == 400
    assert own.call("POST", f"/syftlab/plans/{plan.id}/deny", {"reason": " "})[0] == 400
    assert uiw.plan_by_id(plan.id).status == "pending"
    assert own.call("GET", "/syftlab/plans/999999")[0] == 404
    # The scientist's lab serves no owner endpoints.
    assert sci.call("GET", "/syftlab/plans")[0] == 404
    status, body = own.call("POST", f"/syftlab/plans/{plan.id}/approve", {"hash": plan.hash})
    assert status == 200 and body["plan"]["status"] == "approved"
    assert own.call("POST", f"/syftlab/plans/{plan.id}/revoke", {})[0] == 400
    status, body = own.call("POST", f"/syftlab/plans/{plan.id}/revoke", {"reason": "done"})
    assert status == 200 and body["plan"]["status"] == "revoked"
    assert own.call("POST", f"/syftlab/plans/{plan.id}/revoke", {"reason": "again"})[0] == 400
