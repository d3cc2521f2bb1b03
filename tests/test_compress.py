"""commkernels.compress against its reference (commkernels.reference.compress), plus invariants and bad inputs.

Arrays are generated as raw storage bits (so every float16 / bfloat16 / float32 / float64 pattern, NaN
payloads, subnormals and infinities included, can occur) and handed to the kernels as NumPy arrays or
torch tensors. bfloat16 exists only in torch; the reference sees it as float32, which is exact.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st

import commkernels
from commkernels import compress
from commkernels.compress import SparseMsg
from commkernels.reference import compress as ref

DTYPES = ("float32", "float64", "float16", "bfloat16")
NUMPY_DTYPES = ("float32", "float64", "float16")
UINT = {"float64": np.uint64, "float32": np.uint32, "float16": np.uint16, "bfloat16": np.uint16}
SIGNED = {"float64": np.int64, "float32": np.int32, "float16": np.int16, "bfloat16": np.int16}
TORCH_DTYPE = {name: getattr(torch, name) for name in DTYPES}
FINFO = {name: torch.finfo(TORCH_DTYPE[name]) for name in DTYPES}
BITS = {"float64": 64, "float32": 32, "float16": 16, "bfloat16": 16}
KINDS = ("normal", "ties", "constant", "specials", "wide", "bits", "sorted", "strided")


# ---- generated arrays ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    """A test array: its dtype, framework, shape and storage bits; `make` builds a fresh copy."""

    dtype: str
    framework: str
    shape: tuple
    kind: str
    bits: np.ndarray = dataclasses.field(repr=False)

    @property
    def size(self) -> int:
        return int(self.bits.size)

    def make(self, device: str = "cpu"):
        if self.framework == "numpy":
            return self.bits.view(self.dtype).reshape(self.shape).copy()
        t = torch.from_numpy(self.bits.view(SIGNED[self.dtype]).copy()).view(TORCH_DTYPE[self.dtype])
        return t.reshape(self.shape).to(device)

    def ref_input(self) -> np.ndarray:
        """The values as a NumPy array for the reference (bfloat16 as float32, exactly)."""
        if self.dtype == "bfloat16":
            return (self.bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
        return self.bits.view(self.dtype)

    def __repr__(self) -> str:
        shown = self.ref_input().tolist() if self.size <= 32 else f"<{self.size} values>"
        return f"Case({self.dtype}, {self.framework}, shape={self.shape}, kind={self.kind}, {shown})"


def bits_of(a) -> np.ndarray:
    """The storage bits of a NumPy array or torch tensor (flattened, unsigned)."""
    if isinstance(a, torch.Tensor):
        name = str(a.dtype).removeprefix("torch.")
        if name not in UINT:  # integer tensors are their own bits
            return a.detach().cpu().reshape(-1).numpy()
        return a.detach().cpu().reshape(-1).view(getattr(torch, SIGNED[name].__name__)).numpy().view(UINT[name])
    return a.reshape(-1).view(UINT.get(a.dtype.name, a.dtype))


def bits_from_float64(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    with np.errstate(over="ignore"):
        return values.astype(dtype).view(UINT[dtype])


def specials(dtype: str) -> np.ndarray:
    fi = FINFO[dtype]
    smallest_subnormal = fi.smallest_normal * fi.eps
    return np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, fi.max, -fi.max, fi.tiny, -fi.tiny,
                     smallest_subnormal, -smallest_subnormal, 1.0, -1.0])


def generate(kind: str, size: int, dtype: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "bits":  # every pattern: NaNs with payloads, subnormals, infinities, both zeros
        return rng.integers(0, 2 ** BITS[dtype], size, dtype=np.uint64).astype(UINT[dtype])
    if kind == "normal":
        x = rng.standard_normal(size) * 10.0 ** rng.uniform(-3, 3)
    elif kind == "ties":  # few distinct magnitudes, both signs, +0 and -0
        x = rng.integers(-3, 4, size).astype(np.float64) * rng.choice([1.0, 0.5, 1e-3, 1000.0])
        x = np.where(x == 0, np.copysign(0.0, rng.standard_normal(size)), x)
    elif kind == "constant":
        x = np.full(size, rng.choice([0.0, -0.0, 1.0, -2.5, np.inf, -np.inf, np.nan]))
    elif kind == "specials":
        x = rng.standard_normal(size)
        mask = rng.random(size) < rng.choice([0.01, 0.2, 0.8])
        x[mask] = rng.choice(specials(dtype), int(mask.sum()))
    elif kind == "sorted":  # magnitudes in increasing (or decreasing) index order
        x = np.sort(np.abs(rng.standard_normal(size)))[:: rng.choice([1, -1])]
        x = x * np.where(rng.random(size) < 0.5, -1.0, 1.0)
    elif kind == "strided":
        # Large values exactly at (or exactly off) a regular stride of positions, as a strided sample of up
        # to 2^15 positions would visit: a sample-based threshold then sees an unrepresentative picture.
        m = min(size, rng.choice([1 << 15, 1 << 12, 1000]))
        marked = np.zeros(size, bool)
        marked[(np.arange(m, dtype=np.float64) * size / max(m, 1)).astype(np.int64)] = True
        if rng.random() < 0.5:
            marked = ~marked
        x = np.where(marked, 100.0 + np.abs(rng.standard_normal(size)), 1e-3 * rng.standard_normal(size))
    else:  # "wide": magnitudes over the whole exponent range, past overflow and underflow
        fi = FINFO[dtype]
        lo, hi = math.log2(fi.smallest_normal) - 12, math.log2(fi.max) + 1
        with np.errstate(over="ignore"):
            x = np.copysign(2.0 ** rng.uniform(lo, hi, size), rng.standard_normal(size))
    return bits_from_float64(x, dtype)


def sizes(min_size: int = 0, max_size: int = 100_000):
    options = [st.integers(min_size, min(max_size, 24)), st.integers(min_size, min(max_size, 3000))]
    if max_size > 3000:
        options.append(st.integers(max(min_size, 3000), max_size))
        large = [s for s in (65536, 65537, 100_000) if min_size <= s <= max_size]
        if large:
            options.append(st.sampled_from(large))
    return st.one_of(options)


@st.composite
def shapes(draw, size: int):
    if size == 0:
        return draw(st.sampled_from([(0,), (3, 0), (0, 2, 5)]))
    divisors = [d for d in range(1, math.isqrt(size) + 1) if size % d == 0]
    options = [(size,)] + [(d, size // d) for d in divisors] + [(size // d, d) for d in divisors]
    d = draw(st.sampled_from(divisors))
    e = draw(st.sampled_from([e for e in divisors if (size // d) % e == 0] or [1]))
    options.append((d, e, size // d // e))
    if size == 1:
        options.append(())
    return draw(st.sampled_from(options))


@st.composite
def arrays(draw, dtypes=DTYPES, frameworks=("numpy", "torch"), size=None, max_size=100_000, min_size=0):
    if "torch" not in frameworks:
        dtypes = tuple(d for d in dtypes if d != "bfloat16")
    dtype = draw(st.sampled_from(dtypes))
    framework = "torch" if dtype == "bfloat16" else draw(st.sampled_from(frameworks))
    if size is None:
        size = draw(sizes(min_size, max_size))
    shape = draw(shapes(size))
    kind = draw(st.sampled_from(KINDS + (("explicit",) if size <= 24 else ())))
    if kind == "explicit":
        width = {"float64": 64, "float32": 32, "float16": 16, "bfloat16": 32}[dtype]
        values = draw(st.lists(st.floats(width=width), min_size=size, max_size=size))
        bits = bits_from_float64(np.array(values, dtype=np.float64), dtype)
    else:
        bits = generate(kind, size, dtype, np.random.default_rng(draw(st.integers(0, 2**32 - 1))))
    return Case(dtype, framework, shape, kind, bits)


def ks(size: int):
    special = sorted({k for k in (0, 1, 2, size // 2, size - 1, size) if 0 <= k <= size})
    return st.one_of(st.sampled_from(special), st.integers(0, size), st.integers(0, min(size, 40)))


seeds = st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 100), st.sampled_from([2**32 - 1, 2**32, 2**63, 2**64 - 1]))


def frameworks_on(device: str):
    return ("numpy", "torch") if device == "cpu" else ("torch",)


# ---- comparisons ---------------------------------------------------------------------------------------

def to_numpy(a) -> np.ndarray:
    """A kernel output as NumPy (bfloat16 as float32, exactly)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu()
        return (a.float() if a.dtype == torch.bfloat16 else a).numpy()
    return np.asarray(a)


