"""Tests of blindspots.studies and the benchmark studies: the paper's protocol end to end on a tiny seeded model and
a synthetic pool, resume after a real kill, and a 2-process torch.distributed run equal to the single-process one.

This file doubles as the script the subprocess tests launch:
`python tests/test_studies.py OUT [--slow] [--device cpu|cuda] [--backend gloo|nccl]`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from blindspots import Classifier, LSTConfig
from blindspots import studies as st
from blindspots.store import RunChanged, RunStore

ROOT = Path(__file__).resolve().parents[1]

ROUNDS, PAIRS_PER_BATCH, ITERATIONS = 3, 3, 10


def tiny_model(seed: int = 0, slow: float = 0.0) -> Classifier:
    """A seeded 3-class CNN close to 'the brightest channel wins' (so the synthetic pool is classified correctly)."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(3, 3, 3, padding=1)
    lin = nn.Linear(3, 3)
    with torch.no_grad():
        conv.weight.mul_(0.1)
        conv.weight[:, :, 1, 1] += torch.eye(3)
        conv.bias.zero_()
        lin.weight.copy_(torch.eye(3) * 6)
        lin.bias.zero_()
    net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), lin)
    if slow:  # a hook, not a layer: the weights (and so the run's key) stay those of the fast model
        net.register_forward_pre_hook(lambda module, inputs: time.sleep(slow))
    return Classifier(net, name=f"tiny{seed}")


