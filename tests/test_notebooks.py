"""Every notebook in ``notebooks/`` runs top to bottom with nbclient against live workers.

The workers are the demo's alice and bob (``datasets/*.toml``), started as the
demo starts them but in a temporary state root on free ports.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from kernel_bridge import demo
from kernel_bridge.notebook_runner import execute, output_text
from kernel_bridge.scientist import connections

from .conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def demo_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """alice, bob and carol (the FL tutorials' third hospital) and dave (the SMPC dealer)
    from the demo configs; yields the connection file."""
    root = tmp_path_factory.mktemp("demo")
    started = demo.start_workers(demo.default_datasets(), ["alice", "bob", "carol", "dave"],
                                 state_root=root, any_port=True)
    conn = connections.write(root / "connections.json", {
        cfg.name: {"url": proc.url, "token": token, "state": str(cfg.state)}
        for proc, cfg, token in started})
    yield conn
    for proc, _, _ in started:
        proc.stop()


def cell_text(cell: Any) -> str:
    return output_text(nbformat.from_dict({"cells": [cell], "metadata": {},
                                           "nbformat": 4, "nbformat_minor": 5}))


def find_cell(nb: Any, source_start: str) -> Any:
    for c in nb.cells:
        if c.cell_type == "code" and c.source.startswith(source_start):
            return c
    raise AssertionError(f"no cell starting with {source_start!r}")


def test_notebooks_are_committed_without_outputs() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"start_here.ipynb", "01_basic_tools.ipynb",
                                           "02_remote_execution.ipynb"}
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        nbformat.validate(nb)
        for c in nb.cells:
            if c.cell_type == "code":
                assert not c.outputs and c.execution_count is None, f"{p.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, demo_workers: Path, tmp_path: Path) -> None:
    nb = execute(path, tmp_path / path.name, demo_workers, timeout=180, progress=False)
    text = output_text(nb)
    assert "Traceback" not in text or path.stem == "start_here"  # only its mock error cell
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    if path.stem == "start_here":
        check_start_here(nb)
    if path.stem == "02_remote_execution":
        assert "averaged model" in text
    if path.stem == "03_smpc":
        assert "pooled mean cholesterol: 248.59" in text
        assert "predictions match the plaintext model: True" in text
    if path.stem == "04_federated_learning":
        check_federated(nb)
    if path.stem == "05_dp_secure_fedavg":
        check_dp_secure(nb)


def check_federated(nb: Any) -> None:
    """FedAvg over three hospitals lands within 3 points of central training."""
    out = cell_text(find_cell(nb, "import pandas as pd"))
    central, fed = (float(out.split(f"{k} accuracy ")[1].split(",")[0])
                    for k in ("central", "federated"))
    assert central - fed <= 0.03, out
    assert "tensor([2., 4., 6., 8.])" in cell_text(find_cell(nb, "kb.hook_torch()"))


def check_dp_secure(nb: Any) -> None:
    out = cell_text(find_cell(nb, "with torch.no_grad()"))
    assert float(out.split("test accuracy ")[1].split()[0]) > 0.5, out
    spent = cell_text(find_cell(nb, "job.wait_approved()"))
    assert "3 round(s)" in spent

def check_start_here(nb: Any) -> None:
    private = cell_text(find_cell(nb, "%%remote alice\ns = heart"))
    assert "alice · ok" in private and "assigned s" in private and "1 output held" in private
    assert "Name: age" not in private  # the print was held
    mock = cell_text(find_cell(nb, "%%remote alice --mock\nprint"))
    assert "alice · MOCK" in mock and "patient_id" in mock  # shown in full
    both = cell_text(find_cell(nb, "%%remote alice bob\nn ="))
    assert "alice · ok" in both and "bob · ok" in both
    err = cell_text(find_cell(nb, "%%remote alice --allow-error\noldest"))
    assert "error: ValueError (line 2)" in err and "oldest patient is" not in err
    # The failed private cell re-run on mock data: the mock's message, marked MOCK.
    mock_err = cell_text(find_cell(nb, "%%remote alice --mock-on-error --allow-error\noldest"))
    assert "error: ValueError (line 2)" in mock_err
    assert "alice · MOCK re-run: ValueError: the oldest patient is" in mock_err
    owner = find_cell(nb, "# ── DATA OWNER'S SIDE")
    assert "request #" in cell_text(owner)
    released = cell_text(find_cell(nb, "req.wait"))
    assert "alice · approved" in released and "Name: age" in released
    dp_release = cell_text(find_cell(nb, "r = q.release()"))
    assert "epsilon_spent" in dp_release and "0.5" in dp_release
    assert "<DPResult mean(age) = " in dp_release and "; ε=0.50, δ=0, " in dp_release
    timeout = cell_text(find_cell(nb, "%%remote alice --timeout"))
    assert "timeout: TimeoutError" in timeout
    assert "alice · ok" in cell_text(find_cell(nb, "run = _"))
    status = cell_text(find_cell(nb, "%remote status"))
    assert "alice" in status and "bob" in status and "ping" in status


def test_connection_file_is_private(demo_workers: Path) -> None:
    assert demo_workers.stat().st_mode & 0o077 == 0  # it holds tokens
    assert set(json.loads(demo_workers.read_text())) == {"alice", "bob", "carol", "dave"}
