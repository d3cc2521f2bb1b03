"""JAX arrays (CPU) in, JAX arrays out: the same results as NumPy on the same data."""

from __future__ import annotations

import numpy as np
import pytest

from commkernels import compress

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


def numpy_and_jax(n: int, dtype: str = "float32", seed: int = 0):
    x = np.random.default_rng(seed).standard_normal(n).astype(dtype)
    return x, jnp.asarray(x)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_topk_and_randk_match_numpy(dtype):
    x, xj = numpy_and_jax(10_001, dtype)
    for fn, args in ((compress.topk, (137,)), (compress.randk, (137, 5, 6))):
        expected, got = fn(x, *args), fn(xj, *args)
        assert isinstance(got.values, jax.Array) and isinstance(got.indices, jax.Array)
        assert got.values.dtype == xj.dtype and got.indices.dtype == jnp.int32
        np.testing.assert_array_equal(np.asarray(got.indices), expected.indices)
        np.testing.assert_array_equal(np.asarray(got.values), expected.values)
        dense = compress.decompress(got)
        assert isinstance(dense, jax.Array)
        np.testing.assert_array_equal(np.asarray(dense), compress.decompress(expected))


def test_bfloat16_is_refused_clearly():
    xj = jnp.zeros(10, dtype=jnp.bfloat16)
    with pytest.raises(TypeError, match="x: bfloat16 JAX"):
        compress.topk(xj, 1)


def test_randk_indices_like_jax():
    _, xj = numpy_and_jax(4)
    got = compress.randk_indices(1000, 10, 1, 2, like=xj)
    assert isinstance(got, jax.Array)
    np.testing.assert_array_equal(np.asarray(got), compress.randk_indices(1000, 10, 1, 2))


def test_immutable_arrays_are_refused_where_updated_in_place():
    x, xj = numpy_and_jax(100)
    with pytest.raises(TypeError, match="residual"):
        compress.ef_topk_(xj, xj, 3)
    with pytest.raises(TypeError, match="residual"):  # a NumPy residual beside a JAX grad: mixed frameworks
        compress.ef_topk_(xj, x.copy(), 3)
    with pytest.raises(TypeError, match="out"):
        compress.decompress(compress.topk(xj, 3), out=jnp.zeros(100, jnp.float32))
