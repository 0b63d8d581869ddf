"""Three hospitals (alice, bob, carol from datasets/*.toml) as real worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

import kernel_bridge as kb
from kernel_bridge.owner.assets import load_assets
from kernel_bridge.owner.config import WorkerConfig

from ..conftest import DATASETS

HOSPITALS = ("alice", "bob", "carol")
FEATURES = ["age", "sex", "cp", "trestbps", "chol", "thalach", "exang", "oldpeak"]


def start(names: tuple[str, ...], root: Any, scientist: str = "ana") -> list[kb.Worker]:
    return [kb.launch(n, config=DATASETS / f"{n}.toml", state=root / n, scientist=scientist)
            for n in names]


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[kb.Worker]]:
    workers = start(HOSPITALS, tmp_path_factory.mktemp("fl"))
    yield workers
    for w in workers:
        w.close()


def approve_all(job: Any, workers: list[kb.Worker]) -> None:
    """Each owner approves the job's plan (by its exact hash), as the CLI would."""
    for w, plan in zip(workers, job.submit(reason="test"), strict=True):
        owner = kb.Owner(w.process.state)
        owner.approve_plan(plan.id, plan.hash)
        owner.close()
    job.wait_approved(timeout=30)


def private_table(worker: str, asset: str = "heart") -> pd.DataFrame:
    """The private table as the worker loads it (the test stands in for each owner)."""
    return load_assets(WorkerConfig.from_toml(DATASETS / f"{worker}.toml"))[asset].private()
