"""Microbenchmarks: ``python -m commkernels bench`` (see bench/README.md).

- ``harness``: cases, timing, the memory-bandwidth probe, the run loop (needs torch).
- ``report``: the table (text or markdown), JSON and the plot (no torch: works on a saved JSON).
- ``registry``: the families; one module per family (``compress``) builds its cases.
- ``cli``: the command line.

In-process use: ``from commkernels.bench.harness import run_cases; run_cases(quick=True, sizes=[1000])``.
"""
