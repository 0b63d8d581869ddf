"""TEMPORARY stand-in for the smpc-core branch (deleted once it is merged)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .engine import Material, Open, Program, Recipe

FRAC_BITS = 16
SCALE = 1 << FRAC_BITS


def encode(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.to(torch.float64) * SCALE).to(torch.int64)


def decode(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64) / SCALE


def rand(shape: tuple[int, ...]) -> torch.Tensor:
    n = 1
    for s in shape:
        n *= s
    return torch.frombuffer(bytearray(os.urandom(8 * n)), dtype=torch.int64).reshape(shape) \
        if n else torch.zeros(shape, dtype=torch.int64)


def share(x: torch.Tensor, n: int) -> list[torch.Tensor]:
    parts = [rand(tuple(x.shape)) for _ in range(n - 1)]
    last = x.clone()
    for p in parts:
        last = last - p
    return [*parts, last]


def reconstruct(shares: list[torch.Tensor]) -> torch.Tensor:
    out = shares[0].clone()
    for s in shares[1:]:
        out = out + s
    return out


def make(recipe: Recipe, n: int) -> list[Material]:
    if recipe.kind in ("mul", "matmul"):
        sa, sb = recipe.shapes
        a, b = rand(sa), rand(sb)
        c = a * b if recipe.kind == "mul" else a @ b
        A, B, C = share(a, n), share(b, n), share(c, n)
        return [{"a": A[i], "b": B[i], "c": C[i]} for i in range(n)]
    raise ValueError(recipe.kind)


def _trunc(party: int, n: int, z: torch.Tensor) -> torch.Tensor:
    # SecureML local truncation (2 parties only; stand-in)
    if party == 0:
        return z >> FRAC_BITS
    return -((-z) >> FRAC_BITS)


@dataclass
class OpSpec:
    recipes: Callable[..., list[Recipe]]
    program: Callable[..., Program]
    out_shape: Callable[..., tuple[int, ...]]


def _lin(f: Callable[..., torch.Tensor]) -> OpSpec:
    def program(party: int, n: int, inputs: list[torch.Tensor], material: list[Material],
                params: dict[str, Any]) -> Program:
        return f(party, inputs, params)
        yield  # pragma: no cover

    return OpSpec(lambda shapes, params: [], program,
                  lambda shapes, params: tuple(torch.broadcast_shapes(*shapes)))


def _beaver(kind: str) -> OpSpec:
    def program(party: int, n: int, inputs: list[torch.Tensor], material: list[Material],
                params: dict[str, Any]) -> Program:
        x, y = inputs
        m = material[0]
        e, f = yield Open((x - m["a"], y - m["b"]))
        mm = (lambda p, q: p * q) if kind == "mul" else (lambda p, q: p @ q)
        z = mm(e, m["b"]) + mm(m["a"], f) + m["c"]
        if party == 0:
            z = z + mm(e, f)
        return _trunc(party, n, z)

    def shape(shapes: Any, params: Any) -> tuple[int, ...]:
        if kind == "mul":
            return tuple(torch.broadcast_shapes(*shapes))
        return (shapes[0][0], shapes[1][1])

    return OpSpec(lambda shapes, params: [Recipe(kind, tuple(tuple(s) for s in shapes))],
                  program, shape)


def _add_public(party: int, inputs: list[torch.Tensor], params: dict[str, Any]) -> torch.Tensor:
    v = encode(torch.tensor(params["value"]))
    return inputs[0] + v if party == 0 else inputs[0].clone()


def _mul_public(party: int, inputs: list[torch.Tensor], params: dict[str, Any]) -> torch.Tensor:
    v = encode(torch.tensor(params["value"]))
    return _trunc(party, 2, inputs[0] * v)


OPS: dict[str, OpSpec] = {
    "add": _lin(lambda p, i, q: i[0] + i[1]),
    "sub": _lin(lambda p, i, q: i[0] - i[1]),
    "neg": _lin(lambda p, i, q: -i[0]),
    "add_public": _lin(_add_public),
    "mul_public": _lin(_mul_public),
    "mul": _beaver("mul"),
    "matmul": _beaver("matmul"),
}
