"""Gossip mixing: Y = W^rounds X, push-sum, and the consensus distance.

The n agents' vectors are the rows of X (n, d). W is a dense (n, n) matrix (row = receiver: y_i =
sum_j W[i, j] x_j) or a weighted `Graph` (edge j -> i of weight W[i, j]; the self weights W[i, i] are
self-loop edges; duplicate edges add up). ``transpose=True`` reads W as [sender, receiver] (BlueFog).

The kernel (csrc/graph/mix_cpu.cpp) cuts the columns into tiles, and applies all the rounds to one tile
(all n rows, kept in L1/L2) before the next, so X is read once and Y written once. For a dense W with
rounds > 1 and n <= d, W^rounds is formed first (in float64, n^3 log(rounds) work) and applied once.
Accumulation in float32 (float64 for float64 X); weights are rounded to that type. Each element sums its
terms in ascending order of j (CSR slot order for a graph), so results do not depend on the thread count.
NaN/Inf propagate as in a matrix product.
"""

from __future__ import annotations

import numpy as np

from .. import _backend, _checks, _torch_ops
from ._graph import Graph, _to_host, convert_like

_MAX_SIZE = (1 << 62)


def _acc_dtype(dtype: str) -> str:
    return "float64" if dtype == "float64" else "float32"


def _out(x, n: int, d: int):
    return _backend.empty(x, n * d).reshape(n, d)


def _matrix_power(w, rounds: int):
    """w^rounds in float64, in w's framework and on its device."""
    if _backend.is_torch(w):
        return _torch_ops.torch.linalg.matrix_power(w.to(_torch_ops.torch.float64), rounds)
    if isinstance(w, np.ndarray):
        return np.linalg.matrix_power(w.astype(np.float64), rounds)
    cupy = _backend._cupy()
    return cupy.linalg.matrix_power(w.astype(cupy.float64), rounds)


def _dense_kernel(x, w, rounds: int, y=None):
    """The kernel behind mix for a dense W (any float dtype, any layout; x contiguous (n, d)); writes y
    (a new array when None)."""
    n, d = int(x.shape[0]), int(x.shape[1])
    acc = _acc_dtype(_backend.dtype_name(x))
    if rounds > 1 and n <= d:  # one product with W^rounds: cheaper than `rounds` products
        w, rounds = _matrix_power(w, rounds), 1
    w = convert_like(w, x, acc)
    y = _out(x, n, d) if y is None else y
    if _backend.framework(x, "X") == "jax":
        x = np.asarray(x)
    _backend.module(x).mix_dense(x, w, n, d, rounds, y, _backend.stream(x))
    return y


def _csr_kernel(x, indptr, indices, weight, rounds: int, y=None):
    n, d = int(x.shape[0]), int(x.shape[1])
    y = _out(x, n, d) if y is None else y
    if _backend.framework(x, "X") == "jax":
        x = np.asarray(x)
    _backend.module(x).mix_csr(x, indptr, indices, weight, n, d, rounds, y, _backend.stream(x))
    return y


# ---- torch custom ops -----------------------------------------------------------------------------

def _mix_dense_op_kernel(x, w, rounds):
    return _dense_kernel(x, w, rounds)


def _mix_dense_fake(x, w, rounds):
    return x.new_empty(x.shape)


def _mix_dense_setup(ctx, inputs, output):
    x, w, rounds = inputs
    ctx.rounds = rounds
    ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, w)


