"""Shared fixtures: real worker processes on 127.0.0.1 with real kernels.

Workers are started with :func:`kernel_bridge.launch` (a subprocess running
``syftlab worker``), sandboxed with bubblewrap like in production.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import kernel_bridge as kb
from kernel_bridge.smpc import keys

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT / "datasets"

#: Distinctive values planted in the private "secret" asset; they must never
#: reach a scientist except through an approved request.
PLANTED_NUMBER = 987654321
PLANTED_TEXT = "PLANTED-SECRET-7731"

os.environ.setdefault("OMP_NUM_THREADS", "1")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (a worker's kernels, sandboxes included), from /proc."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parents.items() if p in frontier]
        found += kids
        frontier = kids
    return found


def write_secret_asset(directory: Path) -> tuple[Path, Path]:
    """A private CSV holding planted values, and a harmless mock of it."""
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / "secret.csv"
    mock = directory / "secret_mock.csv"
    rows = ["id,value,note"]
    for i in range(20):
        value = PLANTED_NUMBER if i == 7 else 1000 + i
        rows.append(f"{i},{value},{PLANTED_TEXT if i == 3 else 'ordinary'}")
    private.write_text("\n".join(rows) + "\n")
    mock.write_text("id,value,note\n" + "".join(f"{i},{i},mock\n" for i in range(5)))
    return private, mock


@pytest.fixture(scope="session")
def secret_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_secret_asset(tmp_path_factory.mktemp("secret-data"))


@pytest.fixture(scope="session")
def alice(tmp_path_factory: pytest.TempPathFactory,
          secret_files: tuple[Path, Path]) -> Iterator[kb.Worker]:
    """Alice's worker: the sample heart/ecg assets plus the planted 'secret' asset."""
    private, mock = secret_files
    w = kb.launch("alice", config=DATASETS / "alice.toml",
                  assets={"secret": str(private)}, mocks={"secret": str(mock)},
                  state=tmp_path_factory.mktemp("state") / "alice", scientist="ana")
    yield w
    w.close()


@pytest.fixture
def owner(alice: kb.Worker) -> Iterator[kb.Owner]:
    o = kb.Owner(alice.process.state)
    yield o
    o.close()


@pytest.fixture
def connect_as(alice: kb.Worker) -> Iterator[Callable[..., kb.Worker]]:
    """Open more scientist connections to alice (each gets a token of its own)."""
    opened: list[kb.Worker] = []

    def connect(scientist: str, worker: kb.Worker | None = None) -> kb.Worker:
        target = worker or alice
        o = kb.Owner(target.process.state)
        token = o.add_token(scientist)
        o.close()
        w = kb.connect(target.process.url, token, name=target.name)
        opened.append(w)
        return w

    yield connect
    for w in opened:
        try:
            w.close()
        except Exception:
            pass


@pytest.fixture
def session(connect_as: Callable[..., kb.Worker], request: pytest.FixtureRequest) -> kb.Worker:
    """A fresh scientist session on alice (own kernels), named after the test."""
    name = "t-" + "".join(c for c in request.node.name if c.isalnum())[-40:]
    return connect_as(name)


@pytest.fixture
def fresh_worker(tmp_path: Path, secret_files: tuple[Path, Path]
                 ) -> Iterator[Callable[..., kb.Worker]]:
    """Start a worker of the test's own (to kill, restart or misconfigure)."""
    started: list[kb.Worker] = []

    def start(name: str = "carol", **kwargs: object) -> kb.Worker:
        private, mock = secret_files
        kwargs.setdefault("assets", {"secret": str(private)})
        kwargs.setdefault("mocks", {"secret": str(mock)})
        kwargs.setdefault("state", tmp_path / f"state-{name}")
        w = kb.launch(name, **kwargs)  # type: ignore[arg-type]
        started.append(w)
        return w

    yield start
    for w in started:
        try:
            w.close()
        except Exception:
            pass
        if w.process is not None:
            w.process.kill()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """Expose each phase's report as ``item.rep_<phase>`` (UI tests screenshot failures)."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


# -- smpc: alice and bob (two hospitals) and carol (the dealer), pinned to each other only -------
@pytest.fixture(scope="session")
def smpc_workers(tmp_path_factory: pytest.TempPathFactory, secret_files: tuple[Path, Path]
                 ) -> Iterator[tuple[kb.Worker, kb.Worker, kb.Worker]]:
    """``(alice, bob, carol)``: two data owners and a dealer that trust each other.

    They are their own trio, outside kb.launch's automatic pinning: other tests
    launch workers also named alice and bob, and SMPC pins keys by name.
    """
    root = tmp_path_factory.mktemp("smpc-state")
    private, mock = secret_files
    alice = kb.launch("alice", config=DATASETS / "alice.toml", assets={"secret": str(private)},
                      mocks={"secret": str(mock)}, state=root / "alice", scientist="ana",
                      trust_launched=False)
    bob = kb.launch("bob", config=DATASETS / "bob.toml", state=root / "bob", scientist="ana",
                    trust_launched=False)
    carol = kb.launch("carol", dealer=True, state=root / "carol", scientist="ana",
                      trust_launched=False)
    keys.trust_each_other([("alice", root / "alice", False), ("bob", root / "bob", False),
                           ("carol", root / "carol", True)])
    yield alice, bob, carol
    for w in (alice, bob, carol):
        w.close()
