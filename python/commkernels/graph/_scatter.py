"""scatter, segment and gather over rows, with torch_scatter's semantics, deterministic.

``scatter`` reduces the rows of src into ``dim_size`` destination rows by ``index`` (on the CPU: segments
read off a sorted index; for an unsorted one, a counting sort by block of destination rows reduced in L2, or
the owners of row ranges streaming the index; each destination row adds its source rows in increasing
order in one thread: no atomics, the same bits whatever the thread count). ``segment`` does the same over
sorted CSR segments; ``gather`` reads rows.
"""

from __future__ import annotations

import math

from .. import _backend, _checks, _torch_ops

REDUCES = ("sum", "mean", "max", "min", "mul")
_CODE = {name: code for code, name in enumerate(REDUCES)}
_MAX_ROWS = (1 << 31) - 1
_MAX_SIZE = (1 << 62)


def _feature_size(shape) -> int:
    return math.prod(int(s) for s in shape[1:])


def _reduce_code(reduce) -> int:
    if reduce not in _CODE:
        raise ValueError(f"reduce: expected one of {', '.join(REDUCES)}, got {reduce!r}")
    return _CODE[reduce]


def _reshape(like, flat, shape):
    return _backend.finish(like, flat.reshape(tuple(shape)))


def _index_array(index, name: str, src, src_name: str, length: int | None) -> None:
    _checks.same_place(src, index, src_name, name)
    if _backend.dtype_name(index) not in _backend.INDEX_DTYPES:
        raise TypeError(f"{name}: expected dtype int32 or int64, got {_backend.dtype_name(index)}")
    if len(index.shape) != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {tuple(index.shape)}")
    if length is not None and int(index.shape[0]) != length:
        raise ValueError(f"{name}: expected {length} entries (one per row of {src_name}), got {int(index.shape[0])}")
    _checks.contiguous(index, name)


def _rows_array(a, name: str) -> None:
    _checks.float_array(a, name)
    if len(a.shape) < 1:
        raise ValueError(f"{name}: expected at least one dimension (rows first), got a 0-d array")
    _checks.integer(int(a.shape[0]), f"{name}.shape[0]", 0, _MAX_ROWS)
    _checks.integer(_backend.numel(a), f"{name}.size", 0, _MAX_SIZE)


def _check_range_on_gpu(index, high: int, name: str) -> None:
    """The CPU kernels check index ranges themselves; for CUDA arrays the check reads two numbers back
    (skipped under torch.compile)."""
    if _backend.device(index)[0] == "cuda" and _backend.numel(index) and not _backend.is_compiling():
        low, top = int(index.min()), int(index.max())
        if low < 0 or top >= high:
            raise ValueError(f"{name}: expected values in [0, {high}), got values in [{low}, {top}]")


# ---- kernels (framework-generic) ----------------------------------------------------------------------

def _scatter_kernel(src, index, dim_size: int, reduce: int):
    e, f = int(src.shape[0]), _feature_size(src.shape)
    shape = (dim_size, *src.shape[1:])
    out = _backend.empty(src, dim_size * f)
    arg = _backend.empty(src, dim_size * f if reduce in (2, 3) else 0, _backend.dtype_name(index))
    _backend.module(src).graph_scatter(src, e, f, index, dim_size, reduce, out, arg, _backend.stream(src))
    return _reshape(src, out, shape), _reshape(src, arg, shape if reduce in (2, 3) else (0,))


def _segment_kernel(src, indptr, reduce: int):
    e, f = int(src.shape[0]), _feature_size(src.shape)
    rows = int(indptr.shape[0]) - 1
    shape = (rows, *src.shape[1:])
    out = _backend.empty(src, rows * f)
    arg = _backend.empty(src, rows * f if reduce in (2, 3) else 0, _backend.dtype_name(indptr))
    _backend.module(src).graph_segment(src, e, f, indptr, reduce, out, arg, _backend.stream(src))
    return _reshape(src, out, shape), _reshape(src, arg, shape if reduce in (2, 3) else (0,))


def _gather_kernel(x, index):
    n, f = int(x.shape[0]), _feature_size(x.shape)
    e = int(index.shape[0])
    out = _backend.empty(x, e * f)
    _backend.module(x).graph_gather(x, n, f, index, out, _backend.stream(x))
    return _reshape(x, out, (e, *x.shape[1:]))


# ---- torch ops: fakes and autograd --------------------------------------------------------------------

def _scatter_fake(src, index, dim_size, reduce):
    shape = (dim_size, *src.shape[1:])
    arg_shape = shape if reduce in (2, 3) else (0,)
    return src.new_empty(shape), src.new_empty(arg_shape, dtype=index.dtype)