def assert_same_floats(got, expected, what: str) -> None:
    """Bitwise equal, except that any NaN equals any NaN (payloads may differ)."""
    got, expected = np.asarray(got).reshape(-1), np.asarray(expected).reshape(-1)
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype}, expected {expected.dtype}"
    assert got.shape == expected.shape, f"{what}: shape {got.shape}, expected {expected.shape}"
    got_nan, expected_nan = np.isnan(got), np.isnan(expected)
    wrong = np.flatnonzero((got_nan != expected_nan)
                           | (~got_nan & (got.view(UINT[got.dtype.name]) != expected.view(UINT[got.dtype.name]))))
    assert wrong.size == 0, (f"{what}: {wrong.size} of {got.size} entries differ, first at {wrong[:5].tolist()}: "
                             f"got {got[wrong[:5]].tolist()}, expected {expected[wrong[:5]].tolist()}")


def assert_close_in_dtype(got, expected, dtype: str, what: str) -> None:
    """Within two ulps of `dtype` (relative), or one step of its smallest subnormal; infinities must agree
    unless the finite side is at the dtype's largest finite magnitude (rounding at the overflow edge)."""
    got, expected = np.asarray(got, np.float64).reshape(-1), np.asarray(expected, np.float64).reshape(-1)
    assert got.shape == expected.shape
    fi = FINFO[dtype]
    got_nan, expected_nan = np.isnan(got), np.isnan(expected)
    bad = got_nan != expected_nan
    with np.errstate(invalid="ignore"):
        either_inf = np.isinf(got) | np.isinf(expected)
        finite = ~got_nan & ~expected_nan & ~either_inf
        tolerance = 2 * fi.eps * np.abs(expected) + fi.smallest_normal * fi.eps
        bad |= finite & (np.abs(got - expected) > tolerance)
        edge = np.minimum(np.abs(got), np.abs(expected)) >= fi.max * (1 - 2 * fi.eps)
        bad |= either_inf & (got != expected) & ~(edge & (np.sign(got) == np.sign(expected)))
    wrong = np.flatnonzero(bad)
    assert wrong.size == 0, (f"{what}: {wrong.size} of {got.size} entries off, first at {wrong[:5].tolist()}: "
                             f"got {got[wrong[:5]].tolist()}, expected {expected[wrong[:5]].tolist()}")


