"""orthogonalize_ and the PowerSGD helpers against the reference (commkernels.reference.ef), plus
orthonormality, rank-deficient input, warm start, error feedback, bad inputs and the torch op."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from commkernels import compress
from commkernels.reference import ef as ref

TORCH = {n: getattr(torch, n) for n in ("float32", "float64", "float16", "bfloat16")}
# Tolerance of the kernel against the float64 reference, for well-conditioned input (condition <= 1e2).
TOL = {"float64": 1e-10, "float32": 2e-4, "float16": 5e-3, "bfloat16": 3e-2}


def matrices(rng, batch, n, r, deficient: bool) -> np.ndarray:
    """Well-conditioned columns; with `deficient`, some columns repeat or combine earlier ones, or are 0."""
    P = rng.standard_normal(batch + (n, r))
    if deficient and r > 1:
        flat = P.reshape(-1, n, r)
        for m in flat:
            for j in range(1, r):
                kind = rng.integers(4)
                if kind == 1:
                    m[:, j] = m[:, rng.integers(j)] * rng.choice([1.0, -2.0, 0.5])
                elif kind == 2:
                    m[:, j] = m[:, :j] @ rng.integers(-2, 3, j).astype(np.float64)
                elif kind == 3:
                    m[:, j] = 0.0
    return P


def as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().float().numpy() if a.dtype == torch.bfloat16 else a.detach().cpu().numpy()
    return np.asarray(a)


def check_orthonormal_or_zero(Q: np.ndarray, tol: float) -> None:
    m = Q.reshape(-1, *Q.shape[-2:]).astype(np.float64)
    for q in m:
        norms = np.linalg.norm(q, axis=0)
        assert np.all((np.abs(norms - 1) < tol) | (norms < tol)), norms
        gram = q.T @ q
        off = gram - np.diag(np.diag(gram))
        assert np.max(np.abs(off), initial=0.0) < tol


@given(dtype=st.sampled_from(list(TORCH)), framework=st.sampled_from(["numpy", "torch"]),
       batch=st.sampled_from([(), (1,), (3,), (2, 2)]), n=st.integers(1, 40), r=st.integers(1, 6),
       deficient=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_orthogonalize_matches_reference(dtype, framework, batch, n, r, deficient, seed):
    rng = np.random.default_rng(seed)
    r = min(r, n)  # more columns than rows would be rank deficient by construction
    P = matrices(rng, batch, n, r, deficient)
    t = torch.from_numpy(P).to(TORCH[dtype])
    given_values = t.double().numpy()  # what the kernel sees, after rounding to dtype
    x = t.numpy().copy() if framework == "numpy" and dtype != "bfloat16" else t.clone()
    out = compress.orthogonalize_(x)
    assert out is x
    expected = ref.orthogonalize(given_values, 1e-8, dtype)
    got = as_numpy(x).astype(np.float64)
    # Columns that are zero in one and not the other can only come from borderline dependence, which
    # deficient inputs built from exact small-integer combinations do not produce in float64 or float32;
    # in 16-bit types the rounding of the input makes combinations inexact, so compare only there norms.
    if dtype in ("float32", "float64") or not deficient:
        np.testing.assert_allclose(got, expected, atol=TOL[dtype] * (10 if deficient else 1))
    check_orthonormal_or_zero(got, TOL[dtype] * 10)


def test_orthogonalize_rank_deficient_is_safe():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((100, 1))
    P = np.hstack([a, 2 * a, np.zeros((100, 1)), rng.standard_normal((100, 1)), -a]).astype(np.float32)
    compress.orthogonalize_(P)
    assert np.all(np.isfinite(P))
    norms = np.linalg.norm(P, axis=0)
    np.testing.assert_allclose(norms, [1, 0, 0, 1, 0], atol=1e-6)
    assert abs(P[:, 0] @ P[:, 3]) < 1e-6
    Z = np.zeros((2, 5, 3))
    compress.orthogonalize_(Z)
    assert np.all(Z == 0)


def test_orthogonalize_eps_threshold():
    P = np.array([[1e-9, 0.0], [0.0, 1e-7]])
    compress.orthogonalize_(P, eps=1e-8)
    np.testing.assert_allclose(P, [[0.0, 0.0], [0.0, 1.0]], rtol=1e-15, atol=0)
    Q = np.array([[1e-9], [0.0]])
    compress.orthogonalize_(Q, eps=0.0)
    np.testing.assert_allclose(Q, [[1.0], [0.0]], rtol=1e-15, atol=0)


def test_orthogonalize_deterministic_and_thread_independent():
    import commkernels

    rng = np.random.default_rng(1)
    saved = commkernels.get_num_threads()
    # many small matrices (split over threads) and one large one (its row chunks split over threads)
    for shape in ((8, 300, 5), (1, 20000, 3), (3, 9000, 2)):
        P = rng.standard_normal(shape).astype(np.float32)
        results = []
        for threads in (1, 2, 3):
            commkernels.set_num_threads(threads)
            x = P.copy()
            compress.orthogonalize_(x)
            results.append(x)
        commkernels.set_num_threads(saved)
        for other in results[1:]:
            np.testing.assert_array_equal(results[0], other)
        np.testing.assert_allclose(x, ref.orthogonalize(P), atol=1e-4)


def test_orthogonalize_bad_inputs():
    with pytest.raises(ValueError, match="P"):
        compress.orthogonalize_(np.zeros(5))
    with pytest.raises(TypeError, match="P"):
        compress.orthogonalize_(np.zeros((3, 2), np.int32))
    with pytest.raises(ValueError, match="eps"):
        compress.orthogonalize_(np.zeros((3, 2)), eps=-1.0)
    with pytest.raises(TypeError, match="eps"):
        compress.orthogonalize_(np.zeros((3, 2)), eps="1")
    with pytest.raises(ValueError, match="P"):
        compress.orthogonalize_(np.zeros((3, 4))[:, ::2])
    ro = np.zeros((3, 2))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="P"):
        compress.orthogonalize_(ro)


def test_orthogonalize_device_matches_cpu(device):
    rng = np.random.default_rng(2)
    for dtype in TORCH:
        P = torch.from_numpy(rng.standard_normal((5, 200, 4))).to(TORCH[dtype])
        a, b = P.clone(), P.clone().to(device)
        compress.orthogonalize_(a)
        compress.orthogonalize_(b)
        torch.testing.assert_close(a.double(), b.cpu().double(), atol=TOL[dtype] * 10, rtol=0)


@pytest.mark.parametrize("dtype", list(TORCH))
def test_orthogonalize_opcheck(device, dtype):
    P = torch.randn(3, 7, 2, generator=torch.Generator().manual_seed(0)).to(TORCH[dtype]).to(device)
    torch.library.opcheck(torch.ops.commkernels.orthogonalize_.default, (P, 1e-8))


# ---- rank-r compression --------------------------------------------------------------------------------

@pytest.mark.parametrize("framework", ["numpy", "torch"])
@pytest.mark.parametrize("batch", [(), (3,)])
def test_powersgd_matches_reference(framework, batch):
    rng = np.random.default_rng(3)
    n, m, r = 30, 20, 3
    M0 = rng.standard_normal(batch + (n, m))
    Q0, R0 = rng.standard_normal(batch + (m, r)), rng.standard_normal(batch + (n, m)) * 0.1
    conv = (lambda a: torch.from_numpy(a.copy())) if framework == "torch" else (lambda a: a.copy())
    M, Q, R = conv(M0), conv(Q0), conv(R0)
    P, Q_out = compress.powersgd_compress_(M, Q, R)
    assert Q_out is Q
    P_ref, Q_ref, R_ref = ref.powersgd_compress(M0, Q0, R0)
    np.testing.assert_allclose(as_numpy(P), P_ref, atol=1e-10)
    np.testing.assert_allclose(as_numpy(Q), Q_ref, atol=1e-10)
    np.testing.assert_allclose(as_numpy(R), R_ref, atol=1e-10)
    np.testing.assert_array_equal(as_numpy(M), M0)  # M untouched
    approx = compress.powersgd_decompress(P, Q)
    np.testing.assert_allclose(as_numpy(approx), ref.powersgd_decompress(P_ref, Q_ref), atol=1e-10)
    # error feedback: what was sent plus what is kept is exactly M + old residual
    np.testing.assert_allclose(as_numpy(approx) + as_numpy(R), M0 + R0, atol=1e-12)


def test_powersgd_warm_start_converges_to_best_rank_r():
    # Repeated steps on the same matrix with a zero residual each time are subspace (power) iteration:
    # P Q^T tends to the best rank-r approximation (Eckart-Young), given a spectral gap.
    rng = np.random.default_rng(4)
    U, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    V, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    s = np.array([10.0, 8.0, 6.0] + [1.0 / (i + 1) for i in range(27)])
    M = (U[:, :30] * s) @ V.T
    best = (U[:, :3] * s[:3]) @ V[:, :3].T
    Q = rng.standard_normal((30, 3))
    for _ in range(30):
        P, Q = compress.powersgd_compress_(M, Q, np.zeros_like(M))
    np.testing.assert_allclose(compress.powersgd_decompress(P, Q), best, atol=1e-6)


def test_powersgd_allreduce_hook_is_called_on_p_then_q():
    seen = []
    M, Q, R = np.ones((4, 3)), np.ones((3, 2)), np.zeros((4, 3))
    compress.powersgd_compress_(M, Q, R, allreduce=lambda a: seen.append(a.shape))
    assert seen == [(4, 2), (3, 2)]


def test_powersgd_bad_inputs():
    M, Q, R = np.zeros((4, 3)), np.zeros((3, 2)), np.zeros((4, 3))
    with pytest.raises(ValueError, match="Q"):
        compress.powersgd_compress_(M, np.zeros((4, 2)), R)
    with pytest.raises(ValueError, match="residual"):
        compress.powersgd_compress_(M, Q, np.zeros((3, 4)))
    with pytest.raises(TypeError, match="Q"):
        compress.powersgd_compress_(M, Q.astype(np.float32), R)
    with pytest.raises(TypeError, match="residual"):
        compress.powersgd_compress_(M, Q, torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="M"):
        compress.powersgd_compress_(np.zeros(3), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="Q"):
        compress.powersgd_decompress(np.zeros((4, 2)), np.zeros((3, 3)))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_powersgd_compile_fullgraph(backend):
    torch._dynamo.reset()

    def step(M, Q, R):
        P, Q = compress.powersgd_compress_(M, Q, R)
        return compress.powersgd_decompress(P, Q)

    g = torch.Generator().manual_seed(5)
    M, Q0 = torch.randn(2, 12, 9, generator=g), torch.randn(2, 9, 2, generator=g)
    Qe, Qc, Re, Rc = Q0.clone(), Q0.clone(), torch.zeros(2, 12, 9), torch.zeros(2, 12, 9)
    compiled = torch.compile(step, fullgraph=True, backend=backend)
    for _ in range(2):
        torch.testing.assert_close(compiled(M, Qc, Rc), step(M, Qe, Re))
        torch.testing.assert_close(Qc, Qe)
        torch.testing.assert_close(Rc, Re)