def _segment_fake(src, indptr, reduce):
    shape = (indptr.shape[0] - 1, *src.shape[1:])
    arg_shape = shape if reduce in (2, 3) else (0,)
    return src.new_empty(shape), src.new_empty(arg_shape, dtype=indptr.dtype)


def _gather_fake(x, index):
    return x.new_empty((index.shape[0], *x.shape[1:]))


def _reduce_backward(reduce: int, grad_out, src, out, arg, seg, valid):
    """d src of a row reduction. seg: the destination row of each source row (int64, E); valid: a mask
    of the source rows that belong to some row (None: all do)."""
    torch = _torch_ops.torch
    e, rows = src.shape[0], grad_out.shape[0]
    g2 = grad_out.contiguous().reshape(rows, -1)
    if reduce in (2, 3):  # the gradient goes to the arg element; empty rows (arg == E) land in a dropped row
        full = g2.new_zeros((e + 1, g2.shape[1]))
        full.scatter_(0, arg.reshape(rows, -1).long(), g2)
        return full[:e].reshape(src.shape)
    if reduce == 1:
        counts = torch.bincount(seg[valid] if valid is not None else seg, minlength=rows).clamp_(min=1)
        g2 = g2 / counts.to(g2.dtype).unsqueeze(1)
    grad = _gather_op(g2.contiguous(), seg)
    if reduce == 4:
        # d/d src_j of the product = the product of the segment's other entries: computed from the product
        # of its nonzero entries and how many zeros it holds, so zeros get their exact gradient (nonzero only
        # for the single zero of a segment; 0 where a segment holds two zeros or more)
        s2 = src.detach().reshape(e, -1)
        zero = s2 == 0
        if valid is not None:  # rows outside every segment must not count in segment 0's product
            zero &= valid.unsqueeze(1)
        nonzero = torch.where(zero | ~(valid if valid is not None else zero.new_ones(e)).unsqueeze(1),
                              torch.ones_like(s2), s2)
        prod_nz = _scatter_op(nonzero.contiguous(), seg, rows, 4)[0]
        zeros = _scatter_op(zero.to(s2.dtype).contiguous(), seg, rows, 0)[0]
        p, z = _gather_op(prod_nz, seg), _gather_op(zeros, seg)
        others = torch.where(zero, torch.where(z == 1, p, torch.zeros_like(p)),
                             torch.where(z == 0, p / nonzero, torch.zeros_like(p)))
        grad = grad * others
    if valid is not None:
        grad = grad * valid.unsqueeze(1).to(grad.dtype)
    return grad.reshape(src.shape)


def _scatter_setup(ctx, inputs, output):
    src, index, dim_size, reduce = inputs
    ctx.reduce = reduce
    ctx.save_for_backward(src if reduce == 4 else None, index, output[1] if reduce in (2, 3) else None)


def _scatter_backward(ctx, grad_out, grad_arg):
    src, index, arg = ctx.saved_tensors
    if src is None:
        src = grad_out.new_empty((index.shape[0], *grad_out.shape[1:]))  # its shape is all that is read
    grad = _reduce_backward(ctx.reduce, grad_out, src, None, arg, index.long(), None)
    return grad, None, None, None


def _segment_setup(ctx, inputs, output):
    src, indptr, reduce = inputs
    ctx.reduce = reduce
    ctx.src_shape = src.shape
    ctx.save_for_backward(src if reduce == 4 else None, indptr, output[1] if reduce in (2, 3) else None)


def _segment_backward(ctx, grad_out, grad_arg):
    torch = _torch_ops.torch
    src, indptr, arg = ctx.saved_tensors
    e = ctx.src_shape[0]
    if src is None:
        src = grad_out.new_empty((e, *grad_out.shape[1:]))
    j = torch.arange(e, device=indptr.device, dtype=indptr.dtype)
    seg = torch.searchsorted(indptr, j, right=True).long() - 1
    valid = (j >= indptr[0]) & (j < indptr[-1])
    seg = torch.where(valid, seg, torch.zeros_like(seg))
    grad = _reduce_backward(ctx.reduce, grad_out, src, None, arg, seg, valid)
    return grad, None, None


def _gather_setup(ctx, inputs, output):
    x, index = inputs
    ctx.rows = x.shape[0]
    ctx.save_for_backward(index)


def _gather_backward(ctx, grad):
    (index,) = ctx.saved_tensors
    return _scatter_op(grad.contiguous(), index, ctx.rows, 0)[0], None