def check_message(msg, framework: str, dtype: str, k: int, size: int, device: str = "cpu") -> None:
    assert isinstance(msg, SparseMsg)
    assert type(msg.size) is int and msg.size == size
    if framework == "torch":
        assert isinstance(msg.values, torch.Tensor) and isinstance(msg.indices, torch.Tensor)
        assert msg.values.dtype == TORCH_DTYPE[dtype] and msg.indices.dtype == torch.int32
        assert msg.values.device.type == device and msg.indices.device.type == device
        assert tuple(msg.values.shape) == (k,) and tuple(msg.indices.shape) == (k,)
    else:
        assert isinstance(msg.values, np.ndarray) and isinstance(msg.indices, np.ndarray)
        assert msg.values.dtype == np.dtype(dtype) and msg.indices.dtype == np.int32
        assert msg.values.shape == (k,) and msg.indices.shape == (k,)


def assert_unchanged(array, case: Case, name: str) -> None:
    assert tuple(array.shape) == case.shape
    assert np.array_equal(bits_of(array), case.bits), f"{name} was modified"


# ---- top-k ---------------------------------------------------------------------------------------------

@given(data=st.data())
def test_topk_matches_reference(device, data):
    case = data.draw(arrays(frameworks=frameworks_on(device)), label="x")
    k = data.draw(ks(case.size), label="k")
    event(f"size {'0' if case.size == 0 else '<=24' if case.size <= 24 else '<=3000' if case.size <= 3000 else 'large'}")
    event(f"kind {case.kind}")
    x = case.make(device)
    msg = compress.topk(x, k)
    check_message(msg, case.framework, case.dtype, k, case.size, device)
    values, indices = ref.topk(case.ref_input(), k)
    np.testing.assert_array_equal(to_numpy(msg.indices), indices)
    assert_same_floats(to_numpy(msg.values), values, "values")
    assert_unchanged(x, case, "x")


def test_topk_ties_go_to_lower_index():
    x = np.array([1.0, -2.0, 2.0, -0.0, 0.0, 2.0, -2.0], dtype=np.float32)
    assert compress.topk(x, 2).indices.tolist() == [1, 2]
    assert compress.topk(x, 4).indices.tolist() == [1, 2, 5, 6]
    assert compress.topk(x, 6).indices.tolist() == [0, 1, 2, 3, 5, 6]
    assert compress.topk(np.zeros(5, np.float16), 3).indices.tolist() == [0, 1, 2]


def test_topk_nan_is_largest():
    x = np.array([np.inf, np.nan, -np.inf, 1.0, -np.nan, 3.0], dtype=np.float64)
    assert compress.topk(x, 1).indices.tolist() == [1]
    assert compress.topk(x, 2).indices.tolist() == [1, 4]
    assert compress.topk(x, 4).indices.tolist() == [0, 1, 2, 4]


