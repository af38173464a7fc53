"""The engine on CUDA (skipped without a GPU): float32 equals CPU, bfloat16 holds the threshold and orthogonality,
compile and the automatic batch size run, the attacks' bfloat16 and compiled paths, and a one-process NCCL study
equals the gloo one. `python -m benchmarks.gpu_check` runs these first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import attacks
from blindspots import LSTConfig, level_set_traversal
from blindspots.store import RunStore

from conftest import TinyCNN
from test_engine_trust import LinearLayer, _images
from test_studies import ROOT, _env

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _cnn_pair(n=4, size=32):
    gen = torch.Generator().manual_seed(0)
    return torch.rand((n, 3, size, size), generator=gen), torch.rand((n, 3, size, size), generator=gen)


def test_float32_on_cuda_equals_cpu():
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    xs, xt = _cnn_pair()
    cfg = LSTConfig(step_size=0.1, iterations=10, threshold=0.2)
    cpu = level_set_traversal(TinyCNN(), xs, xt, config=cfg, seed=0)
    gpu = level_set_traversal(TinyCNN().cuda(), xs, xt, config=cfg, seed=0)
    torch.testing.assert_close(gpu.images, cpu.images, atol=1e-4, rtol=0)
    torch.testing.assert_close(gpu.final_confidence, cpu.final_confidence, atol=1e-4, rtol=0)
    assert torch.equal(gpu.acceptance_rate, cpu.acceptance_rate)


def test_bfloat16_on_cuda_holds_threshold_and_orthogonality():
    model = LinearLayer().cuda()
    xs, xt = _images(3)
    cfg = LSTConfig(step_size=0.2, iterations=6, adv_eps=0.0, amp=True, log_every=1, log_snapshots=True)
    res = level_set_traversal(model, xs, xt, config=cfg, seed=0)
    normal = (model.fc.weight[0] - model.fc.weight[1]).detach().cpu()
    steps = (res.trajectory.snapshots[1:] - res.trajectory.snapshots[:-1]).flatten(2)
    assert bool((steps.norm(dim=2) > 1e-3).all())
    assert float(((steps @ normal).abs() / (steps.norm(dim=2) * normal.norm())).max()) < 1e-2
    torch.testing.assert_close(res.final_confidence, res.initial_confidence, atol=1e-4, rtol=0)
    sharp = TinyCNN().cuda()
    with torch.no_grad():
        sharp.head.weight.mul_(100)
    xs, xt = _cnn_pair()
    res = level_set_traversal(sharp, xs, xt, config=LSTConfig.adaptive(threshold=0.02, amp=True, log_every=1), seed=0)
    moved = res.trajectory.accepted > 0
    assert bool(((res.initial_confidence[None] - res.trajectory.source_confidence)[moved] < 0.02).all())


def test_compile_channels_last_and_auto_batch_match_eager():
    xs, xt = _cnn_pair(n=6)
    cfg = LSTConfig(step_size=0.1, iterations=5, threshold=0.5)
    eager = level_set_traversal(TinyCNN().cuda(), xs, xt, config=cfg, seed=0)
    fast = level_set_traversal(TinyCNN().cuda(), xs, xt, seed=0, config=LSTConfig(
        **{**cfg.to_dict(), "compile": True, "channels_last": True, "batch_size": "auto"}))
    torch.testing.assert_close(fast.images, eager.images, atol=1e-3, rtol=0)


def test_attacks_in_bfloat16_and_compiled_on_cuda():
    model = TinyCNN().cuda().eval()
    xs, _ = _cnn_pair(n=6)
    xs = xs.cuda()
    eager = attacks.PGD(model, 4 / 255, steps=5, seed=0, early_stop=False)(xs)
    compiled = attacks.PGD(model, 4 / 255, steps=5, seed=0, early_stop=False, compile=True)(xs)
    torch.testing.assert_close(compiled.images, eager.images, atol=1e-3, rtol=0)
    half = attacks.PGD(model, 4 / 255, steps=5, seed=0, early_stop=False, amp=True)(xs)
    assert half.images.dtype == torch.float32 and bool((half.linf <= 4 / 255 * (1 + 1e-5)).all())
    assert float((half.success == eager.success).float().mean()) >= 0.8


def test_one_process_nccl_study_equals_gloo(tmp_path: Path) -> None:
    runs = {}
    for backend in ("gloo", "nccl"):
        out = tmp_path / backend
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
               str(ROOT / "tests" / "test_studies.py"), str(out), "--device", "cuda", "--backend", backend]
        res = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        assert f"process group: {backend}" in res.stdout
        runs[backend] = (json.loads((out / "tables.json").read_text()), RunStore.read_records(out))
    assert runs["nccl"] == runs["gloo"]