def _mix_dense_backward(ctx, grad):
    """dX = (W^T)^r G. dW = sum_{k<r} (W^T)^k G (W^(r-1-k) X)^T, from r single-round products each way
    (torch.matmul for the outer products, in the accumulation dtype)."""
    torch = _torch_ops.torch
    x, w = ctx.saved_tensors
    rounds = ctx.rounds
    grad = grad.contiguous()
    wt = w.t()
    if not ctx.needs_input_grad[1]:
        return _mix_dense_op(grad, wt, rounds) if ctx.needs_input_grad[0] else None, None, None
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    states = [x]
    for _ in range(rounds - 1):
        states.append(_mix_dense_op(states[-1], w, 1))
    g = grad
    gw = torch.zeros(w.shape, dtype=acc, device=w.device)
    for k in range(rounds):
        gw += g.to(acc) @ states[rounds - 1 - k].to(acc).t()
        g = _mix_dense_op(g, wt, 1)
    gx = g if rounds > 0 else grad
    return (gx if ctx.needs_input_grad[0] else None), gw.to(w.dtype), None


_mix_dense_op = _torch_ops.define("mix_dense", "(Tensor x, Tensor w, int rounds) -> Tensor", _mix_dense_op_kernel,
                                  _mix_dense_fake, backward=_mix_dense_backward, setup_context=_mix_dense_setup)


def _mix_csr_op_kernel(x, indptr, indices, weight, t_indptr, t_indices, t_weight, rounds):
    return _csr_kernel(x, indptr, indices, weight, rounds)


def _mix_csr_fake(x, indptr, indices, weight, t_indptr, t_indices, t_weight, rounds):
    return x.new_empty(x.shape)


def _mix_csr_setup(ctx, inputs, output):
    ctx.rounds = inputs[-1]
    ctx.save_for_backward(*inputs[1:7])


def _mix_csr_backward(ctx, grad):
    """dX = (W^T)^r G, W^T being the graph's CSC (no atomics). The edge weights get no gradient here."""
    indptr, indices, weight, t_indptr, t_indices, t_weight = ctx.saved_tensors
    gx = _mix_csr_op(grad.contiguous(), t_indptr, t_indices, t_weight, indptr, indices, weight, ctx.rounds)
    return gx, None, None, None, None, None, None, None


_mix_csr_op = _torch_ops.define(
    "mix_csr",
    "(Tensor x, Tensor indptr, Tensor indices, Tensor weight, Tensor t_indptr, Tensor t_indices, Tensor t_weight, "
    "int rounds) -> Tensor",
    _mix_csr_op_kernel, _mix_csr_fake, backward=_mix_csr_backward, setup_context=_mix_csr_setup)


def _mix_dense_out_kernel(x, w, rounds, out):
    _dense_kernel(x, w, rounds, out)


def _mix_csr_out_kernel(x, indptr, indices, weight, rounds, out):
    _csr_kernel(x, indptr, indices, weight, rounds, out)


_mix_dense_out_op = _torch_ops.define("mix_dense_out", "(Tensor x, Tensor w, int rounds, Tensor(a!) out) -> ()",
                                      _mix_dense_out_kernel, lambda x, w, rounds, out: None, mutates_args=("out",))
_mix_csr_out_op = _torch_ops.define(
    "mix_csr_out", "(Tensor x, Tensor indptr, Tensor indices, Tensor weight, int rounds, Tensor(a!) out) -> ()",
    _mix_csr_out_kernel, lambda x, indptr, indices, weight, rounds, out: None, mutates_args=("out",))


def _data_ptr(a) -> int:
    if _backend.is_torch(a):
        return a.data_ptr()
    if isinstance(a, np.ndarray):
        return a.__array_interface__["data"][0]
    return a.data.ptr if hasattr(a, "data") and hasattr(a.data, "ptr") else id(a)


def _check_out(out, X2, n: int, d: int):
    _checks.float_array(out, "out")
    _checks.writable(out, "out")
    _checks.same_place(X2, out, "X", "out")
    if tuple(out.shape) not in ((n, d), (n,) if d == 1 else (n, d)) or _backend.dtype_name(out) != _backend.dtype_name(X2):
        raise ValueError(f"out: expected X's shape and dtype ({n}, {d}) {_backend.dtype_name(X2)}, got "
                         f"{tuple(out.shape)} {_backend.dtype_name(out)}")
    if _data_ptr(out) == _data_ptr(X2) and n * d:
        raise ValueError("out: expected a buffer other than X (Y = W X reads every row of X)")
    if _backend.is_torch(out):
        torch = _torch_ops.torch
        if torch.is_grad_enabled() and (X2.requires_grad or out.requires_grad):
            raise ValueError("out: not supported when autograd records (X requires grad); call without out")
    return out.reshape(n, d)


