"""Model side of `detectors`: backbone weights (Zoobot / ImageNet layouts), presets and class-agnostic NMS,
training (a step lowers the loss, exact resume), and the Classifier wrappers under Level Set Traversal."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torchvision.ops import box_iou

import blindspots
from blindspots.store import RunChanged
from detectors import (as_classifier, build_backbone, build_detector, clumpy_labels, detect, fit_head, load_checkpoint,
                       train)
from detectors.frcnn import agnostic_nms
from detectors.simulate import SimConfig, simulate
from detectors.train import flip_sample, lr_factor

timm = pytest.importorskip("timm")


def _randomise_bn(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BN statistics, so that a body that ignored them would not match."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def _save(state: dict, path) -> None:
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


@pytest.fixture(scope="module")
def zoobot_resnet50():
    """A timm resnet50 in Zoobot's layout (num_classes=0), eval mode, with random BN statistics."""
    torch.manual_seed(0)
    model = timm.create_model("resnet50", num_classes=0).eval()
    _randomise_bn(model, 0)
    return model


@pytest.fixture(scope="module")
def tiny_data():
    return simulate(4, SimConfig(image_size=64), seed=3)


def _tiny_detector(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    settings = dict(min_size=64, max_size=64, rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=40,
                    rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=40, rpn_batch_size_per_image=32,
                    box_batch_size_per_image=32, representation_size=64, fpn_channels=32)
    settings.update(overrides)
    return build_detector("efficientnet_lite0", preset="cpu", **settings)


# --------------------------------------------------------------------------------------------------- weights


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_zoobot_resnet50_file_loads_into_the_frozen_torchvision_body(zoobot_resnet50, tmp_path, suffix):
    path = tmp_path / f"zoobot-resnet50{suffix}"
    _save(zoobot_resnet50.state_dict(), path)
    backbone = build_backbone("resnet50", weights="zoobot", weights_file=path)
    # nothing missing but the classifier head (torchvision's fc), nothing unexpected
    assert sorted(backbone.load_report["missing"]) == ["fc.bias", "fc.weight"]
    assert backbone.load_report["unexpected"] == []
    assert backbone.image_mean == [0.0, 0.0, 0.0] and backbone.image_std == [1.0, 1.0, 1.0]
    body = backbone.body
    assert type(body.bn1).__name__ == "FrozenBatchNorm2d"
    # the paper's setup: last 3 of (conv1, layer1, ..., layer4) trainable
    assert not body.conv1.weight.requires_grad and not any(p.requires_grad for p in body.layer1.parameters())
    assert all(p.requires_grad for p in body.layer2.parameters())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = zoobot_resnet50.forward_features(x)
        got = backbone.body(x)["3"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # the detector built on it feeds [0, 1] images to the Zoobot weights (no ImageNet mean/std)
    det = build_detector(backbone, preset="cpu")
    assert det.transform.image_mean == [0.0, 0.0, 0.0] and det.transform.image_std == [1.0, 1.0, 1.0]


def test_zoobot_convnext_nano_loads_into_the_timm_body(tmp_path):
    torch.manual_seed(1)
    ref = timm.create_model("convnext_nano", num_classes=0).eval()
    path = tmp_path / "zoobot-convnext_nano.safetensors"
    _save(ref.state_dict(), path)
    backbone = build_backbone("convnext_nano", weights=f"zoobot:{path}", trainable_layers=2)
    assert backbone.load_report == {"missing": [], "unexpected": []}
    assert backbone.image_mean == [0.0, 0.0, 0.0]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone.body(x)[-1], ref.forward_features(x), rtol=1e-4, atol=1e-4)
    trainable = {n.split(".")[0] for n, p in backbone.body.named_parameters() if p.requires_grad}
    assert trainable == {"stages_2", "stages_3"}
    # a fine-tuned checkpoint with a classifier head: the head (only) is reported as ignored
    tuned = timm.create_model("convnext_nano", num_classes=2)
    _save(tuned.state_dict(), tmp_path / "tuned.pth")
    rep = build_backbone("convnext_nano", weights="zoobot", weights_file=tmp_path / "tuned.pth").load_report
    assert rep["missing"] == [] and sorted(rep["unexpected"]) == ["head.fc.bias", "head.fc.weight"]


def test_mismatched_files_get_clear_errors(zoobot_resnet50, tmp_path):
    state = dict(zoobot_resnet50.state_dict())
    del state["layer4.2.conv3.weight"]
    state["extra.weight"] = torch.zeros(3)
    _save(state, tmp_path / "broken.safetensors")
    with pytest.raises(ValueError, match=r"missing keys \['layer4.2.conv3.weight'\].*unexpected keys \['extra.weight'"):
        build_backbone("resnet50", weights="zoobot", weights_file=tmp_path / "broken.safetensors")
    # a file of another architecture: the shape mismatch is named
    _save(timm.create_model("resnet18", num_classes=0).state_dict(), tmp_path / "r18.safetensors")
    with pytest.raises(ValueError, match=r"wrong shape.*layer1.0.conv1.weight"):
        build_backbone("timm:resnet50", weights="zoobot", weights_file=tmp_path / "r18.safetensors")
    with pytest.raises(ValueError, match="needs weights_file"):
        build_backbone("convnext_nano", weights="zoobot")
    with pytest.raises(ValueError, match="needs weights_file"):
        build_backbone("resnet50", weights="imagenet")


def test_imagenet_lite0_backbone_uses_the_package_weights():
    from blindspots.models import imagenet_lite0_state_dict

    backbone = build_backbone("imagenet-lite0")
    ref = imagenet_lite0_state_dict()
    assert sorted(backbone.load_report["unexpected"]) == ["classifier.bias", "classifier.weight"]
    assert backbone.load_report["missing"] == []
    torch.testing.assert_close(backbone.body.blocks_6[0].conv_pw.weight, ref["blocks.6.0.conv_pw.weight"])
    torch.testing.assert_close(backbone.body.bn1.running_var, ref["bn1.running_var"])
    assert backbone.image_mean == list(blindspots.models.IMAGENET_MEAN)
    assert type(backbone.body.bn1).__name__ == "FrozenBatchNormAct2d"  # pretrained: frozen BN as in the paper
    random_init = build_backbone("efficientnet_lite0")
    assert all(p.requires_grad for p in random_init.body.parameters())


# --------------------------------------------------------------------------------------------------- detector


def test_presets_and_class_agnostic_nms(tiny_data):
    det = build_detector("resnet18", preset="paper")
    assert (det.roi_heads.score_thresh, det.roi_heads.nms_thresh, det.agnostic_nms_iou) == (0.3, 0.2, 0.2)
    assert (det.preset.lr, det.preset.weight_decay, det.preset.hflip, det.preset.vflip) == (1e-4, 5e-5, True, True)
    assert det.transform.min_size == (800,) and det.roi_heads.box_predictor.cls_score.out_features == 3
    # two overlapping boxes of different classes: per-class NMS keeps both, the agnostic step keeps the best
    d = {"boxes": torch.tensor([[0.0, 0, 10, 10], [1.0, 1, 11, 11], [30.0, 30, 40, 40]]),
         "scores": torch.tensor([0.6, 0.9, 0.5]), "labels": torch.tensor([1, 2, 1])}
    kept = agnostic_nms(d, 0.2)
    assert kept["scores"].tolist() == pytest.approx([0.9, 0.5]) and kept["labels"].tolist() == [2, 1]
    # in the detector's own eval output, no two boxes overlap beyond 0.2, whatever their classes
    tiny = _tiny_detector(score_threshold=0.0, nms_iou=0.7)
    for out in detect(tiny, tiny_data.images):
        iou = box_iou(out["boxes"], out["boxes"]).fill_diagonal_(0)
        assert len(out["boxes"]) > 1 and float(iou.max()) <= 0.2 + 1e-6


def test_flip_moves_boxes_with_the_pixels():
    image = torch.zeros(3, 20, 30)
    image[:, 2:6, 3:8] = 1.0  # a block at x 3..8, y 2..6
    target = {"boxes": torch.tensor([[3.0, 2.0, 8.0, 6.0]]), "labels": torch.tensor([1])}
    for h, v in [(True, False), (False, True), (True, True)]:
        img, tgt = flip_sample(image, target, h, v)
        x0, y0, x1, y1 = tgt["boxes"][0].int().tolist()
        assert img[:, y0:y1, x0:x1].min() == 1.0 and img.sum() == image.sum()
    assert target["boxes"].tolist() == [[3.0, 2.0, 8.0, 6.0]]  # input untouched


def _loss(det, data, seed=7):
    det.train()
    torch.manual_seed(seed)  # the same anchor / proposal sampling before and after
    with torch.no_grad():
        return float(sum(det(list(data.images), data.targets).values()))


def test_one_training_step_lowers_the_loss(tiny_data, tmp_path):
    det = _tiny_detector()
    before = _loss(det, tiny_data)
    result = train(det, tiny_data, 1, tmp_path, batch_size=4, lr=1e-3, warmup_steps=0, hflip=False, vflip=False,
                   progress=False)
    assert result.step == 1 and result.completed
    after = _loss(det, tiny_data)
    assert after < before - 0.01, (before, after)


def test_lr_schedule_warms_up_then_decays_by_cosine():
    assert [lr_factor(s, 10, "constant") for s in (0, 5, 9)] == [1.0, 1.0, 1.0]
    assert [lr_factor(s, 10, "constant", 4) for s in (0, 1, 3, 9)] == [0.25, 0.5, 1.0, 1.0]
    cosine = [lr_factor(s, 10, "cosine") for s in range(11)]
    assert cosine[0] == 1.0 and cosine[5] == pytest.approx(0.5) and cosine[10] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in zip(cosine, cosine[1:]))
    assert lr_factor(1, 10, "cosine", 4) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi / 10)))
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor(0, 10, "linear")


