"""The owner's ``[assets.<name>.he]`` declarations."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel_bridge.errors import ConfigError
from kernel_bridge.owner.config import WorkerConfig

from .workers import write_config


def test_demo_configs_declare_both_services() -> None:
    root = Path(__file__).resolve().parents[2] / "datasets"
    bob = WorkerConfig.from_toml(root / "bob.toml")
    assert bob.he["risk_model"].kind == "predict"
    assert bob.he["risk_model"].predictions_per_scientist > 0
    alice = WorkerConfig.from_toml(root / "alice.toml")
    assert alice.he["heart"].kind == "evaluate"
    assert alice.he["heart"].epsilon_per_evaluation > 0


@pytest.mark.parametrize("old,new,key", [
    ("predictions_per_scientist = 20", "predictions_per_scientist = -1",
     "assets.model.he.predictions_per_scientist"),
    ("predictions_per_scientist = 20", "predictions = 20", "assets.model.he.predictions"),
    ('label = "target"', 'label = "nope"', "assets.rows.he.columns"),
    ("epsilon_per_evaluation = 0.5", "epsilon_per_evaluation = 0", "assets.rows.he.epsilon"),
    ('columns = ["age", "chol", "flag"]', 'columns = ["id2"]', "assets.rows.he.columns"),
])
def test_bad_declarations_name_the_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    path = write_config(tmp_path)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    with pytest.raises(ConfigError) as err:
        WorkerConfig.from_toml(path)
    assert key in err.value.message


def test_evaluation_needs_a_ledger(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    text = path.read_text()
    start = text.index("[assets.rows.dp]")
    end = text.index("[assets.rows.columns.id]")
    path.write_text(text[:start] + text[end:])
    with pytest.raises(ConfigError, match="dp table"):
        WorkerConfig.from_toml(path)