# ---- public API -----------------------------------------------------------------------------------

def _as_matrix(x, name: str):
    """x as (n, d) (a 1-D x is (n, 1)); returns (x2, was_1d)."""
    _checks.float_array(x, name)
    if len(x.shape) == 1:
        return x.reshape(-1, 1), True
    if len(x.shape) != 2:
        raise ValueError(f"{name}: expected shape (n, d) or (n,), got {tuple(x.shape)}")
    return x, False


def _graph_arrays(graph: Graph, x, transpose: bool):
    """(indptr, indices, weight, t_indptr, t_indices, t_weight) of W (W^T with transpose) on x's device,
    weights in x's accumulation dtype; cached on the graph."""
    acc = _acc_dtype(_backend.dtype_name(x))
    fw = _backend.framework(x, "X")
    key = f"mix:{fw}:{_backend.device(x)}:{acc}:{transpose}"

    def build():
        g = graph.to(x)
        a = g.csr, g.weight_csr, g.csc, g.weight_csc
        if transpose:
            a = a[2], a[3], a[0], a[1]
        (p, i, _), w, (tp, ti, _), tw = a
        return p, i, convert_like(w, x, acc), tp, ti, convert_like(tw, x, acc)

    return graph._cached(key, build)


def mix(X, W, rounds: int = 1, transpose: bool = False, out=None):
    """Y = W^rounds X: `rounds` gossip steps y_i <- sum_j W[i, j] x_j over the rows of X.

    X: (n, d) or (n,) float32/float64/float16/bfloat16, contiguous. W: a dense (n, n) float matrix in X's
    framework and on its device (any float dtype; rounded to X's accumulation type), or a `Graph` on n
    nodes with edge_weight (self weights as self-loop edges; the graph's arrays are moved to X's device
    once and cached). transpose: W indexed [sender, receiver]. rounds: an int >= 0 (0 copies X).
    Returns Y with X's shape, dtype and framework. out: an array like X (not X itself) to write Y into
    and return, so that a gossip loop reuses one buffer (NumPy, CuPy, torch without autograd).

    torch: differentiable w.r.t. X ((W^T)^rounds G) and, for a dense W, w.r.t. W (sum over the rounds
    of (W^T)^k G (W^(rounds-1-k) X)^T, computed with torch.matmul in the backward); a Graph's edge
    weights get no gradient (use spmm for that).
    """
    X2, flat = _as_matrix(X, "X")
    n, d = int(X2.shape[0]), int(X2.shape[1])
    _checks.integer(n * d, "X.size", 0, _MAX_SIZE)
    rounds = _checks.integer(rounds, "rounds", 0, 1 << 20)
    y = None
    if out is not None:
        if _backend.framework(X, "X") == "jax":
            raise TypeError("out: JAX arrays are immutable; call without out")
        y = _check_out(out, X2, n, d)
    if isinstance(W, Graph):
        if W.num_nodes != n:
            raise ValueError(f"W: expected a graph on n = {n} nodes (X.shape[0]), got {W.num_nodes}")
        if W.edge_weight is None:
            raise ValueError("W: expected a Graph with edge_weight (e.g. metropolis_hastings(graph))")
        _backend.module(X2)
        arrays = _graph_arrays(W, X2, transpose)
        if y is not None:
            (_mix_csr_out_op if _backend.is_torch(X2) else _csr_kernel)(X2, *arrays[:3], rounds, y)
            return out
        if _backend.is_torch(X2):
            Y = _mix_csr_op(X2, *arrays, rounds)
        else:
            Y = _backend.finish(X, _csr_kernel(X2, *arrays[:3], rounds))
    else:
        _checks.float_array(W, "W")
        if _backend.framework(W, "W") != "jax" or _backend.framework(X, "X") != "jax":
            _checks.same_place(X2, W, "X", "W")
        if len(W.shape) != 2 or tuple(W.shape) != (n, n):
            raise ValueError(f"W: expected shape ({n}, {n}) (n = X.shape[0]), got {tuple(W.shape)}")
        if _backend.framework(W, "W") == "jax":
            W = np.asarray(W)
        Wt = W.T if transpose else W
        if y is not None:
            if _backend.is_torch(W) and W.requires_grad and _torch_ops.torch.is_grad_enabled():
                raise ValueError("out: not supported when autograd records (W requires grad); call without out")
            (_mix_dense_out_op if _backend.is_torch(X2) else _dense_kernel)(X2, Wt, rounds, y)
            return out
        if _backend.is_torch(X2):
            Y = _mix_dense_op(X2, Wt, rounds)
        else:
            Y = _backend.finish(X, _dense_kernel(X2, Wt, rounds))
    return Y.reshape(-1) if flat else Y