def test_training_follows_the_schedule(tiny_data, tmp_path):
    """The optimiser's rate at each step is the base rate times `lr_factor` (recorded by a global step hook)."""
    det = _tiny_detector()
    seen = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, *_: seen.append(opt.param_groups[0]["lr"]))
    try:
        train(det, tiny_data, 2, tmp_path, batch_size=2, lr=1e-3, lr_schedule="cosine", warmup_steps=2,
              progress=False)
    finally:
        handle.remove()
    assert seen == pytest.approx([1e-3 * lr_factor(s, 4, "cosine", 2) for s in range(4)])
    with pytest.raises(ValueError, match="warmup_steps"):
        train(det, tiny_data, 1, tmp_path / "bad", warmup_steps=-1, progress=False)


def test_resume_restores_optimiser_state_epoch_and_continues_exactly(tiny_data, tmp_path):
    data = [(tiny_data.images[i], tiny_data.targets[i]) for i in range(2)]  # 2 steps of 1 image per epoch
    kw = dict(batch_size=1, lr=1e-3, lr_schedule="cosine", warmup_steps=2, progress=False, seed=5)
    straight = _tiny_detector(seed=2)
    train(straight, data, 2, tmp_path / "straight", **kw)
    # out of time budget after its first step (mid-epoch), then resumed with a fresh detector
    first = _tiny_detector(seed=2)
    r1 = train(first, data, 2, tmp_path / "resumed", max_seconds=1e-9, **kw)
    assert (r1.step, r1.completed) == (1, False)
    info = json.loads((tmp_path / "resumed" / "checkpoint.json").read_text())
    assert (info["step"], info["epoch"]) == (1, 0)
    # a detector built otherwise (other initial weights: another backbone file, another seed) is refused: its
    # checkpoint belongs to another run
    with pytest.raises(RunChanged, match="initial_weights"):
        train(_tiny_detector(seed=99), data, 2, tmp_path / "resumed", **kw)
    resumed = _tiny_detector(seed=2)  # its initial weights; the checkpoint must overwrite them
    torch.manual_seed(123)  # resuming must restore the RNG, whatever the state now
    assert train(resumed, data, 2, tmp_path / "resumed", max_seconds=1e-9, **kw).step == 1  # budget spent: no step
    r2 = train(resumed, data, 2, tmp_path / "resumed", **kw)
    assert (r2.step, r2.epoch, r2.completed) == (4, 2, True) and len(r2.history) == 2
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    # the optimiser state saved with the last checkpoint: Adam at step 4, and it loads into a new optimiser
    opt = torch.optim.Adam([p for p in resumed.parameters() if p.requires_grad], lr=1e-3)
    info = load_checkpoint(tmp_path / "resumed", resumed, opt)
    assert info["epoch"] == 2 and info["step"] == 4
    assert all(float(s["step"]) == 4 for s in opt.state_dict()["state"].values())
    with pytest.raises(RunChanged, match="batch_size 1 -> 2"):
        train(resumed, data, 3, tmp_path / "resumed", batch_size=2, progress=False)
    with pytest.raises(ValueError, match="schedule spans 2 epochs"):  # the cosine was laid out over 2 epochs
        train(resumed, data, 3, tmp_path / "resumed", **kw)


