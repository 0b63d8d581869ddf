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


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``make_datasets.py [OUT_DIR]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = Path(args[0]) if args else Path(__file__).resolve().parent
    for path in generate(out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
