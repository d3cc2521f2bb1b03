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