# --------------------------------------------------------------------------------------------------- classifier


def test_detector_classifier_runs_lst_and_holds_its_threshold(tiny_data):
    det = _tiny_detector()
    clf = as_classifier(det, region=(8, 8, 56, 56))
    assert isinstance(clf, blindspots.Classifier) and clf.num_classes == 2
    x = tiny_data.images[:2].clone().requires_grad_(True)
    logits = clf(x)
    probs = logits.softmax(-1)
    assert torch.all((probs[:, 1] > 0) & (probs[:, 1] < 1))
    (g,) = torch.autograd.grad(logits[:, 1].sum(), x)
    assert float(g.abs().sum()) > 0  # differentiable in the image
    sharp = as_classifier(det, region=(8, 8, 56, 56), temperature=1e-3)(tiny_data.images[:2]).softmax(-1)[:, 1]
    flat = as_classifier(det, region=(8, 8, 56, 56), temperature=10.0)(tiny_data.images[:2]).softmax(-1)[:, 1]
    assert torch.all(sharp >= flat - 1e-6)  # soft maximum: the sharper, the closer to the top score

    config = blindspots.LSTConfig(iterations=3, step_size=0.2, threshold=0.1)
    res = blindspots.level_set_traversal(clf, tiny_data.images[:2], tiny_data.images[2:4],
                                         labels=torch.tensor([1, 1]), config=config, seed=0)
    assert torch.all(res.final_confidence >= res.initial_confidence - config.threshold)
    with torch.no_grad():
        again = clf(res.images).softmax(-1)[:, 1]
    torch.testing.assert_close(again, res.final_confidence, rtol=1e-4, atol=1e-4)
    assert torch.all(res.rms_l2 < res.start_rms_l2)  # it walked towards the targets