# ---- error-feedback top-k ------------------------------------------------------------------------------

def residual_dtypes(grad_dtype: str) -> list[str]:
    return ["float64"] if grad_dtype == "float64" else sorted({grad_dtype, "float32"})


@given(data=st.data())
def test_ef_topk_matches_reference(device, data):
    gcase = data.draw(arrays(frameworks=frameworks_on(device)), label="grad")
    rdtype = data.draw(st.sampled_from(residual_dtypes(gcase.dtype)), label="residual dtype")
    rcase = data.draw(arrays(dtypes=(rdtype,), frameworks=(gcase.framework,), size=gcase.size), label="residual")
    k = data.draw(ks(gcase.size), label="k")
    grad, residual = gcase.make(device), rcase.make(device)
    msg = compress.ef_topk_(grad, residual, k)
    check_message(msg, gcase.framework, rdtype, k, gcase.size, device)
    values, indices, new_residual = ref.ef_topk(gcase.ref_input(), rcase.ref_input(), k,
                                                residual_dtype="bfloat16" if rdtype == "bfloat16" else None)
    np.testing.assert_array_equal(to_numpy(msg.indices), indices)
    assert_same_floats(to_numpy(msg.values), values, "values")
    assert tuple(residual.shape) == rcase.shape
    assert_same_floats(to_numpy(residual), new_residual, "updated residual")
    assert_unchanged(grad, gcase, "grad")


@given(data=st.data())
def test_ef_topk_over_steps_matches_reference(data):
    dtype = data.draw(st.sampled_from(NUMPY_DTYPES))
    size = data.draw(sizes(max_size=3000))
    steps = data.draw(st.lists(arrays(dtypes=(dtype,), frameworks=("numpy",), size=size), min_size=1, max_size=4))
    k = data.draw(ks(size))
    residual, expected = np.zeros(size, dtype), np.zeros(size, dtype)
    for case in steps:
        msg = compress.ef_topk_(case.make(), residual, k)
        values, indices, expected = ref.ef_topk(case.ref_input(), expected, k)
        np.testing.assert_array_equal(msg.indices, indices)
        assert_same_floats(msg.values, values, "values")
        assert_same_floats(residual, expected, "residual")


def test_ef_topk_sends_what_it_zeroes():
    grad = np.array([0.5, -3.0, 1.0, 2.0], np.float32)
    residual = np.array([1.0, 1.0, -4.0, 0.0], np.float32)
    msg = compress.ef_topk_(grad, residual, 2)
    assert msg.indices.tolist() == [1, 2] and msg.values.tolist() == [-2.0, -3.0]
    assert residual.tolist() == [1.5, 0.0, 0.0, 2.0]
    assert grad.tolist() == [0.5, -3.0, 1.0, 2.0]


# ---- rand-k --------------------------------------------------------------------------------------------

@given(data=st.data())
def test_randk_matches_reference(device, data):
    case = data.draw(arrays(frameworks=frameworks_on(device)), label="x")
    k = data.draw(ks(case.size), label="k")
    seed, step = data.draw(seeds, label="seed"), data.draw(seeds, label="step")
    unbiased = data.draw(st.booleans(), label="unbiased")
    x = case.make(device)
    msg = compress.randk(x, k, seed, step, unbiased=unbiased)
    check_message(msg, case.framework, case.dtype, k, case.size, device)
    values, indices = ref.randk(case.ref_input(), k, seed, step, unbiased=unbiased)
    np.testing.assert_array_equal(to_numpy(msg.indices), indices)
    if case.dtype == "float64" or not unbiased or k == case.size:
        # scale 1, or float64 arithmetic throughout: exact
        assert_same_floats(to_numpy(msg.values), values, "values")
    else:  # multiplied in float32, then rounded to the dtype
        assert_close_in_dtype(to_numpy(msg.values), values, case.dtype, "values")
    assert_unchanged(x, case, "x")


# Sizes where the Feistel word width changes, and the int32 limit.
EDGE_SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 255, 256, 257, 65535, 65536, 65537, 2**24 + 1, 2**30,
              2**30 + 1, 2**31 - 1]


