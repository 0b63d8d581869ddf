"""The server extension's handlers on real JupyterLab servers and a real worker.

Owner side on alice's state directory, scientist side with a connections file
naming alice (live) and a worker that is not running. Every endpoint refuses
calls without the server's token; bad input gets a 4xx JSON error and changes
nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import DATASETS
from labserver import BIN, LabServer, free_port

import kernel_bridge as kb

OWNER_PATHS = ["/syftlab/info", "/syftlab/requests", "/syftlab/requests/1", "/syftlab/ledger"]
SCIENTIST_PATHS = ["/syftlab/info", "/syftlab/workers", "/syftlab/budget"]


@pytest.fixture(scope="module")
def owner_lab(alice: kb.Worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    # Started the documented way: `syftlab lab --owner-state DIR -- <jupyter lab flags>`.
    lab = LabServer(tmp_path_factory.mktemp("owner-lab") / "root", {},
                    launcher=[str(BIN / "syftlab"), "lab", "--owner-state",
                              str(alice.process.state), "--"]).start()
    yield lab
    lab.stop()


@pytest.fixture(scope="module")
def scientist_lab(alice: kb.Worker, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[LabServer]:
    root = tmp_path_factory.mktemp("sci-lab") / "root"
    root.mkdir()
    conns = [{"name": "alice", "url": alice.process.url, "token": alice.token},  # type: ignore[attr-defined]
             {"name": "zed", "url": f"ws://127.0.0.1:{free_port()}", "token": "syft_x"}]
    (root / "connections.json").write_text(json.dumps(conns))
    lab = LabServer(root, {"connections_file": str(root / "connections.json")}).start()
    yield lab
    lab.stop()


@pytest.fixture
def held(session: kb.Worker) -> Callable[[str], kb.Request]:
    """Make a pending request for the mean age of heart, with a given reason."""
    def make(reason: str) -> kb.Request:
        return session.asset("heart")["age"].mean().request(reason)
    return make


@pytest.mark.parametrize("path", OWNER_PATHS)
def test_owner_refuses_unauthenticated(owner_lab: LabServer, path: str) -> None:
    assert owner_lab.call("GET", path, token=None)[0] == 403
    assert owner_lab.call("GET", path, token="wrong-" + owner_lab.token)[0] == 403


@pytest.mark.parametrize("path", SCIENTIST_PATHS)
def test_scientist_refuses_unauthenticated(scientist_lab: LabServer, path: str) -> None:
    status, body = scientist_lab.call("GET", path, token=None)
    assert status == 403
    assert "alice" not in json.dumps(body)


def test_unauthenticated_decisions_change_nothing(owner_lab: LabServer, owner: kb.Owner,
                                                  held: Callable[[str], kb.Request]) -> None:
    req = held("unauthenticated approve attempt")
    for action, body in (("approve", {}), ("deny", {"reason": "no"})):
        status, _ = owner_lab.call("POST", f"/syftlab/requests/{req.id}/{action}", body,
                                   token=None)
        assert status == 403
    assert owner.request(req.id).status == "pending"
    assert req.refresh().status == "pending"


def test_owner_lists_previews_and_approves(owner_lab: LabServer, owner: kb.Owner,
                                           held: Callable[[str], kb.Request]) -> None:
    req = held("mean age for the report")
    status, body = owner_lab.call("GET", "/syftlab/requests?status=pending")
    assert status == 200
    mine = [r for r in body["requests"] if r["id"] == req.id]
    assert mine and mine[0]["reason"] == "mean age for the report"
    assert mine[0]["scientist"] == req.worker.scientist and mine[0]["status"] == "pending"

    status, body = owner_lab.call("GET", f"/syftlab/requests/{req.id}")
    assert status == 200
    detail = body["request"]
    assert "mean" in detail["code"] and "asset" in detail["code"]
    assert detail["preview"]["kind"] == "text"
    assert float(detail["preview"]["text"]) == pytest.approx(float(owner.value(req.id)))

    status, body = owner_lab.call("POST", f"/syftlab/requests/{req.id}/approve", {})
    assert status == 200 and body["request"]["status"] == "approved"
    assert req.wait(30).status == "approved"
    assert req.result() == pytest.approx(float(owner.value(req.id)))
    history = owner_lab.call("GET", "/syftlab/requests?status=history")[1]["requests"]
    assert history[0]["id"] == req.id and history[0]["status"] == "approved"
    pending = owner_lab.call("GET", "/syftlab/requests")[1]["requests"]
    assert req.id not in [r["id"] for r in pending]


def test_deny_needs_a_reason_and_reaches_the_scientist(
        owner_lab: LabServer, owner: kb.Owner, held: Callable[[str], kb.Request]) -> None:
    req = held("per-patient ages please")
    for body in ({}, {"reason": "   "}, {"reason": 7}):
        status, err = owner_lab.call("POST", f"/syftlab/requests/{req.id}/deny", body)
        assert status == 400 and "reason" in err["message"]
    assert owner.request(req.id).status == "pending"
    status, body = owner_lab.call("POST", f"/syftlab/requests/{req.id}/deny",
                                  {"reason": "too granular: aggregate by decade"})
    assert status == 200 and body["request"]["status"] == "denied"
    req.wait(30)
    with pytest.raises(kb.RequestDenied, match="too granular: aggregate by decade"):
        req.result()
    # A decided request cannot be decided again.
    status, err = owner_lab.call("POST", f"/syftlab/requests/{req.id}/approve", {})
    assert 400 <= status < 500 and err["message"]
    assert owner.request(req.id).status == "denied"


@pytest.mark.parametrize(("method", "path", "raw", "status"), [
    ("GET", "/syftlab/requests/abc", None, 400),
    ("GET", "/syftlab/requests/987654", None, 404),
    ("GET", "/syftlab/requests?status=everything", None, 400),
    ("POST", "/syftlab/requests/987654/approve", b"{}", 404),
    ("POST", "/syftlab/requests/1/deny", b"not json", 400),
    ("POST", "/syftlab/requests/1/deny", b"[1, 2]", 400),
    ("GET", "/syftlab/workers", None, 404),  # a scientist's endpoint on the owner's lab
])
def test_owner_bad_input_gets_json_errors(owner_lab: LabServer, method: str, path: str,
                                          raw: bytes | None, status: int) -> None:
    got, body = owner_lab.call(method, path, raw=raw)
    assert got == status
    assert isinstance(body, dict) and body["message"]


def test_reason_and_code_come_back_as_json_data(owner_lab: LabServer,
                                                session: kb.Worker) -> None:
    hostile = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    session.run(f"x = heart.age.mean()  # {hostile}")
    req = session.vars["x"].request(hostile)
    status, body = owner_lab.call("GET", f"/syftlab/requests/{req.id}")
    assert status == 200 and body["request"]["reason"] == hostile
    assert hostile in body["request"]["code"]


def test_owner_ledger_and_info(owner_lab: LabServer, owner: kb.Owner,
                               session: kb.Worker) -> None:
    assert owner_lab.call("GET", "/syftlab/info")[1] == {
        "side": "owner", "state": str(Path(owner.store.dir))}
    session.asset("heart").dp.mean("age", epsilon=0.25).release()
    status, body = owner_lab.call("GET", "/syftlab/ledger")
    assert status == 200 and body["available"]
    rows = {(r["scientist"], r["asset"]): r for r in body["ledger"]}
    mine = rows[(session.scientist, "heart")]
    assert mine["epsilon_spent"] == pytest.approx(0.25)
    assert mine["epsilon_remaining"] == pytest.approx(mine["epsilon_limit"] - 0.25)
    assert rows[(None, "heart")]["epsilon_spent"] >= 0.25
    assert body["ledger"] == json.loads(json.dumps(owner.budget()))


def test_scientist_lists_workers(scientist_lab: LabServer, alice: kb.Worker) -> None:
    req = alice.asset("heart")["age"].max().request("sidebar listing check")
    status, body = scientist_lab.call("GET", "/syftlab/workers")
    assert status == 200
    by_name = {w["name"]: w for w in body["workers"]}
    a, z = by_name["alice"], by_name["zed"]
    assert a["online"] and a["latency_ms"] > 0 and a["error"] is None
    assert {d["name"] for d in a["datasets"]} >= {"heart", "ecg", "secret"}
    heart = next(d for d in a["datasets"] if d["name"] == "heart")
    assert "age" in [c["name"] for c in heart["schema"]["columns"]]
    # The first rows of the mock, not of the private data.
    mock = pd.read_csv(DATASETS / "heart" / "alice_mock.csv").head(5)
    assert heart["mock_preview"] == json.loads(mock.to_json(orient="records"))
    assert req.id in [r["id"] for r in a["requests"]]
    assert a["budget"]["heart"] == alice.budget()["heart"]
    assert not z["online"] and z["error"] and z["datasets"] == []
    # Nothing private rides along: the planted secret is not in the listing.
    from conftest import PLANTED_NUMBER, PLANTED_TEXT
    assert PLANTED_TEXT not in json.dumps(body) and str(PLANTED_NUMBER) not in json.dumps(body)


def test_scientist_budget_and_side(scientist_lab: LabServer) -> None:
    assert scientist_lab.call("GET", "/syftlab/info")[1] == {"side": "scientist"}
    status, body = scientist_lab.call("GET", "/syftlab/budget?workers=alice,zed")
    assert status == 200 and set(body["budget"]) == {"alice", "zed"}
    assert body["budget"]["zed"] is None  # offline
    heart = body["budget"]["alice"]["heart"]
    assert heart["epsilon_remaining"] == pytest.approx(
        heart["epsilon_limit"] - heart["epsilon_spent"])
    only = scientist_lab.call("GET", "/syftlab/budget?workers=alice")[1]["budget"]
    assert set(only) == {"alice"}
    got, err = scientist_lab.call("GET", "/syftlab/requests")
    assert got == 404 and "scientist side" in err["message"]


def test_bad_connections_file_is_a_json_error(alice: kb.Worker, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "c.json").write_text('[{"name": "alice"}]')
    lab = LabServer(root, {"connections_file": str(root / "c.json")}).start()
    try:
        status, err = lab.call("GET", "/syftlab/workers")
        assert status == 400 and "name, url and token" in err["message"]
    finally:
        lab.stop()


def test_a_silent_worker_does_not_hold_the_listing(alice: kb.Worker, tmp_path: Path) -> None:
    """A worker that accepts TCP but never answers (not refused): the listing stays fast."""
    import socket
    import threading
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:  # accept and say nothing, like a host that swallows the handshake
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])
            except OSError:
                pass

    threading.Thread(target=hold, daemon=True).start()
    root = tmp_path / "root"
    root.mkdir()
    conns = [{"name": "alice", "url": alice.process.url, "token": alice.token},  # type: ignore[attr-defined]
             {"name": "mute", "url": f"ws://127.0.0.1:{silent.getsockname()[1]}",
              "token": "syft_x"}]
    (root / "connections.json").write_text(json.dumps(conns))
    lab = LabServer(root, {"connections_file": str(root / "connections.json"),
                           "connect_timeout": 2.0, "retry_after": 30.0}).start()
    try:
        def listing() -> tuple[float, dict[str, Any]]:
            t = time.monotonic()
            status, body = lab.call("GET", "/syftlab/workers")
            assert status == 200, body
            return time.monotonic() - t, {w["name"]: w for w in body["workers"]}

        took, first = listing()
        assert took < 2.0, took  # not the connect timeout, let alone 30 s
        assert first["alice"]["online"] and not first["mute"]["online"]
        assert first["mute"]["pending"]
        time.sleep(2.5)  # the background attempt gives up after connect_timeout
        took, second = listing()
        assert took < 2.0, took
        assert "WorkerUnreachable" in second["mute"]["error"]
        assert "no answer within 2 s" in second["mute"]["error"]
        tried = len(accepted)
        for _ in range(3):  # remembered: no new attempt (and no wait) within retry_after
            took, again = listing()
            assert took < 1.0 and again["mute"]["error"] == second["mute"]["error"]
        assert len(accepted) == tried
        status, budget = lab.call("GET", "/syftlab/budget")
        assert status == 200 and budget["urls"]["alice"] == alice.process.url
    finally:
        lab.stop()
        stop.set()
        silent.close()
        for c in accepted:
            c.close()
