"""The JupyterLab extension in a real headless Chromium (Debian's), driven by Playwright.

Two real JupyterLab servers: the scientist's (connections file naming a live
worker) and the owner's (``c.Syftlab.owner_state`` = that worker's state).
The scientist's notebook cells use ``kernel_bridge`` directly; the owner
decides by clicking in the Approvals panel. Screenshots go to
``test-artifacts/lab/``.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DATASETS, ROOT
from labserver import LabServer, free_port
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page, expect, sync_playwright

import kernel_bridge as kb

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
FILES = Path(__file__).parent / "files"
SHOTS = ROOT / "test-artifacts" / "lab"
HOSTILE_REASON = ('mean age <img src=x onerror="window.__pwned=\'reason\'">'
                  '<b>for the report</b>')
HOSTILE_CODE = "<script>window.__pwned = 'code'</script>"

pytestmark = pytest.mark.timeout(900)



def settled(loc: Locator, js: str, ok: Callable[[Any], bool], timeout: float = 15.0) -> Any:
    """``js`` evaluated on ``loc`` once ``ok`` holds, or its last value after ``timeout``.

    The sidebar and the panel re-render as they poll (every 2 s): a single read can
    catch a node while it is replaced (a computed style of ''), so read until settled.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = loc.evaluate(js)
        except PlaywrightError:  # detached mid-read
            value = None
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)

@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kb.Worker]:
    w = kb.launch("alice", config=DATASETS / "alice.toml",
                  state=tmp_path_factory.mktemp("ui-state") / "alice", scientist="ana")
    yield w
    w.close()


@pytest.fixture(scope="module")
def labs(worker: kb.Worker, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[LabServer, LabServer]]:
    base = tmp_path_factory.mktemp("ui-labs")
    sci_root = base / "scientist"
    sci_root.mkdir()
    for nb in FILES.glob("lab_*.ipynb"):
        shutil.copy(nb, sci_root / nb.name)
    conns = [{"name": "alice", "url": worker.process.url, "token": worker.token},  # type: ignore[attr-defined]
             {"name": "zed", "url": f"ws://127.0.0.1:{free_port()}", "token": "syft_none"}]
    (sci_root / "connections.json").write_text(json.dumps(conns))
    sci = LabServer(sci_root, {"connections_file": str(sci_root / "connections.json")})
    own = LabServer(base / "owner", {"owner_state": str(worker.process.state)})
    for lab in (sci, own):
        lab.argv.append("--LabApp.expose_app_in_browser=True")
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


def open_lab(browser: Any, lab: LabServer, path: str = "lab") -> Page:
    page = browser.new_page(viewport={"width": 1500, "height": 950})
    page.on("dialog", lambda d: d.dismiss())
    # ?reset: a fresh workspace, so notebooks of earlier tests are not restored beside this one.
    page.goto(f"{lab.url}/{path}?reset&token={lab.token}")
    page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
    return page


def run_command(page: Page, command: str, args: dict[str, Any] | None = None) -> None:
    """Start a JupyterLab command; does not wait for it (run-all waits on the cells)."""
    page.evaluate("([c, a]) => { void window.jupyterapp.commands.execute(c, a); }",
                  [command, args or {}])


