"""HE evaluation code, in process: parameters, precision, packing, the MLP, the evaluation.

The documented bounds tested here: at depth 3 (N=8192, scale 2^35) a chain of
three plaintext products on values in [-1, 1] keeps more than 20 bits; the
vector × matrix product of values in [-1, 1] is within 1e-4 of numpy's; the
tutorial-sized MLP's outputs within 1e-3 (absolute, logits of magnitude ~10).
"""

from __future__ import annotations

import numpy as np
import pytest

import kernel_bridge as kb
from kernel_bridge.he.evaluate import evaluate_mse, row_bound
from kernel_bridge.he.linear import PlainLinear, period_of
from kernel_bridge.he.mlp import PolyMLP, layers_of
from kernel_bridge.he.params import MAX_COEFF_BITS, for_depth
from kernel_bridge.he.seal import Evaluator
from kernel_bridge.he.vector import EncryptedVector


@pytest.fixture(scope="module")
def ctx3() -> kb.he.Context:
    return kb.he.context(depth=3)


@pytest.fixture(scope="module")
def worker_ev(ctx3: kb.he.Context) -> Evaluator:
    """An evaluator under the *public* context only, as the worker has it."""
    import tenseal as ts

    public = ts.context_from(ctx3.public().data)
    assert not public.has_secret_key()
    return Evaluator(public)


def _run(ev: Evaluator, ctx: kb.he.Context, enc: EncryptedVector, fn, size: int) -> np.ndarray:
    ct, _ = ev.load(enc.to_wire().data)
    out = fn(ct)
    from kernel_bridge.wire.sealed import HEVectorBytes

    return EncryptedVector.from_wire(ctx, HEVectorBytes(ev.dump(out, size))).decrypt()


def test_parameters_follow_depth_and_stay_secure() -> None:
    assert for_depth(2).coeff_mod_bit_sizes == (60, 40, 40, 60)
    for depth in range(1, 12):
        p = for_depth(depth)
        assert p.depth == depth == len(p.coeff_mod_bit_sizes) - 2
        assert sum(p.coeff_mod_bit_sizes) <= MAX_COEFF_BITS[p.poly_modulus_degree]
    assert for_depth(3).poly_modulus_degree == 8192
    assert for_depth(5).poly_modulus_degree == 16384
    with pytest.raises(ValueError):
        for_depth(0)


def test_context_reports_measured_precision(ctx3: kb.he.Context) -> None:
    assert ctx3.params.depth == 3
    assert ctx3.precision["bits"] > 20
    assert ctx3.precision["max_abs_error"] < 2.0**-20
    assert "depth=3" in repr(ctx3)
    # The public form holds no secret key; the private one stays in the object.
    assert ctx3.tenseal.has_secret_key()
    import tenseal as ts

    assert not ts.context_from(ctx3.public().data).has_secret_key()


@pytest.mark.parametrize("m,n", [(10, 784), (8, 11), (20, 3), (1, 6)])
def test_vector_times_plain_matrix_matches_numpy(ctx3: kb.he.Context, worker_ev: Evaluator,
                                                 m: int, n: int) -> None:
    rng = np.random.default_rng(m * 1000 + n)
    w, b, x = rng.uniform(-1, 1, (m, n)), rng.uniform(-1, 1, m), rng.uniform(-1, 1, n)
    lin = PlainLinear(w, b, worker_ev.slots, input_factor=period_of(n) / worker_ev.slots)

    def fn(ct):
        return lin.apply(worker_ev, worker_ev.periodize(ct, lin.p_in))

    got = _run(worker_ev, ctx3, kb.he.encrypt(ctx3, x), fn, m)
    np.testing.assert_allclose(got, w @ x + b, atol=1e-4)
    if (m, n) == (10, 784):
        assert lin.rotations == 12  # 3 baby + 3 giant + 6 fold; plus 2 to periodise


