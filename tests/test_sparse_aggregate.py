"""sparse_aggregate against its reference, the exact summation order, determinism, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import commkernels
from commkernels import compress
from commkernels.compress import SparseMsg
from commkernels.reference import wire as ref

DTYPES = ("float32", "float64", "float16", "bfloat16")
TORCH_DTYPE = {name: getattr(torch, name) for name in DTYPES}
EPS = {"float32": 2.0**-23, "float64": 2.0**-52, "float16": 2.0**-10, "bfloat16": 2.0**-7}
SUBNORMAL = {"float32": 2.0**-149, "float64": 2.0**-1074, "float16": 2.0**-24, "bfloat16": 2.0**-133}


def make_msgs(rng, count, size, dtype, framework, index_dtype="int32", density=None, device="cpu"):
    msgs = []
    for _ in range(count):
        p = rng.uniform(0, 1) if density is None else density
        idx = np.flatnonzero(rng.random(size) < p).astype(index_dtype)
        vals = rng.standard_normal(idx.size) * 10.0 ** rng.uniform(-2, 2)
        if framework == "numpy":
            msgs.append(SparseMsg(vals.astype(dtype), idx, size))
        else:
            msgs.append(SparseMsg(torch.from_numpy(vals).to(TORCH_DTYPE[dtype]).to(device),
                                  torch.from_numpy(idx).to(device), size))
    return msgs


def as_float64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().to(torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def ordered_sum(msgs, size, dtype, average):
    """The kernel's exact arithmetic: per element, in message order, in float32 (float64 for float64),
    then divided by the count and rounded once to dtype."""
    acc_dtype = torch.float64 if dtype == "float64" else torch.float32
    acc = torch.zeros(size, dtype=acc_dtype)
    for values, indices, _ in msgs:
        v = values.cpu() if isinstance(values, torch.Tensor) else torch.from_numpy(np.asarray(values))
        i = indices.cpu() if isinstance(indices, torch.Tensor) else torch.from_numpy(np.asarray(indices))
        acc[i.long()] += v.to(acc_dtype)
    if average:
        acc = acc / len(msgs)
    return acc.to(TORCH_DTYPE[dtype])


@given(st.sampled_from(DTYPES), st.sampled_from(["numpy", "torch"]), st.integers(1, 9), st.integers(0, 20_000),
       st.booleans(), st.sampled_from(["int32", "int64"]), st.integers(0, 2**32 - 1))
def test_matches_reference(dtype, framework, count, size, average, index_dtype, seed):
    if dtype == "bfloat16":
        framework = "torch"
    rng = np.random.default_rng(seed)
    msgs = make_msgs(rng, count, size, dtype, framework, index_dtype)
    got = compress.sparse_aggregate(msgs, size, average=average)
    assert type(got) is type(msgs[0].values) and str(got.dtype) == str(msgs[0].values.dtype)
    assert tuple(got.shape) == (size,)
    # bit for bit the documented order of summation
    expected = ordered_sum(msgs, size, dtype, average)
    torch.testing.assert_close(torch.as_tensor(np.asarray(got)) if framework == "numpy" else got, expected,
                               rtol=0, atol=0, equal_nan=True)
    # and close to the float64 definition
    want = ref.sparse_aggregate([(as_float64(v), as_float64(i)) for v, i, _ in msgs], size, average)
    bound = np.zeros(size)
    for v, i, _ in msgs:
        np.add.at(bound, as_float64(i).astype(np.int64), np.abs(as_float64(v)))
    if average:
        bound /= count
    acc_eps = EPS["float64"] if dtype == "float64" else EPS["float32"]
    tol = bound * (count * acc_eps + EPS[dtype]) + SUBNORMAL[dtype]  # the final rounding may be subnormal
    assert np.all(np.abs(as_float64(got) - want) <= tol)


def test_deterministic_whatever_the_thread_count():
    rng = np.random.default_rng(3)
    msgs = make_msgs(rng, 16, 300_000, "float32", "numpy", density=0.05)
    before, results = commkernels.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            commkernels.set_num_threads(threads)
            results.append(compress.sparse_aggregate(msgs, 300_000).tobytes())
    finally:
        commkernels.set_num_threads(before)
    assert results[0] == results[1] == results[2]


def test_one_message_is_decompress():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(5000).astype(np.float32)
    msg = compress.topk(x, 100)
    np.testing.assert_array_equal(compress.sparse_aggregate([msg], 5000), compress.decompress(msg))


def test_cuda_matches_cpu_bitwise(device):
    rng = np.random.default_rng(5)
    for dtype in DTYPES:
        msgs = make_msgs(rng, 9, 10_000, dtype, "torch", density=0.1)
        cpu = compress.sparse_aggregate(msgs, 10_000, average=True)
        on_device = [SparseMsg(v.to(device), i.to(device), s) for v, i, s in msgs]
        got = compress.sparse_aggregate(on_device, 10_000, average=True)
        assert got.device.type == device
        torch.testing.assert_close(got.cpu(), cpu, rtol=0, atol=0)


def test_out_is_overwritten_and_returned(device):
    rng = np.random.default_rng(8)
    for framework in ("numpy", "torch"):
        if framework == "numpy" and device != "cpu":
            continue
        msgs = make_msgs(rng, 5, 3000, "float32", framework, device=device)
        want = compress.sparse_aggregate(msgs, 3000, average=True)
        out = np.full(3000, np.nan, np.float32) if framework == "numpy" else torch.full((3000,), float("nan"), device=device)
        got = compress.sparse_aggregate(msgs, 3000, average=True, out=out)
        assert got is out
        np.testing.assert_array_equal(np.asarray(got.cpu() if framework == "torch" else got), np.asarray(want.cpu() if framework == "torch" else want))
    msgs = make_msgs(rng, 2, 10, "float32", "torch", density=0.5, device=device)
    torch.library.opcheck(torch.ops.commkernels.sparse_aggregate_out.default,
                          ([m.values for m in msgs], [m.indices for m in msgs], 10, False, torch.empty(10, device=device)))
    with pytest.raises(ValueError, match="out"):
        compress.sparse_aggregate(msgs, 10, out=torch.empty(11, device=device))
    with pytest.raises(TypeError, match="out"):
        compress.sparse_aggregate(msgs, 10, out=torch.empty(10, dtype=torch.float64, device=device))


def test_jax():
    jax = pytest.importorskip("jax")
    rng = np.random.default_rng(6)
    msgs = make_msgs(rng, 3, 1000, "float32", "numpy")
    want = compress.sparse_aggregate(msgs, 1000)
    got = compress.sparse_aggregate([SparseMsg(jax.numpy.asarray(v), jax.numpy.asarray(i), s) for v, i, s in msgs], 1000)
    assert isinstance(got, jax.Array)
    np.testing.assert_array_equal(np.asarray(got), want)


def test_torch_opcheck_and_compile(device):
    rng = np.random.default_rng(7)
    for dtype in DTYPES:
        msgs = make_msgs(rng, 3, 64, dtype, "torch", density=0.3, device=device)
        torch.library.opcheck(torch.ops.commkernels.sparse_aggregate.default,
                              ([m.values for m in msgs], [m.indices for m in msgs], 64, True))
    torch._dynamo.reset()
    x = torch.randn(4, 1000, device=device)

    def step(x):
        return compress.sparse_aggregate([compress.topk(row, 10) for row in x], 1000, average=True)

    torch.testing.assert_close(torch.compile(step, fullgraph=True, backend="aot_eager")(x), step(x))


def test_bad_inputs():
    good = SparseMsg(np.ones(3, np.float32), np.array([0, 2, 4], np.int32), 5)
    with pytest.raises(TypeError, match="msgs"):
        compress.sparse_aggregate([], 5)
    with pytest.raises(TypeError, match="msgs"):
        compress.sparse_aggregate(good, 5)
    with pytest.raises(ValueError, match=r"msgs\[1\].size"):
        compress.sparse_aggregate([good, good._replace(size=6)], 5)
    with pytest.raises(TypeError, match=r"msgs\[1\].values"):
        compress.sparse_aggregate([good, good._replace(values=good.values.astype(np.float64))], 5)
    with pytest.raises(TypeError, match=r"msgs\[1\].indices"):
        compress.sparse_aggregate([good, good._replace(indices=good.indices.astype(np.int64))], 5)
    with pytest.raises(TypeError, match=r"msgs\[1\].values"):
        compress.sparse_aggregate([good, good._replace(values=torch.ones(3), indices=torch.tensor([0, 2, 4]))], 5)
    with pytest.raises(ValueError, match=r"msgs\[1\].indices: expected strictly ascending"):
        compress.sparse_aggregate([good, good._replace(indices=np.array([0, 4, 2], np.int32))], 5)
    with pytest.raises(ValueError, match=r"msgs\[0\].indices: expected strictly ascending"):
        compress.sparse_aggregate([good._replace(indices=np.array([0, 2, 5], np.int32))], 5)
    with pytest.raises(ValueError, match=r"msgs\[0\].indices: expected strictly ascending"):
        compress.sparse_aggregate([good._replace(indices=np.array([-1, 2, 3], np.int32))], 5)
    with pytest.raises(ValueError, match=r"msgs\[0\]: 3 values but 2"):
        compress.sparse_aggregate([good._replace(indices=np.array([0, 2], np.int32))], 5)
    with pytest.raises(ValueError, match="size"):
        compress.sparse_aggregate([good._replace(size=-1)], -1)