def push_sum(X, w, P, rounds: int = 1, transpose: bool = False):
    """Push-sum (Kempe et al. 2003; Stochastic Gradient Push): (P^rounds X, P^rounds w) for a column-
    stochastic P (dense or a weighted Graph, e.g. push_sum_weights(graph)); the agents' estimates are
    X / w[:, None]. w: (n,) float weights in X's framework (ones at the start). Same rules as mix."""
    X2, _ = _as_matrix(X, "X")
    _checks.float_array(w, "w")
    if len(w.shape) != 1 or int(w.shape[0]) != int(X2.shape[0]):
        raise ValueError(f"w: expected shape ({int(X2.shape[0])},) (one weight per row of X), got {tuple(w.shape)}")
    return mix(X, P, rounds, transpose), mix(w, P, rounds, transpose)


def consensus_distance(X) -> float:
    """mean_i ||x_i - mean(X)||^2 over the rows of X (n, d), as a Python float (0 for empty X).

    One pass over X (per tile of columns: the column means, then the squared deviations while the tile is
    in cache), accumulated in float64 in a fixed order: the same value whatever the thread count."""
    X2, _ = _as_matrix(X, "X")
    n, d = int(X2.shape[0]), int(X2.shape[1])
    x = np.asarray(X2) if _backend.framework(X2, "X") == "jax" else X2
    if _backend.is_torch(x):
        x = x.detach()
    out = _backend.empty(x, 1, "float64")
    _backend.module(x).consensus_distance(x, n, d, out, _backend.stream(x))
    return float(_to_host(out)[0])


def spectral_gap(W, transpose: bool = False) -> float:
    """1 - |lambda_2|: for a symmetric W, lambda_2 is the eigenvalue of second-largest magnitude; for
    any other W, 1 - ||W - 11^T/n||_2 (the spectral norm; the same number for a symmetric doubly-
    stochastic W). Computed in float64 with NumPy. W: dense (n, n) or a weighted Graph."""
    M = W.to_dense() if isinstance(W, Graph) else _to_host(W).astype(np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"W: expected a square (n, n) matrix, got shape {M.shape}")
    if transpose:
        M = M.T
    n = M.shape[0]
    if n <= 1:
        return 1.0
    if np.array_equal(M, M.T):
        mags = np.sort(np.abs(np.linalg.eigvalsh(M)))[::-1]
        return float(1.0 - mags[1])
    return float(1.0 - np.linalg.norm(M - np.full((n, n), 1.0 / n), 2))


__all__ = ["mix", "push_sum", "consensus_distance", "spectral_gap"]
