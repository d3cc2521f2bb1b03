"""PowerSGD building blocks (Vogels, Karimireddy, Jaggi 2019; torch.distributed's powerSGD_hook is the
anchor): the batched Gram-Schmidt kernel and rank-r compression with error feedback and warm start.

The Gram-Schmidt is a compiled kernel (csrc/linalg/orthogonalize.h: OpenMP over the batch on the CPU, one
block per matrix on CUDA); the matrix products are the framework's own (``torch.matmul``, NumPy's ``@``,
CuPy's ``@``), which are already as fast as anything this package could add.
"""

from __future__ import annotations

import numbers

from .. import _backend, _checks, _torch_ops


def _orthogonalize_kernel(P, eps: float) -> None:
    n, r = P.shape[-2], P.shape[-1]
    batch = _backend.numel(P) // (n * r) if n * r else 0
    _backend.module(P).orthogonalize(P, batch, n, r, eps, _backend.stream(P))


def _orthogonalize_fake(P, eps):
    return None


_orthogonalize_op = _torch_ops.define("orthogonalize_", "(Tensor(a!) P, float eps) -> ()",
                                      _orthogonalize_kernel, _orthogonalize_fake, mutates_args=("P",))


def _eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps: expected a float, got {type(eps).__name__}")
    eps = float(eps)
    if not (eps >= 0 and eps != float("inf")):
        raise ValueError(f"eps: expected a finite eps >= 0, got {eps}")
    return eps


def orthogonalize_(P, eps: float = 1e-8):
    """Orthonormalises the columns of every matrix of P (shape (..., n, r)) in place; returns P.

    Modified Gram-Schmidt, column by column, as PyTorch's PowerSGD hook: each column is projected off the
    earlier ones and normalised. Rank-deficient input is safe: a column whose norm, after the
    projections, is below max(eps, rtol * its norm as given) is set to zero (rtol = 16 sqrt(n) machine
    epsilons of the accumulation type), so the result has orthonormal columns and zero columns, never NaN
    (NaN or inf in P propagate). Arithmetic in float32 (float64 for float64); a 16-bit P is rounded back
    once at the end. Deterministic; CPU and CUDA agree to rounding (different summation orders).

    P: a contiguous float32, float64, float16 or bfloat16 array with at least 2 dimensions; NumPy, torch
    or CuPy (updated in place, so not JAX). eps: finite, >= 0.
    """
    _checks.float_array(P, "P")
    _checks.writable(P, "P")
    if len(P.shape) < 2:
        raise ValueError(f"P: expected at least 2 dimensions (..., n, r), got shape {tuple(P.shape)}")
    eps = _eps(eps)
    if _backend.is_torch(P):
        _orthogonalize_op(P, eps)
    else:
        _orthogonalize_kernel(P, eps)
    return P


def _transpose(a):
    return a.transpose(-1, -2) if _backend.is_torch(a) else a.swapaxes(-1, -2)


def _copy_into(dst, src) -> None:
    if _backend.is_torch(dst):
        dst.copy_(src)
    else:
        dst[...] = src


def powersgd_compress_(M, Q, residual, eps: float = 1e-8, allreduce=None):
    """One rank-r PowerSGD step with error feedback and warm start; returns (P, Q).

    A = M + residual (error feedback, written into ``residual``); P = A Q; P is orthogonalised
    (``orthogonalize_``); the new Q = A^T P is written into ``Q`` (the warm start for the next step);
    ``residual`` <- A - P Q^T, what this step failed to send. ``powersgd_decompress(P, Q)`` = P Q^T is the
    rank-r approximation of A. Updates ``Q`` and ``residual`` in place; ``M`` is not modified.

    allreduce (optional): for data-parallel use, a function that averages an array over the workers in
    place (e.g. ``lambda t: dist.all_reduce(t.div_(world))``). It is applied to P before the
    orthogonalisation and to the new Q before the residual is formed, as in PyTorch's powerSGD_hook, so
    every worker ends with the same P and Q (the residual stays local).

    M, residual: (..., n, m), same dtype (float32, float64, float16, bfloat16), framework and device;
    Q: (..., m, r), same dtype, contiguous. Products in the framework (torch.matmul accumulates 16-bit
    inputs in float32).
    """
    for a, name in ((M, "M"), (Q, "Q"), (residual, "residual")):
        _checks.float_array(a, name)
    _checks.same_place(M, Q, "M", "Q")
    _checks.same_place(M, residual, "M", "residual")
    _checks.writable(Q, "Q")
    _checks.writable(residual, "residual")
    dt = _backend.dtype_name(M)
    for a, name in ((Q, "Q"), (residual, "residual")):
        if _backend.dtype_name(a) != dt:
            raise TypeError(f"{name}: expected dtype {dt} like M, got {_backend.dtype_name(a)}")
    m_shape, q_shape = tuple(M.shape), tuple(Q.shape)
    if len(m_shape) < 2:
        raise ValueError(f"M: expected at least 2 dimensions (..., n, m), got shape {m_shape}")
    if tuple(residual.shape) != m_shape:
        raise ValueError(f"residual: expected shape {m_shape} like M, got {tuple(residual.shape)}")
    if len(q_shape) != len(m_shape) or q_shape[:-2] != m_shape[:-2] or q_shape[-2] != m_shape[-1]:
        raise ValueError(f"Q: expected shape {m_shape[:-2] + (m_shape[-1], 'r')} for M of shape {m_shape}, "
                         f"got {q_shape}")
    eps = _eps(eps)
    if _backend.is_torch(residual):
        residual.add_(M)
    else:
        residual += M
    A = residual
    P = A @ Q
    if not _backend.is_torch(P) and not P.flags.c_contiguous:
        P = P.copy()
    if allreduce is not None:
        allreduce(P)
    orthogonalize_(P, eps)
    _copy_into(Q, _transpose(A) @ P)
    if allreduce is not None:
        allreduce(Q)
    if _backend.is_torch(residual):
        residual.sub_(P @ _transpose(Q))
    else:
        residual -= P @ _transpose(Q)
    return P, Q


def powersgd_decompress(P, Q, out=None):
    """P Q^T (shape (..., n, m)): the rank-r matrix that a PowerSGD message (P, Q) encodes.

    out (optional): an array of that shape, same dtype, framework and device, written and returned.
    """
    _checks.float_array(P, "P")
    _checks.float_array(Q, "Q")
    _checks.same_place(P, Q, "P", "Q")
    if _backend.dtype_name(Q) != _backend.dtype_name(P):
        raise TypeError(f"Q: expected dtype {_backend.dtype_name(P)} like P, got {_backend.dtype_name(Q)}")
    p_shape, q_shape = tuple(P.shape), tuple(Q.shape)
    if len(p_shape) < 2 or len(q_shape) != len(p_shape) or p_shape[:-2] != q_shape[:-2] or p_shape[-1] != q_shape[-1]:
        raise ValueError(f"Q: expected shape (..., m, r) matching P's {p_shape}, got {q_shape}")
    result = P @ _transpose(Q)
    if out is None:
        return result
    _checks.same_place(P, out, "P", "out")
    _checks.writable(out, "out")
    if tuple(out.shape) != tuple(result.shape):
        raise ValueError(f"out: expected shape {tuple(result.shape)}, got {tuple(out.shape)}")
    if _backend.dtype_name(out) != _backend.dtype_name(P):
        raise TypeError(f"out: expected dtype {_backend.dtype_name(P)}, got {_backend.dtype_name(out)}")
    _copy_into(out, result)
    return out
