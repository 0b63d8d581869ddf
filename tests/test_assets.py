"""Worker config parsing, trusted asset loading, mock generation and describe()."""

from __future__ import annotations

import builtins
import importlib.util
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_bridge.errors import ConfigError, UnknownAsset
from kernel_bridge.owner.assets import (
    Asset,
    generate_mock,
    get_asset,
    load_assets,
    load_value,
)
from kernel_bridge.owner.config import (
    AssetSpec,
    ColumnSpec,
    WorkerConfig,
    parse_asset_flags,
    validate_asset_name,
)

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT / "datasets"
SECRET = 987654


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_datasets", DATASETS / "make_datasets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _json_only(value: Any) -> bool:
    """Whether ``value`` is built from plain JSON types only (no numpy/pandas scalars)."""
    if value is None or type(value) in (str, int, float, bool):
        return True
    if type(value) is list:
        return all(_json_only(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _json_only(v) for k, v in value.items())
    return False


# --- the committed datasets ---------------------------------------------------------------------


def test_generator_reproduces_committed_files(tmp_path: Path) -> None:
    written = _load_generator().generate(tmp_path)
    assert len(written) == 15  # alice/bob heart + ECG, carol's heart, digits shares + test set
    for path in written:
        rel = path.relative_to(tmp_path)
        assert (DATASETS / rel).read_bytes() == path.read_bytes(), rel


def test_datasets_dir_is_small() -> None:
    total = sum(p.stat().st_size for p in DATASETS.rglob("*") if p.is_file())
    assert total < 1_000_000


@pytest.mark.parametrize("worker", ["alice", "bob", "carol"])
def test_demo_configs_parse_and_load(worker: str) -> None:
    config = WorkerConfig.from_toml(DATASETS / f"{worker}.toml")
    assert config.name == worker
    assert config.port == {"alice": 8765, "bob": 8766, "carol": 8767}[worker]
    assert config.state == (ROOT / ".demo" / worker).resolve()
    assert config.frame_limit == 64 * 2**20 and config.sandbox == "bwrap"
    assets = load_assets(config, eager=True)
    heart = assets["heart"]
    private, mock = heart.private(), heart.mock()
    assert list(private.columns) == list(mock.columns) == [c.name for c in heart.spec.columns]
    assert private.dtypes.equals(mock.dtypes)  # code written on the mock runs on the real data
    assert private["patient_id"].is_unique
    assert isinstance(private["cp"].dtype, pd.CategoricalDtype)
    assert private["exang"].dtype == bool
    for frame in (private, mock):
        for col in heart.spec.columns:
            if col.bounded:
                assert frame[col.name].between(col.lower, col.upper).all(), col.name
            if col.categories:
                assert frame[col.name].notna().all()
    # The target is learnable from age, thalach and exang.
    corr = private[["age", "thalach", "exang", "target"]].astype(float).corr()["target"]
    assert corr["age"] > 0.1 and corr["thalach"] < -0.3 and corr["exang"] > 0.2
    assert 0.35 < private["target"].mean() < 0.65
    digits = assets["digits"].private()  # FL tutorials: a non-IID share of sklearn's digits
    assert list(digits.columns) == [f"p{i}" for i in range(64)] + ["label"]
    assert digits.drop(columns="label").to_numpy().max() <= 16 and 200 < len(digits) < 900


def test_demo_ecg_asset() -> None:
    ecg = load_assets(WorkerConfig.from_toml(DATASETS / "alice.toml"))["ecg"]
    assert ecg.private().shape == (64, 180) and ecg.private().dtype == np.float32
    assert ecg.mock().dtype == np.float32 and ecg.mock().shape[1] == 180
    info = ecg.describe()
    assert info["type"] == "ndarray" and info["rows"] is None
    assert info["schema"] == {"dtype": "float32", "shape": [None, 180]}
    assert info["mock_preview"]["shape"] == [16, 180]


# --- config: TOML -------------------------------------------------------------------------------


def _write(tmp_path: Path, toml: str, *, files: tuple[str, ...] = ("data.csv", "mock.csv")) -> Path:
    for name in files:
        (tmp_path / name).write_text("age,sex\n40,F\n")
    path = tmp_path / "worker.toml"
    path.write_text(toml)
    return path


GOOD = """
[worker]
name = "w"
state = "state"
[assets.heart]
path = "data.csv"
mock = "mock.csv"
"""


def test_minimal_toml_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = WorkerConfig.from_toml(_write(tmp_path, GOOD))
    assert config.host == "127.0.0.1" and config.port == 8765 and config.threads == 1
    assert config.state == (tmp_path / "state").resolve()
    spec = config.assets["heart"]
    assert spec.path == (tmp_path / "data.csv").resolve() and spec.mock == tmp_path / "mock.csv"
    assert config.session_grace == 300.0 and config.bulk_threshold == 2**20
    assert not spec.show_row_count and spec.show_shape and spec.mock_rows == 100


def test_toml_all_worker_keys(tmp_path: Path) -> None:
    toml = """
[worker]
name = "w"
host = "0.0.0.0"
port = 0
state = "/tmp/x"
threads = 2
frame_limit_mb = 1.5
exec_timeout = 30
sandbox = "none"
session_grace = 0
bulk_threshold_mb = 2
"""
    config = WorkerConfig.from_toml(_write(tmp_path, toml))
    assert (config.host, config.port, config.threads, config.sandbox) == ("0.0.0.0", 0, 2, "none")
    assert config.frame_limit == int(1.5 * 2**20) and config.bulk_threshold == 2 * 2**20
    assert config.exec_timeout == 30 and config.session_grace == 0 and config.assets == {}


COLUMNS_OK = """
[worker]
name = "w"
state = "s"
[assets.t]
path = "data.csv"
[assets.t.columns.age]
type = "int"
lower = 29
upper = 77
[assets.t.columns.sex]
type = "category"
categories = ["F", "M"]
"""


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        # unknown keys, at every level
        (GOOD + "colour = 1\n", "assets.heart.colour: unknown key"),
        (GOOD.replace('state = "state"', 'state = "state"\nthreds = 2'), "worker.threds"),
        ("[workers]\n" + GOOD, "workers: unknown key"),
        (COLUMNS_OK + "bounds = [1, 2]\n", "assets.t.columns.sex.bounds: unknown key"),
        # missing things
        ('[assets.a]\npath = "data.csv"\n', "missing [worker]"),
        (GOOD.replace('name = "w"\n', ""), "worker.name: missing"),
        (GOOD.replace('state = "state"\n', ""), "worker.state: missing"),
        (GOOD.replace('path = "data.csv"\n', ""), "assets.heart.path: missing"),
        (GOOD.replace("data.csv", "nope.csv"), "asset file not found"),
        (GOOD.replace('"mock.csv"', '"nope.csv"'), "mock file not found"),
        (GOOD.replace('mock = "mock.csv"\n', ""), "no mock file and no declared columns"),
        (COLUMNS_OK.replace('type = "int"\n', ""), "assets.t.columns.age.type: missing"),
        (COLUMNS_OK.replace("lower = 29\n", ""), "needs lower and upper"),
        # bad values
        (COLUMNS_OK.replace("lower = 29", "lower = 80"), "lower (80) is greater than upper (77)"),
        (COLUMNS_OK.replace("lower = 29\nupper = 77", "lower = 1.2\nupper = 1.8"), "no integer"),
        (COLUMNS_OK.replace('categories = ["F", "M"]\n', ""), "needs a non-empty list"),
        (COLUMNS_OK.replace('["F", "M"]', "[]"), "needs a non-empty list"),
        (COLUMNS_OK.replace('["F", "M"]', '["F", "F"]'), "must be unique"),
        (COLUMNS_OK.replace('["F", "M"]', '["F", 1]'), "expected a list of strings"),
        (COLUMNS_OK.replace("upper = 77", 'upper = 77\ncategories = ["a"]'), "apply to category"),
        (COLUMNS_OK.replace('categories = ["F", "M"]', "lower = 0"), "bounds apply to int/float"),
        (COLUMNS_OK.replace('type = "int"', 'type = "integer"'), "'integer' is not one of"),
        (COLUMNS_OK.replace("lower = 29", 'lower = "29"'), "expected a finite number"),
        (COLUMNS_OK.replace("lower = 29", "lower = nan"), "expected a finite number"),
        (GOOD.replace('name = "w"', "port = 80000\nname = 'w'"), "worker.port"),
        (GOOD.replace('name = "w"', "port = 'x'\nname = 'w'"), "expected an integer"),
        (GOOD.replace('name = "w"', "port = true\nname = 'w'"), "expected an integer"),
        (GOOD.replace('name = "w"', "name = 'bad name'"), "not a valid worker name"),
        (GOOD.replace('name = "w"', "name = 'w'\nthreads = 0"), "threads: must be a positive"),
        (GOOD.replace('name = "w"', "name = 'w'\nsandbox = 'docker'"), "'docker' is not one of"),
        (GOOD.replace('name = "w"', "name = 'w'\nexec_timeout = -1"), "exec_timeout"),
        (GOOD.replace('name = "w"', "name = 'w'\nframe_limit_mb = 0"), "worker.frame_limit_mb"),
        (GOOD + "show_row_count = 1\n", "expected true or false"),
        (GOOD + "mock_rows = 0\n", "mock_rows: must be a positive"),
        (GOOD.replace("[assets.heart]", "[assets.heart.x]"), "assets.heart.x: unknown key"),
        ('assets = 1\n[worker]\nname = "w"\nstate = "s"\n', "assets: expected a table"),
        # file types
        (GOOD.replace("data.csv", "data.txt"), "unsupported file type '.txt'"),
        (GOOD.replace("mock.csv", "mock.npy"), "needs a mock of the same kind"),
        (
            COLUMNS_OK.replace("data.csv", "data.npy").replace(
                "[assets.t]", "[assets.t]\nmock = 'data.npy'"
            ),
            "columns apply to tables",
        ),
        # asset names become kernel variables
        (GOOD.replace("assets.heart", "assets.1heart"), "not a valid Python identifier"),
        (GOOD.replace("assets.heart", "assets.my-heart"), "not a valid Python identifier"),
        (GOOD.replace("assets.heart", "assets.class"), "is a Python keyword"),
        (GOOD.replace("assets.heart", "assets._heart"), "must not start with '_'"),
        (GOOD.replace("assets.heart", 'assets."hé"'), "not a valid Python identifier"),
        # not TOML at all
        ("[worker\nname=", "cannot read config"),
    ],
)
def test_toml_errors_name_file_and_key(tmp_path: Path, toml: str, expected: str) -> None:
    files = ("data.csv", "mock.csv", "data.txt", "mock.npy", "data.npy")
    path = _write(tmp_path, toml, files=files)
    with pytest.raises(ConfigError) as info:
        WorkerConfig.from_toml(path)
    assert expected in info.value.message
    assert str(path) in info.value.message and info.value.data["file"] == str(path)