@given(data=st.data())
def test_randk_indices_match_reference(device, data):
    size = data.draw(st.one_of(st.integers(0, 70), st.integers(0, 10**6), st.sampled_from(EDGE_SIZES),
                               st.integers(2**31 - 2**20, 2**31 - 1)), label="size")
    k = data.draw(st.one_of(st.sampled_from(sorted({0, min(size, 1), min(size, 100_000)})),
                            st.integers(0, min(size, 3000))), label="k")
    seed, step = data.draw(seeds, label="seed"), data.draw(seeds, label="step")
    like = data.draw(st.sampled_from(["none", "numpy", "torch"] if device == "cpu" else ["torch"]), label="like")
    if like == "none":
        got = compress.randk_indices(size, k, seed, step)
    elif like == "numpy":
        got = compress.randk_indices(size, k, seed, step, like=np.zeros(3, np.float16))
    else:
        got = compress.randk_indices(size, k, seed, step, like=torch.zeros(2, 2, device=device))
    if like == "torch":
        assert isinstance(got, torch.Tensor) and got.dtype == torch.int32 and got.device.type == device
    else:
        assert isinstance(got, np.ndarray) and got.dtype == np.int32
    got = to_numpy(got)
    assert got.shape == (k,)
    assert np.all(got[1:] > got[:-1]), "indices not strictly ascending"
    assert k == 0 or (got[0] >= 0 and got[-1] < size), "indices out of range"
    np.testing.assert_array_equal(got, ref.randk_indices(size, k, seed, step))


@given(size=st.integers(100, 10**6), data=st.data())
def test_randk_indices_keyed_by_seed_and_step(size, data):
    k = data.draw(st.integers(10, min(size - 10, 5000)), label="k")  # C(size, k) >= C(100, 10) > 2^44
    seed, step = data.draw(seeds, label="seed"), data.draw(st.integers(0, 2**64 - 2), label="step")
    first = compress.randk_indices(size, k, seed, step)
    np.testing.assert_array_equal(first, compress.randk_indices(size, k, seed, step))
    assert not np.array_equal(first, compress.randk_indices(size, k, seed, step + 1))
    assert not np.array_equal(first, compress.randk_indices(size, k, seed ^ 1, step))


def test_randk_indices_are_a_permutation_prefix():
    # k = size: every index once, whatever the key.
    for size in (1, 2, 3, 5, 16, 17, 1000):
        for seed, step in ((0, 0), (1, 2), (2**64 - 1, 2**63)):
            np.testing.assert_array_equal(compress.randk_indices(size, size, seed, step), np.arange(size))


def test_randk_indices_work_is_o_k():
    # An O(size) draw (randperm-like) takes seconds and gigabytes at this size; O(k) takes microseconds.
    start = time.perf_counter()
    for step in range(10):
        got = compress.randk_indices(2**31 - 1, 10, 12345, step)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"10 draws of k=10 from 2^31-1 took {elapsed:.2f} s"
    np.testing.assert_array_equal(got, ref.randk_indices(2**31 - 1, 10, 12345, 9))


@pytest.mark.parametrize("size, k, seed", [(40, 4, 0), (37, 3, 11), (64, 16, 2**63 + 5), (10, 9, 7)])
def test_randk_unbiased_in_expectation(size, k, seed):
    rng = np.random.default_rng(size * 1000 + k)
    x = rng.standard_normal(size) * rng.choice([1.0, 10.0], size)
    steps = 4000
    total, count = np.zeros(size), np.zeros(size)
    for step in range(steps):
        msg = compress.randk(x, k, seed, step)
        total += compress.decompress(msg)
        count[msg.indices] += 1
    p = k / size
    # Each coordinate of the mean is |x_i| d/k * Binomial(T, k/d) / T: std |x_i| sqrt((d/k - 1) / T).
    sigma = np.abs(x) * math.sqrt((size / k - 1) / steps)
    z = (total / steps - x) / sigma
    assert np.all(np.abs(z) < 5), f"mean off by more than 5 sigma at {np.flatnonzero(np.abs(z) >= 5)}: z={z}"
    assert np.sum(z**2) < size + 8 * math.sqrt(2 * size), f"chi-square {np.sum(z**2):.1f} for {size} coordinates"
    # Inclusion frequency of each index: Binomial(T, k/d).
    assert count.sum() == steps * k
    zc = (count - steps * p) / math.sqrt(steps * p * (1 - p))
    assert np.all(np.abs(zc) < 5), f"inclusion counts off by more than 5 sigma: {count} (expected {steps * p})"


