"""The eager fast path of aggregate.mean, buffer_add_, fedasync_mix_ and the rules (plain torch tensors call
the kernel without the torch.library dispatcher, see commkernels/_eager.py; the rules and mean on CPU and
CUDA, the in-place updates on CPU): the same bits as the op, the version counter bumped like the op's, and
every other call (autograd, bad arguments) still on the op path."""

from __future__ import annotations

import pytest
import torch
from _dispatch_recorder import Recorder

import commkernels
from commkernels import aggregate as A

DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def _op_mean(X):
    return torch.ops.commkernels.mean([X], True, None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_eager_mean_matches_the_op(dtype, device):
    X = torch.randn(7, 3, 1001, generator=torch.Generator().manual_seed(0)).to(dtype).to(device)
    out = A.mean(X)
    assert out.dtype == dtype and out.shape == (3, 1001)
    assert torch.equal(out, _op_mean(X))
    rows = list(X)
    assert torch.equal(A.mean(rows, weights=[1, 2, 3, 4, 5, 6, 7]),
                       torch.ops.commkernels.mean(rows, False, [1.0, 2, 3, 4, 5, 6, 7]))


# each rule against its op, called as the public function calls it (the stacked form)
RULES = {
    "median": (lambda X: A.median(X), lambda X: torch.ops.commkernels.median([X], True, "mean")),
    "trimmed_mean": (lambda X: A.trimmed_mean(X, 2), lambda X: torch.ops.commkernels.trimmed_mean([X], True, 2)),
    "meamed": (lambda X: A.meamed(X, 2), lambda X: torch.ops.commkernels.meamed([X], True, 2)),
    "krum": (lambda X: A.krum(X, 2, m=2), lambda X: torch.ops.commkernels.krum([X], True, 2, 2, "n-f-2", "mean", "")),
    "geometric_median": (lambda X: A.geometric_median(X, max_iter=5, start="zero"),
                         lambda X: torch.ops.commkernels.geometric_median([X], True, 1e-6, 5, 1e-6, None, "zero",
                                                                          None, "")),
    "centered_clipping": (lambda X: A.centered_clipping(X, X[0], 1.0, 3),
                          lambda X: torch.ops.commkernels.centered_clipping([X], True, X[0], 1.0, 3)),
    "combine": (lambda X: A.combine(X, [[0.5] * 7, [1.0] + [0.0] * 6]),
                lambda X: torch.ops.commkernels.combine([X], True, [0.5] * 7 + [1.0] + [0.0] * 6, 2)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", sorted(RULES))
def test_eager_rules_match_the_op(rule, dtype, device):
    X = torch.randn(7, 3, 501, generator=torch.Generator().manual_seed(2)).to(dtype).to(device)
    X[3, 1, 7] = float("nan")  # a Byzantine row: the rules' masked paths too
    fast, op = RULES[rule]
    a, b = fast(X), op(X)
    assert a.dtype == b.dtype == dtype and a.shape == b.shape
    assert torch.equal(torch.nan_to_num(a, nan=7.0), torch.nan_to_num(b, nan=7.0))


def test_plain_calls_skip_the_ops_and_tracked_ones_take_them(monkeypatch, device):
    """With the ops replaced by a tripwire, plain calls still work (they never reach an op) and a call with
    an input autograd tracks trips it (it does): the fast path is really taken, and only where it may be."""
    from commkernels.aggregate import _coord, _gram, _gram_rules, _mean

    def tripwire(*args):
        raise AssertionError("went through the op")

    for module, name in [(_coord, "_median_op"), (_coord, "_trimmed_mean_op"), (_gram_rules, "_krum_op"),
                         (_gram_rules, "_gm_op"), (_gram_rules, "_cc_op"), (_gram, "_combine_op")]:
        monkeypatch.setattr(module, name, tripwire)
    monkeypatch.setattr(_mean, "_mean_op", tripwire)
    X = torch.randn(7, 40, device=device)
    A.median(X), A.trimmed_mean(X, 2), A.krum(X, 2), A.geometric_median(X), A.centered_clipping(X, X[0], 1.0)
    A.combine(X, [[1.0] * 7]), A.mean(X), A.mean(list(X))
    with pytest.raises(AssertionError, match="went through the op"):
        A.median(X.clone().requires_grad_(True))
    with pytest.raises(AssertionError, match="went through the op"):
        A.combine(X.clone().requires_grad_(True), [[1.0] * 7])
    with pytest.raises(AssertionError, match="went through the op"):
        A.mean(X.clone().requires_grad_(True))


def test_rules_with_grad_or_under_a_mode_take_the_op():
    """An input autograd tracks, or a dispatch mode, sends the call through the op (recorded, differentiated)."""
    X = torch.randn(7, 40, dtype=torch.float64)
    with Recorder() as mode:
        A.krum(X, 2)
        A.median(X)
    assert any("commkernels.krum" in o for o in mode.names) and any("commkernels.median" in o for o in mode.names)
    Xg = X.clone().requires_grad_(True)
    A.median(Xg).sum().backward()
    assert Xg.grad is not None and torch.equal(Xg.grad.sum(0), torch.ones(40, dtype=torch.float64))


def test_mean_with_grad_still_differentiates():
    X = torch.randn(5, 40, dtype=torch.float64, requires_grad=True)
    A.mean(X).sum().backward()
    assert torch.allclose(X.grad, torch.full_like(X, 0.2))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["buffer_add_", "fedasync_mix_"])
def test_eager_inplace_matches_the_op_and_bumps_the_version(name, dtype):
    g = torch.Generator().manual_seed(1)
    target, source = torch.randn(3001, generator=g).to(dtype), torch.randn(3001, generator=g).to(dtype)
    expected = target.clone()
    getattr(torch.ops.commkernels, name)(expected, source, 0.3)
    version = target._version
    assert getattr(A, name)(target, source, 0.3) is target
    assert torch.equal(target, expected)
    assert target._version > version


def test_eager_inplace_is_seen_by_autograd():
    """An in-place update of a tensor saved for backward must make backward fail, as with any in-place op."""
    w = torch.randn(10, requires_grad=True)
    buf = torch.randn(10)
    y = (w * buf).sum()  # saves buf
    A.buffer_add_(buf, torch.ones(10), 1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_eager_inplace_bad_arguments_still_named():
    with pytest.raises(ValueError, match="update"):
        A.buffer_add_(torch.zeros(4), torch.zeros(5))
    with pytest.raises(TypeError, match="buffer"):
        A.buffer_add_(torch.zeros(4, dtype=torch.bfloat16), torch.zeros(4))
    x = torch.zeros(8)
    with pytest.raises(ValueError, match="overlap"):
        A.fedasync_mix_(x[:4], x[2:6], 0.5)
    with pytest.raises(ValueError, match="alpha"):
        A.fedasync_mix_(torch.zeros(4), torch.zeros(4), 1.5)
    same = torch.ones(4)
    A.buffer_add_(same, same, 1.0)  # the same memory exactly is allowed: elementwise
    assert torch.equal(same, torch.full((4,), 2.0))


def test_large_results_from_the_host_cache_are_never_shared():
    """A result of 8 MiB or more comes from the host buffer cache: a live one is never handed out again,
    and a dead one's memory serves the next result of that size, fully rewritten."""
    g = torch.Generator().manual_seed(3)
    X, Y = torch.randn(8, 2_200_000, generator=g), torch.randn(8, 2_200_000, generator=g)
    commkernels.release_cached_memory()
    a = A.mean(X)
    assert a.numel() * 4 >= commkernels._backend.POOL_MIN_BYTES
    b = A.mean(Y)
    assert a.data_ptr() != b.data_ptr()
    assert torch.equal(a, _op_mean(X)) and torch.equal(b, _op_mean(Y))
    ptr = a.data_ptr()
    del a
    c = A.mean(2 * X)
    assert c.data_ptr() == ptr and torch.equal(c, _op_mean(2 * X))
    del b, c
    assert commkernels.release_cached_memory() >= 2 * 2_200_000 * 4
