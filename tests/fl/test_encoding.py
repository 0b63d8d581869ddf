"""Table -> tensors from the public declarations: the same on every worker."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kernel_bridge.errors import InvalidQuery
from kernel_bridge.fl.encoding import (
    encode_table,
    feature_names,
    input_width,
    merge_specs,
    n_classes,
)
from kernel_bridge.owner.assets import load_assets
from kernel_bridge.owner.config import WorkerConfig

from ..conftest import DATASETS

FEATURES = ["age", "sex", "cp", "trestbps", "chol", "thalach", "exang", "oldpeak"]


def heart(worker: str) -> tuple[list[dict], pd.DataFrame]:
    asset = load_assets(WorkerConfig.from_toml(DATASETS / f"{worker}.toml"))["heart"]
    return asset.describe()["schema"]["columns"], asset.private()


def test_heart_encodes_to_twelve_inputs_known_before_training() -> None:
    specs = [heart(w)[0] for w in ("alice", "bob", "carol")]
    spec = merge_specs(specs, [*FEATURES, "target"])
    assert input_width(spec, FEATURES) == 12 and n_classes(spec, "target") == 2
    assert feature_names(spec, FEATURES)[:7] == [
        "age", "sex=F", "sex=M", "cp=typical", "cp=atypical", "cp=non-anginal",
        "cp=asymptomatic"]
    for w in ("alice", "bob", "carol"):
        X, y = encode_table(heart(w)[1], spec, FEATURES, "target")
        assert X.shape[1] == 12 and X.dtype == np.float32 and y.dtype == np.int64
        assert X.min() >= 0 and X.max() <= 1  # scaled by declared bounds, one-hot, 0/1
        assert set(np.unique(y)) == {0, 1}
        np.testing.assert_array_equal(X[:, 1:3].sum(axis=1), 1)  # one sex each


def test_same_row_encodes_identically_whatever_each_worker_declares() -> None:
    a = [{"name": "cp", "kind": "category", "categories": ["x", "y"]},
         {"name": "v", "kind": "float", "lower": 0.0, "upper": 10.0},
         {"name": "t", "kind": "bool"}]
    b = [{"name": "cp", "kind": "category", "categories": ["y", "z"]},
         {"name": "v", "kind": "float", "lower": -10.0, "upper": 5.0},
         {"name": "t", "kind": "bool"}]
    merged_ab = merge_specs([a, b], ["cp", "v", "t"])
    assert merged_ab[0]["categories"] == ["x", "y", "z"]
    assert (merged_ab[1]["lower"], merged_ab[1]["upper"]) == (-10.0, 10.0)
    row = pd.DataFrame({"cp": ["y"], "v": [0.0], "t": [True]})
    X, y = encode_table(row, merged_ab, ["cp", "v"], "t")
    np.testing.assert_allclose(X, [[0, 1, 0, 0.5]])
    assert y.tolist() == [1]
    # Unbounded numbers pass as they are; an unknown category is all zeros.
    free = [{"name": "cp", "kind": "category", "categories": ["x"]},
            {"name": "v", "kind": "int", "lower": None, "upper": None}]
    X, _ = encode_table(pd.DataFrame({"cp": ["q"], "v": [42]}), free, ["cp", "v"], None)
    np.testing.assert_allclose(X, [[0, 42]])


def test_bad_declarations_are_refused() -> None:
    with pytest.raises(InvalidQuery, match="declared int on one worker and float"):
        merge_specs([[{"name": "v", "kind": "int"}], [{"name": "v", "kind": "float"}]], ["v"])
    with pytest.raises(InvalidQuery, match="str column"):
        input_width([{"name": "s", "kind": "str"}], ["s"])
    with pytest.raises(InvalidQuery, match="classes must be declared"):
        n_classes([{"name": "y", "kind": "float", "lower": 0, "upper": 1}], "y")
    with pytest.raises(InvalidQuery, match="no declared column"):
        input_width([], ["age"])
