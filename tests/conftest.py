"""Shared test configuration: hypothesis profiles and device parametrisation.

Profiles (env var COMMKERNELS_HYPOTHESIS_PROFILE): "fast" (default: random draws, so every local run
explores), "ci" (fast with a fixed draw, what .ci/run uses: a landing never depends on luck; two random
CI draws had found loose error bounds in tests, so keep running "fast" and "thorough" locally), "thorough"
(local) and "smoke" (a few examples each, for runs under compute-sanitizer, which is 10-100x slower).
Any test that takes a ``device`` argument runs once per device: "cpu" always, "cuda" where the CUDA module
is built and torch sees a GPU (skipped, with the reason, elsewhere).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, settings

_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("fast", max_examples=50, deadline=None, suppress_health_check=_HEALTH,
                          print_blob=True)
settings.register_profile("thorough", max_examples=500, deadline=None, suppress_health_check=_HEALTH,
                          print_blob=True)
settings.register_profile("ci", parent=settings.get_profile("fast"), derandomize=True)
settings.register_profile("smoke", max_examples=5, deadline=None, suppress_health_check=_HEALTH,
                          print_blob=True)
settings.load_profile(os.environ.get("COMMKERNELS_HYPOTHESIS_PROFILE", "fast"))


def _cuda_reason() -> str:
    """Empty when the CUDA kernels can run here; otherwise why not."""
    from commkernels import _backend

    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    if _backend.cuda_device_count() == 0:
        return "commkernels was built without its CUDA module, or it sees no device"
    return ""


CUDA_SKIP_REASON = _cuda_reason()
HAS_CUDA = CUDA_SKIP_REASON == ""
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason=CUDA_SKIP_REASON or "n/a")),
]


def _run_python(script: str, avx512: bool = True, amx: bool = True) -> str:
    """The stdout of ``python -c script`` in a fresh process. avx512=False sets COMMKERNELS_DISABLE_AVX512
    there, so its kernels take the baseline x86-64 paths that a wheel runs on CPUs without AVX-512 (this
    machine has it, so every other test runs the AVX-512 versions); amx=False sets COMMKERNELS_DISABLE_AMX,
    for the AVX-512 routes that AMX replaces. Fails with the script's stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("COMMKERNELS_DISABLE_AVX512", "COMMKERNELS_DISABLE_AMX")}
    if not avx512:
        env["COMMKERNELS_DISABLE_AVX512"] = "1"
    if not amx:
        env["COMMKERNELS_DISABLE_AMX"] = "1"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="session")
def run_python():
    """_run_python, for tests that compare the AVX-512 and the baseline paths in fresh processes."""
    return _run_python


@pytest.fixture(scope="session")
def devices() -> list[str]:
    """The devices available here, for tests that loop over them themselves."""
    return ["cpu"] + (["cuda"] if HAS_CUDA else [])


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", DEVICES)
