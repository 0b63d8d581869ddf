"""The contract between SMPC protocols and whatever carries their messages.

A protocol is written once, as a *party program*: a generator that one party
runs on its own shares. It never touches a socket. When it needs the other
parties, it yields a request and is sent the answer:

* :class:`Open` -- "here is my contribution; give me the combination of every
  party's" (the sum mod 2^64 for arithmetic shares, the XOR for binary
  shares). Only masked values are ever opened.

Dealer material (Beaver triples, truncation pairs, comparison bits) is made
*before* the online phase from a :class:`Recipe` that depends only on public
shapes, so the dealer never sees a share of the data; each party's program is
given its own part of the material as an argument, and uses it up (in place:
material serves one run). A program only reads its input shares and the
opened values it is sent (in the local engine every party is sent the same
tensors).

Two engines run party programs: :mod:`.local` runs all parties in lockstep in
one process (tests, in-process benchmarks); the worker's SMPC service runs one
party and exchanges each :class:`Open` with its peers over encrypted channels.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

#: What an open combines: arithmetic shares add (mod 2^64), binary shares XOR.
Combine = Literal["add", "xor"]


@dataclass(frozen=True)
class Open:
    """A party's contributions to one opening (all parties yield the same shapes)."""

    values: tuple[torch.Tensor, ...]
    combine: Combine = "add"


@dataclass(frozen=True)
class Recipe:
    """Public description of dealer material: its kind and the shapes it is made for.

    ``kind`` names a generator in :mod:`.dealer` (e.g. ``"mul"``, ``"matmul"``,
    ``"trunc"``, ``"compare"``); ``shapes`` and ``params`` are public (no share
    or value of the data ever goes into a recipe).
    """

    kind: str
    shapes: tuple[tuple[int, ...], ...]
    params: dict[str, Any] = field(default_factory=dict)


#: One party's part of the material of one recipe: named tensors.
Material = dict[str, torch.Tensor]

#: A party program: yields :class:`Open` requests, is sent the combined tensors
#: (a tuple, one per value opened), returns the party's output share(s).
Program = Generator[Open, tuple[torch.Tensor, ...], Any]
