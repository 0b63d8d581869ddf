"""What an SMPC operation is: its dealer recipes, its party program, its output shape.

An :class:`OpSpec` is everything an engine needs to run one operation:

1. ``recipes(shapes, params, n)`` -- the dealer material it needs, from public
   input shapes and parameters only;
2. ``program(party, n, inputs, material, params)`` -- party ``party``'s program
   (a generator, see :mod:`.engine`) over its input shares ``inputs`` (a tuple,
   one ``int64`` tensor per input) and its part of the material (a list, one
   :data:`~.engine.Material` per recipe, in the order ``recipes`` returned
   them); it returns the party's output share (an ``int64`` tensor);
3. ``out_shape(shapes, params)`` -- the public shape of the output.

``params`` are public and small (numbers, lists, ``None``): they travel in
recipes and messages as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import torch

from .engine import Material, Open, Program, Recipe

Shape = tuple[int, ...]
Shapes = tuple[Shape, ...]
Params = dict[str, Any]
Inputs = tuple[torch.Tensor, ...]

RecipesFn = Callable[[Shapes, Params, int], list[Recipe]]
ProgramFn = Callable[[int, int, Inputs, list[Material], Params], Program]
OutShapeFn = Callable[[Shapes, Params], Shape]


@dataclass(frozen=True)
class OpSpec:
    """One SMPC operation (see the module docstring).

    Attributes
    ----------
    name : str
        Its key in :data:`.protocols.OPS`.
    arity : int
        Number of shared inputs.
    recipes_fn, program_fn, out_shape_fn
        The three functions; call them through the methods below.
    rounds : str
        Communication rounds, for the documentation (e.g. ``"2"``, ``"7(n-1)+2"``).
    doc : str
        One line: what it computes.
    """

    name: str
    arity: int
    recipes_fn: RecipesFn
    program_fn: ProgramFn
    out_shape_fn: OutShapeFn
    rounds: str = "0"
    doc: str = ""

    def recipes(self, shapes: Shapes, params: Params | None = None, n: int = 2) -> list[Recipe]:
        """Dealer recipes for inputs of ``shapes`` among ``n`` parties (public only)."""
        return self.recipes_fn(_shapes(shapes), dict(params or {}), n)

    def program(self, party: int, n: int, inputs: Inputs, material: list[Material],
                params: Params | None = None) -> Program:
        """Party ``party``'s program (a generator yielding :class:`~.engine.Open`)."""
        return self.program_fn(party, n, tuple(inputs), list(material), dict(params or {}))

    def out_shape(self, shapes: Shapes, params: Params | None = None) -> Shape:
        """Public shape of the output."""
        return tuple(self.out_shape_fn(_shapes(shapes), dict(params or {})))


def _shapes(shapes: Any) -> Shapes:
    return tuple(tuple(int(d) for d in s) for s in shapes)


def local_program(value: torch.Tensor) -> Generator[Open, tuple[torch.Tensor, ...], torch.Tensor]:
    """A program that opens nothing and returns ``value`` (local operations)."""
    if False:  # pragma: no cover - makes this function a generator
        yield Open(())
    return value