def test_output_holds_nothing_but_the_result(ctx3: kb.he.Context, worker_ev: Evaluator) -> None:
    """Every slot of the result is a result value or zero: no partial sums to decrypt."""
    rng = np.random.default_rng(3)
    w, x = rng.uniform(-1, 1, (3, 5)), rng.uniform(-1, 1, 5)
    lin = PlainLinear(w, None, worker_ev.slots, input_factor=8 / worker_ev.slots)
    got = _run(worker_ev, ctx3, kb.he.encrypt(ctx3, x),
               lambda ct: lin.apply(worker_ev, worker_ev.periodize(ct, 8)), worker_ev.slots)
    expected = np.tile(np.r_[w @ x, 0.0], worker_ev.slots // 4)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_a_ciphertext_with_many_inputs_gives_one_prediction(ctx3: kb.he.Context,
                                                           worker_ev: Evaluator) -> None:
    """Different inputs in different blocks of slots are summed into one effective input."""
    import tenseal as ts

    rng = np.random.default_rng(4)
    w = rng.uniform(-1, 1, (2, 4))
    blocks = rng.uniform(-1, 1, (worker_ev.slots // 4, 4))
    vec = ts.ckks_vector(ctx3.tenseal, blocks.ravel().tolist())
    lin = PlainLinear(w, None, worker_ev.slots)
    got = _run(worker_ev, ctx3, EncryptedVector(ctx3, vec, worker_ev.slots),
               lambda ct: lin.apply(worker_ev, worker_ev.periodize(ct, 4)), worker_ev.slots)
    one = w @ blocks.sum(axis=0)
    np.testing.assert_allclose(got, np.tile(one, worker_ev.slots // 2),  # period P_out = 2
                               atol=1e-3 * max(1.0, float(np.abs(one).max())))


@pytest.mark.parametrize("activation", [(0.0, 0.0, 1.0), (0.1, 0.5, 0.25)])
def test_mlp_matches_plaintext(ctx3: kb.he.Context, worker_ev: Evaluator,
                               activation: tuple[float, float, float]) -> None:
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Linear(4, 1)).double()
    model = PolyMLP(layers_of(net.state_dict()), activation)
    assert model.depth == 3
    rng = np.random.default_rng(5)
    for x in rng.uniform(0, 1, (3, 6)):
        got = _run(worker_ev, ctx3, kb.he.encrypt(ctx3, x),
                   lambda ct: model.predict(worker_ev, ct), 1)
        np.testing.assert_allclose(got, model.plain(x), atol=1e-3)


def test_state_dicts_of_other_modules_are_refused() -> None:
    import torch

    with pytest.raises(ValueError):
        layers_of(torch.nn.Conv1d(1, 1, 3).state_dict())
    with pytest.raises(ValueError):
        layers_of({"a.weight": torch.zeros(2, 3), "b.weight": torch.zeros(2, 4)})
    with pytest.raises(ValueError):
        layers_of({"bn.running_mean": torch.zeros(3)})


def test_evaluation_matches_plaintext_and_scales_noise_with_the_model(
        ctx3: kb.he.Context, worker_ev: Evaluator) -> None:
    rng = np.random.default_rng(6)
    n, d = 700, 6  # two ciphertexts of rows
    x = rng.uniform(0, 1, (n, d))
    y = (rng.random(n) < 0.5).astype(float)
    theta = rng.normal(0, 0.4, d + 1)
    plain = np.sum((x @ theta[:d] + theta[d] - y) ** 2)
    for z in (0.0, 0.7, -1.3):
        got = _run(worker_ev, ctx3, kb.he.encrypt(ctx3, theta),
                   lambda ct, z=z: evaluate_mse(worker_ev, ct, x, y, z, float(n)), 1)[0]
        expected = (plain + row_bound(float(theta @ theta), d) * z) / n
        assert abs(got - expected) < 1e-3 * max(1.0, abs(expected))


def test_row_bound_bounds_every_row() -> None:
    rng = np.random.default_rng(9)
    for _ in range(200):
        d = int(rng.integers(1, 10))
        theta = rng.normal(0, 3, d + 1)
        x, y = rng.uniform(0, 1, d), float(rng.integers(0, 2))
        assert (x @ theta[:d] + theta[d] - y) ** 2 <= row_bound(float(theta @ theta), d)