# ---- determinism across thread counts ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["normal", "ties", "bits", "strided"])
def test_bitwise_same_whatever_the_thread_count(dtype, kind):
    size, k = 300_001, 3001
    rng = np.random.default_rng(7)
    case = Case(dtype, "torch", (size,), kind, generate(kind, size, dtype, rng))
    rcase = Case(dtype, "torch", (size,), "normal", generate("normal", size, dtype, rng))
    saved = commkernels.get_num_threads()
    outputs = []
    try:
        for threads in (1, 2, 3):
            commkernels.set_num_threads(threads)
            assert commkernels.get_num_threads() == threads
            residual = rcase.make()
            top = compress.topk(case.make(), k)
            ef = compress.ef_topk_(case.make(), residual, k)
            rand = compress.randk(case.make(), k, 3, 4)
            outputs.append([bits_of(a) for a in (*top[:2], *ef[:2], residual, *rand[:2])])
    finally:
        commkernels.set_num_threads(saved)
    for other in outputs[1:]:
        for a, b in zip(outputs[0], other):
            np.testing.assert_array_equal(a, b)


# ---- decompress and SparseMsg --------------------------------------------------------------------------

@given(data=st.data())
def test_decompress_matches_reference(device, data):
    case = data.draw(arrays(frameworks=frameworks_on(device), max_size=5000), label="x")
    k = data.draw(ks(case.size), label="k")
    msg = compress.topk(case.make(device), k)
    dense = compress.decompress(msg)
    assert type(dense) is type(msg.values) and dense.dtype == msg.values.dtype and tuple(dense.shape) == (case.size,)
    values, indices = ref.topk(case.ref_input(), k)
    assert_same_floats(to_numpy(dense), ref.decompress(values, indices, case.size), "dense")
    # out=: overwritten (whatever it held) and returned
    out = (torch.full((case.size,), 7.0, dtype=msg.values.dtype, device=device) if case.framework == "torch"
           else np.full(case.size, 7.0, dtype=msg.values.dtype))
    result = compress.decompress(msg, out=out)
    assert_same_floats(to_numpy(out), to_numpy(dense), "out")
    assert_same_floats(to_numpy(result), to_numpy(dense), "result")


def test_sparse_msg_fields():
    msg = compress.topk(np.arange(6, dtype=np.float32), 2)
    assert SparseMsg._fields == ("values", "indices", "size")
    values, indices, size = msg
    assert values.tolist() == [4.0, 5.0] and indices.tolist() == [4, 5] and size == 6
    dense = compress.decompress(SparseMsg(np.array([1.0, 2.0]), np.array([0, 3], np.int64), 4))
    assert dense.tolist() == [1.0, 0.0, 0.0, 2.0]  # int64 indices are accepted
    assert compress.decompress(SparseMsg(np.zeros(0, np.float16), np.zeros(0, np.int32), 0)).shape == (0,)


def test_decompress_rejects_bad_messages():
    v, i = np.ones(2, np.float32), np.array([0, 1], np.int32)
    with pytest.raises(ValueError, match=r"^msg\b.*values"):
        compress.decompress(SparseMsg(v, i[:1], 4))
    with pytest.raises(TypeError):
        compress.decompress(SparseMsg(v, torch.from_numpy(i), 4))
    with pytest.raises(ValueError, match=r"^msg\.size\b"):
        compress.decompress(SparseMsg(v, i, -1))
    with pytest.raises(TypeError, match=r"^msg\.size\b"):
        compress.decompress(SparseMsg(v, i, 4.0))
    with pytest.raises(ValueError, match=r"^out\b"):
        compress.decompress(SparseMsg(v, i, 4), out=np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"^out\b"):
        compress.decompress(SparseMsg(v, i, 4), out=np.zeros(8, np.float32)[::2])
    with pytest.raises(TypeError, match=r"^out\b"):
        compress.decompress(SparseMsg(v, i, 4), out=torch.zeros(4))


def test_decompress_rejects_out_of_range_indices():
    # DESIGN: an index out of range is a ValueError, never a wrong answer; a negative index must not wrap.
    v = np.ones(2, np.float32)
    with pytest.raises(ValueError, match="indices"):
        compress.decompress(SparseMsg(v, np.array([0, 4], np.int32), 4))
    with pytest.raises(ValueError, match="indices"):
        compress.decompress(SparseMsg(v, np.array([-1, 2], np.int32), 4))
    with pytest.raises(ValueError, match="indices"):
        compress.decompress(SparseMsg(torch.ones(2), torch.tensor([-1, 2], dtype=torch.int32), 4))


def test_decompress_out_of_another_dtype_is_a_type_error():
    # DESIGN: TypeError for a wrong framework/dtype/device mix (decompress raises ValueError here).
    msg = SparseMsg(np.ones(2, np.float32), np.array([0, 1], np.int32), 4)
    with pytest.raises(TypeError, match=r"^out\b"):
        compress.decompress(msg, out=np.zeros(4, np.float64))


# ---- bad inputs ----------------------------------------------------------------------------------------

