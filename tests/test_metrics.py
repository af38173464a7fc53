"""Distances: closed forms for RMS-l2 / l-inf, SSIM from scikit-image, LPIPS from the lpips package."""

from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from blindspots import metrics


def test_rms_l2_and_linf_closed_form():
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[0] += 0.5          # every value differs by 0.5: RMS 0.5
    b[1, 0, 0, 0] = 1.0  # one value differs by 1 out of 48
    assert torch.allclose(metrics.rms_l2(a, b), torch.tensor([0.5, (1 / 48) ** 0.5]))
    assert torch.allclose(metrics.linf(a, b), torch.tensor([0.5, 1.0]))
    assert torch.allclose(metrics.l2(a, b), torch.tensor([0.5 * 48 ** 0.5, 1.0]))
    with pytest.raises(ValueError, match="shapes"):
        metrics.rms_l2(a, b[:, :, :2])


def test_ssim_identity_and_order():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=gen)
    noisy = (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    noisier = (x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    assert torch.allclose(metrics.ssim(x, x), torch.ones(1))
    assert metrics.ssim(x, noisy) > metrics.ssim(x, noisier)
    assert "ssim" not in metrics.distances(x[..., :5, :5], x[..., :5, :5])  # below SSIM's window: left out


def test_lpips_needs_local_alexnet_weights(tmp_path):
    pytest.importorskip("lpips")
    a = torch.rand(2, 3, 64, 64)
    with pytest.raises(ValueError, match="weights=PATH"):
        metrics.lpips(a, a)
    alexnet = torchvision.models.alexnet(weights=None)  # stands in for the ImageNet checkpoint
    torch.save(alexnet.state_dict(), tmp_path / "alexnet.pth")
    net = metrics.load_lpips(tmp_path / "alexnet.pth")
    # every backbone tensor comes from the file (a random init would not match)
    assert torch.equal(net.net.slice1[0].weight, alexnet.features[0].weight)
    assert torch.equal(net.net.slice5._modules["10"].bias, alexnet.features[10].bias)
    b = (a + 0.2 * torch.randn_like(a)).clamp(0, 1)
    d = metrics.lpips(a, b, tmp_path / "alexnet.pth")
    assert d.shape == (2,) and bool((d > 0).all())
    assert torch.allclose(metrics.lpips(a, a, tmp_path / "alexnet.pth"), torch.zeros(2), atol=1e-6)
    assert torch.allclose(metrics.lpips(b, a, tmp_path / "alexnet.pth"), d, atol=1e-6)
    # the same backbone saved in lpips' own layout gives the same distances
    save_file({k: v.clone() for k, v in net.state_dict().items() if k.startswith("net.")}, tmp_path / "lpips.safetensors")
    assert torch.allclose(metrics.lpips(a, b, tmp_path / "lpips.safetensors"), d, atol=1e-6)
    save_file({"features.0.weight": torch.zeros(3)}, tmp_path / "wrong.safetensors")
    with pytest.raises(ValueError, match="not an AlexNet checkpoint"):
        metrics.lpips(a, b, tmp_path / "wrong.safetensors")