def synthetic_pool(n: int = 10, size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n noisy images, image i of class i % 3 with its class's channel bright; the last one is labelled wrongly."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    x = torch.rand(n, 3, size, size, generator=g) * 0.3
    x[torch.arange(n), labels] += 0.6
    labels[-1] = (labels[-1] + 1) % 3  # a source every model misclassifies: must stay out of the pool
    return x, labels


def run_tiny_study(out: Path, info: st.DistInfo | None = None, slow: float = 0.0, report: bool = True):
    from experiments.tables import run_study

    x, y = synthetic_pool()
    device = info.device if info is not None else torch.device("cpu")
    models = [("tiny0", tiny_model(0, slow).to(device)), ("tiny1", tiny_model(1, slow).to(device))]
    return run_study(models, x, y, out, config=LSTConfig.paper(iterations=ITERATIONS),
                     protocol=st.ProtocolConfig(rounds=ROUNDS, seed=3, pairs_per_batch=PAIRS_PER_BATCH),
                     info=info, report=report)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _tables(out: Path) -> dict:
    return json.loads((out / "tables.json").read_text())


def _records(out: Path) -> list[dict]:
    return RunStore.read_records(out)


# ----------------------------------------------------------------------------------------------- fixtures

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """One uninterrupted single-process run, shared by the comparisons."""
    out = tmp_path_factory.mktemp("single")
    run_tiny_study(out)
    return out


# ----------------------------------------------------------------------------------------------- tests


def test_protocol_end_to_end(reference_run: Path) -> None:
    tables = _tables(reference_run)
    x, labels = synthetic_pool()
    pool = tables["pool"]["indices"]
    assert pool == list(range(len(x) - 1)), "the misclassified image must be left out, all others kept"
    # Table 1: one row per model, n = pool x rounds pairs, every column a finite mean and std.
    assert [r["model"] for r in tables["table1"]] == ["tiny0", "tiny1"]
    for row in tables["table1"]:
        assert row["n"] == len(pool) * ROUNDS
        for f in ("rms_l2", "linf", "ssim", "final_confidence"):
            assert row[f"{f}_n"] == row["n"] and row[f"{f}_std"] >= 0
        assert 0 < row["rms_l2_mean"] < 1 and row["final_confidence_mean"] > 0.5
        assert "lpips_mean" not in row  # no weights given: the column is left out, not faked
    # Table 2: one row per model, n = sources, fractions in [0, 1] and non-decreasing in delta.
    for row in tables["table2"]:
        assert row["n"] == len(pool)
        fr = [row[f"fraction@{d}_mean"] for d in ("0", "0.1", "0.2", "0.3")]
        assert all(0 <= f <= 1 for f in fr) and fr == sorted(fr)
    recs = _records(reference_run)
    lst = [r for r in recs if r["kind"] == "lst"]
    assert len(lst) == 2 * len(pool) * ROUNDS
    for r in lst:
        assert r["source_label"] == int(labels[r["source"]]) and r["target_label"] == int(labels[r["target"]])
        assert r["source_label"] != r["target_label"], "a derangement paired a source with its own class"
        assert r["seed"] == st.pair_seed(3, r["round"], r["source"])
        assert r["config"]["iterations"] == ITERATIONS
    for model in ("tiny0", "tiny1"):
        for rnd in range(ROUNDS):
            row = [r for r in lst if r["model"] == model and r["round"] == rnd]
            assert sorted(r["source"] for r in row) == pool and sorted(r["target"] for r in row) == pool
    # the same pairs for every model
    pairs = {m: sorted((r["round"], r["source"], r["target"]) for r in lst if r["model"] == m) for m in ("tiny0",
                                                                                                          "tiny1")}
    assert pairs["tiny0"] == pairs["tiny1"]
    # the stored LST outputs are the images the record's distances were measured on
    r = lst[4]
    from safetensors.torch import load_file

    img = load_file(str(reference_run / r["array"]))["images"][r["array_index"]]
    assert torch.isclose(st_rms(img, x[r["target"]]), torch.tensor(r["rms_l2"]), atol=1e-6)
    html = (reference_run / "report.html").read_text()
    assert html.count("<table>") == 2 and "data:image/png;base64," in html and "tiny1" in html
    assert (reference_run / "table1.csv").read_text().splitlines()[0].startswith("model,n,")


def st_rms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from blindspots.metrics import rms_l2

    return rms_l2(a[None], b[None])[0]


def test_rerun_skips_finished_work_and_rejects_other_settings(reference_run: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference_run, out)
    before = sum(p.stat().st_size for p in out.glob("records*.jsonl"))
    t = run_tiny_study(out, report=False)
    assert sum(p.stat().st_size for p in out.glob("records*.jsonl")) == before  # nothing recomputed
    assert t["table1"] == _tables(reference_run)["table1"]
    from experiments.tables import run_study

    x, y = synthetic_pool()
    with pytest.raises(RunChanged, match="settings.config.iterations 10 -> 11"):
        run_study([("tiny0", tiny_model(0)), ("tiny1", tiny_model(1))], x, y, out,
                  config=LSTConfig.paper(iterations=ITERATIONS + 1),
                  protocol=st.ProtocolConfig(rounds=ROUNDS, seed=3, pairs_per_batch=PAIRS_PER_BATCH))
    with pytest.raises(RunChanged, match=r"model weights \(tiny1\)"):  # same names, other weights
        run_study([("tiny0", tiny_model(0)), ("tiny1", tiny_model(2))], x, y, out,
                  config=LSTConfig.paper(iterations=ITERATIONS),
                  protocol=st.ProtocolConfig(rounds=ROUNDS, seed=3, pairs_per_batch=PAIRS_PER_BATCH))


def test_kill_and_resume_equals_uninterrupted(reference_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, __file__, str(out), "--slow"], env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    try:
        while time.time() < deadline and proc.poll() is None:
            path = out / "records.jsonl"
            if path.exists() and path.read_text().count("\n") >= 2 * PAIRS_PER_BATCH:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = (out / "records.jsonl").read_text().count("\n")
    assert 0 < partial < len(_records(reference_run)) and not (out / "tables.json").exists()
    with open(out / "records.jsonl", "a") as fh:  # a torn line, as if killed mid-write
        fh.write('{"key": "lst|tiny0|0|0|1", "rms_l2": 0.')
    run_tiny_study(out, report=False)
    assert _tables(out)["table1"] == _tables(reference_run)["table1"]
    assert _tables(out)["table2"] == _tables(reference_run)["table2"]
    assert _records(out) == _records(reference_run)


def test_distributed_two_processes_equal_single(reference_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__,
           str(out)]
    res = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in out.glob("records*.jsonl")) == ["records-rank0-of2.jsonl",
                                                                   "records-rank1-of2.jsonl"]
    assert all(p.stat().st_size > 0 for p in out.glob("records*.jsonl"))  # both ranks did work
    assert _tables(out)["table1"] == _tables(reference_run)["table1"]
    assert _tables(out)["table2"] == _tables(reference_run)["table2"]
    assert _records(out) == _records(reference_run)