def calls():
    """Each public kernel as a function of (x, k)."""
    return {
        "topk": lambda a, k: compress.topk(a, k),
        "ef_topk_": lambda a, k: compress.ef_topk_(a, a * 0 if isinstance(a, np.ndarray) else a.clone(), k),
        "randk": lambda a, k: compress.randk(a, k, 1, 2),
    }


@pytest.mark.parametrize("fn", ["topk", "ef_topk_", "randk"])
@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_k_out_of_range(fn, framework):
    x = np.ones(5, np.float32) if framework == "numpy" else torch.ones(5)
    call = calls()[fn]
    for k in (-1, 6, 2**40):
        with pytest.raises(ValueError, match=r"^k\b"):
            call(x, k)
    for k in (2.0, "2", None, True, np.float32(2)):
        with pytest.raises(TypeError, match=r"^k\b"):
            call(x, k)
    call(x, np.int64(2))  # any integral k is fine
    with pytest.raises(ValueError, match=r"^k\b"):
        compress.randk_indices(5, 6, 1, 2)
    with pytest.raises(ValueError, match=r"^size\b"):
        compress.randk_indices(-1, 0, 1, 2)
    with pytest.raises(ValueError, match=r"^size\b"):
        compress.randk_indices(2**31, 1, 1, 2)


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint8", "bool", "complex64"])
def test_non_float_arrays_are_type_errors(dtype):
    x = np.ones(4, dtype)
    with pytest.raises(TypeError, match=r"^x\b"):
        compress.topk(x, 1)
    with pytest.raises(TypeError, match=r"^x\b"):
        compress.randk(x, 1, 0, 0)
    with pytest.raises(TypeError, match=r"^grad\b"):
        compress.ef_topk_(x, np.zeros(4, np.float32), 1)
    with pytest.raises(TypeError, match=r"^residual\b"):
        compress.ef_topk_(np.zeros(4, np.float32), x, 1)
    t = torch.from_numpy(x)
    with pytest.raises(TypeError, match=r"^x\b"):
        compress.topk(t, 1)


@pytest.mark.parametrize("bad", [[1.0, 2.0, 3.0], (1.0, 2.0), 3.0, None, "abc"])
def test_non_arrays_are_type_errors(bad):
    with pytest.raises(TypeError, match=r"^x\b"):
        compress.topk(bad, 1)
    with pytest.raises(TypeError, match=r"^x\b"):
        compress.randk(bad, 1, 0, 0)
    with pytest.raises(TypeError, match=r"^grad\b"):
        compress.ef_topk_(bad, np.zeros(2, np.float32), 1)
    with pytest.raises(TypeError, match=r"^residual\b"):
        compress.ef_topk_(np.zeros(2, np.float32), bad, 1)
    with pytest.raises(TypeError, match=r"^like\b"):
        compress.randk_indices(4, 1, 0, 0, like=bad if bad is not None else [1])


def test_ef_topk_residual_checks():
    grad = np.ones(6, np.float32)
    with pytest.raises(ValueError, match=r"^residual\b"):
        compress.ef_topk_(grad, np.zeros(5, np.float32), 1)
    with pytest.raises(ValueError, match=r"^residual\b"):
        compress.ef_topk_(torch.ones(2, 3), torch.zeros(7), 1)
    compress.ef_topk_(grad, np.zeros((2, 3), np.float32), 1)  # same number of elements: accepted
    with pytest.raises(TypeError, match=r"^residual\b"):
        compress.ef_topk_(np.ones(6, np.float64), np.zeros(6, np.float32), 1)
    with pytest.raises(TypeError, match=r"^residual\b"):
        compress.ef_topk_(np.ones(6, np.float32), np.zeros(6, np.float16), 1)
    with pytest.raises(TypeError, match=r"^residual\b"):
        compress.ef_topk_(np.ones(6, np.float32), np.zeros(6, np.float64), 1)
    with pytest.raises(TypeError, match=r"^residual\b"):
        compress.ef_topk_(torch.ones(6, dtype=torch.float16), torch.zeros(6, dtype=torch.bfloat16), 1)
    with pytest.raises(TypeError, match=r"^residual\b"):
        compress.ef_topk_(np.ones(6, np.float32), torch.zeros(6), 1)
    with pytest.raises(TypeError, match=r"^residual\b"):
        compress.ef_topk_(torch.ones(6), np.zeros(6, np.float32), 1)


