"""Reference (NumPy, float64) of EF21 top-k, server-side recompression and the PowerSGD helpers.

Written from the definitions in ``shared/specs/compress.md`` and the papers: EF21 (Richtarik, Sokolov,
Fatkhullin 2021), MASHA (Beznosikov, Richtarik, Diskin, Ryabinin, Gasnikov; arXiv 2110.03313), PowerSGD
(Vogels, Karimireddy, Jaggi 2019). Rounding steps that the kernels define (to the state's dtype, to
float32 accumulation) are reproduced where a result depends on them; everything else is float64.
"""

from __future__ import annotations

import numpy as np

from .compress import _flat_float, _round_to, ef_topk, topk

__all__ = ["ef21_topk", "orthogonalize", "powersgd_compress", "powersgd_decompress", "server_step"]


def ef21_topk(grad, state, k: int, state_dtype: str | None = None):
    """(values, indices, new_state) of EF21 top-k. Modifies nothing.

    d = grad - state in float32 (float64 when the state is float64), rounded to the state's dtype;
    (values, indices) = topk(d, k); new_state = state with new_state[i] = round(state[i] + d[i]) at the
    sent indices (added in the same accumulation type). state_dtype: "bfloat16" when state holds bfloat16
    values as float32; default: state's own dtype.
    """
    g, s = _flat_float(grad, "grad"), _flat_float(state, "state")
    if g.size != s.size:
        raise ValueError(f"state: expected {g.size} elements like grad, got {s.size}")
    store = state_dtype or s.dtype.name
    acc = np.float64 if store == "float64" else np.float32
    with np.errstate(over="ignore", invalid="ignore"):
        d = _round_to(g.astype(acc) - s.astype(acc), store)
    values, indices = topk(d, k)
    new_state = s.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        new_state[indices] = _round_to(s[indices].astype(acc) + values.astype(acc), store)
    return values, indices, new_state


def machine_epsilon(dtype: str) -> float:
    """Machine epsilon of the accumulation type of `dtype` (float64 for float64, float32 otherwise)."""
    return float(np.finfo(np.float64 if dtype == "float64" else np.float32).eps)


def orthogonalize(P, eps: float = 1e-8, dtype: str | None = None) -> np.ndarray:
    """Modified Gram-Schmidt on the columns of every matrix of P (..., n, r), in float64; returns a copy.

    Column by column: p_i is projected off every earlier (already orthonormal or zero) column, then set
    to zero when its norm is below max(eps, rtol * ||p_i as given||), rtol = 16 sqrt(n) * machine epsilon
    of the kernel's accumulation type for `dtype` (P's dtype by default), and normalised otherwise.
    """
    P = np.asarray(P)
    if P.ndim < 2:
        raise ValueError("P: expected at least 2 dimensions (..., n, r)")
    n, r = P.shape[-2:]
    rtol = 16.0 * np.sqrt(n) * machine_epsilon(dtype or P.dtype.name)
    out = P.astype(np.float64).reshape(-1, n, r).copy()
    for m in out:
        original = np.linalg.norm(m, axis=0)
        for i in range(r):
            for j in range(i):
                m[:, i] -= (m[:, j] @ m[:, i]) * m[:, j]
            norm = np.linalg.norm(m[:, i])
            m[:, i] = 0.0 if norm < max(eps, rtol * original[i]) else m[:, i] / norm
    return out.reshape(P.shape)


def powersgd_compress(M, Q, residual, eps: float = 1e-8):
    """(P, new_Q, new_residual) of one rank-r PowerSGD step with error feedback and warm start.

    A = M + residual; P = orthogonalize(A Q); new_Q = A^T P; new_residual = A - P new_Q^T. M, residual:
    (..., n, m); Q: (..., m, r). Modifies nothing.
    """
    A = np.asarray(M, np.float64) + np.asarray(residual, np.float64)
    P = orthogonalize(A @ np.asarray(Q, np.float64), eps, np.asarray(M).dtype.name)
    new_Q = np.swapaxes(A, -1, -2) @ P
    return P, new_Q, A - P @ np.swapaxes(new_Q, -1, -2)


def powersgd_decompress(P, Q) -> np.ndarray:
    """P Q^T: the rank-r approximation that (P, Q) encode."""
    return np.asarray(P, np.float64) @ np.swapaxes(np.asarray(Q, np.float64), -1, -2)


def server_step(msgs, size: int, residual, k: int, average: bool = True):
    """(values, indices, new_residual) of server-side recompression. Modifies nothing.

    msgs: (values, indices) pairs. g = the sum (or mean) of their dense decompressions, in float32
    (float64 when the residual is float64), summed in message order; then EF14 top-k of g with the
    server's residual: p = residual + g, message topk(p, k), new residual p with the sent entries zeroed.
    """
    residual = _flat_float(residual, "residual")
    acc = np.float64 if residual.dtype == np.float64 else np.float32
    g = np.zeros(size, acc)
    for values, indices in msgs:
        g[np.asarray(indices, np.int64)] += np.asarray(values).astype(acc)
    if average and len(msgs):
        g = (g / acc(len(msgs))).astype(acc)
    return ef_topk(g, residual, k)
