"""Cases, timing, the memory-bandwidth probe and the run loop.

A case is one kernel at one set of parameters. Its ``prepare()`` allocates the inputs once and returns
our function and the baselines, all closed over the same data. Each function is warmed up once, then
timed until the time budget is spent (at least ``MIN_REPS`` samples, at most ``max_reps``); the median
is what we report. ``reset`` (for in-place kernels) runs before every call, outside the timed region.
"""

from __future__ import annotations

import datetime
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

import commkernels
from commkernels import _backend

from . import registry

SCHEMA = 1
MIN_REPS = 3
PROBE_ELEMENTS = 1 << 27  # float32 per array: 3 x 512 MiB, far beyond any cache
PROBE_BYTES_PER_ELEMENT = 12  # STREAM's count for the triad: read b, read c, write a


@dataclass
class Prepared:
    """What a case runs, on data allocated once: ``ours`` and each baseline take no arguments."""

    ours: Callable[[], Any]
    baselines: dict[str, Callable[[], Any]]
    reset: Callable[[], None] | None = None  # untimed, before every call (warm-up included)


@dataclass
class Case:
    family: str
    kernel: str
    ours: str  # how ours is called, for the JSON
    columns: dict[str, str]  # the parameters as the table shows them, e.g. {"d": "1e7", "k/d": "1%"}
    params: dict[str, Any]  # the same, raw, for the JSON and the plot ("d" is the plot's x axis)
    floor_bytes: int  # the least memory traffic the kernel needs: its bandwidth is floor_bytes / time
    prepare: Callable[[], Prepared] = field(repr=False)

    @property
    def label(self) -> str:
        return f"{self.family}.{self.kernel} " + " ".join(f"{k}={v}" for k, v in self.columns.items())


@dataclass
class Budget:
    seconds: float  # keep sampling until the samples add up to this...
    max_reps: int  # ...or there are this many
    min_reps: int = MIN_REPS

    @classmethod
    def make(cls, quick: bool, repeat: int | None) -> "Budget":
        if repeat is not None:
            return cls(0.0, repeat, repeat)
        return cls(0.1, 50) if quick else cls(0.5, 200)


def synchronizer(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def measure(fn: Callable[[], Any], budget: Budget, sync: Callable[[], None], reset=None) -> list[float]:
    """Seconds per call of fn, one warm-up call excluded."""

    def once() -> float:
        if reset is not None:
            reset()
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        elapsed = time.perf_counter() - start
        del out  # freed outside the timed region
        return elapsed

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        once()
        samples: list[float] = []
        while len(samples) < budget.max_reps and (len(samples) < budget.min_reps or sum(samples) < budget.seconds):
            samples.append(once())
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def _sig(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def summary(samples: list[float]) -> dict:
    ms = [round(s * 1e3, 6) for s in samples]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "samples_ms": ms}


# ---- the memory-bandwidth probe -----------------------------------------------------------------------

def probe_bandwidth(device: str, elements: int = PROBE_ELEMENTS, runs: int = 5) -> dict:
    """STREAM triad a = b + s * c on float32 arrays; best of ``runs``, in GB/s at 12 bytes per element."""
    dev = torch.device(device)
    a = torch.zeros(elements, device=dev)  # every array written once, so its pages exist before timing
    b = torch.full((elements,), 1.0, device=dev)
    c = torch.full((elements,), 2.0, device=dev)
    scalar = 3.0
    module = _backend._cpu if device == "cpu" else _backend._cuda
    if hasattr(module, "stream_triad"):
        kernel = f"commkernels._backend._{device}.stream_triad"
        if device == "cpu":
            triad = lambda: module.stream_triad(a, b, c, scalar)  # noqa: E731
        else:
            triad = lambda: module.stream_triad(a, b, c, scalar, torch.cuda.current_stream().cuda_stream)  # noqa: E731
    else:
        kernel = "torch.add(b, c, alpha=s, out=a)"
        triad = lambda: torch.add(b, c, alpha=scalar, out=a)  # noqa: E731
    triad()  # warm-up
    samples = []
    for _ in range(runs):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            triad()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3)
        else:
            start = time.perf_counter()
            triad()
            samples.append(time.perf_counter() - start)
    if not torch.equal(a[:4], torch.full((4,), 7.0, device=dev)):
        raise RuntimeError("bandwidth probe: the triad computed a wrong result")
    gbps = PROBE_BYTES_PER_ELEMENT * elements / min(samples) / 1e9
    return {"kernel": kernel, "elements": elements, "bytes_per_element": PROBE_BYTES_PER_ELEMENT,
            "runs": runs, "gbps": round(gbps, 3), "samples_ms": [round(s * 1e3, 6) for s in samples]}


# ---- other processes: these machines are shared, and a busy one gives slow, noisy numbers -------------

def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds the whole machine has been busy, hypervisor steal included; those of this process),
    so that a run can tell how much other processes ran beside it. None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    times = os.times()
    busy = sum(fields) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK"), times.user + times.system


def others_cpu_seconds(since) -> float | None:
    now = cpu_seconds()
    if since is None or now is None:
        return None
    return round(max(0.0, (now[0] - since[0]) - (now[1] - since[1])), 2)


