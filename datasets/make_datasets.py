"""Generate the synthetic demo datasets (seeded; the output is committed next to this file).

Usage::

    python datasets/make_datasets.py [OUT_DIR]

``OUT_DIR`` defaults to the directory of this script. Running it again must
reproduce the committed files byte for byte, so values are formatted by hand
(fixed decimals, ``\\n`` line ends) and depend only on numpy's seeded generator.

Private tables come from a small generative model (age, sex and chest-pain
type drive the disease; disease lowers the maximum heart rate and raises
exercise angina and ST depression), so a model can learn ``target``. Mocks are
drawn independently and uniformly from the declared bounds and categories,
never from the private rows.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SEED = 2026
CHEST_PAIN = ["typical", "atypical", "non-anginal", "asymptomatic"]
#: Declared bounds, also written in alice.toml / bob.toml: (lower, upper).
BOUNDS: dict[str, tuple[float, float]] = {
    "patient_id": (10000, 99999),
    "age": (29, 77),
    "trestbps": (94, 200),
    "chol": (126, 564),
    "thalach": (71, 202),
    "oldpeak": (0.0, 6.2),
    "target": (0, 1),
}
COLUMNS = [
    "patient_id",
    "age",
    "sex",
    "cp",
    "trestbps",
    "chol",
    "thalach",
    "exang",
    "oldpeak",
    "target",
]
ECG_SAMPLES = 180  # one beat at 360 Hz, like MIT-BIH beat windows


def _clip_int(x: np.ndarray, column: str) -> np.ndarray:
    lo, hi = BOUNDS[column]
    return np.clip(np.rint(x), lo, hi).astype(np.int64)


def heart_table(rng: np.random.Generator, n: int, first_id: int, age_mean: float) -> dict:
    """A heart-disease-like table of ``n`` patients (one hospital)."""
    age = _clip_int(rng.normal(age_mean, 9.0, n), "age")
    male = rng.random(n) < 0.68
    cp = rng.choice(len(CHEST_PAIN), size=n, p=[0.08, 0.17, 0.28, 0.47])
    # Disease risk: older, male and asymptomatic chest pain (silent ischaemia) raise it.
    logit = (
        -0.9
        + 0.07 * (age - 54)
        + 0.9 * male
        + 1.5 * (cp == 3)
        - 0.8 * (cp == 1)
        + rng.normal(0.0, 0.5, n)
    )
    target = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    trestbps = _clip_int(rng.normal(131 + 0.4 * (age - 54) + 3 * target, 16.0, n), "trestbps")
    chol = _clip_int(rng.lognormal(np.log(240) + 0.03 * target, 0.19, n), "chol")
    # Max heart rate falls with age and, more steeply, with disease.
    thalach = _clip_int(rng.normal(205 - 0.95 * age - 18 * target, 15.0, n), "thalach")
    exang = (rng.random(n) < 0.12 + 0.45 * target).astype(np.int64)
    oldpeak = np.clip(rng.gamma(1.2, 0.45 + 0.9 * target + 0.3 * exang), 0.0, 6.2)
    return {
        "patient_id": np.arange(first_id, first_id + n, dtype=np.int64),
        "age": age,
        "sex": np.where(male, "M", "F"),
        "cp": np.array(CHEST_PAIN)[cp],
        "trestbps": trestbps,
        "chol": chol,
        "thalach": thalach,
        "exang": exang,
        "oldpeak": oldpeak,
        "target": target,
    }


def mock_table(rng: np.random.Generator, n: int) -> dict:
    """``n`` rows drawn uniformly from the declared bounds and categories only."""
    table: dict[str, np.ndarray] = {}
    for column in COLUMNS:
        if column in ("sex", "cp"):
            choices = ["F", "M"] if column == "sex" else CHEST_PAIN
            table[column] = np.array(choices)[rng.integers(0, len(choices), n)]
        elif column == "exang":
            table[column] = rng.integers(0, 2, n)
        elif column == "oldpeak":
            table[column] = rng.uniform(*BOUNDS[column], n)
        else:
            lo, hi = BOUNDS[column]
            table[column] = rng.integers(int(lo), int(hi), n, endpoint=True)
    return table


def _cell(column: str, value: object) -> str:
    # Fixed formats keep the files byte-stable.
    if column == "oldpeak":
        return f"{float(value):.1f}"  # type: ignore[arg-type]
    if column in ("sex", "cp"):
        return str(value)
    return str(int(value))  # type: ignore[call-overload]


def csv_text(table: dict) -> str:
    """The table as CSV text with fixed formatting."""
    lines = [",".join(COLUMNS)]
    for i in range(len(table[COLUMNS[0]])):
        lines.append(",".join(_cell(c, table[c][i]) for c in COLUMNS))
    return "\n".join(lines) + "\n"


def ecg_beats(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` ECG-like beats: P, QRS and T waves as Gaussians, with jitter and noise."""
    t = np.linspace(0.0, 0.5, ECG_SAMPLES)  # seconds, R peak near the middle
    # (centre s, width s, amplitude mV) of P, Q, R, S, T.
    waves = [
        (0.13, 0.020, 0.15),
        (0.235, 0.008, -0.15),
        (0.25, 0.010, 1.2),
        (0.265, 0.008, -0.25),
        (0.42, 0.035, 0.3),
    ]
    beats = np.zeros((n, ECG_SAMPLES))
    for i in range(n):
        shift = rng.normal(0.0, 0.004)
        gain = rng.normal(1.0, 0.08)
        for centre, width, amp in waves:
            c = centre + shift + rng.normal(0.0, 0.002)
            beats[i] += gain * amp * rng.normal(1.0, 0.05) * np.exp(-(((t - c) / width) ** 2) / 2)
        beats[i] += rng.normal(0.0, 0.02, ECG_SAMPLES) + rng.normal(0.0, 0.05)  # noise, baseline
    return beats.astype(np.float32)


