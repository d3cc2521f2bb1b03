"""commkernels.graph core: Graph views, topologies, mixing weights, mix / push_sum / consensus_distance /
spectral_gap against the NumPy float64 references, gossip invariants, determinism and bad inputs."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import commkernels
from commkernels import graph as G
from commkernels.reference import graph as ref

DTYPES = ("float32", "float64", "float16", "bfloat16")
UNIT = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}  # unit roundoff


def f64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().to(torch.float64).numpy()
    return np.asarray(a).astype(np.float64)


def make_x(rng, n, d, dtype, framework):
    x = torch.from_numpy(rng.standard_normal((n, d))).to(getattr(torch, dtype))
    return x if framework == "torch" else x.numpy()


@st.composite
def edge_lists(draw, max_nodes=40, max_edges=200):
    n = draw(st.integers(0, max_nodes))
    e = draw(st.integers(0, max_edges)) if n else 0
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ei = rng.integers(0, max(n, 1), (2, e))
    dtype = draw(st.sampled_from(["int32", "int64"]))
    framework = draw(st.sampled_from(["numpy", "torch"]))
    ei = ei.astype(dtype)
    return (torch.from_numpy(ei) if framework == "torch" else ei), n


# ---- Graph ------------------------------------------------------------------------------------------

@given(edge_lists())
def test_csr_csc_match_reference(case):
    ei, n = case
    g = G.Graph(ei, n)
    src, dst = f64(ei[0]).astype(np.int64), f64(ei[1]).astype(np.int64)
    for view, keys, values in ((g.csr, dst, src), (g.csc, src, dst)):
        indptr, sorted_values, eid = ref.csr_by_key(keys, values, n)
        np.testing.assert_array_equal(f64(view.indptr), indptr)
        np.testing.assert_array_equal(f64(view.indices), sorted_values)
        np.testing.assert_array_equal(f64(view.eid), eid)
        assert str(view.indptr.dtype).endswith("int64") and str(view.eid.dtype).endswith("int64")
        assert str(view.indices.dtype) == str(ei.dtype)
        assert type(view.indptr) is type(ei)
    np.testing.assert_array_equal(f64(g.in_degree), np.bincount(dst, minlength=n))
    np.testing.assert_array_equal(f64(g.out_degree), np.bincount(src, minlength=n))
    # the transpose's CSR is this CSC; from_csr rebuilds the same matrix
    t = g.transpose()
    np.testing.assert_array_equal(f64(t.csr.eid), f64(g.csc.eid))
    np.testing.assert_array_equal(G.Graph.from_csr(g.csr.indptr, g.csr.indices, n).to_dense(), g.to_dense())
    np.testing.assert_array_equal(G.Graph(ei.flip(0) if isinstance(ei, torch.Tensor) else ei[::-1].copy(), n,
                                          transpose=True).to_dense(), g.to_dense())


def test_csr_large_is_thread_count_independent():
    rng = np.random.default_rng(5)
    n, e = 3000, 400_000  # the chunked (parallel) path: e >= 2^16 and e >= 4 n
    ei = rng.integers(0, n, (2, e)).astype(np.int32)
    order = np.argsort(ei[1], kind="stable")
    before, results = commkernels.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            commkernels.set_num_threads(threads)
            c = G.Graph(ei, n).csr
            results.append((c.indptr.tobytes(), c.indices.tobytes(), c.eid.tobytes()))
    finally:
        commkernels.set_num_threads(before)
    assert results[0] == results[1] == results[2]
    np.testing.assert_array_equal(np.frombuffer(results[0][2], np.int64), order)


def test_weights_follow_views():
    ei = np.array([[0, 1, 2, 2], [1, 2, 0, 1]])
    w = np.array([1.0, 2.0, 3.0, 4.0])
    g = G.Graph(ei, 3, w)
    np.testing.assert_array_equal(g.weight_csr, w[g.csr.eid])
    np.testing.assert_array_equal(g.weight_csc, w[g.csc.eid])
    np.testing.assert_array_equal(g.to_dense(), ref.dense_matrix(ei[0], ei[1], 3, w))
    W = np.array([[0.5, 0.0, 0.5], [0.25, 0.75, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(G.Graph.from_dense(W).to_dense(), W)
    np.testing.assert_array_equal(G.Graph.from_dense(W, transpose=True).to_dense(), W.T)
    tg = G.Graph.from_dense(torch.tensor(W))
    assert isinstance(tg.src, torch.Tensor) and torch.equal(torch.from_numpy(tg.to_dense()), torch.tensor(W))


def test_graph_bad_inputs():
    with pytest.raises(ValueError, match=r"edge_index\[0\]"):
        G.Graph(np.array([[0, 3], [1, 1]]), 3)
    with pytest.raises(ValueError, match=r"edge_index\[1\]"):
        G.Graph(np.array([[0, 1], [1, -1]]), 3)
    with pytest.raises(ValueError, match=r"edge_index\[1\]"):  # transpose: row 1 holds the senders
        G.Graph(np.array([[0, 1], [1, 5]]), 3, transpose=True)
    with pytest.raises(ValueError, match="edge_index"):
        G.Graph(np.zeros((3, 2), np.int64), 3)
    with pytest.raises(TypeError, match="edge_index"):
        G.Graph(np.zeros((2, 2), np.float32), 3)
    with pytest.raises(ValueError, match="num_nodes"):
        G.Graph(np.zeros((2, 2), np.int64), -1)
    with pytest.raises(ValueError, match="edge_weight"):
        G.Graph(np.zeros((2, 2), np.int64), 3, np.ones(3))
    with pytest.raises(ValueError, match="indptr"):
        G.Graph.from_csr(np.array([0, 2, 1]), np.array([0]), 2)
    with pytest.raises(ValueError, match="indices"):
        G.Graph.from_csr(np.array([0, 1, 1]), np.array([7]), 2)
    with pytest.raises(ValueError, match="dst"):  # the kernel's own check
        commkernels._backend._cpu.csr_build(np.array([0, 5]), np.array([0, 1]), 3, np.empty(4, np.int64),
                                            np.empty(2, np.int64), np.empty(2, np.int64), "dst", "src")


# ---- topologies and weights -------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13])
def test_topologies_match_reference(n):
    np.testing.assert_array_equal(G.ring(n).to_dense(), ref.ring(n))
    np.testing.assert_array_equal(G.complete(n).to_dense(), ref.complete(n))
    np.testing.assert_array_equal(G.star(n, n - 1).to_dense(), ref.star(n, n - 1))
    np.testing.assert_array_equal(G.exponential(n).to_dense(), ref.exponential(n))
    for t in range(4):
        np.testing.assert_array_equal(G.one_peer_exponential(n, t).to_dense(), ref.one_peer_exponential(n, t))
    for rows in (1, 2, 3):
        np.testing.assert_array_equal(G.torus(rows, n).to_dense(), ref.torus(rows, n))


def _random_undirected(seed):
    kind = seed % 4
    if kind == 0:
        return G.erdos_renyi(12 + seed % 7, 0.3, seed)
    if kind == 1:
        return G.barabasi_albert(15 + seed % 5, 1 + seed % 3, seed)
    if kind == 2:
        return G.torus(2 + seed % 3, 3 + seed % 2)
    return G.ring(3 + seed % 9)


@given(st.integers(0, 10_000))
def test_weights_match_reference(seed):
    g = _random_undirected(seed)
    A = g.to_dense()
    np.testing.assert_allclose(G.metropolis_hastings(g).to_dense(), ref.metropolis_hastings(A), rtol=0, atol=1e-15)
    np.testing.assert_allclose(G.uniform(g).to_dense(), ref.uniform(A), rtol=0, atol=1e-15)
    d = G.exponential(g.num_nodes)  # directed: uniform and push-sum differ from MH
    np.testing.assert_allclose(G.uniform(d).to_dense(), ref.uniform(d.to_dense()), rtol=0, atol=1e-15)
    P = G.push_sum_weights(d).to_dense()
    np.testing.assert_allclose(P, ref.push_sum_weights(d.to_dense()), rtol=0, atol=1e-15)
    np.testing.assert_allclose(P.sum(axis=0), 1.0, rtol=0, atol=1e-15)
    W = G.metropolis_hastings(g).to_dense()
    np.testing.assert_allclose(W.sum(axis=0), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(W, W.T)


def test_random_graphs_seeded():
    a, b = G.erdos_renyi(60, 0.1, 7), G.erdos_renyi(60, 0.1, 7)
    np.testing.assert_array_equal(a.edge_index, b.edge_index)
    assert not np.array_equal(a.to_dense(), G.erdos_renyi(60, 0.1, 8).to_dense())
    assert G.erdos_renyi(30, 0.0, 1).num_edges == 0
    np.testing.assert_array_equal(G.erdos_renyi(30, 1.0, 1).to_dense(), ref.complete(30))
    # ER: the q-th raw Philox word decides the q-th pair (i < j, row-major)
    words = np.random.Philox(key=3).random_raw(10 * 9 // 2)
    pairs = [(i, j) for i in range(10) for j in range(i + 1, 10)]
    want = ref.neighbours(10, [p for p, w in zip(pairs, words) if w < np.uint64(int(0.4 * 2.0**64))])
    np.testing.assert_array_equal(G.erdos_renyi(10, 0.4, 3).to_dense(), want)
    n, m = 2000, 3
    ba = G.barabasi_albert(n, m, 11)
    np.testing.assert_array_equal(ba.edge_index, G.barabasi_albert(n, m, 11).edge_index)
    A = ba.to_dense()
    assert A.sum() == 2 * (m + m * (n - m - 1)) and np.array_equal(A, A.T) and A.max() == 1
    assert A[m + 1:].sum(axis=1).min() >= m
    assert A.sum(axis=1).max() > 10 * m  # preferential attachment: hubs


def test_remove_agents():
    g = G.ring(6)
    r = G.remove_agents(g, [2])
    A = ref.ring(6)
    keep = [0, 1, 3, 4, 5]
    np.testing.assert_array_equal(r.to_dense(), A[np.ix_(keep, keep)])
    w = G.remove_agents(G.metropolis_hastings(g), np.array([0, 5]))
    assert w.num_nodes == 4 and w.edge_weight is not None
    with pytest.raises(ValueError, match="failed"):
        G.remove_agents(g, [6])


def test_topology_bad_inputs():
    with pytest.raises(ValueError, match="n"):
        G.ring(-1)
    with pytest.raises(ValueError, match="p"):
        G.erdos_renyi(5, 1.5)
    with pytest.raises(ValueError, match="m"):
        G.barabasi_albert(5, 5)
    with pytest.raises(ValueError, match="graph"):
        G.metropolis_hastings(G.exponential(5))
    with pytest.raises(TypeError, match="graph"):
        G.uniform(np.eye(3))


# ---- mix -------------------------------------------------------------------------------------------

HALF_SUBNORMAL_SPACING = {"float16": 2.0**-25, "bfloat16": 2.0**-134, "float32": 2.0**-150, "float64": 1e-300}


def _tolerance(W, X, rounds, dtype, n):
    """Forward error bound of rounds products accumulated in the accumulation type (gamma_{n+2} per
    round, on |W|^r |X|), plus the rounding of the output and of the weights to that type; the output's
    rounding is relative only down to the smallest normal number: below it (subnormal outputs, common in
    float16) it is absolute, half the subnormal spacing."""
    acc = UNIT["float64" if dtype == "float64" else "float32"]
    scale = np.linalg.matrix_power(np.abs(W), rounds) @ np.abs(X) if rounds else np.abs(X)
    return scale * (2 * acc * (n + 2) * max(rounds, 1) + UNIT[dtype]) + HALF_SUBNORMAL_SPACING[dtype]


@given(st.integers(0, 2**32 - 1), st.sampled_from(DTYPES), st.integers(0, 20), st.integers(0, 300),
       st.integers(0, 4), st.sampled_from(["dense", "graph"]), st.booleans())
def test_mix_matches_reference(seed, dtype, n, d, rounds, kind, transpose):
    rng = np.random.default_rng(seed)
    framework = "torch" if dtype == "bfloat16" else ("numpy" if seed % 2 else "torch")
    X = make_x(rng, n, d, dtype, framework)
    Wm = rng.random((n, n)) * (rng.random((n, n)) < 0.4)
    if kind == "dense":
        W = torch.from_numpy(Wm).to(getattr(torch, dtype)) if framework == "torch" else Wm.astype(dtype)
        Wq = f64(W)  # the weights as the kernel sees them
        Wq = np.asarray(torch.from_numpy(Wq).to(torch.float64 if dtype == "float64" else torch.float32), np.float64)
    else:
        W = G.Graph.from_dense(Wm)
        acc = np.float64 if dtype == "float64" else np.float32
        Wq = Wm.astype(acc).astype(np.float64)
    Y = G.mix(X, W, rounds, transpose=transpose)
    assert type(Y) is type(X) and str(Y.dtype) == str(X.dtype) and tuple(Y.shape) == (n, d)
    Weff = Wq.T if transpose else Wq
    want = ref.mix(f64(X), Weff, rounds)
    np.testing.assert_array_less(np.abs(f64(Y) - want), _tolerance(Weff, f64(X), rounds, dtype, n))


def test_mix_vector_and_push_sum():
    rng = np.random.default_rng(1)
    g = G.exponential(8)
    P = G.push_sum_weights(g)
    x, w = rng.standard_normal((8, 5)), np.ones(8)
    for _ in range(30):
        x, w = G.push_sum(x, w, P)
    np.testing.assert_allclose(w.sum(), 8.0, rtol=1e-14)
    y = G.mix(rng.standard_normal(8), G.metropolis_hastings(G.ring(8)))
    assert y.shape == (8,)


@given(st.integers(0, 10_000), st.sampled_from(["float32", "float64"]), st.integers(1, 4))
def test_doubly_stochastic_mixing_preserves_the_average(seed, dtype, rounds):
    g = _random_undirected(seed)
    n = g.num_nodes
    W = G.metropolis_hastings(g)
    X = np.random.default_rng(seed).standard_normal((n, 257)).astype(dtype)
    for w in (W, W.to_dense(dtype)):
        Y = G.mix(X, w, rounds)
        # exact in real arithmetic (columns of W sum to 1): per element error <= gamma * |W|^r |X| <= gamma max|X|
        acc = UNIT[dtype]
        bound = 2 * acc * (n + 2) * rounds * np.abs(X.astype(np.float64)).max() + n * acc
        np.testing.assert_array_less(np.abs(Y.astype(np.float64).mean(0) - X.astype(np.float64).mean(0)), bound)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
def test_one_peer_exponential_reaches_the_exact_average(k):
    n = 2**k
    X = np.random.default_rng(k).standard_normal((n, 33))
    Y = X
    for t in range(k):  # tau = log2 n steps
        Y = G.mix(Y, G.one_peer_exponential(n, t))
    # each step halves sums of two values: the result is the average up to k roundings per element
    np.testing.assert_allclose(Y, np.broadcast_to(X.mean(0), X.shape), rtol=0, atol=4 * k * 2**-53 * np.abs(X).max())
    Z = X
    for t in range(k - 1):  # one step fewer does not reach it
        Z = G.mix(Z, G.one_peer_exponential(n, t))
    assert G.consensus_distance(Z) > 1e-3


@given(st.integers(0, 10_000), st.integers(1, 3))
def test_consensus_distance_shrinks_by_the_spectral_gap(seed, rounds):
    g = _random_undirected(seed)
    W = G.metropolis_hastings(g)
    gap = G.spectral_gap(W)
    np.testing.assert_allclose(gap, ref.spectral_gap(W.to_dense()), rtol=0, atol=1e-12)
    X = np.random.default_rng(seed).standard_normal((g.num_nodes, 64))
    before, after = G.consensus_distance(X), G.consensus_distance(G.mix(X, W, rounds))
    assert after <= (1 - gap) ** (2 * rounds) * before * (1 + 1e-12) + 1e-24


@given(st.integers(0, 2**32 - 1), st.sampled_from(DTYPES), st.integers(0, 30), st.integers(0, 500))
def test_consensus_distance_matches_reference(seed, dtype, n, d):
    rng = np.random.default_rng(seed)
    X = make_x(rng, n, d, dtype, "torch" if dtype == "bfloat16" else "numpy")
    got, want = G.consensus_distance(X), ref.consensus_distance(f64(X))
    assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-300)


def test_spectral_gap_non_symmetric():
    P = G.push_sum_weights(G.exponential(8)).to_dense()
    np.testing.assert_allclose(G.spectral_gap(P), ref.spectral_gap(P), rtol=0, atol=1e-12)
    np.testing.assert_allclose(G.spectral_gap(G.metropolis_hastings(G.complete(5))), 1.0, atol=1e-12)


def test_mix_deterministic_whatever_the_thread_count():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((64, 100_003)).astype(np.float32)
    W = G.metropolis_hastings(G.erdos_renyi(64, 0.2, 1))
    Wd = W.to_dense("float32")
    before, results = commkernels.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            commkernels.set_num_threads(threads)
            results.append((G.mix(X, W, 3).tobytes(), G.mix(X, Wd, 1).tobytes(), G.consensus_distance(X)))
    finally:
        commkernels.set_num_threads(before)
    assert results[0] == results[1] == results[2]


def test_mix_torch_opcheck_and_grad(device):
    g = G.metropolis_hastings(G.erdos_renyi(9, 0.4, 2))
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        x = torch.randn(9, 37, dtype=dtype, device=device)
        w = torch.rand(9, 9, dtype=dtype, device=device)
        torch.library.opcheck(torch.ops.commkernels.mix_dense.default, (x, w, 2))
        arrays = G._mix._graph_arrays(g, x, False)
        torch.library.opcheck(torch.ops.commkernels.mix_csr.default, (x, *arrays, 3))
    x = torch.randn(9, 6, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.rand(9, 9, dtype=torch.float64, device=device, requires_grad=True)
    for rounds in (0, 1, 3):
        assert torch.autograd.gradcheck(lambda a, b: G.mix(a, b, rounds), (x, w))
        assert torch.autograd.gradcheck(lambda a, b: G.mix(a, b, rounds, transpose=True), (x, w))
        assert torch.autograd.gradcheck(lambda a: G.mix(a, g, rounds), (x,))
        assert torch.autograd.gradcheck(lambda a: G.mix(a, g, rounds, transpose=True), (x,))
    torch._dynamo.reset()
    fn = torch.compile(lambda a: G.mix(a, g, 2) * 2, fullgraph=True, backend="aot_eager")
    y = torch.randn(9, 20, device=device)
    torch.testing.assert_close(fn(y), G.mix(y, g, 2) * 2)


def test_cuda_matches_cpu(device):
    rng = np.random.default_rng(4)
    ei = torch.from_numpy(rng.integers(0, 500, (2, 100_000)))
    gc, gg = G.Graph(ei, 500), G.Graph(ei.to(device), 500)
    for a, b in zip(gc.csr + gc.csc, gg.csr + gg.csc):
        assert torch.equal(a, b.cpu())
    W = G.metropolis_hastings(G.barabasi_albert(64, 3, 1))
    X = torch.randn(64, 10_001)
    for w in (W, torch.from_numpy(W.to_dense("float32"))):
        torch.testing.assert_close(G.mix(X.to(device), w.to(device) if isinstance(w, torch.Tensor) else w, 3).cpu(),
                                   G.mix(X, w, 3), rtol=1e-5, atol=1e-5)
    assert math.isclose(G.consensus_distance(X.to(device)), G.consensus_distance(X), rel_tol=1e-12)


def test_jax():
    jax = pytest.importorskip("jax")
    X = np.random.default_rng(3).standard_normal((8, 40)).astype(np.float32)
    W = G.metropolis_hastings(G.ring(8))
    got = G.mix(jax.numpy.asarray(X), W, 2)
    assert isinstance(got, jax.Array)
    np.testing.assert_array_equal(np.asarray(got), G.mix(X, W, 2))


def test_mix_out():
    rng = np.random.default_rng(6)
    W = G.metropolis_hastings(G.ring(6))
    Wd = W.to_dense("float32")
    for X in (rng.standard_normal((6, 70)).astype(np.float32), torch.randn(6, 70)):
        for w in (W, Wd if isinstance(X, np.ndarray) else torch.from_numpy(Wd)):
            out = X * 0 - 7
            assert G.mix(X, w, 3, out=out) is out
            np.testing.assert_array_equal(f64(out), f64(G.mix(X, w, 3)))
    x = torch.randn(6, 5, requires_grad=True)
    with pytest.raises(ValueError, match="out"):
        G.mix(x, W, out=torch.empty(6, 5))
    X = np.ones((6, 4), np.float32)
    with pytest.raises(ValueError, match="out"):
        G.mix(X, W, out=X)
    with pytest.raises(ValueError, match="out"):
        G.mix(X, W, out=np.empty((6, 5), np.float32))
    with pytest.raises(TypeError, match="out"):
        G.mix(X, W, out=torch.empty(6, 4))
    torch.library.opcheck(torch.ops.commkernels.mix_dense_out.default,
                          (torch.randn(6, 9), torch.from_numpy(Wd), 2, torch.empty(6, 9)))


def test_mix_bad_inputs():
    X = np.ones((4, 3), np.float32)
    W = G.metropolis_hastings(G.ring(4))
    with pytest.raises(ValueError, match="rounds"):
        G.mix(X, W, -1)
    with pytest.raises(ValueError, match="W"):
        G.mix(X, np.ones((3, 3), np.float32))
    with pytest.raises(ValueError, match="W"):
        G.mix(X, G.metropolis_hastings(G.ring(5)))
    with pytest.raises(ValueError, match="W"):
        G.mix(X, G.ring(4))  # no edge weights
    with pytest.raises(TypeError, match="W"):
        G.mix(X, torch.ones(4, 4))
    with pytest.raises(TypeError, match="X"):
        G.mix(np.ones((4, 3), np.int32), W)
    with pytest.raises(ValueError, match="X"):
        G.mix(np.ones((4, 6), np.float32)[:, ::2], W)
    with pytest.raises(ValueError, match="X"):
        G.mix(np.ones((4, 3, 2), np.float32), W)
    with pytest.raises(ValueError, match="w"):
        G.push_sum(X, np.ones(3), W)
    with pytest.raises(ValueError, match="indices"):
        commkernels._backend._cpu.mix_csr(X, np.array([0, 1, 1, 1, 1]), np.array([9]), np.ones(1, np.float32),
                                          4, 3, 1, np.empty_like(X))
    assert G.mix(np.zeros((0, 5), np.float32), np.zeros((0, 0), np.float32)).shape == (0, 5)
    assert G.consensus_distance(np.zeros((0, 5))) == 0.0


def test_bench_cases_compute_what_their_baselines_compute():
    from commkernels.bench import graph_mix

    cases = graph_mix.cases("cpu", quick=False, sizes=[1000])
    assert {(c.kernel, c.params["n"], c.params["rounds"]) for c in cases} == {
        (k, n, r) for k in ("mix[dense]", "mix[sparse]") for n in (16, 64, 256) for r in (1, 4)}
    for case in cases:
        prepared = case.prepare()
        x = inspect.getclosurevars(prepared.ours).nonlocals["x"]
        n, rounds = case.params["n"], case.params["rounds"]
        # both sides: float32 products of a stochastic W (|W|^r has unit row sums): gamma_{n+2} r max|X| each
        bound = 2 * (2 * UNIT["float32"] * (n + 2) * rounds * float(x.abs().max()))
        ours = prepared.ours()
        for name, baseline in prepared.baselines.items():
            torch.testing.assert_close(ours, baseline(), rtol=0, atol=bound, msg=f"{case.label}: {name}")


BASELINE_SCRIPT = r"""
import numpy as np, torch, commkernels
from commkernels import graph as G
assert commkernels.info()["cpu"]["simd"] == "baseline x86-64"
rng = np.random.default_rng(8)
worst = 0.0
for n, d in ((5, 1), (16, 300), (37, 1001)):
    Wm = rng.random((n, n)) * (rng.random((n, n)) < 0.5)
    Wm /= np.maximum(Wm.sum(1, keepdims=True), 1e-300)
    Ws = Wm * (rng.random((n, n)) < 0.2)  # sparse enough (3 E < n^2) for the CSR path
    for dtype, unit in (("float32", 2.0**-24), ("float64", 2.0**-53), ("bfloat16", 2.0**-8)):
        X = torch.from_numpy(rng.standard_normal((n, d))).to(getattr(torch, dtype))
        X64 = X.to(torch.float64).numpy()
        for W, rounds in ((torch.from_numpy(Wm).to(X.dtype), 1), (G.Graph.from_dense(Ws), 3)):
            Y = G.mix(X, W, rounds).to(torch.float64).numpy()
            Wq = (W.to(torch.float64).numpy() if isinstance(W, torch.Tensor)
                  else Ws.astype(np.float64 if dtype == "float64" else np.float32).astype(np.float64))
            want = np.linalg.matrix_power(Wq, rounds) @ X64
            acc = 2.0**-53 if dtype == "float64" else 2.0**-24
            bound = np.linalg.matrix_power(np.abs(Wq), rounds) @ np.abs(X64) * (2 * acc * (n + 2) * rounds + unit)
            assert (np.abs(Y - want) <= bound + 1e-300).all(), (n, d, dtype, rounds)
print("ok")
"""


def test_baseline_path_matches_reference(run_python):
    assert run_python(BASELINE_SCRIPT, avx512=False).strip() == "ok"


@pytest.mark.parametrize("n", [1500, 3000])  # narrower column tiles (2 and 1 vectors) for many agents
def test_mix_many_agents(n):
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, 40)).astype(np.float32)
    W = G.metropolis_hastings(G.erdos_renyi(n, 3.0 / n, 1))
    Wd = W.to_dense()
    want = ref.mix(X, Wd, 2)
    for w in (W, Wd.astype(np.float32)):  # sparse rounds; dense rounds (n > d: no W^rounds)
        got = G.mix(X, w, 2).astype(np.float64)
        np.testing.assert_array_less(np.abs(got - want), _tolerance(Wd, X.astype(np.float64), 2, "float32", n))
