"""The `Graph`: a directed edge list with cached compressed views.

Convention: row = receiver. An edge e goes from ``src[e]`` (the sender, row 0 of edge_index) to
``dst[e]`` (the receiver, row 1), and a mixing matrix W has W[dst, src]: y_i = sum_j W[i, j] x_j.
BlueFog and some papers index the matrix [sender, receiver]; pass ``transpose=True`` to the constructors
(edge_index rows then read [dst, src], a dense matrix W[sender, receiver]).

Attributes (the names other modules build on; every array is in the framework and on the device of the
arrays the graph was built from; a graph built from JAX arrays keeps NumPy arrays):

    num_nodes     int
    num_edges     int (E)
    index_dtype   "int32" or "int64": the dtype of src, dst, csr.indices and csc.indices
    src, dst      (E,) index arrays in edge order (edge id e = position e)
    edge_index    (2, E): src stacked over dst (built on first use)
    edge_weight   None or an (E,) float array in edge order (float32, float64, float16 or bfloat16)
    csr           CSR by destination (built on first use, then cached):
                    csr.indptr  (num_nodes + 1,) int64; the in-edges of node i are slots indptr[i]:indptr[i+1]
                    csr.indices (E,) index_dtype: the source of each slot (the slots of one destination in
                                ascending edge id: a stable sort of the edges by dst)
                    csr.eid     (E,) int64: the edge id of each slot (src[csr.eid] == csr.indices)
    csc           CSC by source, the same with the roles swapped: csc.indptr over sources,
                    csc.indices = the destination of each slot, csc.eid = its edge id (stable by src)
    in_degree     (num_nodes,) int64: in-edges per node (= diff(csr.indptr)), cached
    out_degree    (num_nodes,) int64: out-edges per node (= diff(csc.indptr)), cached
    weight_csr    edge_weight permuted into CSR slot order (edge_weight[csr.eid]), cached; None without weights
    weight_csc    edge_weight[csc.eid], cached; None without weights

Duplicate edges and self loops are kept as given (a self loop is an ordinary edge: mix reads the self
weights of W from them). The CSR and CSC are built by a deterministic stable counting sort
(csrc/graph/csr_cpu.cpp, CUB's stable radix sort on CUDA): the same arrays on every run, thread count
and device.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

import numpy as np

from .. import _backend, _checks

_MAX_SIZE = (1 << 63) - 1


class CSR(NamedTuple):
    """A compressed view: ``indptr`` (num_nodes + 1,) int64, ``indices`` (E,) the neighbour of each slot,
    ``eid`` (E,) int64 the original edge id of each slot."""

    indptr: Any
    indices: Any
    eid: Any


# ---- small framework-generic helpers (NumPy, torch, CuPy; JAX inputs are stored as NumPy) -------------

def _xp(a):
    """The array namespace of a: numpy, torch or cupy."""
    if _backend.is_torch(a):
        return _backend._torch()
    if isinstance(a, np.ndarray):
        return np
    return _backend._cupy()


def _diff(a):
    return a[1:] - a[:-1]


def _arange(like, n: int, dtype: str):
    if _backend.is_torch(like):
        torch = _backend._torch()
        return torch.arange(n, dtype=getattr(torch, dtype), device=like.device)
    xp = _xp(like)
    if xp is np:
        return np.arange(n, dtype=dtype)
    with like.device:
        return xp.arange(n, dtype=dtype)


def _astype(a, dtype: str):
    if _backend.is_torch(a):
        return a.to(getattr(_backend._torch(), dtype))
    return a.astype(dtype)


def _to_host(a) -> np.ndarray:
    """A NumPy copy/view of a (torch tensors are detached; CuPy arrays copied back)."""
    if _backend.is_torch(a):
        a = a.detach().cpu()
        if a.dtype == _backend._torch().bfloat16:
            a = a.float()
        return a.numpy()
    if isinstance(a, np.ndarray):
        return a
    return a.get()


def convert_like(a, like, dtype: str | None = None):
    """a (any supported framework) as an array of like's framework and device, with dtype if given.
    NumPy -> torch CPU is zero-copy when the dtype matches."""
    if a is None:
        return None
    fw_a = "numpy" if isinstance(a, np.ndarray) else _backend.framework(a, "array")
    fw = _backend.framework(like, "like")
    dtype = dtype or _backend.dtype_name(a)
    if fw in ("numpy", "jax"):
        out = _to_host(a) if fw_a != "numpy" else a
        if out.dtype.name != dtype:
            if dtype == "bfloat16":
                raise TypeError("bfloat16 arrays are not supported for NumPy/JAX callers")
            out = out.astype(dtype)
        return np.ascontiguousarray(out)
    if fw == "torch":
        torch = _backend._torch()
        if fw_a == "torch":
            t = a
        elif fw_a == "numpy":
            t = torch.from_numpy(np.ascontiguousarray(a))
        else:
            t = torch.from_dlpack(a)
        return t.to(device=like.device, dtype=getattr(torch, dtype)).contiguous()
    cupy = _backend._cupy()
    with like.device:
        if fw_a == "cupy":
            out = a
        elif fw_a == "torch":
            out = cupy.from_dlpack(a.detach().contiguous()) if a.device.type == "cuda" else cupy.asarray(_to_host(a))
        else:
            out = cupy.asarray(a)
        return cupy.ascontiguousarray(out.astype(dtype, copy=False))


def _index_array(a, name: str):
    fw = _backend.framework(a, name)
    if fw == "jax":
        a = np.asarray(a)
    dtype = _backend.dtype_name(a)
    if dtype not in _backend.INDEX_DTYPES:
        raise TypeError(f"{name}: expected int32 or int64 indices, got {dtype}")
    return a


def _contiguous(a):
    if _backend.is_torch(a):
        return a.contiguous()
    xp = _xp(a)
    return xp.ascontiguousarray(a)


def _check_range(a, n: int, name: str) -> None:
    """ValueError naming `name` when an entry of a lies outside [0, n). Reads a back (one pass)."""
    if _backend.numel(a) == 0:
        return
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name}: expected node indices in [0, {n}) (num_nodes = {n}), found {bad}")


def _check_weight(w, like, num_edges: int, name: str = "edge_weight"):
    if w is None:
        return None
    fw = _checks.float_array(w, name)
    if fw == "jax":
        w = np.asarray(w)
    if len(w.shape) != 1 or w.shape[0] != num_edges:
        raise ValueError(f"{name}: expected shape ({num_edges},) (one weight per edge), got {tuple(w.shape)}")
    if fw != "jax" and _backend.framework(like, "edge_index") != "jax":
        _checks.same_place(like, w, "edge_index", name)
    return w


class Graph:
    """A directed graph over ``num_nodes`` nodes; see the module docstring for the attributes.

    Graph(edge_index, num_nodes, edge_weight=None, transpose=False):
        edge_index: (2, E) int32 or int64 (NumPy, torch, CuPy or JAX), row 0 the senders (src), row 1 the
        receivers (dst); with transpose=True row 0 the receivers and row 1 the senders.
        edge_weight: None or (E,) float weights in edge order (same framework and device).
    Graph.from_csr(indptr, indices, num_nodes, edge_weight=None): a CSR by destination (indices = the
        source of each slot); edge e is slot e.
    Graph.from_dense(W, transpose=False): an edge for every nonzero W[i, j] (from j to i, weight W[i, j]),
        in row-major order; with transpose=True W is indexed [sender, receiver].
    """

    def __init__(self, edge_index, num_nodes: int, edge_weight=None, transpose: bool = False):
        edge_index = _index_array(edge_index, "edge_index")
        num_nodes = _checks.integer(num_nodes, "num_nodes", 0, _MAX_SIZE)
        if len(edge_index.shape) != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index: expected shape (2, E), got {tuple(edge_index.shape)}")
        src, dst = (edge_index[1], edge_index[0]) if transpose else (edge_index[0], edge_index[1])
        self._init(_contiguous(src), _contiguous(dst), num_nodes, edge_weight)
        _check_range(self.src, num_nodes, "edge_index[1]" if transpose else "edge_index[0]")
        _check_range(self.dst, num_nodes, "edge_index[0]" if transpose else "edge_index[1]")

    def _init(self, src, dst, num_nodes, edge_weight):
        self.num_nodes = num_nodes
        self.num_edges = int(src.shape[0])
        self.src, self.dst = src, dst
        self.index_dtype = _backend.dtype_name(src)
        self.edge_weight = _check_weight(edge_weight, src, self.num_edges)
        self._cache: dict[str, Any] = {}
        self._lock = threading.RLock()  # builders of one view read others

    # ---- constructors -------------------------------------------------------------------------------

    @classmethod
    def _from_parts(cls, src, dst, num_nodes: int, edge_weight=None, cache=None) -> "Graph":
        g = cls.__new__(cls)
        g._init(src, dst, num_nodes, edge_weight)
        if cache:
            g._cache.update(cache)
        return g

    @classmethod
    def from_csr(cls, indptr, indices, num_nodes: int, edge_weight=None) -> "Graph":
        """A graph from its CSR by destination: the in-edges of node i have sources
        indices[indptr[i]:indptr[i+1]]; edge e is slot e (so csr.eid = arange(E))."""
        indptr = _index_array(indptr, "indptr")
        indices = _index_array(indices, "indices")
        num_nodes = _checks.integer(num_nodes, "num_nodes", 0, _MAX_SIZE)
        if _backend.framework(indptr, "indptr") != _backend.framework(indices, "indices") or \
                _backend.device(indptr) != _backend.device(indices):
            raise TypeError("indices: expected the framework and device of indptr")
        if len(indptr.shape) != 1 or indptr.shape[0] != num_nodes + 1:
            raise ValueError(f"indptr: expected shape ({num_nodes + 1},) (num_nodes + 1), got {tuple(indptr.shape)}")
        if len(indices.shape) != 1:
            raise ValueError(f"indices: expected a 1-D array, got shape {tuple(indices.shape)}")
        e = int(indices.shape[0])
        indptr64 = _contiguous(_astype(indptr, "int64"))
        if int(indptr64[0]) != 0 or int(indptr64[-1]) != e or (num_nodes and int(_diff(indptr64).min()) < 0):
            raise ValueError(f"indptr: expected non-decreasing offsets from 0 to len(indices) = {e}")
        indices = _contiguous(indices)
        _check_range(indices, num_nodes, "indices")
        eid = _arange(indices, e, "int64")
        dst = _astype(_node_of_slot(indptr64, num_nodes, e), _backend.dtype_name(indices))
        return cls._from_parts(indices, dst, num_nodes, edge_weight, {"csr": CSR(indptr64, indices, eid)})

    @classmethod
    def from_dense(cls, W, transpose: bool = False) -> "Graph":
        """The weighted graph of a dense (n, n) matrix: an edge j -> i of weight W[i, j] for every nonzero
        (W[j, i] with transpose=True), edges in row-major order of the (receiver, sender) matrix.
        The graph's arrays are int64 indices and W's dtype, in W's framework (torch on W's device)."""
        fw = _checks.float_array(W, "W")
        if fw == "jax":
            W = np.asarray(W)
        if len(W.shape) != 2 or W.shape[0] != W.shape[1]:
            raise ValueError(f"W: expected a square (n, n) matrix, got shape {tuple(W.shape)}")
        n = int(W.shape[0])
        M = W.T if transpose else W
        if _backend.is_torch(M):
            dst, src = M.nonzero(as_tuple=True)
            weight = M[dst, src].contiguous()
        else:
            xp = _xp(M)
            dst, src = xp.nonzero(M)
            weight = xp.ascontiguousarray(M[dst, src])
        src, dst = _contiguous(_astype(src, "int64")), _contiguous(_astype(dst, "int64"))
        return cls._from_parts(src, dst, n, weight)

    # ---- cached views -------------------------------------------------------------------------------

    def _cached(self, key: str, build):
        value = self._cache.get(key)
        if value is None:
            with self._lock:
                value = self._cache.get(key)
                if value is None:
                    value = build()
                    self._cache[key] = value
        return value

    def _sort_by(self, keys, values, keys_name: str, values_name: str) -> CSR:
        n, e = self.num_nodes, self.num_edges
        indptr = _backend.empty(keys, n + 1, "int64")
        sorted_values = _backend.empty(keys, e, self.index_dtype)
        eid = _backend.empty(keys, e, "int64")
        _backend.module(keys).csr_build(keys, values, n, indptr, sorted_values, eid, keys_name, values_name,
                                        _backend.stream(keys))
        return CSR(indptr, sorted_values, eid)

    @property
    def csr(self) -> CSR:
        """CSR by destination: slots of node i = its in-edges in ascending edge id."""
        return self._cached("csr", lambda: self._sort_by(self.dst, self.src, "dst", "src"))

    @property
    def csc(self) -> CSR:
        """CSC by source: slots of node j = its out-edges in ascending edge id; indices = destinations."""
        return self._cached("csc", lambda: self._sort_by(self.src, self.dst, "src", "dst"))

    @property
    def in_degree(self):
        return self._cached("in_degree", lambda: _diff(self.csr.indptr))

    @property
    def out_degree(self):
        return self._cached("out_degree", lambda: _diff(self.csc.indptr))

    @property
    def weight_csr(self):
        if self.edge_weight is None:
            return None
        return self._cached("weight_csr", lambda: _contiguous(self.edge_weight[self.csr.eid]))

    @property
    def weight_csc(self):
        if self.edge_weight is None:
            return None
        return self._cached("weight_csc", lambda: _contiguous(self.edge_weight[self.csc.eid]))

    @property
    def edge_index(self):
        def build():
            if _backend.is_torch(self.src):
                return _backend._torch().stack([self.src, self.dst])
            return _xp(self.src).stack([self.src, self.dst])

        return self._cached("edge_index", build)

    # ---- derived graphs -----------------------------------------------------------------------------

    def with_weights(self, edge_weight) -> "Graph":
        """The same edges (and cached views) with other edge weights ((E,) in edge order, or None)."""
        keep = {k: v for k, v in self._cache.items() if k in ("csr", "csc", "in_degree", "out_degree", "edge_index")}
        return Graph._from_parts(self.src, self.dst, self.num_nodes, edge_weight, keep)

    def transpose(self) -> "Graph":
        """Every edge reversed (the same edge ids and weights): W becomes W^T. Its CSR is this graph's CSC."""
        swap = {"csr": "csc", "csc": "csr", "in_degree": "out_degree", "out_degree": "in_degree",
                "weight_csr": "weight_csc", "weight_csc": "weight_csr"}
        cache = {swap[k]: v for k, v in self._cache.items() if k in swap}
        return Graph._from_parts(self.dst, self.src, self.num_nodes, self.edge_weight, cache)

    def to(self, like) -> "Graph":
        """This graph with its arrays in like's framework and on like's device (cached views converted;
        the weights keep their dtype). Returns self when nothing changes."""
        fw, dev = _backend.framework(like, "like"), _backend.device(like)
        here = "numpy" if isinstance(self.src, np.ndarray) else _backend.framework(self.src, "src")
        if (here == fw or (here == "numpy" and fw == "jax")) and _backend.device(self.src) == dev:
            return self
        key = f"to:{fw}:{dev}"

        def build():
            conv = lambda a: convert_like(a, like)  # noqa: E731
            cache = {}
            for k, v in self._cache.items():
                if k in ("csr", "csc"):
                    cache[k] = CSR(*(conv(a) for a in v))
                elif k in ("in_degree", "out_degree", "weight_csr", "weight_csc", "edge_index"):
                    cache[k] = conv(v)
            return Graph._from_parts(conv(self.src), conv(self.dst), self.num_nodes, conv(self.edge_weight), cache)

        return self._cached(key, build)

    def to_dense(self, dtype: str = "float64") -> np.ndarray:
        """The (num_nodes, num_nodes) NumPy matrix W[dst, src] (duplicate edges summed; weight 1 without
        edge_weight)."""
        n = self.num_nodes
        W = np.zeros((n, n), dtype=np.float64)
        w = np.ones(self.num_edges) if self.edge_weight is None else _to_host(self.edge_weight).astype(np.float64)
        np.add.at(W, (_to_host(self.dst).astype(np.int64), _to_host(self.src).astype(np.int64)), w)
        return W.astype(dtype)

    def __repr__(self) -> str:
        weighted = "" if self.edge_weight is None else f", weighted {_backend.dtype_name(self.edge_weight)}"
        return f"Graph(num_nodes={self.num_nodes}, num_edges={self.num_edges}, {self.index_dtype}{weighted})"


def _node_of_slot(indptr64, num_nodes: int, e: int):
    """For a CSR: the row (node) of every slot, i.e. repeat(arange(n), diff(indptr))."""
    if _backend.is_torch(indptr64):
        torch = _backend._torch()
        return torch.repeat_interleave(torch.arange(num_nodes, device=indptr64.device), _diff(indptr64),
                                       output_size=e)
    xp = _xp(indptr64)
    if xp is np:
        return np.repeat(np.arange(num_nodes, dtype=np.int64), _diff(indptr64))
    with indptr64.device:
        return xp.repeat(xp.arange(num_nodes, dtype=xp.int64), _diff(indptr64).get().tolist())
