"""python -m commkernels demo: the simulated run learns, the robust rule survives an attack that breaks the
mean, the bytes are what the message formats say, and the torch.distributed run (2 gloo ranks launched by
the command, in a subprocess with a hard timeout) gives bitwise the same models as --simulate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from commkernels.demo import _cli, _model, _protocol  # noqa: E402

# 5 agents on circulant2 = the complete graph: 4 neighbours each, 1 Byzantine (agent 0), rule f = 1
TINY = ["--agents", "5", "--byzantine", "1", "--rounds", "10", "--local-steps", "3", "--hidden", "16",
        "--experts", "4", "--seed", "3", "--plot", "", "--no-progress"]
CHANCE = 0.1  # 10 balanced classes


def _simulate(tmp_path, extra, name="sim.json"):
    path = tmp_path / name
    assert _cli.main(["--simulate", *extra, "--json", str(path)]) == 0
    return {c["key"]: c for c in json.loads(path.read_text())["configs"]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _simulate(tmp_path_factory.mktemp("demo"), TINY + ["--attack", "sign_flip", "--ratio", "0.1"])


def test_the_simulated_demo_learns_above_chance(tiny):
    ref = tiny["ref"]["accuracy"]
    assert len(ref) == 10
    # 4 shards of ~360 digits, 30 SGD steps per agent: far above chance (a broken pipeline stays near 0.1)
    assert ref[-1] > CHANCE + 0.4, ref
    assert tiny["robust-topk"]["accuracy"][-1] > CHANCE + 0.4


def test_the_robust_rule_beats_the_mean_under_sign_flip(tiny):
    # sign_flip: the Byzantine public copy is -mean(honest) (uncompressed; top-k moves it there k entries
    # per round). On the complete graph of 5 the mean of [4 honest models, -their mean] is 3/5 of the honest
    # mean: every round scales the models by 3/5, so they collapse to ~0 and predict one class (accuracy ~0.1).
    # A trimmed mean (f = 1) drops the flipped value in every coordinate where the honest models agree in sign.
    for dense, comp in (("mean", "robust"), ("mean-topk", "robust-topk")):
        mean, robust = tiny[dense]["accuracy"][-1], tiny[comp]["accuracy"][-1]
        assert robust - mean > 0.3, (dense, mean, robust)


def test_bytes_are_the_message_formats(tiny):
    d = _model.Shapes(features=64, classes=10, hidden=16, ffn=16, experts=4, k=2).size
    n, degree, k = 5, 4, round(0.1 * d)
    for key in ("ref", "mean", "robust"):
        assert tiny[key]["bytes"] == [n * degree * 4 * d] * 10  # the dense model, float32, per directed edge
    for key in ("mean-topk", "robust-topk"):
        assert tiny[key]["k"] == k
        assert tiny[key]["bytes"] == [n * degree * 8 * k] * 10  # k float32 values + k indices


def test_topology_and_placement():
    assert _protocol.shifts("ring", 10) == [1, 9]
    assert _protocol.shifts("circulant2", 10) == [1, 2, 8, 9]
    assert _protocol.shifts("complete", 4) == [1, 2, 3]
    assert _protocol.shifts("ring", 2) == [1]
    assert _protocol.byzantine_agents(10, 2) == [0, 5]
    assert _protocol.rule_f(10, [1, 2, 8, 9], [0, 5]) == 1
    assert _protocol.rule_f(10, [1, 9], []) == 0
    W = _protocol.neighbourhood_graph(10, [1, 2, 8, 9]).to_dense()
    assert (W.sum(0) == 4).all() and (W.sum(1) == 4).all() and (W == W.T).all()
    x = torch.arange(12.0).reshape(4, 3)
    from commkernels import graph

    assert torch.equal(graph.mix(x, _protocol.shift_graph(4, 1)), x.roll(1, 0))


def test_missing_dependencies_say_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn -> ImportError
    assert _cli.main(["--simulate", "--plot", ""]) == 2
    assert "pip install 'commkernels[demo]'" in capsys.readouterr().err


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit, match="--byzantine"):
        _cli.main(["--simulate", "--agents", "3", "--byzantine", "3"])
    with pytest.raises(SystemExit, match="--configs"):
        _cli.main(["--simulate", "--configs", "ref,nope"])


def test_torch_distributed_equals_simulate(tmp_path):
    """2 gloo ranks launched by the command itself; agent 0 is Byzantine (sign_flip through the same
    message format), agent 1 honest, rule median (of 2: their mean). The transports copy messages exactly
    (graph.mix / distributed.gossip over a weight-1 permutation graph), every agent computes single-threaded
    with deterministic kernels, so the honest model is bitwise the same."""
    args = ["--agents", "2", "--byzantine", "1", "--rule", "median", "--rounds", "3", "--local-steps", "2",
            "--hidden", "16", "--seed", "1", "--plot", "", "--no-progress"]
    sim = _simulate(tmp_path, args)
    out = tmp_path / "dist.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        env.pop(var, None)
    proc = subprocess.Popen([sys.executable, "-m", "commkernels", "demo", *args, "--backend", "gloo", "--json",
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the forked ranks too
        text, _ = proc.communicate()
        pytest.fail(f"the 2-rank demo did not finish within 150 s (killed); output tail:\n{text[-3000:]}")
    assert proc.returncode == 0, text[-3000:]
    assert "torch.distributed gloo, 2 ranks" in text
    dist = {c["key"]: c for c in json.loads(out.read_text())["configs"]}
    assert dist.keys() == sim.keys()
    for key in sim:
        assert dist[key]["digests"] == sim[key]["digests"], key
        assert dist[key]["accuracy"] == sim[key]["accuracy"], key
        assert dist[key]["bytes"] == sim[key]["bytes"], key
    assert sim["ref"]["digests"] != sim["mean"]["digests"]  # the attack changed something
