"""Sanity checks of the reference itself against independent definitions (torch, brute force)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from commkernels.reference import compress as ref


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=200))
def test_round_to_bfloat16_is_torchs_rounding(words):
    x = np.array(words, dtype=np.uint32).view(np.float32)
    got = ref.round_to_bfloat16(x)
    expected = torch.from_numpy(x.copy()).to(torch.bfloat16).float().numpy()
    same_nan = np.isnan(got) == np.isnan(expected)
    assert same_nan.all()
    np.testing.assert_array_equal(got[~np.isnan(got)].view(np.uint32), expected[~np.isnan(expected)].view(np.uint32))


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 8, 9, 31, 64, 100, 1000, 4097])
@pytest.mark.parametrize("seed, step", [(0, 0), (1, 2), (2**64 - 1, 2**64 - 1)])
def test_feistel_permutation_is_a_permutation(size, seed, step):
    perm = ref.feistel_permutation(size, seed, step, np.arange(size))
    np.testing.assert_array_equal(np.sort(perm), np.arange(size))


def test_feistel_permutation_depends_on_the_key():
    base = ref.feistel_permutation(1000, 1, 2, np.arange(1000))
    assert not np.array_equal(base, ref.feistel_permutation(1000, 1, 3, np.arange(1000)))
    assert not np.array_equal(base, ref.feistel_permutation(1000, 2, 2, np.arange(1000)))
    assert not np.array_equal(base, np.arange(1000))


@given(st.lists(st.floats(allow_nan=False), min_size=0, max_size=60, unique_by=abs), st.data())
def test_topk_reference_is_torch_topk_for_distinct_magnitudes(values, data):
    x = np.array(values, dtype=np.float64)
    k = data.draw(st.integers(0, x.size))
    got_values, got_indices = ref.topk(x, k)
    expected = torch.topk(torch.from_numpy(np.abs(x)), k).indices.sort().values.numpy()
    np.testing.assert_array_equal(got_indices, expected)
    np.testing.assert_array_equal(got_values, x[expected])


def test_topk_reference_definition_by_brute_force():
    x = np.array([np.nan, -3.0, 3.0, -0.0, 0.0, np.inf, -np.nan, 1.0], dtype=np.float32)
    order = sorted(range(x.size), key=lambda i: (not np.isnan(x[i]), -abs(float(x[i])) if not np.isnan(x[i]) else 0, i))
    for k in range(x.size + 1):
        assert ref.topk(x, k)[1].tolist() == sorted(order[:k])


def test_ef_topk_reference_does_not_modify_inputs():
    grad, residual = np.ones(4, np.float32), np.arange(4, dtype=np.float32)
    values, indices, new_residual = ref.ef_topk(grad, residual, 2)
    assert grad.tolist() == [1, 1, 1, 1] and residual.tolist() == [0, 1, 2, 3]
    assert indices.tolist() == [2, 3] and values.tolist() == [3, 4] and new_residual.tolist() == [1, 2, 0, 0]
