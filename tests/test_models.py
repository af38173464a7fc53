"""Model conventions and weight loading on files written by the tests (nothing is downloaded)."""

from __future__ import annotations

import pickle

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

import blindspots as bs
from blindspots.data import demo_photos
from blindspots.models import Classifier, load_classifier, load_state_dict_file, probing

from conftest import TinyCNN


def test_classifier_normalises_inside():
    seen = {}

    class Spy(nn.Module):
        def forward(self, x):
            seen["x"] = x
            return x.flatten(1)[:, :2]

    clf = Classifier(Spy(), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    clf(torch.full((1, 3, 2, 2), 0.75))
    assert torch.allclose(seen["x"], torch.ones(1, 3, 2, 2))


def test_classifier_output_selection_and_errors():
    class DictModel(nn.Module):
        def forward(self, x):
            return {"logits": x.flatten(1)[:, :3], "features": x}

    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(TypeError, match="dict with keys.*output="):
        Classifier(DictModel())(x)
    assert Classifier(DictModel(), output="logits")(x).shape == (2, 3)
    assert Classifier(DictModel(), output=lambda o: o["logits"] * 2)(x).shape == (2, 3)
    with pytest.raises(ValueError, match="does not select"):
        Classifier(DictModel(), output="nope")(x)

    class Flat(nn.Module):
        def forward(self, x):
            return x.sum()

    with pytest.raises(ValueError, match=r"logits of shape \(2, C\)"):
        Classifier(Flat())(x)
    with pytest.raises(TypeError, match="nn.Module"):
        Classifier(lambda x: x)
    with pytest.raises(ValueError, match="both mean and std"):
        Classifier(TinyCNN(), mean=(0.5,))


def test_probing_restores_modes_and_flags():
    model = TinyCNN().train()
    model.head.weight.requires_grad_(False)
    with probing(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.training and model.features[1].training
    assert not model.head.weight.requires_grad and model.head.bias.requires_grad


def test_timm_weights_from_safetensors_and_pth(tmp_path):
    src = timm.create_model("resnet18", num_classes=10)
    state = src.state_dict()
    save_file(state, tmp_path / "w.safetensors")
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "w.pth")
    x = torch.rand(2, 3, 32, 32)
    ref = Classifier(src.eval(), mean=src.pretrained_cfg["mean"], std=src.pretrained_cfg["std"])(x)
    for name in ("w.safetensors", "w.pth"):
        clf = load_classifier("timm:resnet18", weights=tmp_path / name, num_classes=10)
        assert torch.allclose(clf(x), ref, atol=1e-5)
        assert not clf.training and clf.name == "timm:resnet18"


def test_torchvision_weights_and_mismatch(tmp_path):
    src = torchvision.models.get_model("resnet18", num_classes=5)
    torch.save(src.state_dict(), tmp_path / "tv.pth")
    clf = load_classifier("torchvision:resnet18", weights=tmp_path / "tv.pth", num_classes=5)
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(clf(x), Classifier(src.eval(), bs.models.IMAGENET_MEAN, bs.models.IMAGENET_STD)(x),
                          atol=1e-5)
    with pytest.raises(ValueError, match="wrong shape"):
        load_classifier("torchvision:resnet18", weights=tmp_path / "tv.pth", num_classes=7)
    partial = {k: v for k, v in src.state_dict().items() if not k.startswith("layer4")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing keys.*layer4"):
        load_classifier("torchvision:resnet18", weights=tmp_path / "partial.pth", num_classes=5)


def test_zoobot_encoder_file_loads(tmp_path):
    encoder = timm.create_model("convnext_nano", num_classes=0)  # the layout of hf_hub:mwalmsley/zoobot-encoder-*
    save_file(encoder.state_dict(), tmp_path / "model.safetensors")
    clf = load_classifier("zoobot:convnext_nano", weights=tmp_path / "model.safetensors", num_classes=2)
    assert clf.mean is None  # Zoobot takes [0, 1] images without mean/std
    x = torch.rand(2, 3, 64, 64)
    feats = encoder.eval()(x)
    assert torch.allclose(clf.model.encoder(x), feats, atol=1e-5)
    assert clf(x).shape == (2, 2)
    with pytest.raises(ValueError, match="needs weights=PATH"):
        load_classifier("zoobot:convnext_nano")
    wrong = timm.create_model("resnet18", num_classes=0)
    save_file(wrong.state_dict(), tmp_path / "wrong.safetensors")
    with pytest.raises(ValueError, match="do not match"):
        load_classifier("zoobot:convnext_nano", weights=tmp_path / "wrong.safetensors")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Evil()}, f)
    with pytest.raises(ValueError, match=r"holds pickled objects \(builtins.print\)"):
        load_state_dict_file(path)
    with pytest.raises(FileNotFoundError):
        load_state_dict_file(tmp_path / "missing.pth")


def test_specs_and_offline_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown model spec"):
        load_classifier("keras:resnet")
    with pytest.raises(ValueError, match="timm has no model"):
        load_classifier("timm:not_a_model_xyz")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="offline"):
        load_classifier("timm:resnet18", pretrained=True)
    wrapped = load_classifier(TinyCNN(), mean=(0.5,) * 3, std=(0.5,) * 3)
    assert isinstance(wrapped, Classifier) and wrapped.mean is not None


def test_imagenet_lite0_sees_a_cat():
    clf = load_classifier("imagenet-lite0")
    images, names = demo_photos(("chelsea", "coffee"))
    cls, conf = clf.predict(images)
    assert 281 <= int(cls[0]) <= 285, clf.class_names[int(cls[0])]  # the ImageNet domestic-cat classes
    assert clf.class_names[int(cls[1])] == "espresso"
    assert len(clf.class_names) == 1000