def test_backbone_classifier_is_a_clumpy_head_with_the_right_normalisation(zoobot_resnet50, tmp_path):
    backbone = build_backbone("efficientnet_lite0")
    clf = as_classifier(backbone)
    assert clf.class_names == ["not clumpy", "clumpy"] and clf.mean is not None
    x = torch.rand(2, 3, 64, 64)
    assert clf(x).shape == (2, 2)
    res = blindspots.level_set_traversal(clf, x, torch.rand(2, 3, 64, 64), labels=torch.tensor([0, 1]),
                                         config=blindspots.LSTConfig(iterations=2), seed=0)
    assert torch.all(res.final_confidence >= res.initial_confidence - 0.2)
    with pytest.raises(TypeError, match="detector .* or a backbone"):
        as_classifier(torch.nn.Linear(2, 2))


def test_fit_head_is_a_linear_probe_that_leaves_the_backbone_alone():
    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0")
    clf = as_classifier(backbone)
    gen = torch.Generator().manual_seed(0)
    # two classes a linear probe can separate: faint vs bright frames with noise
    labels = torch.arange(16) % 2
    images = (0.25 + 0.5 * labels.view(-1, 1, 1, 1) + 0.05 * torch.randn(16, 3, 32, 32, generator=gen)).clamp(0, 1)
    body = {k: v.clone() for k, v in clf.model.body.state_dict().items()}
    history = fit_head(clf, images, labels, epochs=60, lr=5e-2, batch_size=8, progress=False)
    assert len(history) == 60 and history[-1] < 0.5 * history[0]
    assert torch.equal(clf.predict(images)[0], labels)
    for k, v in clf.model.body.state_dict().items():
        torch.testing.assert_close(v, body[k], rtol=0, atol=0, msg=k)
    with pytest.raises(ValueError, match="labels"):
        fit_head(clf, images, labels + 2, epochs=1, progress=False)
    with pytest.raises(TypeError, match="as_classifier\\(backbone\\)"):
        fit_head(as_classifier(_tiny_detector()), images, labels, epochs=1, progress=False)