# ---- the machine --------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _source() -> dict:
    """Which build ran: the git commit of the source (``+dirty`` with uncommitted changes) and when the CPU
    module was built; kernels change faster than version numbers."""
    here = os.path.dirname(os.path.abspath(commkernels.__file__))
    git = lambda *args: subprocess.run(["git", "-C", here, *args], capture_output=True, text=True,  # noqa: E731
                                       timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        commit = commit + ("+dirty" if commit and git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        commit = ""
    built = datetime.datetime.fromtimestamp(os.path.getmtime(_backend._cpu.__file__), datetime.timezone.utc)
    return {"git": commit or None, "cpu_module_built": built.isoformat(timespec="seconds")}


def describe_machine(device: str) -> dict:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    machine = {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "threads": {"commkernels": commkernels.get_num_threads(), "torch": torch.get_num_threads()},
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "commkernels": commkernels.info(),
        "source": _source(),
        "device": device,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        machine["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                          "cuda": torch.version.cuda}
    return machine


def check_device(device: str) -> None:
    """Raises RuntimeError with the reason when ``device`` cannot run the benchmarks."""
    if device == "cpu":
        return
    if device != "cuda":
        raise RuntimeError(f"unknown device {device!r} (cpu or cuda)")
    if not torch.cuda.is_available():
        raise RuntimeError(f"--device cuda: torch {torch.__version__} sees no CUDA GPU")
    if _backend.cuda_device_count() == 0:
        reason = _backend._cuda_missing or "the CUDA module sees no GPU"
        raise RuntimeError(f"--device cuda: {reason}")


# ---- the run ------------------------------------------------------------------------------------------

def run_case(case: Case, budget: Budget, sync, probe_gbps: float) -> dict:
    started, start = time.perf_counter(), cpu_seconds()
    prepared = case.prepare()
    ours = summary(measure(prepared.ours, budget, sync, prepared.reset))
    baselines = {name: summary(measure(fn, budget, sync, prepared.reset)) for name, fn in prepared.baselines.items()}
    del prepared
    gc.collect()
    best = min(baselines, key=lambda name: baselines[name]["median_ms"])
    gbps = case.floor_bytes / (ours["median_ms"] / 1e3) / 1e9
    return {
        "family": case.family, "kernel": case.kernel, "columns": case.columns, "params": case.params,
        "floor_bytes": case.floor_bytes, "ours": {"name": case.ours, **ours},
        "baselines": [{"name": name, **stats} for name, stats in baselines.items()],
        "best_baseline": best,
        "speedup": _sig(baselines[best]["median_ms"] / ours["median_ms"]),
        "gbps": _sig(gbps), "fraction_of_probe": _sig(gbps / probe_gbps),
        "wall_s": round(time.perf_counter() - started, 2), "others_cpu_s": others_cpu_seconds(start),
    }


def run_cases(families=None, device: str = "cpu", quick: bool = False, sizes=None, repeat: int | None = None,
              threads: int | None = None, probe_elements: int = PROBE_ELEMENTS, progress=sys.stderr) -> dict:
    """Runs the cases of ``families`` (all by default) and returns the results (the JSON's content).

    sizes: the vector sizes d to run instead of each family's defaults. repeat: exactly this many timed
    samples per function instead of the time budget. threads: the CPU threads for commkernels and torch.
    """
    check_device(device)
    if threads is not None:
        commkernels.set_num_threads(threads)
        torch.set_num_threads(threads)
    families = list(families or registry.FAMILIES)
    budget = Budget.make(quick, repeat)
    started, start = time.perf_counter(), cpu_seconds()
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    machine = describe_machine(device)  # before the run: a module rebuilt meanwhile must not be mistaken
    cases = [case for family in families for case in registry.cases(family, device, quick, sizes)]

    def say(text: str, end: str = "\n") -> None:
        if progress is not None:
            print(text, end=end, file=progress, flush=True)

    idle_check = cpu_seconds()
    time.sleep(0.25)
    busy = others_cpu_seconds(idle_check)
    if busy is not None and busy > 0.05:
        say(f"warning: other processes are using {busy / 0.25:.0%} of a CPU: timings will be slow and noisy")
    say(f"probe: STREAM triad, {probe_elements} float32 per array ... ", end="")
    probe = probe_bandwidth(device, probe_elements, runs=3 if quick else 5)
    gc.collect()
    say(f"{probe['gbps']:.1f} GB/s")
    sync = synchronizer(device)
    results = []
    for n, case in enumerate(cases, 1):
        say(f"[{n}/{len(cases)}] {case.label} ... ", end="")
        result = run_case(case, budget, sync, probe["gbps"])
        best = next(b for b in result["baselines"] if b["name"] == result["best_baseline"])
        others = (result["others_cpu_s"] or 0) / result["wall_s"]
        busy = f" (other processes used {others:.0%} of a CPU meanwhile)" if others >= 0.05 else ""
        say(f"ours {result['ours']['median_ms']:.4g} ms, {best['name']} {best['median_ms']:.4g} ms, "
            f"{result['speedup']:.3g}x{busy}")
        results.append(result)
    settings = {"families": families, "device": device, "quick": quick, "sizes": sizes, "repeat": repeat,
                "budget_s": budget.seconds, "min_reps": budget.min_reps, "max_reps": budget.max_reps,
                "load_average_at_start": load, "others_cpu_s": others_cpu_seconds(start),
                "elapsed_s": round(time.perf_counter() - started, 1)}
    return {"schema": SCHEMA, "machine": machine, "settings": settings, "probe": probe,
            "cases": results}
