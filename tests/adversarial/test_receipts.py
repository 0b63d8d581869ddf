"""Attacks on what leaves without approval: receipts, pointer metadata, request records.

The bound these tests hold is stated in ``kernel_bridge/owner/gate.py`` and in
SECURITY.md: under 22 bits per private cell whatever its size, under 13 per
pointer operation, shapes only of clean values and declared assets, and no
digest of a snapshot before it is released.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

import kernel_bridge as kb
from kernel_bridge.wire import codec

from ..conftest import PLANTED_NUMBER

BITS = 30  # PLANTED_NUMBER < 2**30

#: One cell, 30 names: each an int or a str as one bit of the secret says.
TYPE_SPELLER = "v = int(secret['value'].max())\n" + "".join(
    f"b{i} = 1 if (v >> {i}) & 1 else 'x'\n" for i in range(BITS))

#: One cell, 30 names: each bound only where one bit of the secret is set.
EXISTENCE_SPELLER = "v = int(secret['value'].max())\n" + "".join(
    f"if (v >> {i}) & 1:\n    c{i} = 1\n" for i in range(BITS))


def _decode_types(receipt: kb.Receipt) -> int:
    types = {n["name"]: n.get("type") for n in receipt.names}
    return sum(1 << i for i in range(BITS) if types.get(f"b{i}") == "int")


def _decode_existence(receipt: kb.Receipt) -> int:
    names = {n["name"] for n in receipt.names}
    return sum(1 << i for i in range(BITS) if f"c{i}" in names)


def test_variable_types_in_a_receipt_do_not_spell_the_secret(session: kb.Worker) -> None:
    r = session.run(TYPE_SPELLER)
    assert r.ok
    assert _decode_types(r) != PLANTED_NUMBER
    assert all("type" not in n for n in r.names)
    assert [n["name"] for n in r.names] == ["v"] + [f"b{i}" for i in range(BITS)]


def test_which_names_exist_does_not_spell_the_secret(session: kb.Worker) -> None:
    r = session.run(EXISTENCE_SPELLER)
    assert r.ok
    assert _decode_existence(r) != PLANTED_NUMBER
    # Every name the source assigns is listed, bound or not.
    assert {n["name"] for n in r.names} == {"v"} | {f"c{i}" for i in range(BITS)}


def test_a_receipt_does_not_grow_with_the_cell(session: kb.Worker) -> None:
    small = session.run("a = int(secret['value'].max())")
    big = session.run(TYPE_SPELLER)
    # What depends on data (status, error type/line, held or not) has the same form;
    # only names parsed from the source differ.
    keys = ("status", "error_type", "error_line")
    assert {k: small.data[k] for k in keys} == {k: big.data[k] for k in keys}
    assert len(small.held) == len(big.held) == 0


def test_shapes_of_derived_values_carry_no_private_values(session: kb.Worker) -> None:
    top = session.asset("secret")["value"].max()  # a private scalar: PLANTED_NUMBER
    grown = session.send(torch.zeros(1)).expand(top)  # a view: shape [PLANTED_NUMBER]
    small = top % 1_000_003  # small enough to allocate: still private
    tiled = session.send(np.zeros(1, dtype=np.int8)).repeat(small)
    for p, secret in ((grown, PLANTED_NUMBER), (tiled, PLANTED_NUMBER % 1_000_003)):
        assert p.taint == {"secret"}
        assert p.shape is None and p.dtype is None
        assert str(secret) not in repr(p._resolved())


def test_an_asset_pointer_shows_only_the_declared_shape(session: kb.Worker) -> None:
    ecg = session.asset("ecg")  # alice.toml: show_shape, but not the row count
    assert ecg.type_name == "numpy.ndarray"
    assert ecg.shape is not None and ecg.shape[0] is None
    declared = next(d for d in session.datasets if d["name"] == "ecg")["schema"]["shape"]
    assert list(ecg.shape) == declared
    assert session.asset("secret").shape == (None, 3)  # default: no row count


def _digest_candidates(info: dict[str, object]) -> set[str]:
    return {v for v in info.values() if isinstance(v, str) and len(v) == 64}


def test_request_records_do_not_confirm_guesses(alice: kb.Worker, session: kb.Worker,
                                                owner: kb.Owner) -> None:
    secret_max = session.asset("secret")["value"].max()
    req = secret_max.request(reason="just the max")
    owner_sha = owner.request(req.id).sha256
    # The scientist hashes candidate values and looks for a match in what it was told.
    guesses = {hashlib.sha256(codec.dumps(np.int64(g))).hexdigest(): g
               for g in (PLANTED_NUMBER - 1, PLANTED_NUMBER, PLANTED_NUMBER + 1)}
    assert owner_sha in guesses  # the attack works wherever the digest is visible

    def seen() -> list[dict[str, object]]:
        return [req.refresh()._info, *(r for r in session._call("requests")["requests"])]

    for info in seen():
        assert owner_sha not in _digest_candidates(info)
        assert "size" not in info
    owner.deny(req.id, "too precise")
    for info in seen():
        assert owner_sha not in _digest_candidates(info) and "size" not in info
    with pytest.raises(kb.RequestDenied):
        req.result()
    assert req.sha256 is None


def test_an_approved_value_comes_with_its_digest(session: kb.Worker, owner: kb.Owner) -> None:
    m = session.asset("heart")["age"].mean()
    req = m.request(reason="mean age")
    assert req.sha256 is None
    owner.approve(req.id)
    value = req.wait(timeout=10).result()
    assert req.sha256 == owner.request(req.id).sha256
    assert req.size is not None and req.size > 0
    assert float(value) > 0
