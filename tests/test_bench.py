"""The bench harness on tiny sizes: it runs, and its JSON, table, markdown and plot have the promised shape."""

import importlib.util
import json

import pytest

pytest.importorskip("torch")

from commkernels.__main__ import main  # noqa: E402
from commkernels.bench import harness  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The JSON of one tiny run through the command line."""
    path = tmp_path_factory.mktemp("bench") / "results.json"
    argv = ["bench", "--family", "compress", "--sizes", "1000,3000", "--repeat", "3", "--probe-size", "4096",
            "--json", str(path)]
    assert main(argv) == 0
    return path


def test_json_has_the_machine_the_probe_and_every_case(saved):
    data = json.loads(saved.read_text())
    assert data["schema"] == harness.SCHEMA
    assert {"cpu_model", "logical_cpus", "threads", "commkernels", "torch", "date"} <= set(data["machine"])
    assert data["probe"]["gbps"] > 0 and data["probe"]["elements"] == 4096
    cases = data["cases"]
    sparse = [c for c in cases if c["kernel"] in ("topk", "ef_topk_", "randk")]
    assert len(sparse) == 3 * 2 * 2 * 2  # kernels x sizes x k/d x dtypes
    assert {"sign_compress", "qsgd", "sparse_aggregate"} <= {c["kernel"] for c in cases}  # the family's other modules
    for case in sparse:
        assert set(case["columns"]) == {"d", "k", "k/d", "dtype"}
    for case in cases:
        assert case["floor_bytes"] > 0
        for timing in [case["ours"], *case["baselines"]]:
            assert len(timing["samples_ms"]) == 3
            assert 0 < timing["min_ms"] <= timing["median_ms"]
        best = min(case["baselines"], key=lambda b: b["median_ms"])
        assert case["best_baseline"] == best["name"]
        assert case["speedup"] == pytest.approx(best["median_ms"] / case["ours"]["median_ms"], rel=1e-3)
        assert case["fraction_of_probe"] == pytest.approx(case["gbps"] / data["probe"]["gbps"], rel=1e-3)
    names = {b["name"] for c in cases for b in c["baselines"]}
    assert {"torch.topk", "torch eager EF", "torch.randperm"} <= names


def test_markdown_and_plot_from_the_json(saved, capsys, tmp_path):
    plot = importlib.util.find_spec("matplotlib") is not None
    args = ["bench", "--from-json", str(saved), "--markdown"] + (["--plot", str(tmp_path / "r.png")] if plot else [])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("Machine: ")
    rows = [line for line in out.splitlines() if line.startswith("| compress |")]
    assert len(rows) == len(json.loads(saved.read_text())["cases"])
    if plot:
        assert (tmp_path / "r.png").stat().st_size > 0


def test_measure_resets_before_every_call_and_respects_the_budget():
    calls = []
    samples = harness.measure(lambda: calls.append("run"), harness.Budget(0.0, 5, 4), lambda: None,
                              reset=lambda: calls.append("reset"))
    assert len(samples) == 4
    assert calls == ["reset", "run"] * 5  # the warm-up included


def test_cuda_without_a_gpu_is_a_clear_error(capsys):
    import torch

    from commkernels import _backend

    if torch.cuda.is_available() and _backend.cuda_device_count() > 0:
        pytest.skip("a GPU is there")
    assert main(["bench", "--device", "cuda", "--sizes", "1000"]) == 2
    assert "--device cuda" in capsys.readouterr().err
