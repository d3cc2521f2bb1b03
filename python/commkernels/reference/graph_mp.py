"""NumPy float64 references for commkernels.graph's message-passing kernels (scatter, segment, gather,
spmm, sddmm, edge_softmax, graph_attention).

Written from torch_scatter's and DGL's definitions, one destination row at a time, with no attention to
speed. A graph is given here as plain arrays: src (E,) and dst (E,) node ids of each edge and the number of
nodes n; "in-edges of i" are the edges with dst == i, in increasing edge order.
"""

from __future__ import annotations

import numpy as np

REDUCES = ("sum", "mean", "max", "min", "mul")


def _rows(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], int(np.prod(a.shape[1:], dtype=np.int64)))


def _reduce_rows(values: np.ndarray, ids: np.ndarray, reduce: str, empty_arg: int, f: int):
    """Reduces values (k, f) whose source ids are ids (k,); returns (row (f,), arg (f,))."""
    arg = np.full(f, empty_arg, dtype=np.int64)
    if values.shape[0] == 0:
        return np.full(f, 1.0 if reduce == "mul" else 0.0), arg
    if reduce == "sum":
        return values.sum(axis=0), arg
    if reduce == "mean":
        return values.mean(axis=0), arg
    if reduce == "mul":
        return values.prod(axis=0), arg
    row = np.empty(f)
    for c in range(f):
        column = values[:, c]
        nan = np.flatnonzero(np.isnan(column))
        if nan.size:  # NaN wins: the first one
            pos = nan[0]
        else:  # the first (lowest id) of the extreme values
            pos = int(np.argmax(column)) if reduce == "max" else int(np.argmin(column))
        row[c], arg[c] = column[pos], ids[pos]
    return row, arg


def scatter(src, index, dim_size: int, reduce: str = "sum"):
    """out[i] = reduce over {j : index[j] == i} of src[j] (torch_scatter.scatter, dim 0); empty rows 0 (mul: 1).
    Returns (out, arg); arg (int64) is the source row of each max / min (E for an empty row), else None."""
    src = np.asarray(src, dtype=np.float64)
    index = np.asarray(index, dtype=np.int64)
    e = src.shape[0]
    s2 = _rows(src)
    f = s2.shape[1]
    out, arg = np.empty((dim_size, f)), np.empty((dim_size, f), dtype=np.int64)
    for i in range(dim_size):
        ids = np.flatnonzero(index == i)
        out[i], arg[i] = _reduce_rows(s2[ids], ids, reduce, e, f)
    shape = (dim_size, *src.shape[1:])
    return out.reshape(shape), (arg.reshape(shape) if reduce in ("max", "min") else None)


def segment(src, indptr, reduce: str = "sum"):
    """out[i] = reduce of src[indptr[i] : indptr[i + 1]] (torch_scatter.segment_csr); arg as in scatter."""
    src = np.asarray(src, dtype=np.float64)
    indptr = np.asarray(indptr, dtype=np.int64)
    e = src.shape[0]
    s2 = _rows(src)
    f = s2.shape[1]
    rows = indptr.shape[0] - 1
    out, arg = np.empty((rows, f)), np.empty((rows, f), dtype=np.int64)
    for i in range(rows):
        ids = np.arange(indptr[i], indptr[i + 1])
        out[i], arg[i] = _reduce_rows(s2[ids], ids, reduce, e, f)
    shape = (rows, *src.shape[1:])
    return out.reshape(shape), (arg.reshape(shape) if reduce in ("max", "min") else None)


def gather(x, index):
    return np.asarray(x, dtype=np.float64)[np.asarray(index, dtype=np.int64)]


def _edge_heads(values, e: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v.reshape(e, v.shape[1] if v.ndim == 2 else 1)


def spmm(src, dst, n: int, x, edge_weight=None, reduce: str = "sum"):
    """out[i] = reduce over edges e with dst[e] == i (ascending e) of w_e * x[src[e]]; x (n, ...) or, with
    (E, H) weights, (n, H, ...). Returns (out, arg); arg (edge ids, E for an empty row) for max / min."""
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    x = np.asarray(x, dtype=np.float64)
    e = src.shape[0]
    w = np.ones((e, 1)) if edge_weight is None else _edge_heads(edge_weight, e)
    heads = w.shape[1]
    x3 = x.reshape(n, heads, int(np.prod(x.shape[1:], dtype=np.int64)) // heads)
    f = x3.shape[2]
    out = np.empty((n, heads, f))
    arg = np.empty((n, heads, f), dtype=np.int64)
    for i in range(n):
        ids = np.flatnonzero(dst == i)
        for h in range(heads):
            msgs = w[ids, h][:, None] * x3[src[ids], h]
            out[i, h], arg[i, h] = _reduce_rows(msgs, ids, reduce, e, f)
    return out.reshape(x.shape), (arg.reshape(x.shape) if reduce in ("max", "min") else None)


def sddmm(src, dst, a, b):
    """out[e] = a[dst[e]] . b[src[e]] ((n, D) -> (E,); (n, H, D) -> (E, H))."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a[np.asarray(dst, np.int64)] * b[np.asarray(src, np.int64)]).sum(axis=-1)


def edge_softmax(dst, n: int, scores):
    """Per destination node, the softmax of its in-edges' scores ((E,) or (E, H)); -inf scores and nodes
    whose scores are all -inf give 0."""
    dst = np.asarray(dst, np.int64)
    s = np.asarray(scores, np.float64)
    s2 = s.reshape(s.shape[0], s.shape[1] if s.ndim == 2 else 1)
    out = np.zeros_like(s2)
    for i in range(n):
        ids = np.flatnonzero(dst == i)
        for h in range(s2.shape[1]):
            v = s2[ids, h]
            finite = v != -np.inf
            if not finite.any():
                continue
            m = v[finite].max()
            p = np.where(finite, np.exp(v - m), 0.0)
            out[ids, h] = p / p.sum()
    return out.reshape(s.shape)


def graph_attention(src, dst, n: int, q, k, v, edge_bias=None, scale=None):
    """out[i, h] = sum over in-edges e of i of softmax_e(scale q[i, h] . k[src e, h] + bias[e, h]) v[src e, h]
    (q, k (n, H, D), v (n, H, Dv); bias (E,) or (E, H); scale 1 / sqrt(D) by default). Returns (out, lse)
    with lse[i, h] the log-sum-exp of the logits (-inf, out 0, for a node with none)."""
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    e, heads, d = src.shape[0], q.shape[1], q.shape[2]
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    logits = scale * (q[dst] * k[src]).sum(axis=-1)  # (E, H)
    if edge_bias is not None:
        b = _edge_heads(edge_bias, e)
        logits = logits + b
    alpha = edge_softmax(dst, n, logits)
    out = np.zeros((n, heads, v.shape[2]))
    lse = np.full((n, heads), -np.inf)
    for i in range(n):
        ids = np.flatnonzero(dst == i)
        for h in range(heads):
            out[i, h] = (alpha[ids, h][:, None] * v[src[ids], h]).sum(axis=0)
            finite = logits[ids, h][logits[ids, h] != -np.inf]
            if finite.size:
                m = finite.max()
                lse[i, h] = m + np.log(np.exp(finite - m).sum())
    return out, lse