KERNEL_IDLE = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle';
}"""


def wait_kernel_idle(page: Page) -> None:
    """Focus the notebook in front (commands act on it) and wait for its kernel."""
    notebook(page).locator(".jp-Cell").first.click()
    page.wait_for_function(KERNEL_IDLE, timeout=120_000)


def open_sidebar(page: Page) -> None:
    """Show the Remote data sidebar (clicking its tab again would hide it)."""
    if not page.locator(".syftlab-sidebar").is_visible():
        page.locator(".jp-SideBar [data-id='syftlab-remote-data']").click()
    expect(page.locator(".syftlab-sidebar")).to_be_visible()


@pytest.fixture
def pages(request: pytest.FixtureRequest) -> Iterator[list[Page]]:
    """Pages a test opens; screenshotted as ``FAILED-*`` if the test fails."""
    opened: list[Page] = []
    yield opened
    rep = getattr(request.node, "rep_call", None)
    for i, page in enumerate(opened):
        if rep is not None and rep.failed and not page.is_closed():
            shot(page, f"FAILED-{request.node.name}-{i}")
        if not page.is_closed():
            page.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def notebook(page: Page) -> Any:
    """The notebook panel in front (a restored workspace may hold others)."""
    return page.locator(".jp-NotebookPanel:visible")


def test_sidebar_lists_datasets_and_inserts_a_remote_cell(
        labs: tuple[LabServer, LabServer], browser: Any, pages: list[Page]) -> None:
    sci, _ = labs
    page = open_lab(browser, sci, "lab/tree/lab_snippet.ipynb")
    pages.append(page)
    open_sidebar(page)
    side = page.locator(".syftlab-sidebar")
    worker_box = side.locator(".syftlab-worker[data-worker='alice']")
    expect(worker_box.locator(".syftlab-worker-state")).to_contain_text("online", timeout=60_000)
    expect(worker_box.locator(".syftlab-dataset[data-asset='heart']")).to_be_visible()
    # A worker that is not running is listed as offline (no datasets).
    zed = side.locator(".syftlab-worker[data-worker='zed']")
    expect(zed.locator(".syftlab-worker-state")).to_have_text("offline")
    expect(zed.locator(".syftlab-dataset")).to_have_count(0)
    expect(worker_box.locator(".syftlab-dataset[data-asset='ecg']")).to_be_visible()
    heart = worker_box.locator(".syftlab-dataset[data-asset='heart']")
    expect(heart).to_contain_text("Cardiology outpatients")
    cells = notebook(page).locator(".jp-Cell")
    expect(cells).to_have_count(3)
    # The row opens the details, with a visible disclosure arrow; it inserts nothing.
    arrow = heart.locator("summary .syftlab-disclosure")
    before = "e => getComputedStyle(e, '::before')"
    assert settled(arrow, f"{before}.content", lambda v: v == '"\u25b8"') == '"\u25b8"'
    name = heart.locator(".syftlab-dataset-name")
    decoration = settled(name, "e => getComputedStyle(e).textDecorationLine",
                         lambda v: v == "none")
    assert decoration == "none"  # no fake link
    name.click()
    expect(heart).to_have_attribute("open", "")
    expect(arrow).to_be_visible()
    # Open: the arrow turns (a rotation matrix instead of no transform).
    turned = settled(arrow, f"{before}.transform", lambda v: str(v).startswith("matrix("))
    assert str(turned).startswith("matrix(")
    expect(heart.locator(".syftlab-schema")).to_contain_text("age")
    expect(cells).to_have_count(3)  # opening details inserted no cell
    # The mock preview shows every column: it scrolls sideways instead of being cut.
    scroll = heart.locator(".syftlab-scroll")
    preview = scroll.locator(".syftlab-preview")
    expect(preview).to_contain_text("patient_id")
    headers = preview.locator("th").all_text_contents()
    assert headers[-1] == "target" and len(headers) == 10, headers
    wide = scroll.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert wide[0] > wide[1], wide  # wider than the sidebar: scrollable
    shot(page, "1-sidebar-details")
    scroll.evaluate("e => { e.scrollLeft = e.scrollWidth; }")
    last = preview.locator("th").last
    box, view = last.bounding_box(), scroll.bounding_box()
    assert box and view and box["x"] + box["width"] <= view["x"] + view["width"] + 1
    shot(page, "2-sidebar-preview-scrolled")
    # Inserting is the explicit button: below the active cell, never above the connect cell.
    insert = heart.locator(".syftlab-insert")
    unfilled = (None, "", "rgba(0, 0, 0, 0)", "rgb(255, 255, 255)")
    fill = settled(insert, "e => getComputedStyle(e).backgroundColor",
                   lambda v: v not in unfilled)
    assert fill not in unfilled  # a filled, enabled-looking button
    page.evaluate("() => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = 0; }")
    insert.click()
    expect(cells).to_have_count(4)
    expect(cells.nth(2)).to_contain_text("%%remote alice")  # below the connect cell (1)
    cells.nth(3).click()  # the last cell is active now
    insert.click()
    expect(cells).to_have_count(5)
    expect(cells.nth(4)).to_contain_text("%%remote alice")
    shot(page, "3-sidebar-inserted")
    # The inserted cell, as saved: a %%remote cell that uses the asset by name.
    run_command(page, "docmanager:save")
    saved = sci.root / "lab_snippet.ipynb"
    expect(page.locator(".jp-mod-dirty")).to_have_count(0, timeout=30_000)
    source = "".join(json.loads(saved.read_text())["cells"][2]["source"])
    assert source.startswith("%%remote alice\n# heart: Cardiology outpatients")
    assert "summary = heart.describe()" in source


def test_owner_approves_and_denies_by_clicking(
        labs: tuple[LabServer, LabServer], browser: Any, worker: kb.Worker,
        pages: list[Page]) -> None:
    sci, own = labs
    spage = open_lab(browser, sci, "lab/tree/lab_requests.ipynb")
    pages.append(spage)
    expect(notebook(spage).locator(".jp-Cell")).to_have_count(3, timeout=60_000)
    wait_kernel_idle(spage)
    run_command(spage, "notebook:run-all-cells")
    cells = notebook(spage).locator(".jp-Cell")
    expect(cells.nth(1).locator(".jp-OutputArea")).to_contain_text("REQUESTED", timeout=120_000)

    opage = open_lab(browser, own)
    pages.append(opage)
    card = opage.locator(".syftlab-card").filter(has_text="mean age")
    expect(card).to_have_count(1, timeout=60_000)
    # Scientist-written markup is shown as text, never run or rendered.
    expect(card.locator(".syftlab-reason")).to_have_text(HOSTILE_REASON)
    expect(card.locator(".syftlab-lineage")).to_contain_text(HOSTILE_CODE)
    assert card.locator("img, script, b").count() == 0
    assert opage.evaluate("window.__pwned === undefined")
    expect(card.locator(".syftlab-code .cm-comment").first).to_be_visible()  # highlighted
    snapshot_text = card.locator(".syftlab-snapshot").inner_text().strip()
    assert re.fullmatch(r"[0-9]+\.[0-9]+", snapshot_text), snapshot_text
    # Approve and Deny look like buttons one can press (filled), not greyed out.
    bg = "e => getComputedStyle(e).backgroundColor"
    approve_bg = settled(card.locator(".syftlab-approve"), bg, lambda v: bool(v))
    deny_bg = settled(card.locator(".syftlab-deny"), bg, lambda v: bool(v))
    assert approve_bg != deny_bg and "rgba(0, 0, 0, 0)" not in (approve_bg, deny_bg)
    shot(opage, "3-owner-pending")

    card.locator(".syftlab-approve").click()
    expect(card).to_have_count(0, timeout=30_000)
    result = cells.nth(1).locator(".jp-OutputArea")
    expect(result).to_contain_text("RESULT", timeout=120_000)
    value = re.search(r"RESULT ([0-9.]+)", result.inner_text()).group(1)  # type: ignore[union-attr]
    owner = kb.Owner(worker.process.state)
    try:
        approved = [r for r in owner.requests(None) if r.reason == HOSTILE_REASON]
        assert [r.status for r in approved] == ["approved"]
        # The scientist received exactly the held output the owner saw.
        assert owner.value(approved[0].id)[0]["content"]["text"] == value + "\n"
    finally:
        owner.close()
    shot(spage, "4-scientist-received")

    card2 = opage.locator(".syftlab-card").filter(has_text="max cholesterol")
    expect(card2).to_have_count(1, timeout=120_000)
    deny = card2.locator(".syftlab-deny")
    expect(deny).to_be_disabled()  # a denial needs a reason
    card2.locator(".syftlab-deny-reason").fill("per-patient maxima identify people; use DP")
    shot(opage, "5-owner-deny")
    deny.click()
    expect(card2).to_have_count(0, timeout=30_000)
    denied = cells.nth(2).locator(".jp-OutputArea")
    expect(denied).to_contain_text("DENIED:", timeout=120_000)
    expect(denied).to_contain_text("per-patient maxima identify people; use DP", timeout=120_000)
    # The sidebar shows both requests with their status, and the owner's reason.
    open_sidebar(spage)
    reqs = spage.locator(".syftlab-sidebar .syftlab-request")
    expect(reqs.filter(has_text="max cholesterol")).to_contain_text(
        "per-patient maxima identify people; use DP", timeout=30_000)
    expect(reqs.filter(has_text="max cholesterol")).to_contain_text("denied")
    expect(reqs.filter(has_text="mean age")).to_contain_text("approved")
    assert spage.evaluate("window.__pwned === undefined")
    shot(spage, "6-scientist-denied")

    opage.locator(".syftlab-tab[data-tab='history']").click()
    hist = opage.locator(".syftlab-history-table")
    expect(hist).to_contain_text("per-patient maxima identify people; use DP", timeout=30_000)
    expect(hist).to_contain_text(HOSTILE_REASON)
    assert hist.locator("img").count() == 0 and opage.evaluate("window.__pwned === undefined")
    shot(opage, "7-owner-history")


def status_epsilon(page: Page, asset: str = "heart") -> float | None:
    text = page.locator(".syftlab-status-budget").inner_text()
    m = re.search(rf"alice: .*\b{asset} ([0-9.]+)", text)
    return float(m.group(1)) if m else None


def test_status_bar_epsilon_drops_after_a_dp_query(
        labs: tuple[LabServer, LabServer], browser: Any, worker: kb.Worker,
        pages: list[Page]) -> None:
    sci, own = labs
    before = worker.budget()["heart"]["epsilon_remaining"]
    spage = open_lab(browser, sci, "lab/tree/lab_dp.ipynb")
    pages.append(spage)
    expect(notebook(spage).locator(".jp-Cell")).to_have_count(2, timeout=60_000)
    wait_kernel_idle(spage)
    # The cells name alice, but the kernel is not connected yet: the status bar asks the
    # kernel, it does not guess from the words in the cells.
    status = spage.locator(".syftlab-status-budget")
    expect(status).to_have_text("ε: no workers connected in this notebook", timeout=30_000)
    shot(spage, "8-status-not-connected")
    spage.evaluate("() => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = 0; }")
    run_command(spage, "notebook:run-cell")
    cells = notebook(spage).locator(".jp-Cell")
    expect(cells.nth(0).locator(".jp-OutputArea")).to_contain_text("CONNECTED", timeout=120_000)
    expect(status).to_have_text(re.compile(r"^ε left alice: .*heart \d+\.\d\d$"),
                                timeout=30_000)
    assert status_epsilon(spage) == pytest.approx(before, abs=5e-3)
    assert "zed" not in status.inner_text()  # in the connections file, not in this kernel
    shot(spage, "8-status-before-dp")
    spage.evaluate("() => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = 1; }")
    run_command(spage, "notebook:run-cell")
    expect(cells.nth(1).locator(".jp-OutputArea")).to_contain_text("DP ", timeout=120_000)
    after = worker.budget()["heart"]["epsilon_remaining"]
    assert after == pytest.approx(before - 0.2)
    spage.wait_for_function(
        f"() => {{ const m = /alice: .*heart ([0-9.]+)/.exec("
        f"document.querySelector('.syftlab-status-budget').textContent);"
        f" return m && Math.abs(parseFloat(m[1]) - {after}) < 5e-3; }}", timeout=30_000)
    assert status_epsilon(spage) < before  # type: ignore[operator]
    shot(spage, "9-status-after-dp")
    # The sidebar's remaining ε for heart, and the owner's ledger, show the same spend.
    open_sidebar(spage)
    expect(spage.locator(".syftlab-dataset[data-asset='heart'] .syftlab-eps")).to_contain_text(
        f"ε left {after:.2f}", timeout=30_000)
    opage = open_lab(browser, own)
    pages.append(opage)
    opage.locator(".syftlab-tab[data-tab='budget']").click()
    row = opage.locator(".syftlab-ledger tr").filter(has_text="ana").filter(has_text="heart")
    expect(row).to_contain_text("0.20", timeout=30_000)  # ε: two decimals, as everywhere
    assert re.search(r"\b3\.00\b", row.inner_text())  # the limit, not "3" or "3.000"
    shot(opage, "10-owner-ledger")


def test_owner_panel_shows_the_producing_step_first_and_folds_the_rest(
        labs: tuple[LabServer, LabServer], browser: Any, worker: kb.Worker,
        pages: list[Page]) -> None:
    _, own = labs
    worker.run("print(heart.head())", mock=True)           # mock: folded
    worker.run("young = heart[heart.age < 40]")             # led to the value
    m = worker.vars["young"]["age"].mean()                  # the requested value
    worker.run("later = 1")                                 # after it: folded
    req = m.request("lineage: mean age of the under-40s")
    opage = open_lab(browser, own)
    pages.append(opage)
    try:
        card = opage.locator(".syftlab-card").filter(has_text="lineage: mean age")
        expect(card).to_have_count(1, timeout=60_000)
        lin = card.locator(".syftlab-lineage")
        first = lin.locator(".syftlab-step").first
        expect(first).to_have_class(re.compile(r"\bsyftlab-step-target\b"))
        expect(first).to_contain_text(".mean()")
        expect(lin.locator(".syftlab-label").first).to_have_text("Requested value, produced by")
        border = settled(first, "e => getComputedStyle(e).borderLeftWidth",
                         lambda v: v == "4px")
        assert border == "4px"  # highlighted
        leading = lin.locator("details.syftlab-leading")
        expect(leading).to_have_attribute("open", "")
        expect(leading).to_contain_text("young = heart[heart.age < 40]")
        assert first.bounding_box()["y"] < leading.bounding_box()["y"]  # type: ignore[index]
        rest = lin.locator("details.syftlab-rest")
        assert rest.get_attribute("open") is None
        later = rest.locator(".syftlab-step").filter(has_text="later = 1")
        mock = rest.locator(".syftlab-step").filter(has_text="print(heart.head())")
        expect(later).to_be_hidden()
        expect(rest.locator("summary")).to_contain_text("more steps (later steps, mock kernel)")
        card.scroll_into_view_if_needed()
        shot(opage, "11-owner-lineage")
        rest.locator("summary").click()
        expect(later).to_be_visible()
        expect(mock).to_contain_text("· mock")
        shot(opage, "12-owner-lineage-unfolded")
    finally:
        owner = kb.Owner(worker.process.state)
        owner.deny(req.id, "test over")
        owner.close()


def test_receipt_request_button_asks_for_a_reason_and_makes_the_request(
        labs: tuple[LabServer, LabServer], browser: Any, worker: kb.Worker,
        pages: list[Page]) -> None:
    sci, _ = labs
    page = open_lab(browser, sci, "lab/tree/lab_receipt.ipynb")
    pages.append(page)
    expect(notebook(page).locator(".jp-Cell")).to_have_count(2, timeout=60_000)
    wait_kernel_idle(page)
    run_command(page, "notebook:run-all-cells")
    out = notebook(page).locator(".jp-Cell").nth(1).locator(".jp-OutputArea")
    receipt = out.locator(".syftlab-receipt")
    expect(receipt).to_contain_text("alice · ok", timeout=120_000)
    expect(receipt).to_contain_text("1 output held")
    button = receipt.locator("button.syftlab-request-button")
    expect(button).to_be_enabled()
    unfilled = (None, "", "rgba(0, 0, 0, 0)", "rgb(255, 255, 255)")
    fill = settled(button, "e => getComputedStyle(e).backgroundColor",
                   lambda v: v not in unfilled)
    assert fill not in unfilled
    shot(page, "15-receipt-request-button")
    button.click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("Ask alice to release this output")
    dialog.locator("input").fill("mean age, from the request button")
    shot(page, "16-receipt-request-reason")
    dialog.locator("button.jp-mod-accept").click()
    msg = receipt.locator(".syftlab-request-msg")
    expect(msg).to_have_text(re.compile(r"^requested #\d+ \(pending\)$"), timeout=60_000)
    expect(button).to_have_count(0)
    rid = int(re.search(r"#(\d+)", msg.inner_text()).group(1))  # type: ignore[union-attr]
    owner = kb.Owner(worker.process.state)
    try:
        r = owner.request(rid)
        assert r.status == "pending" and r.reason == "mean age, from the request button"
        assert r.scientist == "ana"
        owner.deny(rid, "test over")
    finally:
        owner.close()
    shot(page, "17-receipt-requested")