def test_toml_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        WorkerConfig.from_toml(tmp_path / "missing.toml")


def test_config_error_data_is_wire_friendly(tmp_path: Path) -> None:
    path = _write(tmp_path, COLUMNS_OK.replace("lower = 29", "lower = 80"))
    with pytest.raises(ConfigError) as info:
        WorkerConfig.from_toml(path)
    assert info.value.data["key"] == "assets.t.columns.age"
    json.dumps(info.value.to_wire())


# --- config: CLI ------------------------------------------------------------------------------


def test_from_args_and_overrides(tmp_path: Path) -> None:
    data = tmp_path / "d.npy"
    np.save(data, np.zeros((3, 2)))
    config = WorkerConfig.from_args(
        "w",
        port=9000,
        state=tmp_path / "st",
        assets={"x": str(data)},
        mocks={"x": str(data)},
        threads=4,
        sandbox=None,
    )
    assert config.port == 9000 and config.threads == 4 and config.sandbox == "bwrap"
    assert config.assets["x"].mock == data.resolve()
    default = WorkerConfig.from_args("w", port=None, host=None, state=tmp_path)
    assert (default.port, default.host, default.assets) == (8765, "127.0.0.1", {})
    over = config.with_overrides(port=9001, sandbox="none", host=None)
    assert (over.port, over.sandbox, over.host) == (9001, "none", "127.0.0.1")
    assert config.port == 9000  # the original is unchanged
    with pytest.raises(ConfigError, match="unknown setting"):
        config.with_overrides(prot=1)
    with pytest.raises(ConfigError, match="port"):
        config.with_overrides(port=-1)
    with pytest.raises(ConfigError, match="unknown setting"):
        WorkerConfig.from_args("w", state=tmp_path, frame_limit_mb=3)


