"""MoE capacity, load-balancing loss, z-loss, expert-bias update and expert choice against the NumPy
float64 references (commkernels.reference.moe_balance), the anchors' own expressions, and bad inputs."""

from __future__ import annotations

import decimal
import fractions
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from commkernels import moe
from commkernels.reference import moe_balance as ref

FORMULAS = ("megatron", "deepspeed", "tutel", "megablocks")


# ---- capacity -----------------------------------------------------------------------------------------

def anchor_capacity(T, k, E, factor, formula):
    """The anchors' expressions, as their sources write them (DeepSpeed through torch itself)."""
    if formula == "megatron":
        return math.ceil(((T * k) / E) * factor)
    if formula == "deepspeed":
        return int(torch.ceil((T / E) * torch.tensor(factor * k)).to(torch.int64))
    if formula == "tutel":
        return k * int(factor * ((T + E - 1) // E))
    return int(factor * (k * T / E))


factors = st.one_of(st.sampled_from([0.5, 1.0, 1.1, 1.15, 1.2, 1.25, 1.5, 2.0, 0.7, 4.0]),
                    st.floats(0.01, 8.0, allow_nan=False))


@given(st.integers(0, 100_000), st.integers(1, 512), st.data(), factors, st.integers(0, 64), st.integers(1, 128),
       st.sampled_from(FORMULAS))
def test_capacity_matches_reference(T, E, data, factor, min_capacity, align, formula):
    k = data.draw(st.integers(1, E))
    got = moe.capacity(T, k, E, factor, min_capacity, align, formula)
    assert got == ref.capacity(T, k, E, factor, min_capacity, align, formula)
    assert got % align == 0 and got >= min_capacity
    # the anchors' float expressions differ from the exact value by at most one before min/align
    anchor = moe.capacity(T, k, E, factor, formula=formula, exact=False)
    assert anchor == anchor_capacity(T, k, E, factor, formula)
    assert abs(anchor - moe.capacity(T, k, E, factor, formula=formula)) <= 1


def test_capacity_anchor_quirks():
    # documented examples where the anchors' float arithmetic crosses an integer
    assert moe.capacity(100, 1, 1, 1.1) == 110 and moe.capacity(100, 1, 1, 1.1, exact=False) == 111
    assert moe.capacity(100, 1, 8, 1.2, formula="deepspeed") == 15
    assert moe.capacity(100, 1, 8, 1.2, formula="deepspeed", exact=False) == 16 == anchor_capacity(100, 1, 8, 1.2, "deepspeed")
    for formula in ("tutel", "megablocks"):
        assert moe.capacity(100, 1, 1, 1.15, formula=formula) == 115
        assert moe.capacity(100, 1, 1, 1.15, formula=formula, exact=False) == 114
    # formulas, hand-computed: T=10, k=2, E=4, f=1.5
    assert moe.capacity(10, 2, 4, 1.5, formula="megatron") == 8        # ceil(7.5)
    assert moe.capacity(10, 2, 4, 1.5, formula="deepspeed") == 8
    assert moe.capacity(10, 2, 4, 1.5, formula="tutel") == 8           # 2 * floor(1.5 * 3)
    assert moe.capacity(10, 2, 4, 1.5, formula="megablocks") == 7      # floor(7.5)
    assert moe.capacity(10, 2, 4, 1.5, min_capacity=9, align=4) == 12
    assert moe.capacity(0, 1, 4, 1.0) == 0 and moe.capacity(0, 1, 4, 1.0, min_capacity=3, align=2) == 4
    # exact factors of other types
    assert moe.capacity(3, 1, 1, fractions.Fraction(1, 3)) == 1
    assert moe.capacity(100, 1, 1, decimal.Decimal("1.1")) == 110
    assert moe.capacity(7, 1, 2, 2) == 7


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(T=-1), ValueError, "T"), (dict(E=0), ValueError, "E"), (dict(k=0), ValueError, "k"),
    (dict(k=9), ValueError, "k"), (dict(factor=0.0), ValueError, "factor"), (dict(factor=-1), ValueError, "factor"),
    (dict(factor=math.nan), ValueError, "factor"), (dict(factor=math.inf), ValueError, "factor"),
    (dict(factor="1"), TypeError, "factor"), (dict(factor=True), TypeError, "factor"),
    (dict(min_capacity=-1), ValueError, "min_capacity"), (dict(align=0), ValueError, "align"),
    (dict(formula="gshard"), ValueError, "formula"), (dict(T=1.0), TypeError, "T"), (dict(exact=1), TypeError, "exact"),
])
def test_capacity_bad_inputs(kwargs, error, match):
    args = dict(T=10, k=2, E=8, factor=1.0) | kwargs
    with pytest.raises(error, match=match):
        moe.capacity(**args)