@pytest.mark.parametrize("name", ["seed", "step"])
def test_seed_and_step_range(name):
    x = np.ones(8, np.float32)
    for value in (-1, 2**64):
        kwargs = {"seed": 1, "step": 2, name: value}
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            compress.randk(x, 2, **kwargs)
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            compress.randk(torch.from_numpy(x), 2, **kwargs)
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            compress.randk_indices(8, 2, **kwargs)
    for value in (1.0, "1", None):
        with pytest.raises(TypeError, match=rf"^{name}\b"):
            compress.randk(x, 2, **{"seed": 1, "step": 2, name: value})


def noncontiguous_inputs():
    a = np.arange(24, dtype=np.float32).reshape(4, 6)
    t = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return [
        pytest.param(np.arange(20, dtype=np.float32)[::2], id="numpy-step"),
        pytest.param(a[:, ::2], id="numpy-2d-step"),
        pytest.param(a.T, id="numpy-transpose"),
        pytest.param(np.asfortranarray(a), id="numpy-fortran"),
        pytest.param(t.t(), id="torch-transpose"),
        pytest.param(torch.arange(20.0)[::2], id="torch-step"),
        pytest.param(t.to(torch.bfloat16)[:, 1:], id="torch-bf16-slice"),
    ]


@pytest.mark.parametrize("x", noncontiguous_inputs())
def test_noncontiguous_inputs_are_refused(x):
    copy = x.copy() if isinstance(x, np.ndarray) else x.clone()
    with pytest.raises(ValueError, match="contiguous"):
        compress.topk(x, 2)
    with pytest.raises(ValueError, match="contiguous"):
        compress.randk(x, 2, 0, 0)
    contiguous = x.copy(order="C") if isinstance(x, np.ndarray) else x.contiguous()
    with pytest.raises(ValueError, match=r"^grad\b"):
        compress.ef_topk_(x, contiguous * 0, 2)
    with pytest.raises(ValueError, match=r"^residual\b"):
        compress.ef_topk_(contiguous, x, 2)
    assert np.array_equal(bits_of(x), bits_of(copy)) if isinstance(x, np.ndarray) else torch.equal(x, copy)


def test_contiguous_views_with_an_offset():
    base = np.random.default_rng(0).standard_normal(40).astype(np.float32)
    for make in (lambda a: a, torch.from_numpy):
        x = make(base.copy())[7:31]
        values, indices = ref.topk(base[7:31], 5)
        msg = compress.topk(x, 5)
        np.testing.assert_array_equal(to_numpy(msg.indices), indices)
        np.testing.assert_array_equal(to_numpy(msg.values), values)
        msg = compress.randk(x, 5, 1, 2, unbiased=False)
        np.testing.assert_array_equal(to_numpy(msg.values), base[7:31][to_numpy(msg.indices)])
        buffer = make(np.full(40, 0.5, np.float32))
        residual = buffer[10:34]
        msg = compress.ef_topk_(x, residual, 5)
        values, indices, new_residual = ref.ef_topk(base[7:31], np.full(24, 0.5, np.float32), 5)
        np.testing.assert_array_equal(to_numpy(msg.indices), indices)
        np.testing.assert_array_equal(to_numpy(buffer)[10:34], new_residual)
        assert np.all(to_numpy(buffer)[:10] == 0.5) and np.all(to_numpy(buffer)[34:] == 0.5)


def test_read_only_inputs_are_accepted():
    # x and grad are never written, so a read-only array (np.frombuffer of bytes, a read-only memmap, a
    # broadcast-free view marked read-only) is a valid input.
    x = np.frombuffer(np.arange(8, dtype=np.float32).tobytes(), dtype=np.float32)
    assert not x.flags.writeable
    assert compress.topk(x, 2).indices.tolist() == [6, 7]
    assert compress.randk(x, 8, 0, 0).values.tolist() == x.tolist()
    residual = np.zeros(8, np.float32)
    assert compress.ef_topk_(x, residual, 2).indices.tolist() == [6, 7]


def test_read_only_residual_is_a_clear_error():
    residual = np.zeros(8, np.float32)
    residual.flags.writeable = False
    with pytest.raises((TypeError, ValueError), match=r"^residual\b"):
        compress.ef_topk_(np.ones(8, np.float32), residual, 2)


def test_empty_inputs():
    for x in (np.zeros(0, np.float32), torch.zeros(0, 3, dtype=torch.bfloat16)):
        for msg in (compress.topk(x, 0), compress.randk(x, 0, 1, 1), compress.ef_topk_(x, x * 0, 0)):
            assert msg.size == 0 and len(msg.values) == 0 and len(msg.indices) == 0
    assert compress.randk_indices(0, 0, 0, 0).shape == (0,)
    assert compress.randk_indices(10, 0, 0, 0).shape == (0,)