def test_from_args_errors(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    with pytest.raises(ConfigError, match="unknown asset"):
        WorkerConfig.from_args("w", state=tmp_path, assets={"x": data}, mocks={"y": data})
    with pytest.raises(ConfigError, match="no mock file"):
        WorkerConfig.from_args("w", state=tmp_path, assets={"x": data})
    with pytest.raises(ConfigError, match=r"assets.x.*asset file not found"):
        WorkerConfig.from_args(
            "w", state=tmp_path, assets={"x": tmp_path / "no.csv"}, mocks={"x": data}
        )
    with pytest.raises(ConfigError, match="keyword"):
        WorkerConfig.from_args("w", state=tmp_path, assets={"def": data}, mocks={"def": data})


def test_parse_asset_flags() -> None:
    flags = ["heart=datasets/heart/alice.csv", "ecg=a=b.npy"]
    assert parse_asset_flags(flags) == {"heart": "datasets/heart/alice.csv", "ecg": "a=b.npy"}
    assert parse_asset_flags([]) == {}
    for bad, match in [
        ("heart", "expected NAME=PATH"),
        ("=x.csv", "expected NAME=PATH"),
        ("heart=", "expected NAME=PATH"),
        ("2x=a.csv", "not a valid Python identifier"),
        ("lambda=a.csv", "keyword"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_asset_flags([bad])
    with pytest.raises(ConfigError, match="more than once"):
        parse_asset_flags(["a=1.csv", "a=2.csv"])


@pytest.mark.parametrize("name", ["heart", "Heart2", "x_y", "match", "type"])
def test_valid_asset_names(name: str) -> None:
    assert validate_asset_name(name) == name


@pytest.mark.parametrize("name", ["", "1a", "a-b", "a b", "for", "None", "__builtins__", "_", 3])
def test_invalid_asset_names(name: Any) -> None:
    with pytest.raises(ConfigError):
        validate_asset_name(name)
    with pytest.raises(ConfigError):
        AssetSpec(name=name, path=Path("x.npy"), mock=Path("m.npy"))


# --- loaders ------------------------------------------------------------------------------------


def test_load_csv_parquet_npy_pt(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, 1.5], "c": ["x", "y"]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "a.npy", array)
    tensor = torch.arange(4.0)
    torch.save(tensor, tmp_path / "t.pt")

    for name in ("t.csv", "t.parquet"):
        loaded = load_value(tmp_path / name)
        assert isinstance(loaded, pd.DataFrame)
        assert loaded["a"].tolist() == [1, 2] and loaded["c"].tolist() == ["x", "y"]
    loaded_array = load_value(tmp_path / "a.npy")
    assert isinstance(loaded_array, np.ndarray) and np.array_equal(loaded_array, array)
    loaded_tensor = load_value(tmp_path / "t.pt")
    assert isinstance(loaded_tensor, torch.Tensor) and torch.equal(loaded_tensor, tensor)


class Payload:
    """A custom class: unpickling it would run arbitrary code paths."""

    def __init__(self) -> None:
        self.x = 1


def test_pt_with_pickled_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2), "obj": Payload()}, path)
    with pytest.raises(ConfigError, match="weights_only"):
        load_value(path)


