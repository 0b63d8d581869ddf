"""The dealer's material holds the promised correlations; the local engine's checks."""

from __future__ import annotations

import pytest
import torch

from kernel_bridge.smpc import dealer, fixed, local, protocols, ring, sharing
from kernel_bridge.smpc.engine import Open, Recipe
from kernel_bridge.smpc.errors import ShapeError, UnsupportedOp
from kernel_bridge.smpc.prng import Stream


def joined(parts: list[dict[str, torch.Tensor]], name: str, xor: bool = False) -> torch.Tensor:
    shares = [p[name] for p in parts]
    return sharing.reconstruct_xor(shares) if xor else sharing.reconstruct(shares)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_correlations(n: int) -> None:
    mul = dealer.make(Recipe("mul", ((3, 4), (1, 4))), n)
    assert len(mul) == n
    a, b, c = (joined(mul, k) for k in "abc")
    assert a.shape == (3, 4) and b.shape == (1, 4) and torch.equal(c, a * b)

    mm = dealer.make(Recipe("matmul", ((3, 5), (5, 2))), n)
    assert torch.equal(joined(mm, "c"), ring.ring_matmul(joined(mm, "a"), joined(mm, "b")))

    cv = dealer.make(Recipe("conv2d", ((1, 2, 5, 5), (3, 2, 3, 3)), {"padding": 1}), n)
    assert torch.equal(joined(cv, "c"),
                       ring.ring_conv2d(joined(cv, "a"), joined(cv, "b"), padding=1))

    tr = dealer.make(Recipe("trunc", ((1000,),), {"bits": 16}), n)
    # r - 2^62, (r >>> 16) + 1 - 2^46 and msb(r) << 48: the protocol's public constants
    # ride on the material (no party adds them online).
    r = joined(tr, "r") + dealer.TRUNC_OFFSET
    hi, wrap = joined(tr, "hi"), joined(tr, "wrap")
    assert torch.equal(hi, ((r >> 16) & ((1 << 48) - 1)) + 1 - (1 << 46))
    assert torch.equal(wrap, (r < 0).to(torch.int64) << 48)
    assert set(wrap.unique().tolist()) <= {0, 1 << 48} and r.unique().numel() > 990

    an = dealer.make(Recipe("and", ((12, 7),)), n)
    a, b, c = (joined(an, k, xor=True) for k in "abc")
    assert torch.equal(c, a & b)

    db = dealer.make(Recipe("dabit", ((500,),)), n)
    bit_x, bit_a = joined(db, "bin", xor=True), joined(db, "arith")
    assert torch.equal(bit_x, bit_a) and set(bit_a.unique().tolist()) <= {0, 1}


def test_dealer_is_reproducible_only_with_a_seed() -> None:
    r = Recipe("mul", ((4,), (4,)))
    one = dealer.make(r, 2, Stream(b"d" * 32))
    two = dealer.make(r, 2, Stream(b"d" * 32))
    assert torch.equal(one[1]["a"], two[1]["a"])
    assert not torch.equal(dealer.make(r, 2)[1]["a"], dealer.make(r, 2)[1]["a"])


def test_dealer_refuses() -> None:
    with pytest.raises(UnsupportedOp):
        dealer.make(Recipe("oblivious-transfer", ((1,),)), 2)
    with pytest.raises(UnsupportedOp, match="1 to 62"):
        dealer.make(Recipe("trunc", ((4,),), {"bits": 63}), 2)
    with pytest.raises(UnsupportedOp):
        dealer.make(Recipe("mul", ((1,), (1,))), 1)


def test_recipes_hold_only_public_shapes() -> None:
    """What goes to the dealer: kinds, shapes, small public params; never a tensor."""
    for name, spec in protocols.OPS.items():
        shapes = ((2, 3, 4, 4), (5, 3, 3, 3)) if name == "conv2d" else \
            ((4, 4),) * spec.arity
        params = {"value": 3.5} if name.endswith("_public") else {}
        for recipe in spec.recipes(shapes, params, 3):
            assert isinstance(recipe.kind, str) and recipe.kind in dealer.KINDS
            assert all(isinstance(d, int) for s in recipe.shapes for d in s)
            assert not any(isinstance(v, torch.Tensor) for v in recipe.params.values())


def test_programs_only_read_their_inputs_and_the_opened_values() -> None:
    """Inputs are the parties' stored shares and an opened value is every party's common
    answer (one tensor in the local engine): programs only read them. Their material is
    theirs alone and used up in place (one triple serves one product)."""
    x = [sharing.share(fixed.encode(torch.randn(6, 6)), 2) for _ in range(2)]
    for name in ("mul", "matmul", "relu", "max", "div_public"):
        spec = protocols.get(name)
        ins = x[:spec.arity]
        params = {"value": 3.0} if name == "div_public" else {}
        material = dealer.make_all(spec.recipes(((6, 6),) * spec.arity, params, 2), 2)
        before = [t.clone() for s in ins for t in s]
        progs = [spec.program(p, 2, tuple(s[p] for s in ins), material[p], params)
                 for p in range(2)]
        reqs = [next(g) for g in progs]
        opened: list[tuple[torch.Tensor, torch.Tensor]] = []
        done = False
        while not done:
            combined = local._combine(reqs)  # noqa: SLF001 - the engine's combination
            opened += [(t, t.clone()) for t in combined]
            try:
                reqs = [g.send(combined) for g in progs]
            except StopIteration:
                done = True
        assert opened
        assert all(torch.equal(a, b) for a, b in
                   zip(before, [t for s in ins for t in s], strict=True)), name
        assert all(torch.equal(t, copy) for t, copy in opened), name


def test_engine_rejects_inconsistent_opens() -> None:
    with pytest.raises(ShapeError):
        local._combine([Open((torch.zeros(2, dtype=torch.int64),)),
                        Open((torch.zeros(3, dtype=torch.int64),))])
    with pytest.raises(ShapeError):
        local._combine([Open((torch.zeros(2, dtype=torch.int64),), "add"),
                        Open((torch.zeros(2, dtype=torch.int64),), "xor")])
    with pytest.raises(ShapeError):
        local.run_local("mul", [sharing.share(fixed.encode([1.0]), 2),
                                sharing.share(fixed.encode([1.0]), 3)])


def test_execute_reports_rounds_and_times() -> None:
    x = [sharing.share(fixed.encode(torch.randn(10)), 2)]
    run = local.execute("relu", x, n=2, record=True)
    assert run.rounds == 9 and run.online_s >= run.critical_s > 0 and run.offline_s > 0
    assert run.views is not None and len(run.views[0].opened) > 0
    assert local.execute("add", x * 2).rounds == 0
    three = [sharing.share(fixed.encode(torch.randn(10)), 3)]
    assert local.execute("ltz", three).rounds == 7 * 2 + 1


def test_errors_cross_the_wire_as_their_type() -> None:
    from kernel_bridge.errors import from_wire

    err = ShapeError("matmul inner dimensions differ: (2, 3) @ (2, 3)", op="matmul")
    back = from_wire(err.to_wire())
    assert type(back) is ShapeError and isinstance(back, ValueError)
    assert back.data == {"op": "matmul"}
