"""ServerCompressor (server-side recompression with the server's own residual) against the reference,
plus conservation (nothing is lost), determinism and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from commkernels import compress
from commkernels.compress import ServerCompressor, SparseMsg
from commkernels.reference import ef as ref


def worker_msgs(rng, workers: int, size: int, k: int, dtype: str, framework: str):
    msgs = []
    for _ in range(workers):
        x = rng.standard_normal(size).astype(np.float32)
        if framework == "torch":
            x = torch.from_numpy(x).to(getattr(torch, dtype))
        else:
            x = x.astype(dtype)
        msgs.append(compress.topk(x, k))
    return msgs


def as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.cpu().float().numpy() if a.dtype == torch.bfloat16 else a.cpu().numpy()
    return np.asarray(a)


@given(framework=st.sampled_from(["numpy", "torch"]), acc=st.sampled_from(["float32", "float64"]),
       workers=st.integers(0, 6), size=st.integers(1, 300), k_frac=st.floats(0, 1), up_frac=st.floats(0, 1),
       average=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_server_matches_reference(framework, acc, workers, size, k_frac, up_frac, average, seed):
    rng = np.random.default_rng(seed)
    k, k_up = int(k_frac * size), int(up_frac * size)
    like = torch.zeros(1) if framework == "torch" else None
    server = ServerCompressor(size, k, dtype=acc, like=like)
    residual = np.zeros(size, acc)
    for _ in range(3):
        msgs = worker_msgs(rng, workers, size, k_up, acc, framework)
        got = server.step(msgs, average=average)
        pairs = [(as_numpy(m.values), as_numpy(m.indices)) for m in msgs]
        values, indices, residual = ref.server_step(pairs, size, residual, k, average)
        assert type(got.values) is type(msgs[0].values if msgs else (like if like is not None else residual))
        np.testing.assert_array_equal(as_numpy(got.indices), indices)
        np.testing.assert_array_equal(as_numpy(got.values), values)
        np.testing.assert_array_equal(as_numpy(server.residual), residual)


@pytest.mark.parametrize("framework", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_server_loses_nothing(framework, dtype):
    # Everything aggregated is either sent downlink or kept in the residual (up to float32 rounding),
    # including the rounding of 16-bit downlink values.
    if framework == "numpy" and dtype == "bfloat16":
        pytest.skip("no bfloat16 in NumPy")
    rng = np.random.default_rng(0)
    size = 500
    like = torch.zeros(1) if framework == "torch" else None
    server = ServerCompressor(size, 25, dtype=dtype, like=like)
    total_in, total_out = np.zeros(size), np.zeros(size)
    for _ in range(20):
        msgs = worker_msgs(rng, 4, size, 50, "float32", framework)
        total_in += sum(compress.decompress(SparseMsg(as_numpy(m.values), as_numpy(m.indices), size))
                        for m in msgs) / 4
        down = server.step(msgs)
        assert str(down.values.dtype).removeprefix("torch.") == dtype
        total_out[as_numpy(down.indices)] += as_numpy(down.values)
    np.testing.assert_allclose(total_out + as_numpy(server.residual), total_in, atol=1e-4)


def test_server_message_order_is_the_summation_order():
    # Deterministic: the same messages in the same order give bitwise the same result.
    rng = np.random.default_rng(1)
    msgs = worker_msgs(rng, 8, 1000, 300, "float32", "numpy")
    a, b = ServerCompressor(1000, 50), ServerCompressor(1000, 50)
    for _ in range(3):
        ma, mb = a.step(msgs), b.step(msgs)
        np.testing.assert_array_equal(ma.values, mb.values)
        np.testing.assert_array_equal(ma.indices, mb.indices)


def test_server_device(device):
    rng = np.random.default_rng(2)
    msgs = worker_msgs(rng, 3, 400, 40, "float32", "torch")
    cpu = ServerCompressor(400, 30, like=torch.zeros(1))
    dev = ServerCompressor(400, 30, like=torch.zeros(1, device=device))
    a = cpu.step(msgs)
    b = dev.step([SparseMsg(m.values.to(device), m.indices.to(device), m.size) for m in msgs])
    assert b.values.device.type == device
    assert torch.equal(a.indices, b.indices.cpu()) and torch.equal(a.values, b.values.cpu())


def test_server_bad_inputs():
    with pytest.raises(ValueError, match="k"):
        ServerCompressor(10, 11)
    with pytest.raises(ValueError, match="dtype"):
        ServerCompressor(10, 1, dtype="int8")
    with pytest.raises(TypeError, match="like"):
        ServerCompressor(10, 1, like=[1.0])
    server = ServerCompressor(10, 2)
    good = compress.topk(np.arange(10, dtype=np.float32), 3)
    with pytest.raises(ValueError, match=r"msgs\[1\].size"):
        server.step([good, SparseMsg(good.values, good.indices, 11)])
    with pytest.raises(ValueError, match=r"msgs\[0\].indices"):
        server.step([SparseMsg(good.values, np.array([0, 1, 10], np.int32), 10)])
    with pytest.raises(TypeError, match=r"msgs\[0\]"):
        server.step([(good.values, good.indices, 10)])
    with pytest.raises(TypeError, match=r"msgs\[0\].values"):
        server.step([SparseMsg(torch.from_numpy(good.values), torch.from_numpy(good.indices), 10)])
    with pytest.raises(TypeError, match=r"msgs\[0\].indices"):
        server.step([SparseMsg(good.values, good.indices.astype(np.float32), 10)])