def test_clumpy_labels_follow_the_brightest_clump():
    targets = [{"labels": torch.tensor([1, 1]), "flux_fraction": torch.tensor([0.01, 0.05])},
               {"labels": torch.tensor([2, 1]), "flux_fraction": torch.tensor([0.2, 0.02])},  # a star does not count
               {"labels": torch.zeros(0, dtype=torch.int64), "flux_fraction": torch.zeros(0)}]
    assert clumpy_labels(targets).tolist() == [1, 0, 0]
    assert clumpy_labels(targets, min_flux=0.015).tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="flux_fraction"):
        clumpy_labels([{"labels": torch.tensor([1])}])


# --------------------------------------------------------------------------------------------------- CLI run


def test_detect_run_chooses_its_threshold_on_validation_and_resumes(tmp_path, galaxies_dir):
    from detectors.cli import DetectRun, format_summary, run_detection

    cfg = DetectRun(out=str(tmp_path), weights=None, image_size=64, n_train=4, n_val=6, n_test=4, epochs=1,
                    batch_size=2, n_draw=1, progress=False, hosts=(str(galaxies_dir / "sdss"),), injections=2)
    s = run_detection(cfg)
    val = s["validation"]
    assert val["n_images"] == 6 and val["threshold"][0] == s["at_preset_threshold"]["score_threshold"] == 0.3
    f1 = [-1.0 if v is None else v for v in val["f1"]]
    assert s["score_threshold"] == min(t for t, v in zip(val["threshold"], f1) if v == max(f1))
    assert s["n_pred"] <= s["at_preset_threshold"]["n_pred"]  # a threshold at least the preset's keeps fewer
    assert json.loads((tmp_path / "metrics.json").read_text())["score_threshold"] == s["score_threshold"]
    assert (tmp_path / "detections_0.png").is_file() and "validation images" in format_summary(s)
    real = s["real_hosts"]  # the 3 SDSS cutouts, each with clumps injected twice
    assert (real["n_hosts"], real["n_images"]) == (3, 6) and sum(real["curve"]["n_true"]) > 0
    assert "real hosts" in format_summary(s)
    again = run_detection(cfg)  # resumes: the finished training is not repeated
    assert again["train"]["steps"] == s["train"]["steps"] == 2 and again["train"]["seconds"] == s["train"]["seconds"]
