"""commkernels.graph message passing: scatter / segment / gather against the NumPy float64 reference and
torch's own reductions, gradients, determinism across thread counts, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import commkernels
from commkernels import graph
from commkernels.reference import graph_mp as ref

DTYPES = ("float32", "float64", "float16", "bfloat16")
# unit roundoff of the accumulator (float32 for the 16-bit types) and of the stored output
ACC_EPS = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-24, "bfloat16": 2.0**-24}
OUT_EPS = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
# half the spacing of the subnormals: the absolute error of one rounding near zero
ACC_TINY = {"float64": 2.0**-1075, "float32": 2.0**-150, "float16": 2.0**-150, "bfloat16": 2.0**-150}
OUT_TINY = {"float64": 2.0**-1075, "float32": 2.0**-150, "float16": 2.0**-25, "bfloat16": 2.0**-134}
ops = torch.ops.commkernels


def to64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().to(torch.float64).numpy()
    return np.asarray(a).astype(np.float64)


def make(values: np.ndarray, dtype: str, framework: str):
    t = torch.from_numpy(np.ascontiguousarray(values)).to(getattr(torch, dtype))
    return t.numpy() if framework == "numpy" else t


def make_index(values: np.ndarray, dtype: str, framework: str):
    a = np.ascontiguousarray(values.astype(dtype))
    return a if framework == "numpy" else torch.from_numpy(a)


@st.composite
def scatter_cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    framework = "torch" if dtype == "bfloat16" else draw(st.sampled_from(["numpy", "torch"]))
    e = draw(st.integers(0, 300))
    dim_size = draw(st.integers(1 if e else 0, 40))
    feat = draw(st.sampled_from([(), (1,), (5,), (2, 3), (33,)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "ties", "nan"]))
    if kind == "ties":  # few distinct values: max/min ties must go to the lowest source row
        values = rng.integers(-2, 3, (e, *feat)).astype(np.float64)
    else:
        values = rng.standard_normal((e, *feat))
        if kind == "nan" and values.size:
            values.reshape(-1)[rng.integers(0, values.size, max(1, values.size // 20))] = np.nan
    order = draw(st.sampled_from(["random", "sorted"]))
    index = rng.integers(0, max(dim_size, 1), e)
    if order == "sorted":
        index = np.sort(index)
    index_dtype = draw(st.sampled_from(["int32", "int64"]))
    return make(values, dtype, framework), make_index(index, index_dtype, framework), dim_size, dtype


def tolerance(src64: np.ndarray, groups, reduce: str, want: np.ndarray, dtype: str) -> np.ndarray:
    """Per-element bound on |kernel - reference|: a k-term float sum errs by at most (k - 1) u sum|x|; a
    mean adds one rounding of the division, a product k u |prod|; then one rounding into the output dtype."""
    acc, out = ACC_EPS[dtype], OUT_EPS[dtype]
    s2 = np.abs(src64.reshape(src64.shape[0], int(np.prod(src64.shape[1:], dtype=np.int64))))
    rows = len(groups)
    bound = np.zeros((rows, s2.shape[1]))
    want2 = want.reshape(rows, s2.shape[1])
    for i, ids in enumerate(groups):
        k = len(ids)
        if k == 0 or reduce in ("max", "min"):
            continue
        total = s2[ids].sum(axis=0)
        if reduce == "sum":
            bound[i] = (k - 1) * acc * total
        elif reduce == "mean":
            bound[i] = (k - 1) * acc * total / k + acc * np.abs(want2[i])
        else:  # each rounding of a partial product also errs by ACC_TINY where it underflows
            bound[i] = (k + 1) * (acc * np.abs(want2[i]) + ACC_TINY[dtype] * np.maximum(s2[ids], 1).prod(axis=0))
    return (bound + out * np.abs(want2) + OUT_TINY[dtype]).reshape(want.shape) * 1.0000001


def check_reduction(got, want, arg_got, arg_want, src64, groups, reduce, dtype, index_dtype):
    g64 = to64(got)
    assert g64.shape == want.shape
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(g64), nan)
    if reduce in ("max", "min"):
        np.testing.assert_array_equal(g64[~nan], want[~nan])  # exact: max/min pick an element
        assert str(arg_got.dtype).endswith(index_dtype)
        np.testing.assert_array_equal(np.asarray(arg_got.cpu() if isinstance(arg_got, torch.Tensor) else arg_got),
                                      arg_want)
    else:
        finite = ~nan & np.isfinite(want)
        bound = tolerance(src64, groups, reduce, want, dtype)
        assert np.all(np.abs(g64 - want)[finite] <= bound[finite])


@given(scatter_cases(), st.sampled_from(graph.REDUCES))
def test_scatter_matches_reference(case, reduce):
    src, index, dim_size, dtype = case
    got = graph.scatter(src, index, dim_size, reduce)
    out, arg = got if reduce in ("max", "min") else (got, None)
    assert type(out) is type(src) and str(out.dtype) == str(src.dtype)
    src64, index64 = to64(src), np.asarray(index).astype(np.int64)
    want, arg_want = ref.scatter(src64, index64, dim_size, reduce)
    groups = [np.flatnonzero(index64 == i) for i in range(dim_size)]
    check_reduction(out, want, arg, arg_want, src64, groups, reduce, dtype, str(index.dtype).split(".")[-1])


@given(scatter_cases(), st.sampled_from(graph.REDUCES), st.data())
def test_segment_matches_reference(case, reduce, data):
    src, _, _, dtype = case
    e = src.shape[0]
    rows = data.draw(st.integers(0, 20))
    cuts = sorted(data.draw(st.lists(st.integers(0, e), min_size=rows + 1, max_size=rows + 1)))
    framework = "numpy" if isinstance(src, np.ndarray) else "torch"
    indptr = make_index(np.array(cuts, dtype=np.int64), data.draw(st.sampled_from(["int32", "int64"])), framework)
    got = graph.segment(src, indptr, reduce)
    out, arg = got if reduce in ("max", "min") else (got, None)
    src64 = to64(src)
    want, arg_want = ref.segment(src64, cuts, reduce)
    groups = [np.arange(cuts[i], cuts[i + 1]) for i in range(rows)]
    check_reduction(out, want, arg, arg_want, src64, groups, reduce, dtype, str(indptr.dtype).split(".")[-1])


@given(scatter_cases())
def test_gather_matches_reference(case):
    src, index, _, dtype = case
    n = src.shape[0]
    if n == 0:
        return
    rng = np.random.default_rng(n)
    idx = make_index(rng.integers(0, n, 50), str(index.dtype).split(".")[-1],
                     "numpy" if isinstance(src, np.ndarray) else "torch")
    got = graph.gather(src, idx)
    np.testing.assert_array_equal(to64(got), ref.gather(to64(src), np.asarray(idx)))


@pytest.mark.parametrize("reduce, torch_reduce", [("sum", "sum"), ("mean", "mean"), ("max", "amax"),
                                                  ("min", "amin"), ("mul", "prod")])
def test_scatter_equals_torch_scatter_reduce(reduce, torch_reduce):
    g = torch.Generator().manual_seed(3)
    e, n, f = 5000, 300, 7  # some rows stay empty: include_self=False leaves them at out's initial value
    src = torch.randn(e, f, generator=g, dtype=torch.float64) * (0.2 if reduce == "mul" else 1.0) + \
        (1.0 if reduce == "mul" else 0.0)
    index = torch.randint(0, n, (e,), generator=g)
    index[index % 17 == 0] = 5
    got = graph.scatter(src, index, n, reduce)
    got = got[0] if reduce in ("max", "min") else got
    init = torch.ones(n, f, dtype=src.dtype) if reduce == "mul" else torch.zeros(n, f, dtype=src.dtype)
    want = init.scatter_reduce(0, index.unsqueeze(1).expand(e, f), src, torch_reduce, include_self=False)
    if reduce in ("max", "min"):
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    if reduce == "sum":
        torch.testing.assert_close(got, torch.zeros(n, f, dtype=src.dtype).index_add_(0, index, src),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min", "mul"])
def test_scatter_and_segment_equal_torch_scatter(reduce):
    """The semantics the docstrings claim (empty rows, arg = E for them), against torch_scatter itself."""
    ts = pytest.importorskip("torch_scatter")
    g = torch.Generator().manual_seed(5)
    e, n, f = 4000, 250, 5
    src = torch.randn(e, f, generator=g, dtype=torch.float64)
    index = torch.randint(0, n - 10, (e,), generator=g)  # the last 10 rows stay empty
    index[index % 13 == 0] = 7  # and one row is heavy
    order = index.argsort(stable=True)
    indptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(index, minlength=n).cumsum(0)])
    got = graph.scatter(src, index, n, reduce)
    got_segment = graph.segment(src[order], indptr, reduce) if reduce != "mul" else None  # no segment "mul"
    if reduce in ("max", "min"):
        for ours, (out, arg) in ((got, getattr(ts, f"scatter_{reduce}")(src, index, dim=0, dim_size=n)),
                                 (got_segment, getattr(ts, f"segment_{reduce}_csr")(src[order], indptr))):
            assert torch.equal(ours[0], out) and torch.equal(ours[1], arg)
        return
    close = dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, ts.scatter(src, index, dim=0, dim_size=n, reduce=reduce), **close)
    if got_segment is not None:
        torch.testing.assert_close(got_segment, ts.segment_csr(src[order], indptr, reduce=reduce), **close)


def test_empty_rows_and_ties():
    src = np.array([[1.0, 5.0], [3.0, 5.0], [3.0, 2.0], [0.0, 0.0]], np.float32)
    index = np.array([1, 1, 1, 3], np.int64)
    out, arg = graph.scatter(src, index, 5, "max")
    np.testing.assert_array_equal(out, [[0, 0], [3, 5], [0, 0], [0, 0], [0, 0]])
    np.testing.assert_array_equal(arg, [[4, 4], [1, 0], [4, 4], [3, 3], [4, 4]])
    out, arg = graph.scatter(src, index, 5, "min")
    np.testing.assert_array_equal(arg, [[4, 4], [0, 2], [4, 4], [3, 3], [4, 4]])
    np.testing.assert_array_equal(graph.scatter(src, index, 5, "mul")[[0, 2, 4]], np.ones((3, 2)))
    np.testing.assert_array_equal(graph.scatter(src, index, 5, "mean")[[0, 2, 4]], np.zeros((3, 2)))
    empty = graph.scatter(np.zeros((0, 3), np.float32), np.zeros(0, np.int32), 2, "max")
    assert empty[0].shape == (2, 3) and (empty[1] == 0).all()
    assert graph.scatter(np.zeros((0, 3), np.float32), np.zeros(0, np.int32)).shape == (0, 3)
    nan = np.array([1.0, np.nan, 7.0, np.nan], np.float64)
    out, arg = graph.scatter(nan, np.zeros(4, np.int64), 1, "max")
    assert np.isnan(out[0]) and arg[0] == 1


def test_deterministic_whatever_the_thread_count():
    rng = np.random.default_rng(4)
    e, n, f = 400_000, 5000, 8
    src = rng.standard_normal((e, f)).astype(np.float32)
    index = rng.integers(0, n, e).astype(np.int32)
    index[: e // 3] = 7  # a heavy row
    before, results = commkernels.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            commkernels.set_num_threads(threads)
            results.append(tuple(a.tobytes() for a in (graph.scatter(src, index, n), *graph.scatter(src, index, n, "max"),
                                                       graph.gather(src, index))))
    finally:
        commkernels.set_num_threads(before)
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_owner_and_sort_paths_agree_bitwise(monkeypatch, dtype):
    """Unsorted input is reduced by the owners of the rows; COMMKERNELS_SCATTER_SORT=1 takes the counting
    sort instead; and segment() over the stably sorted rows is a third route: all add in source order."""
    g = torch.Generator().manual_seed(12)
    e, n = 30_000, 700
    src = torch.randn(e, 5, generator=g).to(getattr(torch, dtype))
    src[torch.rand(e, generator=g) < 0.01, 2] = float("nan")
    index = torch.randint(0, n, (e,), generator=g)
    perm = torch.sort(index, stable=True).indices
    indptr = torch.searchsorted(index[perm], torch.arange(n + 1))
    bits = lambda out: [t.view(torch.int16 if t.dtype == torch.bfloat16 else t.dtype).numpy().tobytes()  # noqa: E731
                        for t in (out if isinstance(out, tuple) else (out,))]
    for reduce in graph.REDUCES:
        owner = bits(graph.scatter(src, index, n, reduce))
        monkeypatch.setenv("COMMKERNELS_SCATTER_SORT", "1")
        sort = bits(graph.scatter(src, index, n, reduce))
        monkeypatch.delenv("COMMKERNELS_SCATTER_SORT")
        seg = graph.segment(src[perm].contiguous(), indptr, reduce)
        if reduce in ("max", "min"):  # segment's arg is a position in the sorted rows
            seg = (seg[0], perm[seg[1].clamp(max=e - 1)].masked_fill(seg[1] == e, e))
        assert owner == sort == bits(seg), reduce


# (F, rows, dtype): widths with fixed-length loops (16, 64, 256) and a runtime width (7); rows spanning
# several blocks of the blocked route (its blocks hold about 512 KiB of accumulators: 4096 rows at F = 16)
BLOCKED_CASES = [(16, 9000, "float32"), (64, 2500, "bfloat16"), (256, 600, "float64"), (7, 20000, "float16")]


@pytest.mark.parametrize("f, n, dtype", BLOCKED_CASES)
def test_blocked_owner_sort_and_segment_agree_bitwise(monkeypatch, f, n, dtype):
    """The three routes for an unsorted index (COMMKERNELS_SCATTER_PATH = owner, blocked, sort) and
    segment() over the stably sorted rows all reduce each row in increasing source row: the same bits, for
    every reduction, index dtype, and with NaNs, ties and empty rows present; and the blocked route gives
    those bits whatever the thread count."""
    g = torch.Generator().manual_seed(f)
    e = 3 * n
    src = torch.randn(e, f, generator=g).round(decimals=1).to(getattr(torch, dtype))  # rounding makes ties
    src[torch.rand(e, generator=g) < 0.01, f // 2] = float("nan")
    index = torch.randint(0, n, (e,), generator=g)
    index[index % 5 == 3] = 0  # empty rows, and a heavy row 0
    perm = torch.sort(index, stable=True).indices
    indptr = torch.searchsorted(index[perm], torch.arange(n + 1))
    wide = {torch.bfloat16: torch.int16, torch.float16: torch.int16}
    bits = lambda out: [t.view(wide.get(t.dtype, t.dtype)).numpy().tobytes()  # noqa: E731
                        for t in (out if isinstance(out, tuple) else (out,))]
    before = commkernels.get_num_threads()
    try:
        for reduce in graph.REDUCES:
            seg = graph.segment(src[perm].contiguous(), indptr, reduce)
            if reduce in ("max", "min"):  # segment's arg is a position in the sorted rows
                seg = (seg[0], perm[seg[1].clamp(max=e - 1)].masked_fill(seg[1] == e, e))
            want = bits(seg)
            for index_dtype in (torch.int32, torch.int64):
                idx = index.to(index_dtype)
                for path, threads in (("owner", before), ("sort", before), ("blocked", 1), ("blocked", 3)):
                    monkeypatch.setenv("COMMKERNELS_SCATTER_PATH", path)
                    commkernels.set_num_threads(threads)
                    got = graph.scatter(src, idx, n, reduce)
                    if reduce in ("max", "min"):
                        assert got[1].dtype == index_dtype
                        got = (got[0], got[1].long())
                    assert bits(got) == want, (reduce, index_dtype, path, threads)
    finally:
        commkernels.set_num_threads(before)
        monkeypatch.delenv("COMMKERNELS_SCATTER_PATH", raising=False)


def distinct(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = torch.Size(shape).numel()
    values = (torch.randperm(n, generator=g) + 1).to(torch.float64) * 0.25 - n * 0.125
    return values.reshape(shape).requires_grad_(True)


@pytest.mark.parametrize("reduce", graph.REDUCES)
def test_gradcheck_scatter_segment(reduce):
    src = distinct((12, 3))
    if reduce == "mul":
        with torch.no_grad():
            src[2, 1] = 0.0  # the one zero of its row, and a row with two zeros
            src[4, 0] = src[7, 0] = 0.0
    index = torch.tensor([0, 2, 2, 0, 1, 2, 0, 1, 1, 4, 2, 0])
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    assert torch.autograd.gradcheck(lambda s: first(graph.scatter(s, index, 6, reduce)), (src,))
    indptr = torch.tensor([1, 4, 4, 9, 11], dtype=torch.int32)
    assert torch.autograd.gradcheck(lambda s: first(graph.segment(s, indptr, reduce)), (src,))


def test_gradcheck_gather():
    x = distinct((5, 4))
    index = torch.tensor([4, 0, 0, 2, 4, 4], dtype=torch.int32)
    assert torch.autograd.gradcheck(lambda t: graph.gather(t, index), (x,))
    assert torch.autograd.gradgradcheck(lambda t: graph.gather(t, index), (x,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_opcheck(dtype):
    src = torch.randn(20, 3, dtype=dtype, requires_grad=dtype != torch.float16)
    index = torch.randint(0, 6, (20,))
    indptr = torch.tensor([0, 3, 3, 12, 20])
    for reduce in range(5) if dtype == torch.float32 else (0, 2):  # opcheck is slow: all reduces once
        torch.library.opcheck(ops.scatter.default, (src, index, 6, reduce))
        torch.library.opcheck(ops.segment.default, (src, indptr, reduce))
    torch.library.opcheck(ops.gather.default, (src, index))


def test_cuda_matches_cpu(device):
    g = torch.Generator().manual_seed(5)
    src = torch.randn(20000, 16, generator=g)
    index = torch.randint(0, 1000, (20000,), generator=g)
    for reduce in graph.REDUCES:
        got = graph.scatter(src.to(device), index.to(device), 1000, reduce)
        want = graph.scatter(src, index, 1000, reduce)
        if reduce in ("max", "min"):
            assert torch.equal(got[1].cpu(), want[1]) and torch.equal(got[0].cpu(), want[0])
        else:
            torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(graph.gather(src.to(device), index.to(device)).cpu(), graph.gather(src, index))


def test_bad_inputs():
    src = np.ones((4, 2), np.float32)
    index = np.array([0, 1, 1, 3])
    with pytest.raises(ValueError, match="index"):
        graph.scatter(src, index, 3)
    with pytest.raises(ValueError, match="index"):
        graph.scatter(src, np.array([0, -1, 1, 0]), 3)
    with pytest.raises(ValueError, match="index"):
        graph.scatter(src, index[:3], 4)
    with pytest.raises(TypeError, match="index"):
        graph.scatter(src, index.astype(np.float32), 4)
    with pytest.raises(TypeError, match="src"):
        graph.scatter(src.astype(np.int32), index, 4)
    with pytest.raises(TypeError, match="index"):
        graph.scatter(src, torch.from_numpy(index), 4)
    with pytest.raises(ValueError, match="reduce"):
        graph.scatter(src, index, 4, "median")
    with pytest.raises(ValueError, match="dim_size"):
        graph.scatter(src, index, -1)
    with pytest.raises(ValueError, match="src"):
        graph.scatter(np.ones((), np.float32), np.zeros(1, np.int64), 1)
    with pytest.raises(ValueError, match="indptr"):
        graph.segment(src, np.array([0, 3, 2]))
    with pytest.raises(ValueError, match="indptr"):
        graph.segment(src, np.array([0, 5]))
    with pytest.raises(ValueError, match="indptr"):
        graph.segment(src, np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="index"):
        graph.gather(src, np.array([4]))
    with pytest.raises(ValueError, match="src"):
        graph.scatter(np.ones((4, 4), np.float32)[:, ::2], index, 4)


# ---- spmm / sddmm / edge_softmax / graph_attention -------------------------------------------------------

@st.composite
def graphs(draw, framework=None):
    n = draw(st.integers(0, 16))
    e = draw(st.integers(0, 60)) if n else 0
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    src, dst = rng.integers(0, max(n, 1), e), rng.integers(0, max(n, 1), e)
    if n > 2 and e:
        dst[dst == 1] = 2  # node 1 has no in-edge
    index_dtype = draw(st.sampled_from(["int32", "int64"]))
    framework = framework or draw(st.sampled_from(["numpy", "torch"]))
    ei = make_index(np.stack([src, dst]), index_dtype, framework)
    return graph.Graph(ei, n), src, dst, n, rng, framework


def heads_case(draw, g_case, dtype):
    G, src, dst, n, rng, framework = g_case
    heads = draw(st.sampled_from([0, 1, 3]))  # 0: no heads dimension
    d = draw(st.integers(1, 9))
    shape = (n, d) if heads == 0 else (n, heads, d)
    return shape, max(heads, 1)


@given(graphs(), st.sampled_from(DTYPES), st.sampled_from(["sum", "mean", "max", "min"]),
       st.sampled_from(["none", "edge", "head"]), st.data())
def test_spmm_matches_reference(g_case, dtype, reduce, weights, data):
    G, src, dst, n, rng, framework = g_case
    if dtype == "bfloat16":
        G = G.to(torch.zeros(1)) if framework == "numpy" else G
        framework = "torch"
    shape, heads = heads_case(data.draw, g_case, dtype)
    if weights == "head" and len(shape) == 2:
        weights = "edge"
    e = len(src)
    x = make(rng.standard_normal(shape), dtype, framework)
    w = None if weights == "none" else make(rng.standard_normal((e,) if weights == "edge" else (e, heads)), dtype,
                                            framework)
    got = graph.spmm(G, x, w, reduce)
    out, arg = got if reduce in ("max", "min") else (got, None)
    assert type(out) is type(x) and tuple(out.shape) == tuple(x.shape)
    w64 = None if w is None else to64(w)
    want, arg_want = ref.spmm(src, dst, n, to64(x), w64, reduce)
    g64 = to64(out)
    if reduce in ("max", "min") and (w is None or dtype == "float64"):  # exact: the products round alike
        np.testing.assert_array_equal(g64, want)
        np.testing.assert_array_equal(np.asarray(arg), arg_want)
        return
    # |error| <= (k + 1) u sum_e |w_e x| (one rounding per product and per addition) + the output rounding
    x2 = np.abs(to64(x)).reshape(n, heads, int(np.prod(shape[1:])) // heads)
    wa = np.ones((e, heads)) if w64 is None else np.abs(w64).reshape(e, w64.shape[1] if w64.ndim == 2 else 1) * np.ones((1, heads))
    bound = np.zeros_like(x2)
    for i in range(n):
        ids = np.flatnonzero(dst == i)
        k = len(ids)
        if k == 0:
            continue
        total = (wa[ids][:, :, None] * x2[src[ids]]).sum(axis=0)
        if reduce == "max" or reduce == "min":
            total = (wa[ids][:, :, None] * x2[src[ids]]).max(axis=0)
            k = 0
        bound[i] = (k + 1) * ACC_EPS[dtype] * total / (k if reduce == "mean" and k else 1)
    bound = bound.reshape(want.shape) + OUT_EPS[dtype] * np.abs(want) + OUT_TINY[dtype]
    assert np.all(np.abs(g64 - want) <= bound * 1.0000001)


@given(graphs(), st.sampled_from(DTYPES), st.data())
def test_sddmm_matches_reference(g_case, dtype, data):
    G, src, dst, n, rng, framework = g_case
    if dtype == "bfloat16" and framework == "numpy":
        return
    shape, heads = heads_case(data.draw, g_case, dtype)
    a, b = (make(rng.standard_normal(shape), dtype, framework) for _ in range(2))
    got = graph.sddmm(G, a, b)
    want = ref.sddmm(src, dst, to64(a), to64(b))
    assert tuple(got.shape) == want.shape
    d = shape[-1]
    bound = (d + 1) * ACC_EPS[dtype] * ref.sddmm(src, dst, np.abs(to64(a)), np.abs(to64(b)))
    bound = bound + OUT_EPS[dtype] * np.abs(want) + OUT_TINY[dtype]
    assert np.all(np.abs(to64(got) - want) <= bound * 1.0000001)


@given(graphs(), st.sampled_from(DTYPES), st.sampled_from([0, 1, 4]))
def test_edge_softmax_matches_reference(g_case, dtype, heads):
    G, src, dst, n, rng, framework = g_case
    if dtype == "bfloat16" and framework == "numpy":
        return
    e = len(src)
    s = rng.standard_normal((e,) if heads == 0 else (e, heads)) * 3
    if e:
        s.reshape(-1)[rng.integers(0, s.size, max(1, s.size // 5))] = -np.inf
        if n > 3:
            s[dst == 3] = -np.inf  # a node whose in-edges are all -inf
    scores = make(s, dtype, framework)
    got = to64(graph.edge_softmax(G, scores))
    s64 = to64(scores)
    want = ref.edge_softmax(dst, n, s64)
    assert not np.isnan(got).any()
    # each exp errs by <= 2u relative (plus u |s - m| from the subtraction), the k-term sum by k u, the
    # division by u: relative (k + 4 + 2 max|s - m|) u, then the output rounding
    finite = s64[np.isfinite(s64)]
    spread = (finite.max() - finite.min()) if finite.size else 0.0
    k = np.bincount(dst, minlength=n)[dst] if e else np.zeros(0)
    k = k.reshape((e,) + (1,) * (s64.ndim - 1))
    bound = (k + 4 + 2 * spread) * ACC_EPS[dtype] * np.abs(want) + OUT_EPS[dtype] * np.abs(want) + OUT_TINY[dtype]
    assert np.all(np.abs(got - want) <= bound * 1.0000001)
    if n > 3 and e:
        assert (got[dst == 3] == 0).all()


@given(graphs(framework="torch"), st.sampled_from(["float64", "float32"]), st.sampled_from(["none", "edge", "head"]),
       st.data())
def test_graph_attention_matches_reference(g_case, dtype, bias_kind, data):
    G, src, dst, n, rng, framework = g_case
    heads = data.draw(st.sampled_from([1, 2]))
    d, dv = data.draw(st.integers(1, 8)), data.draw(st.integers(1, 40))
    e = len(src)
    q, k = (make(rng.standard_normal((n, heads, d)), dtype, framework) for _ in range(2))
    v = make(rng.standard_normal((n, heads, dv)), dtype, framework)
    bias = None if bias_kind == "none" else make(rng.standard_normal((e,) if bias_kind == "edge" else (e, heads)),
                                                 dtype, framework)
    out, lse = graph.graph_attention(G, q, k, v, bias, return_lse=True)
    want, want_lse = ref.graph_attention(src, dst, n, to64(q), to64(k), to64(v), None if bias is None else to64(bias))
    np.testing.assert_array_equal(np.isinf(to64(lse)), np.isinf(want_lse))
    # out is a convex combination of v rows: its error is bounded by (the softmax's relative error, as in
    # test_edge_softmax, with the logits' own rounding d u |q||k| feeding the exponent) times max |v|
    eps = ACC_EPS[dtype]
    logit_err = (d + 2) * eps * (np.abs(to64(q)).max(initial=0) * np.abs(to64(k)).max(initial=0) + 8)
    kmax = np.bincount(dst, minlength=max(n, 1)).max(initial=0)
    rel = (kmax + 6) * eps + 2 * logit_err + 64 * eps * 8
    bound = rel * np.abs(to64(v)).max(initial=0) * 2 + OUT_EPS[dtype] * np.abs(want)
    assert np.all(np.abs(to64(out) - want) <= bound + 1e-300)
    fin = np.isfinite(want_lse)
    assert np.all(np.abs(to64(lse)[fin] - want_lse[fin]) <= 2 * logit_err + (kmax + 4) * eps * (1 + np.abs(want_lse[fin])))


def small_graph(seed=0, n=6, e=20, dtype=torch.int64):
    g = torch.Generator().manual_seed(seed)
    src, dst = torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)
    dst[dst == 1] = 2
    return graph.Graph(torch.stack([src, dst]).to(dtype), n), src, dst


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
def test_gradcheck_spmm(reduce):
    G, _, _ = small_graph()
    g = torch.Generator().manual_seed(11)  # normal draws: no two products w_e x tie (max/min stay smooth)
    rand = lambda *shape: torch.randn(*shape, dtype=torch.float64, generator=g).requires_grad_(True)  # noqa: E731
    x, w = rand(6, 4), rand(20)
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    fast = reduce in ("max", "min")  # their composite backward is slow to run once per Jacobian column
    assert torch.autograd.gradcheck(lambda a, b: first(graph.spmm(G, a, b, reduce)), (x, w), fast_mode=fast)
    x3, w2 = rand(6, 2, 3), rand(20, 2)
    assert torch.autograd.gradcheck(lambda a, b: first(graph.spmm(G, a, b, reduce)), (x3, w2), fast_mode=fast)


def test_gradcheck_sddmm_softmax_attention():
    G, _, dst = small_graph(1, dtype=torch.int32)
    a, b = distinct((6, 2, 3), 5), distinct((6, 2, 3), 6)
    assert torch.autograd.gradcheck(lambda p, r: graph.sddmm(G, p, r), (a, b))
    s = (torch.randn(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: graph.edge_softmax(G, t), (s,))
    g = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(6, 2, c, dtype=torch.float64, generator=g).requires_grad_(True) for c in (3, 3, 5))
    for bias in (None, torch.randn(20, dtype=torch.float64, generator=g), torch.randn(20, 2, dtype=torch.float64, generator=g)):
        if bias is None:
            assert torch.autograd.gradcheck(lambda *t: graph.graph_attention(G, *t), (q, k, v))
        else:
            bias = bias.requires_grad_(True)
            assert torch.autograd.gradcheck(lambda *t: graph.graph_attention(G, *t), (q, k, v, bias))


def test_spmm_equals_torch_sparse_and_index_add():
    g = torch.Generator().manual_seed(9)
    n, e, f = 300, 4000, 8
    src, dst = torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)
    x = torch.randn(n, f, dtype=torch.float64, generator=g)
    w = torch.randn(e, dtype=torch.float64, generator=g)
    G = graph.Graph(torch.stack([src, dst]), n)
    A = torch.sparse_coo_tensor(torch.stack([dst, src]), w, (n, n), check_invariants=True)
    torch.testing.assert_close(graph.spmm(G, x, w), torch.sparse.mm(A, x), rtol=1e-12, atol=1e-12)
    want = torch.zeros(n, f, dtype=torch.float64).index_add_(0, dst, w[:, None] * x[src])
    torch.testing.assert_close(graph.spmm(G, x, w), want, rtol=1e-12, atol=1e-12)
    weighted = graph.Graph(torch.stack([src, dst]), n, edge_weight=w)  # its cached CSR-ordered weights
    assert torch.equal(graph.spmm(weighted, x), graph.spmm(G, x, w))
    assert torch.equal(graph.spmm(weighted, x, reduce="max")[1], graph.spmm(G, x, w, "max")[1])
    xg = x.clone().requires_grad_(True)
    graph.spmm(weighted, xg, reduce="mean").square().sum().backward()
    xh = x.clone().requires_grad_(True)
    graph.spmm(G, xh, w, "mean").square().sum().backward()
    assert torch.equal(xg.grad, xh.grad)
    want = torch.zeros(n, f, dtype=torch.float64).scatter_reduce(0, dst[:, None].expand(e, f), w[:, None] * x[src],
                                                                  "amax", include_self=False)
    assert torch.equal(graph.spmm(G, x, w, "max")[0], want)


def test_edge_softmax_empty_and_all_masked():
    G = graph.Graph(np.array([[0, 1, 2, 0], [1, 1, 2, 2]]), 4)
    s = np.array([-np.inf, -np.inf, 0.5, -np.inf])
    np.testing.assert_array_equal(graph.edge_softmax(G, s), [0, 0, 1, 0])
    out, lse = graph.graph_attention(G, np.ones((4, 1, 2)), np.ones((4, 1, 2)), np.ones((4, 1, 3)),
                                     np.array([-np.inf, -np.inf, 0.0, 0.0]), return_lse=True)
    np.testing.assert_array_equal(out[[0, 1, 3]], np.zeros((3, 1, 3)))
    assert np.isneginf(lse[[0, 1, 3]]).all() and np.isfinite(lse[2]).all()
    assert graph.spmm(graph.Graph(np.zeros((2, 0), np.int64), 3), np.ones((3, 2))).tolist() == [[0, 0]] * 3


def test_spmm_attention_deterministic_whatever_the_thread_count():
    g = torch.Generator().manual_seed(10)
    n, e = 3000, 60000
    src, dst = torch.randint(0, n, (e,), generator=g), torch.randint(0, n, (e,), generator=g)
    dst[: e // 4] = 11  # a heavy node
    G = graph.Graph(torch.stack([src, dst]), n)
    x = torch.randn(n, 16, generator=g)
    w = torch.randn(e, generator=g)
    q, k, v = (torch.randn(n, 2, 8, generator=g, requires_grad=True) for _ in range(3))
    before, results = commkernels.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            commkernels.set_num_threads(threads)
            out = graph.graph_attention(G, q, k, v)
            grads = torch.autograd.grad(out.square().sum(), (q, k, v))
            results.append([t.detach().numpy().tobytes() for t in (graph.spmm(G, x, w), *graph.spmm(G, x, w, "max"),
                                                                    graph.edge_softmax(G, w), out, *grads)])
    finally:
        commkernels.set_num_threads(before)
    assert results[0] == results[1] == results[2]


def test_opcheck_message_passing():
    G, _, _ = small_graph(2)
    csr, csc = G.csr, G.csc
    arrays = (csr.indptr, csr.indices, csr.eid, csc.indptr, csc.indices, csc.eid)
    x = torch.randn(6, 4, requires_grad=True)
    w = torch.randn(20, requires_grad=True)
    for reduce in (0, 1, 2):
        torch.library.opcheck(ops.spmm.default, (x, *arrays, w, False, 1, reduce))
        torch.library.opcheck(ops.spmm.default, (x, *arrays, w[csr.eid].detach(), True, 1, reduce))
    torch.library.opcheck(ops.sddmm.default, (x.reshape(6, 1, 4), x.reshape(6, 1, 4), *arrays, 1))
    torch.library.opcheck(ops.edge_softmax.default, (w, csr.indptr, csr.eid, G.dst, 1))
    q = torch.randn(6, 2, 3, requires_grad=True)
    torch.library.opcheck(ops.graph_attention.default, (q, q.detach().clone().requires_grad_(True),
                                                        torch.randn(6, 2, 5, requires_grad=True),
                                                        torch.randn(20, 2, requires_grad=True), *arrays, 0.5))


def test_message_passing_cuda_matches_cpu(device):
    G, _, _ = small_graph(3, n=500, e=8000)
    x = torch.randn(500, 16)
    w = torch.randn(8000)
    Gd = G.to(x.to(device))
    torch.testing.assert_close(graph.spmm(Gd, x.to(device), w.to(device)).cpu(), graph.spmm(G, x, w), rtol=1e-5, atol=1e-5)
    assert torch.equal(graph.spmm(Gd, x.to(device), w.to(device), "max")[1].cpu(), graph.spmm(G, x, w, "max")[1])
    torch.testing.assert_close(graph.edge_softmax(Gd, w.to(device)).cpu(), graph.edge_softmax(G, w), rtol=1e-5, atol=1e-6)
    q = torch.randn(500, 2, 8)
    torch.testing.assert_close(graph.graph_attention(Gd, q.to(device), q.to(device), q.to(device)).cpu(),
                               graph.graph_attention(G, q, q, q), rtol=1e-4, atol=1e-5)


def test_message_passing_bad_inputs():
    G = graph.Graph(np.array([[0, 1], [1, 2]]), 3)
    x = np.ones((3, 2))
    with pytest.raises(TypeError, match="graph"):
        graph.spmm(np.zeros((3, 3)), x)
    with pytest.raises(ValueError, match="x"):
        graph.spmm(G, np.ones((4, 2)))
    with pytest.raises(ValueError, match="reduce"):
        graph.spmm(G, x, reduce="mul")
    with pytest.raises(ValueError, match="edge_weight"):
        graph.spmm(G, x, np.ones(3))
    with pytest.raises(ValueError, match="x"):
        graph.spmm(G, x, np.ones((2, 4)))
    with pytest.raises(ValueError, match="b"):
        graph.sddmm(G, x, np.ones((3, 3)))
    with pytest.raises(TypeError, match="b"):
        graph.sddmm(G, x, x.astype(np.float32))
    with pytest.raises(ValueError, match="scores"):
        graph.edge_softmax(G, np.ones(3))
    with pytest.raises(ValueError, match="k"):
        graph.graph_attention(G, np.ones((3, 1, 2)), np.ones((3, 1, 3)), np.ones((3, 1, 2)))
    with pytest.raises(ValueError, match="edge_bias"):
        graph.graph_attention(G, np.ones((3, 2, 2)), np.ones((3, 2, 2)), np.ones((3, 2, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="scale"):
        graph.graph_attention(G, np.ones((3, 2)), np.ones((3, 2)), np.ones((3, 2)), scale=float("nan"))


AVX512_PARITY_SCRIPT = r"""
import hashlib, os, sys
import torch
from commkernels import graph
g = torch.Generator().manual_seed(21)
h = hashlib.sha256()
for f, n in ((16, 5000), (64, 1500), (256, 600), (7, 9000)):
    e = 4 * n
    src = torch.randn(e, f, generator=g)
    index = torch.randint(0, n, (e,), generator=g)
    w = torch.randn(e, generator=g)
    G = graph.Graph(torch.stack([torch.randint(0, n, (e,), generator=g), index]), n)
    x = torch.randn(n, f, generator=g)
    for path in ("owner", "blocked", "sort"):
        os.environ["COMMKERNELS_SCATTER_PATH"] = path
        for reduce in ("sum", "mean", "max"):
            for out in graph.scatter(src, index, n, reduce), graph.scatter(src, index.sort().values, n, reduce):
                for t in out if isinstance(out, tuple) else (out,):
                    h.update(t.numpy().tobytes())
    for reduce in ("sum", "mean", "max"):
        out = graph.spmm(G, x, w, reduce)
        for t in out if isinstance(out, tuple) else (out,):
            h.update(t.numpy().tobytes())
print(h.hexdigest())
"""


def test_avx512_and_baseline_paths_agree_bitwise(run_python):
    """The AVX-512 versions of the scatter / segment / spmm loops round w * x and the sum separately (no FMA
    contraction), as the baseline x86-64 build does: the same bits with COMMKERNELS_DISABLE_AVX512 set."""
    avx512, baseline = (run_python(AVX512_PARITY_SCRIPT, avx512).strip() for avx512 in (True, False))
    assert avx512 == baseline and avx512
