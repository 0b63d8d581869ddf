"""The owner's ``syftlab`` command line, driving a worker started the way the README says."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import kernel_bridge as kb

from .conftest import DATASETS, ROOT


def syftlab(*args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kernel_bridge.cli", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def start_worker(*args: str, env: dict[str, str] | None = None
                 ) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "kernel_bridge.cli", "worker", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        m = re.search(r"ready at (ws://\S+)", line)
        if m:
            proc.head = "".join(seen)  # type: ignore[attr-defined]
            return proc, m.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("worker did not start")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_readme_flow_with_flags(tmp_path: Path) -> None:
    state = str(tmp_path / "alice")
    proc, url = start_worker("alice", "--port", "0", "--state", state,
                             "--asset", "heart=datasets/heart/alice.csv",
                             "--mock", "heart=datasets/heart/alice_mock.csv")
    try:
        added = syftlab("token", "add", "ana", "--state", state)
        assert added.returncode == 0
        token = added.stdout.strip()
        assert token.startswith("syft_")
        listed = syftlab("token", "list", "--state", state)
        assert "ana" in listed.stdout and token not in listed.stdout
        alice = kb.connect(url, token=token, name="alice")
        m = alice.asset("heart")["age"].mean()
        req = m.request(reason="mean age")
        out = syftlab("requests", "list", "--state", state).stdout
        assert f"#{req.id} [pending] ana" in out
        denied = syftlab("requests", "deny", str(req.id), "--reason", "too granular",
                         "--state", state)
        assert denied.returncode == 0
        with pytest.raises(kb.RequestDenied, match="too granular"):
            req.wait(10).result()
        assert "no pending requests" in syftlab("requests", "list", "--state", state).stdout
        assert f"#{req.id} [denied]" in syftlab("requests", "list", "--all",
                                                "--state", state).stdout
        audit = syftlab("audit", "--state", state).stdout
        assert "denied" in audit and "request" in audit
        assert syftlab("token", "revoke", "ana", "--state", state).returncode == 0
        alice.close()
        with pytest.raises(kb.AuthenticationError):
            kb.connect(url, token=token)
    finally:
        stop(proc)


def test_worker_from_toml(tmp_path: Path) -> None:
    state = str(tmp_path / "bob")
    proc, url = start_worker("--config", str(DATASETS / "bob.toml"), "--port", "0",
                             "--state", state)
    try:
        token = syftlab("token", "add", "ana", "--state", state).stdout.strip()
        bob = kb.connect(url, token)
        names = {d["name"]: d for d in bob.datasets}
        # risk_model: HE predictions only; ecg_model: the SMPC tutorial's model; digits: FL
        assert set(names) == {"heart", "risk_model", "ecg_model", "digits"}
        assert names["heart"]["rows"] is None  # bob's policy hides row counts
        assert bob.send(torch.ones(2)).sum().get().item() == 2.0
        bob.close()
    finally:
        stop(proc)


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    r = syftlab("worker", "x", "--state", str(tmp_path), "--asset", "heart")
    assert r.returncode == 2 and "NAME=PATH" in r.stderr
    r = syftlab("worker", "x", "--state", str(tmp_path), "--asset", "h=/nonexistent.csv",
                "--mock", "h=datasets/heart/alice_mock.csv")
    assert r.returncode == 2 and "nonexistent" in r.stderr
    r = syftlab("requests", "approve", "99", "--state", str(tmp_path))
    assert r.returncode == 2 and "no request 99" in r.stderr


def test_no_sandbox_means_no_private_kernel_unless_unsafe(tmp_path: Path) -> None:
    """Without bubblewrap, kernels do not start unless the owner says --unsafe-no-sandbox."""
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no bwrap on PATH
    state = str(tmp_path / "nobox")
    proc, url = start_worker("nobox", "--port", "0", "--state", state, env=env)
    try:
        token = syftlab("token", "add", "ana", "--state", state).stdout.strip()
        w = kb.connect(url, token)
        with pytest.raises(kb.SyftError, match="unsafe-no-sandbox"):
            w.send(1)
        w.close()
    finally:
        stop(proc)
    proc, url = start_worker("nobox", "--port", "0", "--state", state, "--unsafe-no-sandbox",
                             env=env)
    try:
        w = kb.connect(url, syftlab("token", "add", "ana", "--state", state).stdout.strip())
        assert w.send(1).get() == 1
        w.close()
    finally:
        stop(proc)
    assert "UNSAFE" in proc.head  # type: ignore[attr-defined]


def test_python_dash_m_kernel_bridge_is_the_cli(tmp_path: Path) -> None:
    """``python -m kernel_bridge`` runs the same command as ``python -m kernel_bridge.cli``."""
    state = str(tmp_path / "alice")
    added = subprocess.run([sys.executable, "-m", "kernel_bridge", "token", "add", "ana",
                            "--state", state], capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert len(token) >= 20
    listed = syftlab("token", "list", "--state", state)
    assert listed.returncode == 0 and "ana" in listed.stdout and token not in listed.stdout
    bad = subprocess.run([sys.executable, "-m", "kernel_bridge", "nosuchcommand"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
