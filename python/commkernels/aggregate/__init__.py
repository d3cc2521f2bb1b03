"""commkernels.aggregate: robust and federated aggregation of n workers' updates (shared/specs/aggregate.md).

Every rule takes ``X``: an (n, *shape) array (row i = worker i) or a list/tuple of n arrays of one shape,
in NumPy, torch, CuPy or (CPU) JAX, one framework, device and float dtype, each C-contiguous. The updates
are read in place through a table of row pointers: a list is never stacked into a copy (see _inputs.py
and csrc/aggregate/rows.h). The result has the update's shape and X's framework, device and dtype;
accumulation is float32 (float64 for float64 X). ``f`` is the number of Byzantine workers tolerated; each
rule checks n against f and names the violated bound.
"""

from __future__ import annotations

from ._async import buffer_add_, fedasync_mix_, staleness_weight, variance_corrected_mean
from ._coord import meamed, median, phocas, trimmed_mean
from ._gram import combine, gram
from ._gram_pre import arc, bucketing, clip, nnm, with_pre
from ._gram_rules import bulyan, centered_clipping, flag, geometric_median, krum, mda
from ._inputs import Updates, updates
from ._mean import mean

__all__ = ["mean", "median", "trimmed_mean", "meamed", "phocas", "updates", "Updates"]
__all__ += ["gram", "combine", "krum", "bulyan", "geometric_median", "centered_clipping", "mda", "flag", "nnm",
            "bucketing", "clip", "arc", "with_pre"]
__all__ += ["staleness_weight", "buffer_add_", "fedasync_mix_", "variance_corrected_mean"]
