"""Encrypted inference of a small MLP with polynomial activations, on the worker.

The model is a plain ``state_dict`` (``torch.save(model.state_dict(), path)``)
of linear layers in order — ``<name>.weight`` of shape (out, in) and optionally
``<name>.bias`` — with a degree-2 polynomial activation ``c0 + c1 x + c2 x²``
between layers (``x²`` by default). Degree 2 keeps each activation at one level:
a two-layer model needs depth 3 (two plaintext products and one square).

The scientist's input is periodised first (:meth:`.seal.Evaluator.periodize`),
so the result depends on one input vector only, whatever the ciphertext's
slots hold: one request is one prediction. Layers run with
:class:`~.linear.PlainLinear`; the result is re-randomised with a fresh
encryption of zero before it leaves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .linear import PlainLinear, period_of
from .seal import Evaluator

__all__ = ["PolyMLP", "layers_of"]


def layers_of(state: Mapping[str, Any]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The (weight, bias) pairs of a state_dict of linear layers, in order.

    Raises
    ------
    ValueError
        Keys other than ``*.weight`` / ``*.bias``, a non-2-d weight, or shapes that do not chain.
    """
    names: list[str] = []
    for key in state:
        prefix, _, kind = str(key).rpartition(".")
        if kind not in ("weight", "bias"):
            raise ValueError("a model's state_dict may hold only linear layers' weight and bias")
        if prefix not in names:
            names.append(prefix)
    layers: list[tuple[np.ndarray, np.ndarray | None]] = []
    for name in names:
        weight = state.get(f"{name}.weight" if name else "weight")
        bias = state.get(f"{name}.bias" if name else "bias")
        if weight is None:
            raise ValueError(f"layer {name!r} has a bias but no weight")
        w = np.asarray(weight.detach().cpu().numpy() if hasattr(weight, "detach") else weight,
                       dtype=float)
        b = None if bias is None else np.asarray(
            bias.detach().cpu().numpy() if hasattr(bias, "detach") else bias, dtype=float)
        if w.ndim != 2 or (b is not None and b.shape != (w.shape[0],)):
            raise ValueError(f"layer {name!r} is not a linear layer")
        if layers and layers[-1][0].shape[0] != w.shape[1]:
            raise ValueError(f"layer {name!r} does not take the previous layer's output")
        layers.append((w, b))
    if not layers:
        raise ValueError("the state_dict holds no layer")
    return layers


class PolyMLP:
    """A model the worker evaluates on encrypted inputs.

    Parameters
    ----------
    layers : list of (weight, bias)
        From :func:`layers_of`.
    activation : sequence of 3 floats
        ``(c0, c1, c2)`` of the activation ``c0 + c1 x + c2 x²`` between layers.
    """

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray | None]],
                 activation: Sequence[float] = (0.0, 0.0, 1.0)) -> None:
        if len(activation) != 3 or not all(np.isfinite(activation)) or activation[2] == 0:
            raise ValueError("the activation is three finite coefficients c0, c1, c2 (c2 != 0)")
        self.layers = layers
        self.activation = tuple(float(c) for c in activation)
        self._compiled: dict[int, list[PlainLinear]] = {}

    @property
    def n_in(self) -> int:
        """Inputs the model takes."""
        return int(self.layers[0][0].shape[1])

    @property
    def n_out(self) -> int:
        """Outputs it gives."""
        return int(self.layers[-1][0].shape[0])

    @property
    def depth(self) -> int:
        """Levels one prediction uses."""
        return 2 * len(self.layers) - 1

    def plain(self, x: np.ndarray) -> np.ndarray:
        """The same model in plaintext (float64), for reference."""
        c0, c1, c2 = self.activation
        h = np.asarray(x, dtype=float)
        for i, (w, b) in enumerate(self.layers):
            h = w @ h + (0.0 if b is None else b)
            if i < len(self.layers) - 1:
                h = c0 + c1 * h + c2 * h * h
        return h

    def _maps(self, slots: int) -> list[PlainLinear]:
        maps = self._compiled.get(slots)
        if maps is None:
            factor = period_of(self.n_in) / slots  # undoes periodize() of a repeated input
            # c2 moves into the next layer's weights: W (c2 (h² + c1/c2 h + c0/c2)).
            c2 = self.activation[2]
            maps = [PlainLinear(w, b, slots, factor if i == 0 else c2)
                    for i, (w, b) in enumerate(self.layers)]
            self._compiled[slots] = maps
        return maps

    def predict(self, ev: Evaluator, x: Any) -> Any:
        """The model on ciphertext ``x`` (the input repeated with period ``period_of(n_in)``).

        Returns the output ciphertext (periodic; its first ``n_out`` slots are the result).
        """
        maps = self._maps(ev.slots)
        h = ev.periodize(x, maps[0].p_in)
        c0, c1, c2 = self.activation
        for i, lin in enumerate(maps):
            h = lin.apply(ev, h)
            if i < len(maps) - 1:
                h = self._activate(ev, h, c0 / c2, c1 / c2)
        return ev.rerandomize(h)

    @staticmethod
    def _activate(ev: Evaluator, h: Any, a0: float, a1: float) -> Any:
        """``h² + a1 h + a0`` in one level."""
        out = ev.square(h)
        if a1:
            out = ev.add(out, ev.mul_plain(h, a1, out_scale=float(out.scale)))
        if a0:
            out = ev.add_plain(out, a0)
        return out
