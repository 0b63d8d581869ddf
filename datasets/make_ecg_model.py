"""Bob's small ECG beat classifier (the SMPC tutorial's private model), trained on bob's own beats.

Two layers: 180 samples -> 8 hidden units (ReLU) -> 2 classes, "normal" (0) or
"tall R wave" (1: the beat's peak above 1.25 mV). The weights are packed in one
float32 array of shape (184, 8): rows 0-179 W1 (180x8), row 180 b1, rows
181-182 W2 transposed (2x8), row 183 b2 in its first two columns. Run
``python datasets/make_ecg_model.py`` to regenerate ``ecg/bob_model.npy`` (and a
mock of random weights of the same shape, ``ecg/bob_model_mock.npy``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_datasets import ecg_beats  # noqa: E402

HIDDEN = 8
THRESHOLD = 1.25


def train(seed: int = 7) -> np.ndarray:
    """Train the classifier on 2000 synthetic beats; returns the packed weights."""
    rng = np.random.default_rng(seed)
    x = torch.tensor(ecg_beats(rng, 2000))
    y = (x.max(1).values > THRESHOLD).long()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(180, HIDDEN), torch.nn.ReLU(),
                                torch.nn.Linear(HIDDEN, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(400):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    acc = float((model(x).argmax(1) == y).float().mean())
    print(f"training accuracy {acc:.3f}, class balance {float(y.float().mean()):.2f}")
    packed = np.zeros((184, HIDDEN), dtype=np.float32)
    l1, l2 = model[0], model[2]
    packed[:180] = l1.weight.detach().numpy().T
    packed[180] = l1.bias.detach().numpy()
    packed[181:183] = l2.weight.detach().numpy()
    packed[183, :2] = l2.bias.detach().numpy()
    return packed


def main() -> None:
    out = Path(__file__).resolve().parent / "ecg"
    np.save(out / "bob_model.npy", train())
    mock = np.random.default_rng(0).normal(0, 0.1, (184, HIDDEN)).astype(np.float32)
    np.save(out / "bob_model_mock.npy", mock)


if __name__ == "__main__":
    main()