def test_one_process_group_equals_single(reference_run: Path, tmp_path: Path) -> None:
    # a group of one (torchrun, one process, --backend given) runs every collective; test_cuda.py does this with nccl
    out = tmp_path / "group1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", __file__,
           str(out), "--backend", "gloo"]
    res = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "process group: gloo" in res.stdout  # the collectives ran
    assert _tables(out)["table1"] == _tables(reference_run)["table1"]
    assert _records(out) == _records(reference_run)


def test_pair_results_do_not_depend_on_batching(tmp_path: Path) -> None:
    x, y = synthetic_pool()
    pool = torch.arange(9)
    from blindspots import derangement_pairs

    targets = derangement_pairs(y[pool], 2, seed=1)
    cfg = LSTConfig.paper(iterations=6)
    recs = {}
    for ppb in (2, 8):
        store = RunStore(tmp_path / f"b{ppb}", "test")
        recs[ppb] = st.run_pair_protocol(tiny_model(0), "m", x, y, pool, targets, store, config=cfg,
                                         protocol=st.ProtocolConfig(rounds=2, seed=5, pairs_per_batch=ppb), log=None)
    a = {r["key"]: r for r in recs[2]}
    b = {r["key"]: r for r in recs[8]}
    assert a.keys() == b.keys() and len(a) == 18
    for k in a:
        for f in ("rms_l2", "linf", "final_confidence", "seed", "target"):
            assert a[k][f] == pytest.approx(b[k][f], rel=1e-5, abs=1e-6), (k, f)


def test_store_torn_lines_and_summaries(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "test", settings={"a": 1})
    store.append([{"key": "x|1", "kind": "k", "v": 1.0, "g": "a"}, {"key": "x|2", "kind": "k", "v": 3.0, "g": "a"},
                  {"key": "x|10", "kind": "k", "v": 5.0, "g": "b"}])
    with open(store.records_path, "a") as fh:
        fh.write('{"key": "x|3", "kind": "k", "v": 7')
    store.close()
    again = RunStore(tmp_path, "test", settings={"a": 1})
    assert [r["key"] for r in again.records()] == ["x|1", "x|2", "x|10"]  # numeric key order, torn line dropped
    rows = st.summarize(again.records(), ["g"], ["v", "absent"])
    assert rows[0] == {"g": "a", "n": 2, "v_mean": 2.0, "v_std": 1.0, "v_median": 2.0, "v_n": 2}
    assert rows[1]["v_mean"] == 5.0 and rows[1]["v_std"] == 0.0 and "absent_mean" not in rows[1]
    shown = st.display_rows(rows, ["g"], {"v": "V", "absent": "never"})
    assert list(shown[0]) == ["g", "n", "V"] and shown[0]["V"] == "2 ± 1"
    again.close()
    with pytest.raises(RunChanged, match="settings.a 1 -> 2"):
        RunStore(tmp_path, "test", settings={"a": 2})
    # pair seeds: a pure function of (seed, round, source), distinct across pairs
    seeds = {st.pair_seed(0, r, s) for r in range(5) for s in range(50)}
    assert len(seeds) == 250 and st.pair_seed(0, 1, 2) == st.pair_seed(0, 1, 2) != st.pair_seed(1, 1, 2)


def run_in_subprocess(argv: list[str] | None = None) -> None:
    """The subprocess side of the kill and distributed tests (and of the NCCL test in test_cuda.py)."""
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--slow", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default=None)
    args = p.parse_args(argv)
    info = st.init_distributed(args.device, args.backend)
    if torch.distributed.is_initialized():
        print(f"process group: {torch.distributed.get_backend()}", flush=True)
    try:
        run_tiny_study(args.out, info, slow=0.05 if args.slow else 0.0)
    finally:
        st.finish_distributed(info)


if __name__ == "__main__":
    run_in_subprocess()