def _write_text(out_dir: Path, files: dict[str, str]) -> list[Path]:
    written = []
    for rel, text in files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("ascii"))
        written.append(path)
    return written


def carol_files(out_dir: Path) -> list[Path]:
    """Hospital C's heart table (200 older patients) and its mock, for the FL tutorials.

    Its generators are seeded apart from alice's and bob's (``[SEED, 3]``), so
    adding carol left their committed files unchanged.
    """
    private_rng, mock_rng = np.random.default_rng([SEED, 3]).spawn(2)
    return _write_text(out_dir, {
        "heart/carol.csv": csv_text(heart_table(private_rng, 200, 30001, age_mean=60.0)),
        "heart/carol_mock.csv": csv_text(mock_table(mock_rng, 50)),
    })


#: The digits columns: 8x8 pixel intensities 0..16 (scikit-learn's copy of the UCI
#: optical digits test set, shipped inside the package: no download), then the label.
DIGIT_PIXELS = [f"p{i}" for i in range(64)]
DIGIT_WORKERS = ("alice", "bob", "carol")


def digits_split(labels: np.ndarray, rng: np.random.Generator, alpha: float = 0.5
                 ) -> list[np.ndarray]:
    """Row indices of each worker: every class spread over the workers by Dirichlet(alpha).

    A small ``alpha`` makes the split non-IID (each worker sees some digits far
    more often than others), the usual label-skew benchmark of FL papers.
    """
    parts: list[list[int]] = [[] for _ in DIGIT_WORKERS]
    for c in range(10):
        rows = rng.permutation(np.flatnonzero(labels == c))
        share = rng.dirichlet([alpha] * len(DIGIT_WORKERS))
        cuts = np.rint(np.cumsum(share)[:-1] * len(rows)).astype(int)
        for w, chunk in enumerate(np.split(rows, cuts)):
            parts[w].extend(chunk.tolist())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def _digits_csv(pixels: np.ndarray, labels: np.ndarray) -> str:
    lines = [",".join([*DIGIT_PIXELS, "label"])]
    for row, label in zip(pixels.astype(np.int64), labels.astype(np.int64), strict=True):
        lines.append(",".join(str(int(v)) for v in row) + f",{int(label)}")
    return "\n".join(lines) + "\n"


DIGITS_TEST_ROWS = 297


def digits_files(out_dir: Path) -> list[Path]:
    """scikit-learn's digits split non-IID over alice, bob and carol, with uniform mocks.

    ``DIGITS_TEST_ROWS`` random rows are held out first as a public test set
    (``digits/test.csv``, on no worker), for the scientist to evaluate on.
    """
    from sklearn.datasets import load_digits  # bundled with scikit-learn, read from disk

    digits = load_digits()
    pixels, labels = np.asarray(digits.data), np.asarray(digits.target)
    split_rng, mock_rng = np.random.default_rng([SEED, 64]).spawn(2)
    order = split_rng.permutation(len(labels))
    test, train = np.sort(order[:DIGITS_TEST_ROWS]), np.sort(order[DIGITS_TEST_ROWS:])
    files = {"digits/test.csv": _digits_csv(pixels[test], labels[test])}
    pixels, labels = pixels[train], labels[train]
    for name, rows in zip(DIGIT_WORKERS, digits_split(labels, split_rng), strict=True):
        files[f"digits/{name}.csv"] = _digits_csv(pixels[rows], labels[rows])
        files[f"digits/{name}_mock.csv"] = _digits_csv(
            mock_rng.integers(0, 16, (50, 64), endpoint=True), mock_rng.integers(0, 10, 50))
    return _write_text(out_dir, files)


