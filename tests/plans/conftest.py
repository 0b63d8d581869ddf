"""A worker for the plan tests: alice's heart asset, with a δ budget for DP-SGD plans."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import kernel_bridge as kb
from tests.conftest import DATASETS


@pytest.fixture(scope="module")
def planw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kb.Worker]:
    """A worker of this module's own, connected as 'ana' (generous DP budgets)."""
    w = kb.launch("alice", config=DATASETS / "alice.toml",
                  state=tmp_path_factory.mktemp("plans") / "alice", scientist="ana")
    owner = kb.Owner(w.process.state)
    owner.set_budget("ana", "heart", 100.0, 1e-2)
    owner.set_budget(None, "heart", 100.0, 1e-2)
    owner.close()
    yield w
    w.close()


@pytest.fixture
def plan_owner(planw: kb.Worker) -> Iterator[kb.Owner]:
    o = kb.Owner(planw.process.state)
    yield o
    o.close()