_scatter_op = _torch_ops.define("scatter", "(Tensor src, Tensor index, int dim_size, int reduce) -> (Tensor, Tensor)",
                                _scatter_kernel, _scatter_fake, backward=_scatter_backward,
                                setup_context=_scatter_setup)
_segment_op = _torch_ops.define("segment", "(Tensor src, Tensor indptr, int reduce) -> (Tensor, Tensor)",
                                _segment_kernel, _segment_fake, backward=_segment_backward,
                                setup_context=_segment_setup)
_gather_op = _torch_ops.define("gather", "(Tensor x, Tensor index) -> Tensor", _gather_kernel, _gather_fake,
                               backward=_gather_backward, setup_context=_gather_setup)


# ---- public API ---------------------------------------------------------------------------------------

def scatter(src, index, dim_size: int | None = None, reduce: str = "sum"):
    """Reduces the rows of src into dim_size rows: out[i] = reduce over {j : index[j] == i} of src[j].

    As torch_scatter.scatter(src, index, dim=0, dim_size=dim_size, reduce=reduce):
    reduce "sum", "mean", "mul": returns out; empty rows give 0 ("mul": 1; "mean": 0).
    reduce "max", "min": returns (out, arg), arg[i, ...] the j that gave out[i, ...] (the lowest j on ties;
    src.shape[0] for an empty row, whose out is 0). NaN wins max and min (the first NaN of a row).

    src: (E, ...) float32, float64, float16 or bfloat16 (16-bit types accumulate in float32), contiguous.
    index: (E,) int32 or int64 with values in [0, dim_size) (ValueError otherwise); arg has its dtype.
    dim_size: the number of output rows (default: index.max() + 1, 0 for an empty index; pass it under
    torch.compile). Deterministic: the same bits whatever the thread count (a counting sort of index, then
    each row adds its source rows in increasing j). Differentiable for torch tensors in src: sum / mean ->
    gather; max / min -> the arg elements; mul -> the product of the row's other entries (exact at zeros:
    the single zero of a row gets the product of the others; a row with two zeros gives 0 gradient).
    """
    _rows_array(src, "src")
    e = int(src.shape[0])
    _index_array(index, "index", src, "src", e)
    code = _reduce_code(reduce)
    if dim_size is None:
        if _backend.is_compiling():
            raise ValueError("dim_size: pass it explicitly under torch.compile")
        dim_size = int(index.max()) + 1 if e else 0
    dim_size = _checks.integer(dim_size, "dim_size", 0, _MAX_ROWS)
    _check_range_on_gpu(index, dim_size, "index")
    out, arg = _scatter_op(src, index, dim_size, code) if _backend.is_torch(src) else \
        _scatter_kernel(src, index, dim_size, code)
    return (out, arg) if code in (2, 3) else out


def segment(src, indptr, reduce: str = "sum"):
    """The reductions of ``scatter`` over sorted segments: out[i] = reduce of src[indptr[i] : indptr[i + 1]].

    As torch_scatter.segment_csr(src, indptr, reduce=reduce): rows = indptr.shape[0] - 1; "max"/"min" return
    (out, arg) with arg the absolute row of src (src.shape[0] for an empty segment), lowest on ties.
    indptr: (rows + 1,) int32 or int64, non-decreasing, values in [0, src.shape[0]] (ValueError otherwise;
    rows of src outside [indptr[0], indptr[-1]) are ignored). Differentiable in src like scatter.
    """
    _rows_array(src, "src")
    _index_array(indptr, "indptr", src, "src", None)
    if int(indptr.shape[0]) < 1:
        raise ValueError("indptr: expected at least one entry (rows + 1)")
    code = _reduce_code(reduce)
    if _backend.device(indptr)[0] == "cuda" and not _backend.is_compiling():
        e = int(src.shape[0])
        if bool((indptr[1:] < indptr[:-1]).any()) or int(indptr.min()) < 0 or int(indptr.max()) > e:
            raise ValueError(f"indptr: expected non-decreasing values in [0, {e}]")
    out, arg = _segment_op(src, indptr, code) if _backend.is_torch(src) else _segment_kernel(src, indptr, code)
    return (out, arg) if code in (2, 3) else out


def gather(x, index):
    """Rows of x: out[j] = x[index[j]] (x (N, ...), index (E,) int32/int64 in [0, N); out (E, ...)).

    Differentiable for torch tensors in x (the backward is scatter(grad, index, N, "sum"), deterministic).
    """
    _rows_array(x, "x")
    _index_array(index, "index", x, "x", None)
    _check_range_on_gpu(index, int(x.shape[0]), "index")
    return _gather_op(x, index) if _backend.is_torch(x) else _gather_kernel(x, index)
