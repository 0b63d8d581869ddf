"""The widgets in a real JupyterLab, driven by headless Debian Chromium through Playwright.

A committed notebook (``tests/files/widgets_live.ipynb``) starts two workers and
shows the worker graph, alice's budget and her owner's approvals. The test runs
all cells, checks what the page draws, runs the DP query again and watches the
bar grow, clicks Approve, and saves screenshots under ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "tests" / "files" / "widgets_live.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]


EDGE_LABEL_CROSSINGS = """() => {
  const lines = [...document.querySelectorAll('svg.sw-graph line')].map(l =>
    ['x1', 'y1', 'x2', 'y2'].map(k => l[k].baseVal.value));
  const out = [];
  for (const t of document.querySelectorAll('svg.sw-graph .sw-edge-label')) {
    const b = t.getBBox();
    for (const [x1, y1, x2, y2] of lines) {
      for (let i = 0; i <= 200; i++) {
        const x = x1 + (x2 - x1) * i / 200, y = y1 + (y2 - y1) * i / 200;
        if (x > b.x - 1 && x < b.x + b.width + 1 && y > b.y - 1 && y < b.y + b.height + 1) {
          out.push(t.textContent);
          break;
        }
      }
    }
  }
  return out;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Lab:
    def __init__(self, url: str, token: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.token, self.proc, self.log = url, token, proc, log

    def api(self, path: str, method: str = "GET") -> object:
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """``jupyter lab`` from this venv on a free port, serving a temp dir with the notebook."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    token, port = secrets.token_hex(16), free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "OMP_NUM_THREADS": "1"}
    log = tmp_path / "lab.log"
    # No "get Jupyter news?" toast over the screenshots (there is no network here anyway).
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    argv = [sys.executable, "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1", "--allow-root",
            "--no-browser", f"--ServerApp.token={token}", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
            f"--LabApp.user_settings_dir={tmp_path / 'settings'}"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    server = Lab(f"http://127.0.0.1:{port}", token, proc, log)
    deadline = time.monotonic() + 90
    while True:
        try:
            server.api("/api/status")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not start:\n{log.read_text()[-3000:]}"
                                   ) from None
            time.sleep(0.3)
    yield server
    # Shut kernels down cleanly first: their atexit hooks stop the workers they launched.
    try:
        for k in server.api("/api/kernels"):  # type: ignore[union-attr]
            server.api(f"/api/kernels/{k['id']}", method="DELETE")
    except OSError:
        pass
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_anywidget_front_end_is_installed_in_this_environment() -> None:
    out = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"],
                         capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    for ext in ("anywidget", "@jupyter-widgets/jupyterlab-manager"):
        line = next((ln for ln in text.splitlines() if ext in ln), "")
        assert "enabled" in line and "OK" in line, text


def command(page: Page, name: str, args: dict[str, object] | None = None) -> None:
    page.evaluate("([n, a]) => window.jupyterapp.commands.execute(n, a)", [name, args or {}])


def run_cell(page: Page, index: int) -> None:
    page.evaluate("(i) => { const nb = window.jupyterapp.shell.currentWidget.content;"
                  " nb.activeCellIndex = i; }", index)
    command(page, "notebook:run-cell")


def bar_width(page: Page) -> float:
    return float(page.locator('.sw-budget-row[data-asset="heart"] .sw-bar-spent')
                 .evaluate("e => e.getBoundingClientRect().width"))


def shot(page: Page, name: str, selector: str | None = None) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    if selector:
        page.locator(selector).first.scroll_into_view_if_needed()
        page.locator(selector).first.screenshot(path=str(path))
    else:
        page.screenshot(path=str(path))
    return path


def test_notebook_shows_graph_budget_and_approvals_live(lab: Lab) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{lab.url}/lab/tree/{NOTEBOOK.name}?token={lab.token}")
            page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext"
                                   ".session && window.jupyterapp.shell.currentWidget"
                                   ".sessionContext.session.kernel", timeout=120_000)
            page.wait_for_function("window.jupyterapp.shell.currentWidget.sessionContext.session"
                                   ".kernel.status === 'idle'", timeout=120_000)
            command(page, "notebook:run-all-cells")

            # the graph: the scientist and two workers, both online, with latency on the edges
            workers = page.locator("svg.sw-graph g.sw-node[data-kind=worker]")
            workers.first.wait_for(timeout=180_000)
            page.wait_for_function(
                "document.querySelectorAll('svg.sw-graph g.sw-node[data-kind=worker]"
                "[data-status=online]').length === 2", timeout=60_000)
            assert workers.count() == 2
            labels = sorted(page.locator("svg.sw-graph g.sw-node[data-kind=worker] "
                                         ".sw-node-label").all_text_contents())
            assert labels == ["alice", "bob"]
            assert page.locator("svg.sw-graph g.sw-node[data-kind=scientist]").count() == 1
            page.wait_for_function("[...document.querySelectorAll('svg.sw-graph .sw-edge-label')]"
                                   ".some(t => t.textContent.startsWith('latency'))")

            # the budget: heart's bar, already moved once by the DP cell of "run all"
            row = page.locator('.sw-budget-row[data-asset="heart"]')
            row.wait_for(timeout=120_000)
            page.wait_for_function("document.querySelector('.sw-budget-row[data-asset=\"heart\"]')"
                                   ".dataset.spent > 0", timeout=60_000)
            # the last cell ran: run-all is over, the kernel is free for widget messages
            page.wait_for_function("window.jupyterapp.shell.currentWidget.sessionContext.session"
                                   ".kernel.status === 'idle'", timeout=120_000)
            time.sleep(1.0)  # let the bar's CSS transition settle before measuring
            before_spent = float(row.get_attribute("data-spent") or 0)
            before = bar_width(page)
            shot(page, "widgets-graph.png", "svg.sw-graph")
            # no edge label crosses an edge (any edge: sample each line against each box)
            crossings = page.evaluate(EDGE_LABEL_CROSSINGS)
            assert crossings == [], crossings
            shot(page, "widgets-budget-before.png", ".sw-budget")
            # ε as everywhere in syftlab's UI: two decimals
            budget_text = page.locator('.sw-budget-row[data-asset="heart"] .sw-budget-text')
            assert re.fullmatch(r"ε \d+\.\d\d of \d+\.\d\d spent, \d+\.\d\d left",
                                budget_text.text_content() or ""), budget_text.text_content()

            # run the DP query cell again: the bar grows
            run_cell(page, 7)
            page.wait_for_function(
                "(s) => Number(document.querySelector('.sw-budget-row[data-asset=\"heart\"]')"
                ".dataset.spent) > s", arg=before_spent, timeout=30_000)
            time.sleep(1.0)
            after = bar_width(page)
            assert after > before
            shot(page, "widgets-budget-after.png", ".sw-budget")

            # approvals: the scientist's HTML in the reason is shown as text, never run
            reason = page.locator(".sw-approvals .sw-request .sw-reason-text").first
            reason.wait_for(timeout=30_000)
            assert reason.text_content() == '<img src=x onerror="window.__pwned=1">mean age, please'
            assert page.locator(".sw-approvals img").count() == 0
            assert page.evaluate("window.__pwned") is None
            preview = page.locator(".sw-approvals .sw-request .sw-preview pre").first.text_content()
            assert preview and preview.strip()
            # the lineage: the step that produced the value first, highlighted; the mock
            # cell and the later cell folded away
            request = page.locator(".sw-approvals .sw-request").first
            target = request.locator(".sw-lineage .sw-step-target")
            assert "mean()" in (target.text_content() or "")
            assert target.is_visible()
            first_step = request.locator(".sw-lineage .sw-step").first
            assert first_step.get_attribute("class") == "sw-step sw-step-target"
            rest = request.locator(".sw-lineage details.sw-rest")
            assert rest.get_attribute("open") is None
            assert "later = 1" in (rest.text_content() or "")
            assert "print(heart.head())" in (rest.text_content() or "")
            assert not rest.locator(".sw-step").first.is_visible()
            shot(page, "widgets-approvals.png", ".sw-approvals")
            page.locator(".sw-approvals .sw-request .sw-approve").first.click()
            page.locator(".sw-approvals .sw-decided.sw-approved").first.wait_for(
                state="attached", timeout=30_000)
            page.wait_for_function("document.querySelectorAll('.sw-approvals .sw-request')"
                                   ".length === 0", timeout=30_000)
            run_cell(page, 8)  # the scientist's request now has its value
            page.wait_for_function("[...document.querySelectorAll('.jp-OutputArea-output')]"
                                   ".some(o => /^approved \\d/.test(o.textContent.trim()))",
                                   timeout=60_000)
            shot(page, "widgets-notebook.png")
        except Exception:
            shot(page, "widgets-failure.png")  # what the page showed
            raise
        finally:
            browser.close()
        assert not errors, errors