def test_pt_with_non_tensor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dict.pt"
    torch.save({"weights": torch.zeros(2)}, path)  # loads under weights_only, but not a tensor
    with pytest.raises(ConfigError, match="expected a single tensor"):
        load_value(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_disguised_as_pt_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ConfigError):
        load_value(path)


def test_npy_object_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npy"
    np.save(path, np.array([Payload()], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match="cannot read"):
        load_value(path)


def test_unsupported_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ConfigError, match="unsupported file type"):
        load_value(tmp_path / "x.json")
    with pytest.raises(ConfigError, match="file not found"):
        load_value(tmp_path / "gone.csv")


def test_csv_applies_declared_kinds(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("code,cp,flag,n,x\n007,typical,1,3,1\n010,asymptomatic,0,4,2.5\n")
    columns = [
        ColumnSpec("x", "float"),
        ColumnSpec("code", "str"),
        ColumnSpec("cp", "category", categories=["typical", "atypical", "asymptomatic"]),
        ColumnSpec("flag", "bool"),
        ColumnSpec("n", "int"),
    ]
    frame = load_value(path, columns)
    assert list(frame.columns) == ["x", "code", "cp", "flag", "n"]  # declared order
    assert frame["code"].tolist() == ["007", "010"]  # leading zeros kept
    assert list(frame["cp"].cat.categories) == ["typical", "atypical", "asymptomatic"]
    assert frame["flag"].dtype == bool and frame["flag"].tolist() == [True, False]
    assert frame["n"].dtype == np.int64 and frame["x"].dtype == np.float64


@pytest.mark.parametrize(
    ("csv", "column", "expected"),
    [
        (f"cp\n{SECRET}\n", ColumnSpec("cp", "category", categories=["a"]), "outside the declared"),
        (f"n\n{SECRET}.5\n", ColumnSpec("n", "int"), "fractional"),
        ("n\nabc987654\n", ColumnSpec("n", "float"), "non-numeric"),
        (f"f\n{SECRET}\n", ColumnSpec("f", "bool"), "not true/false"),
        (f"n,other\n1,{SECRET}\n", ColumnSpec("n", "int"), "undeclared: other"),
        ("m\n1\n", ColumnSpec("n", "int"), "missing: n"),
    ],
)
def test_csv_kind_errors_never_quote_values(
    tmp_path: Path, csv: str, column: ColumnSpec, expected: str
) -> None:
    path = tmp_path / "t.csv"
    path.write_text(csv)
    with pytest.raises(ConfigError) as info:
        load_value(path, [column])
    assert expected in info.value.message and str(SECRET) not in info.value.message


# --- mocks --------------------------------------------------------------------------------------

HEART_COLUMNS = [
    ColumnSpec("age", "int", 29, 77),
    ColumnSpec("oldpeak", "float", 0.0, 6.2),
    ColumnSpec("cp", "category", categories=["typical", "atypical"]),
    ColumnSpec("exang", "bool"),
    ColumnSpec("note", "str"),
]


def _spec(tmp_path: Path, **kw: Any) -> AssetSpec:
    return AssetSpec(name="heart", path=tmp_path / "private.csv", columns=HEART_COLUMNS, **kw)


def test_generate_mock_respects_declarations(tmp_path: Path) -> None:
    mock = generate_mock(_spec(tmp_path, mock_rows=200))
    assert len(mock) == 200 and list(mock.columns) == [c.name for c in HEART_COLUMNS]
    assert mock["age"].between(29, 77).all() and mock["age"].dtype == np.int64
    assert mock["oldpeak"].between(0.0, 6.2).all() and mock["oldpeak"].dtype == np.float64
    assert set(mock["cp"]) == {"typical", "atypical"}
    assert list(mock["cp"].cat.categories) == ["typical", "atypical"]
    assert mock["exang"].dtype == bool and mock["note"].notna().all()
    assert len(generate_mock(_spec(tmp_path), rows=7)) == 7
    assert generate_mock(_spec(tmp_path), seed=1).equals(generate_mock(_spec(tmp_path), seed=1))
    assert not generate_mock(_spec(tmp_path), seed=1).equals(generate_mock(_spec(tmp_path), seed=2))


@settings(max_examples=40, deadline=None)
@given(
    lower=st.floats(-1e6, 1e6, allow_nan=False),
    width=st.floats(0, 1e6, allow_nan=False),
    seed=st.integers(0, 2**32 - 1),
)
def test_generated_numbers_stay_in_bounds(lower: float, width: float, seed: int) -> None:
    upper = lower + width
    cols = [ColumnSpec("f", "float", lower, upper)]
    if np.ceil(lower) <= np.floor(upper):
        cols.append(ColumnSpec("i", "int", lower, upper))
    spec = AssetSpec(name="a", path=Path("never-read.csv"), columns=cols, mock_rows=20)
    mock = generate_mock(spec, seed=seed)
    for col in cols:
        assert mock[col.name].between(lower, upper).all()


def test_generate_mock_never_reads_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = tmp_path / "private.csv"
    private.write_text(f"age\n{SECRET}\n")
    spec = _spec(tmp_path)
    private.unlink()  # gone: generation must not need it

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("private data was read")

    real_open = builtins.open

    def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if "private" in str(file):
            raise AssertionError("private file was opened")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    for target in (pd, "read_csv"), (pd, "read_parquet"), (np, "load"), (torch, "load"):
        monkeypatch.setattr(*target, refuse)
    mock = Asset(spec).mock()
    assert len(mock) == 100 and SECRET not in mock.to_numpy()


def test_generate_mock_needs_columns(tmp_path: Path) -> None:
    spec = AssetSpec(name="a", path=tmp_path / "p.csv", mock=tmp_path / "m.csv")
    with pytest.raises(ConfigError, match="no declared columns"):
        generate_mock(spec)
    spec = AssetSpec(
        name="a", path=tmp_path / "p.csv", mock=tmp_path / "m.csv", columns=[ColumnSpec("x", "int")]
    )
    with pytest.raises(ConfigError, match="needs lower and upper"):
        generate_mock(spec)


# --- describe -----------------------------------------------------------------------------------


def _private_heart(tmp_path: Path) -> Path:
    path = tmp_path / "private.csv"
    rows = ["age,oldpeak,cp,exang,note", f"{SECRET},3.5,typical,1,ZEBRA_SECRET"]
    rows += [f"{30 + i},{i / 10},atypical,0,n{i}" for i in range(9)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("show_row_count", [False, True])
def test_describe_never_contains_private_values(tmp_path: Path, show_row_count: bool) -> None:
    _private_heart(tmp_path)
    asset = Asset(_spec(tmp_path, show_row_count=show_row_count, description="Heart clinic"))
    assert SECRET in asset.private()["age"].tolist()  # the planted value is really there
    info = asset.describe(mock_preview_rows=50)
    text = json.dumps(info, allow_nan=False)
    assert str(SECRET) not in text and "ZEBRA_SECRET" not in text
    assert _json_only(info)
    assert info["name"] == "heart" and info["type"] == "DataFrame"
    assert info["description"] == "Heart clinic"
    assert info["rows"] == (10 if show_row_count else None)
    assert len(info["mock_preview"]) == 50
    assert info["schema"]["columns"][0] == {
        "name": "age",
        "kind": "int",
        "lower": 29,
        "upper": 77,
        "categories": None,
    }
    assert info["schema"]["columns"][2]["categories"] == ["typical", "atypical"]


def test_describe_from_mock_file_without_declared_columns(tmp_path: Path) -> None:
    private = tmp_path / "p.parquet"
    pd.DataFrame({"v": [float(SECRET)], "s": ["ZEBRA_SECRET"]}).to_parquet(private)
    mock = tmp_path / "m.csv"
    mock.write_text("v,s\n1.5,a\n2.5,b\n")
    info = Asset(AssetSpec(name="t", path=private, mock=mock)).describe()
    text = json.dumps(info)
    assert str(SECRET) not in text and "ZEBRA_SECRET" not in text and _json_only(info)
    kinds = {c["name"]: c["kind"] for c in info["schema"]["columns"]}
    assert kinds == {"v": "float", "s": "str"}
    assert info["mock_preview"] == [{"v": 1.5, "s": "a"}, {"v": 2.5, "s": "b"}]


@pytest.mark.parametrize("suffix", [".npy", ".pt"])
@pytest.mark.parametrize(("show_rows", "show_shape"), [(False, True), (True, True), (True, False)])
def test_describe_arrays(tmp_path: Path, suffix: str, show_rows: bool, show_shape: bool) -> None:
    private_value = np.full((7, 3), SECRET, dtype=np.float32)
    mock_value = np.linspace(0, 1, 8, dtype=np.float32).reshape(4, 2)
    paths = tmp_path / f"p{suffix}", tmp_path / f"m{suffix}"
    for path, value in zip(paths, (private_value, mock_value), strict=True):
        if suffix == ".npy":
            np.save(path, value)
        else:
            torch.save(torch.from_numpy(value), path)
    spec = AssetSpec(
        name="a", path=paths[0], mock=paths[1], show_row_count=show_rows, show_shape=show_shape
    )
    info = Asset(spec).describe()
    assert str(SECRET) not in json.dumps(info) and _json_only(info)
    assert info["type"] == ("ndarray" if suffix == ".npy" else "Tensor")
    assert info["rows"] == (7 if show_rows else None)
    assert info["schema"]["dtype"] == "float32"
    expected_shape = ([7 if show_rows else None, 3]) if show_shape else None
    assert info["schema"]["shape"] == expected_shape
    preview = info["mock_preview"]
    assert preview["shape"] == [4, 2] and preview["dtype"] == "float32"
    assert preview["head"][0] == 0.0 and preview["head"][-1] == 1.0 and len(preview["head"]) == 8


def test_load_assets_and_lookup(tmp_path: Path) -> None:
    _private_heart(tmp_path)
    config = WorkerConfig("w", state=tmp_path / "s", assets={"heart": _spec(tmp_path)})
    assets = load_assets(config, eager=True)
    assert set(assets) == {"heart"} and get_asset(assets, "heart").name == "heart"
    with pytest.raises(UnknownAsset, match="available: heart"):
        get_asset(assets, "nope")
    (tmp_path / "private.csv").unlink()
    with pytest.raises(ConfigError, match="file not found"):
        load_assets(config)
