"""The demo's two JupyterLabs in headless Chromium: each keeps its own workspace.

The scientist opens ``start_here.ipynb``; the owner's Lab must not reopen it (or
start a kernel on it) from a shared workspace, and the notebook must not be
marked modified just by opening it. Screenshots go to ``test-artifacts/lab/``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from .conftest import ROOT
from .test_demo import make_env, wait_for

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SHOTS = ROOT / "test-artifacts" / "lab"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Path]]:
    root = tmp_path_factory.mktemp("demo-ui") / "demo"
    log = open(root.parent / "demo.out", "wb")
    # HOME too: a Lab falling back to ~/.jupyter would share it with the other one.
    home = root.parent / "home"
    home.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kernel_bridge.cli", "demo", "--state-root", str(root),
         "--any-port", "--lab-port", "0"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**make_env(), "HOME": str(home)}, start_new_session=True)
    try:
        info = wait_for(root / "demo.json", "ready", proc, timeout=240)
        yield info, root
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_each_lab_has_its_own_workspace_and_start_here_opens_clean(
        demo: tuple[dict[str, Any], Path]) -> None:
    info, root = demo
    base, token = info["lab"]["url"].split("/lab?token=")
    obase, otoken = info["owner_lab"]["url"].split("/lab?token=")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            page.goto(f"{base}/lab/tree/start_here.ipynb?token={token}")
            panel = page.locator(".jp-NotebookPanel:visible")
            expect(panel).to_have_count(1, timeout=120_000)
            # The kernel starts (our kernelspec) and the notebook stays unmodified.
            deadline = time.monotonic() + 120
            while not any(k["execution_state"] == "idle"
                          for k in get(f"{base}/api/kernels?token={token}")):
                assert time.monotonic() < deadline, "the notebook's kernel did not start"
                time.sleep(1)
            expect(page.locator(".jp-Toolbar-kernelName")).to_contain_text(
                "Python 3 (ipykernel)", timeout=60_000)
            time.sleep(3)  # metadata updates after the kernel's info reply land by now
            tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab").filter(
                has_text="start_here.ipynb")
            assert "jp-mod-dirty" not in (tab.get_attribute("class") or "")
            page.screenshot(path=str(SHOTS / "13-demo-scientist-start-here.png"))
            # JupyterLab saves the open notebook in the scientist's workspace ...
            deadline = time.monotonic() + 60
            while "start_here.ipynb" not in json.dumps(
                    get(f"{base}/lab/api/workspaces?token={token}")):
                assert time.monotonic() < deadline, "the scientist's workspace was not saved"
                time.sleep(1)
            saved = list((root / "lab-scientist" / "workspaces").glob("*"))
            assert saved and any("start_here" in f.read_text() for f in saved)
            # ... and the owner's Lab, opened after, shows its Approvals panel only.
            opage = browser.new_page(viewport={"width": 1500, "height": 950})
            opage.goto(f"{obase}/lab?token={otoken}")
            expect(opage.locator(".syftlab-approvals")).to_be_visible(timeout=120_000)
            time.sleep(3)
            expect(opage.locator(".jp-NotebookPanel")).to_have_count(0)
            assert get(f"{obase}/api/sessions?token={otoken}") == []
            assert get(f"{obase}/api/kernels?token={otoken}") == []
            assert "start_here" not in json.dumps(
                get(f"{obase}/lab/api/workspaces?token={otoken}"))
            opage.screenshot(path=str(SHOTS / "14-demo-owner-lab.png"))
        finally:
            browser.close()