def generate(out_dir: Path) -> list[Path]:
    """Write every dataset file under ``out_dir`` and return their paths."""
    return heart_and_ecg_files(out_dir) + carol_files(out_dir) + digits_files(out_dir)


def heart_and_ecg_files(out_dir: Path) -> list[Path]:
    """alice's and bob's heart tables and mocks, and alice's ECG beats."""
    alice_rng, bob_rng, mock_rng, ecg_rng, ecg_mock_rng = np.random.default_rng(SEED).spawn(5)
    files = {
        "heart/alice.csv": csv_text(heart_table(alice_rng, 300, 10001, age_mean=56.0)),
        "heart/bob.csv": csv_text(heart_table(bob_rng, 250, 20001, age_mean=52.0)),
        "heart/alice_mock.csv": csv_text(mock_table(mock_rng, 50)),
        "heart/bob_mock.csv": csv_text(mock_table(mock_rng, 50)),
    }
    written = []
    for rel, text in files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("ascii"))
        written.append(path)
    # The mock beats come from their own generator: same waveform family, no private rows.
    for rel, beats in (
        ("ecg/alice_ecg.npy", ecg_beats(ecg_rng, 64)),
        ("ecg/alice_ecg_mock.npy", ecg_beats(ecg_mock_rng, 16)),
    ):
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, beats, allow_pickle=False)
        written.append(path)
    return written


#: Inputs of bob's risk model, in order, each scaled into [0, 1] by its declared bounds.
RISK_FEATURES = ["age", "trestbps", "chol", "thalach", "oldpeak", "exang"]
RISK_HIDDEN = 4


def risk_features(table: dict) -> np.ndarray:
    """The risk model's inputs: ``RISK_FEATURES`` scaled into [0, 1] by ``BOUNDS``."""
    cols = []
    for name in RISK_FEATURES:
        v = np.asarray(table[name], dtype=float)
        if name in BOUNDS:
            lo, hi = BOUNDS[name]
            v = (v - lo) / (hi - lo)
        cols.append(np.clip(v, 0.0, 1.0))
    return np.stack(cols, axis=1)


def train_risk_model(x: np.ndarray, y: np.ndarray, steps: int = 3000, lr: float = 0.5
                     ) -> dict[str, np.ndarray]:
    """A 6-4-1 MLP with a square activation, ``logit = W2 (W1 x + b1)² + b2``, trained by
    full-batch gradient descent on the logistic loss (numpy, seeded: reproducible).

    The square keeps it evaluable under CKKS (depth 3). Returns the weights in
    ``torch.nn.Linear`` layout (``fc1.weight`` is (hidden, inputs)).
    """
    rng = np.random.default_rng(SEED + 1)
    d = x.shape[1]
    w1 = rng.normal(0.0, 0.5, (RISK_HIDDEN, d))
    b1 = np.zeros(RISK_HIDDEN)
    w2 = rng.normal(0.0, 0.5, (1, RISK_HIDDEN))
    b2 = np.zeros(1)
    n = len(x)
    for _ in range(steps):
        h = x @ w1.T + b1
        a = h * h
        logit = a @ w2.T + b2
        p = 1.0 / (1.0 + np.exp(-logit[:, 0]))
        g = (p - y)[:, None] / n  # dL/dlogit
        gw2, gb2 = g.T @ a, g.sum(axis=0)
        gh = (g @ w2) * 2.0 * h
        gw1, gb1 = gh.T @ x, gh.sum(axis=0)
        w1 -= lr * gw1
        b1 -= lr * gb1
        w2 -= lr * gw2
        b2 -= lr * gb2
    return {"fc1.weight": w1, "fc1.bias": b1, "fc2.weight": w2, "fc2.bias": b2}


def generate_models(out_dir: Path) -> list[Path]:
    """Bob's risk model, trained on bob's rows (``risk_model/bob.pt``), and its mock (random
    weights of the same shapes). State dicts of float32 tensors, for HE encrypted predictions."""
    import torch

    bob_rng = np.random.default_rng(SEED).spawn(5)[1]
    table = heart_table(bob_rng, 250, 20001, age_mean=52.0)
    x = risk_features(table)
    y = np.asarray(table["target"], dtype=float)
    trained = train_risk_model(x, y)
    mock_rng = np.random.default_rng(SEED + 2)
    mock = {k: mock_rng.normal(0.0, 0.5, v.shape) for k, v in trained.items()}
    written = []
    for rel, state in (("risk_model/bob.pt", trained), ("risk_model/bob_mock.pt", mock)):
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: torch.tensor(np.asarray(v, dtype=np.float32)) for k, v in state.items()}
        torch.save(tensors, path)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``make_datasets.py [OUT_DIR]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = Path(args[0]) if args else Path(__file__).resolve().parent
    for path in [*generate(out_dir), *generate_models(out_dir)]:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
