"""The transfer study (experiments.transfer): the shared galaxy-proxy key, the seed-pooled interval's coverage for a
detection statistic, the weighted figures against detectors.evaluate, a known-answer toy (a backbone given the truth
beats one given noise), a cell killed mid-training resuming to the same weights, bad inputs refused before any
training, the paper's settings at tiny scale, and the report (Chromium) and docs blocks."""

from __future__ import annotations

import importlib
import json
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from blindspots import verdicts as vd
from blindspots.cli import run_command
from experiments import transfer as tr
from experiments.transfer import rules as rl
from experiments.transfer.config import TransferConfig

GALAXIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "galaxies"


def _hosts(tmp: Path, n: int = 2) -> Path:
    """A folder with `n` real cutouts copied from ../shared/data/galaxies (skips when that folder is absent)."""
    files = sorted(p for p in GALAXIES.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:n]
    if len(files) < n:
        pytest.skip(f"needs {n} real cutouts in {GALAXIES}")
    folder = tmp / "hosts"
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, folder / f.name)
    return folder


def _encoder_file(tmp: Path, arch: str = "efficientnet_lite0") -> Path:
    import timm

    from experiments.galaxy_proxy.encoder import save_encoder

    torch.manual_seed(5)
    return save_encoder(timm.create_model(arch, num_classes=0), tmp / f"{arch}-encoder.safetensors", {"arch": arch})


def _tiny(tmp: Path, **changes) -> TransferConfig:
    base = dict(backbones=("imagenet", "galaxy-proxy"), bodies=("trainable",), sizes=(2,), pool=2, seeds=(0, 1),
                steps=3, warmup=1, image_size=48, n_val=3, n_test=10, injections=1, lst_sources=4,
                lst_iterations=2, hosts=str(_hosts(tmp)), proxy_encoder=str(_encoder_file(tmp)))
    return TransferConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transfer")
    config = _tiny(tmp)
    result = tr.run_transfer(config, tmp / "out", device="cpu", threads=1, progress=False)
    return config, result, tmp


# ---------------------------------------------------------------------------------------------- the proxy


def test_the_proxy_key_of_the_zoobot_defaults_is_pinned_and_shared(monkeypatch):
    """Moving the proxy must not orphan the cached encoder: ZoobotConfig()'s proxy settings (and so its folder
    name) are exactly these, and the transfer study's default asks for the same proxy. The key holds the simulator's
    fingerprint, so a simulator that draws other images pretrains a new proxy instead of reusing the old one."""
    import hashlib
    import json

    import detectors.simulate as sim
    from experiments.galaxy_proxy import ProxyConfig, proxy_dir, proxy_settings
    from experiments.zoobot import ZoobotConfig

    expected = {"arch": "efficientnet_lite0", "size": 64, "sim_fov": 42.0, "pretrain": 8192, "pretrain_epochs": 6,
                "lr": 0.001, "batch_size": 32, "probe": 768, "pretrain_seed": 1000, "proxy_init": "imagenet",
                "probe_seed": 5000, "imagenet_weights": None, "simulator": sim.simulator_fingerprint()}
    assert proxy_settings(ZoobotConfig()) == expected
    key = hashlib.sha256(json.dumps(expected, sort_keys=True).encode()).hexdigest()[:10]
    assert proxy_dir(ZoobotConfig()).name == f"efficientnet_lite0-{key}"
    assert proxy_settings(TransferConfig().proxy) == expected and ProxyConfig.of(ZoobotConfig()) == ProxyConfig()
    assert proxy_dir(ZoobotConfig(seeds=(3, 4), sim_pairs=10)) == proxy_dir(ZoobotConfig())  # fine-tuning only
    before = proxy_dir(ZoobotConfig())
    stretch = sim.lupton_rgb
    monkeypatch.setattr(sim, "lupton_rgb", lambda flux, config: stretch(flux, config) * 0.999)  # a fainter stretch
    assert proxy_dir(ZoobotConfig()) != before
    assert ZoobotConfig().settings()["simulator"] != expected["simulator"]
    assert TransferConfig().settings()["simulator"] != expected["simulator"]
    monkeypatch.undo()
    assert proxy_dir(ZoobotConfig(pretrain_epochs=2)) != proxy_dir(ZoobotConfig())


# ---------------------------------------------------------------------------------------------- statistics


def test_seed_pooled_interval_covers_an_f1_difference_from_per_image_counts():
    """Coverage by simulation of the interval the 'better' rule rests on: G test images (1 + Poisson(2) clumps each,
    shared by every seed), S = 3 seeds per backbone whose recall varies from seed to seed (the random effect),
    Poisson false positives; the estimand is the mean over seeds of the population F1 difference, computed exactly
    by Gauss-Hermite quadrature over the seed effect."""
    rng = np.random.default_rng(0)
    G, S, tau, lam, m = 40, 3, 0.05, 1.0, 3.0
    recall = {"a": 0.75, "b": 0.65}

    def pop_f1(r):
        return 2 * r * m / (m + r * m + lam)

    x, wq = np.polynomial.hermite_e.hermegauss(40)
    truth = sum(float((wq * pop_f1(recall[k] + tau * x)).sum() / wq.sum()) * sgn for k, sgn in (("a", 1), ("b", -1)))
    hits, sims = 0, 200
    for _ in range(sims):
        n_true = 1 + rng.poisson(2.0, G)
        counts = {}
        for k in ("a", "b"):
            counts[k] = []
            for _s in range(S):
                r = recall[k] + tau * rng.standard_normal()
                tp = rng.binomial(n_true, r)
                fp = rng.poisson(lam, G)
                z = np.zeros(G)
                counts[k].append(rl.Counts(tp, n_true, tp + fp, z, z, z, z))

        def per_seed(w, counts=counts):
            return np.stack([rl.f1(a, w) - rl.f1(b, w) for a, b in zip(counts["a"], counts["b"])], 1)

        est = rl.seed_interval(per_seed, G, "image", resamples=199, seed=int(rng.integers(1 << 30)))
        hits += est.low <= truth <= est.high
    assert 0.89 <= hits / sims <= 0.995, hits / sims


def test_weighted_figures_agree_with_detectors_evaluate():
    """At unit weights the study's F1 / completeness / purity / AP50 are detectors.evaluate's; integer weights
    equal repeating the images (an independent route to the same number)."""
    from detectors.evaluate import STRICT, average_precision, detection_table, evaluate_detections, image_counts

    gen = torch.Generator().manual_seed(1)
    targets, preds = [], []
    for _ in range(12):
        k = int(torch.randint(0, 4, (1,), generator=gen))
        xy = torch.rand(k, 2, generator=gen) * 40
        targets.append({"boxes": torch.cat([xy, xy + 8], 1), "labels": torch.ones(k, dtype=torch.int64),
                        "flux_fraction": torch.rand(k, generator=gen) * 0.1})
        j = int(torch.randint(0, 5, (1,), generator=gen))
        jit = torch.cat([xy, torch.rand(max(0, j - k), 2, generator=gen) * 40])[:j] + torch.randn(j, 2, generator=gen)
        preds.append({"boxes": torch.cat([jit, jit + 8], 1), "scores": torch.rand(j, generator=gen),
                      "labels": torch.ones(j, dtype=torch.int64)})
    c = image_counts(preds, targets, STRICT, (0.0, 0.4), label=1, flux_cuts=(0.03,))
    counts = rl.Counts(c["tp"][1], c["n_true"], c["n_pred"][1], c["tp>=0.03"][1], c["n>=0.03"], c["tp"][1],
                       c["n_true"])
    ref = evaluate_detections(preds, targets, STRICT, score_threshold=0.4, label=1)
    one = np.ones((1, 12))
    assert rl.f1(counts, one)[0] == pytest.approx(ref.f1)
    assert rl.completeness(counts, one)[0] == pytest.approx(ref.completeness)
    assert rl.purity(counts, one)[0] == pytest.approx(ref.purity)
    dets = rl.Detections(**detection_table(preds, targets, STRICT, label=1))
    assert rl.weighted_ap(dets, one)[0] == pytest.approx(average_precision(preds, targets, STRICT, label=1))
    w = np.array([[2, 0, 1, 3, 1, 0, 1, 1, 2, 0, 1, 1]], dtype=float)
    rep = [i for i, k in enumerate(w[0].astype(int)) for _ in range(k)]
    assert rl.weighted_ap(dets, w)[0] == pytest.approx(average_precision([preds[i] for i in rep],
                                                                         [targets[i] for i in rep], STRICT, label=1))
    ref_w = evaluate_detections([preds[i] for i in rep], [targets[i] for i in rep], STRICT, score_threshold=0.4,
                                label=1)
    assert rl.f1(counts, w)[0] == pytest.approx(ref_w.f1)
    assert rl.auc(np.array([[0.2, 0.4, 0.4]]), [10, 100, 1000])[0] == pytest.approx(0.35)


class _ChannelBackbone(nn.Module):
    """A toy detector body that sees one input channel only (a frozen selector) through two small trainable convs:
    given channel 0 it sees the truth (the clumps drawn as squares), given channel 1 only noise."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.channel = channel
        self.c1 = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.out_channels = 16
        self.image_mean, self.image_std = [0.0] * 3, [1.0] * 3

    def forward(self, x):
        f0 = self.c1(x[:, self.channel:self.channel + 1])
        return OrderedDict([("0", f0), ("pool", self.c2(f0))])


def _toy_set(n: int, seed: int):
    from detectors.simulate import SimulatedBatch

    gen = torch.Generator().manual_seed(seed)
    images, targets = torch.zeros(n, 3, 32, 32), []
    for i in range(n):
        k = 1 + int(torch.randint(0, 2, (1,), generator=gen))
        xy = torch.randint(2, 22, (k, 2), generator=gen).float()
        boxes = torch.cat([xy, xy + 8], 1)
        for b in boxes.long():
            images[i, 0, b[1]:b[3], b[0]:b[2]] = 1.0
        images[i, 1] = torch.rand(32, 32, generator=gen)
        targets.append({"boxes": boxes, "labels": torch.ones(k, dtype=torch.int64),
                        "flux_fraction": torch.full((k,), 0.05)})
    return SimulatedBatch(images, targets, [], None, seed)


def test_a_backbone_given_the_truth_beats_one_given_noise(tmp_path):
    """Known answer through the study's chain (train -> detect -> per-image counts -> seed-pooled interval ->
    rule): the body that sees the truth channel detects clumps better than the body that sees noise, at every
    seed, and the 'better' rule says it holds."""
    from detectors.evaluate import MatchRule, image_counts
    from detectors.frcnn import build_detector, detect
    from detectors.train import train
    from experiments.transfer.cells import Repeated

    torch.set_num_threads(1)
    data, test = _toy_set(24, 0), _toy_set(24, 1)
    counts = {0: [], 1: []}
    for channel in (0, 1):
        for seed in (0, 1):
            torch.manual_seed(seed)
            det = build_detector(_ChannelBackbone(channel), 2, "cpu", min_size=32, max_size=32,
                                 anchor_sizes=((8,), (16,)), rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
                                 rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_batch_size_per_image=32,
                                 rpn_batch_size_per_image=32, representation_size=32, warmup_steps=0, lr=1e-2,
                                 lr_schedule="constant", box_detections_per_img=10)
            train(det, Repeated(data, 24, 5 * 24), 1, tmp_path / f"c{channel}s{seed}", 8, seed=seed, progress=False)
            c = image_counts(detect(det, test.images, score_floor=0.0), test.targets, MatchRule(0.3), (0.3,))
            z = np.zeros(24)
            counts[channel].append(rl.Counts(c["tp"][0], c["n_true"], c["n_pred"][0], z, z, z, z))
    one = np.ones((1, 24))
    f1 = {ch: [float(rl.f1(c, one)[0]) for c in counts[ch]] for ch in (0, 1)}
    assert min(f1[0]) > max(np.nan_to_num(f1[1])) + 0.3, f1

    def per_seed(w):
        return np.stack([np.nan_to_num(rl.f1(a, w)) - np.nan_to_num(rl.f1(b, w))
                         for a, b in zip(counts[0], counts[1])], 1)

    est = rl.seed_interval(per_seed, 24, "image", resamples=499)
    assert vd.decide(est, rl.RULES["better_f1"]).outcome == vd.HOLDS


# ---------------------------------------------------------------------------------------------- the study


def test_a_cell_killed_mid_training_resumes_to_the_same_weights(tiny_run, tmp_path, monkeypatch):
    """A kill in the middle of a cell's training keeps its finished steps (checkpoint); the rerun resumes that
    cell and ends with the weights and figures of the uninterrupted run (the module's fixture)."""
    from safetensors.torch import load_file

    dtrain = importlib.import_module("detectors.train")

    config, result, _ = tiny_run
    calls = {"n": 0}
    real_step = dtrain._step

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * config.steps + 2:  # cell 3 (imagenet, n=2, seed 1), its second step
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(dtrain, "_step", step)
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        tr.run_transfer(config, out, device="cpu", threads=1, progress=False, report=False)
    killed = out / "train" / "imagenet-trainable-n2-s1"
    assert json.loads((killed / "checkpoint.json").read_text())["step"] == 1
    assert not (killed / "model.safetensors").exists()
    monkeypatch.setattr(dtrain, "_step", real_step)
    again = tr.run_transfer(config, out, device="cpu", threads=1, progress=False, report=False)
    a = load_file(str(killed / "model.safetensors"))
    b = load_file(str(result.out / "train" / "imagenet-trainable-n2-s1" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for x, y in zip(again.cells, result.cells):
        assert json.dumps(x["figures"]) == json.dumps(y["figures"]), (x, y)
    assert again.analysis["claims"]["galaxy-proxy"]["better"] == result.analysis["claims"]["galaxy-proxy"]["better"]


def test_the_tiny_run_has_every_cell_claim_and_report(tiny_run):
    config, result, _ = tiny_run
    assert [(c["backbone"], c["size"], c["seed"]) for c in result.cells] == [
        (b, n, s) for s in config.seeds for n in config.sizes for b in config.backbones]
    assert all(c["steps"] == config.steps and 0.05 <= c["threshold"] <= 0.95 for c in result.cells)
    claims = result.analysis["claims"]["galaxy-proxy"]
    assert set(claims["better"]) == {"trainable n=2"}
    cell = claims["better"]["trainable n=2"]["f1"]
    assert cell["outcome"] in vd.OUTCOMES and len(cell["seed_values"]) == 2
    assert set(result.verdicts["galaxy-proxy"]) == {"better", "less_data", "reaches", "more_blind_spots"}
    html = result.report.read_text()
    assert html.index("Verdicts") < html.index("Learning curves") < html.index("What to act on")
    assert html.count("data:image/png;base64,") >= 2 and "<script" not in html  # self-contained, figures inline
    tables = json.loads((result.out / "tables.json").read_text())
    assert tables["summary"]["seeds"] == [0, 1]
    from experiments.transfer.report import render_docs, render_table

    data = {"runs": {"blindspots transfer": {**tables["summary"], "threads": 1}}}
    text = render_docs(data)
    assert "Verdicts: galaxy-proxy" in text and "| backbone |" in text
    assert render_table(data).count("\n|") >= 3


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
def test_report_fits_a_1280_px_window_in_chromium(tiny_run, tmp_path):
    from conftest import measure_in_chromium

    _, result, _ = tiny_run
    page = tmp_path / "report.html"
    page.write_text(result.report.read_text())
    assert 0 < measure_in_chromium(page, "document.documentElement.scrollWidth") <= 1280  # no sideways scroll


@pytest.mark.parametrize("argv, words", [
    (["--sizes", "0,8"], "size 0 is not a positive integer"),
    (["--sizes", "8,500", "--pool", "128"], "larger than the simulated pool (128"),
    (["--seeds", "3"], "at least 2"),
    (["--zoobot-weights", "NOFILE"], "--zoobot-weights NOFILE: no such file"),
    (["--backbones", "imagenet,zoobot"], "zoobot needs zoobot_weights"),
    (["--hosts", "EMPTY"], "no usable galaxy image"),
    (["--hosts", "NOTES"], "no usable galaxy image"),
    (["--backbones", "imagenet", "--zoobot-weights", "FOREIGN"], "cannot be the efficientnet_lite0 body"),
    # issue 29's own cases on this surface
    (["--backbones", "resnet"], "--backbones 'resnet': choose distinct names"),
    (["--bodies", "vit"], "--bodies 'vit': choose distinct names"),
    (["--bodies", "frozen,frozen"], "--bodies 'frozen,frozen': choose distinct names"),
    (["--warmup", "-1"], "--warmup must be a non-negative integer, got -1"),
    (["--pool", "-5"], "--pool must be a positive integer, got -5"),
    (["--seeds", "1,1"], "--seeds must be distinct"),
    (["--seeds", "a,b"], "--seeds must be a comma list of integers"),
    (["--lr", "nan"], "--lr must be a number in (0, 1], got nan"),
    (["--iou", "1.5"], "--iou must be a number in (0, 1], got 1.5"),
    (["--sizes", "8,8"], "--sizes must be distinct"),
    (["--hosts", "NOTES/readme.txt"], "not a folder"),
])
def test_bad_input_is_one_line_before_any_training(argv, words, tmp_path, monkeypatch, capsys):
    dtrain = importlib.import_module("detectors.train")

    def forbidden(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(dtrain, "train", forbidden)
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "NOTES").mkdir()
    (tmp_path / "NOTES" / "readme.txt").write_text("no images here")
    if "FOREIGN" in argv:
        argv = [str(_encoder_file(tmp_path, "resnet18")) if a == "FOREIGN" else a for a in argv]
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code = run_command("transfer", tr, argv + ["--out", str(out), "--quiet", "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert not out.exists()


def test_the_paper_settings_run_at_tiny_scale_on_cpu(tmp_path):
    """--paper: torchvision ResNet-50 FPN with FrozenBatchNorm, the 'paper' preset (Adam 1e-4, constant), the
    detector's own resize; here at tiny scale (random init, 32-px images resized to 64, one step per cell)."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    from experiments.transfer.cli import add_arguments, config_from_args
    from experiments.transfer.cells import build_cell_detector

    p = __import__("argparse").ArgumentParser()
    add_arguments(p)
    assert config_from_args(p.parse_args(["--paper"])) == TransferConfig.paper()
    assert config_from_args(p.parse_args([])) == TransferConfig()
    paper = TransferConfig.paper()
    assert (paper.arch, paper.preset, paper.image_size, paper.resize, paper.sizes[0], paper.sizes[-1]) == (
        "resnet50", "paper", 200, 800, 200, 4800)
    config = TransferConfig.paper(backbones=("random",), bodies=("trainable",), sizes=(2,), pool=2, seeds=(0, 1),
                                  steps=1, image_size=32, resize=64, n_val=2, n_test=2, injections=1, lst_sources=2,
                                  lst_iterations=1, hosts=str(_hosts(tmp_path, 1)))
    det = build_cell_detector("random", "trainable", 0, config, None)
    assert det.backbone.arch == "torchvision:resnet50" and det.transform.min_size == (64,)
    assert det.preset.lr == 1e-4 and det.preset.lr_schedule == "constant"
    assert any(isinstance(m, FrozenBatchNorm2d) for m in det.backbone.modules()) is False  # random init: plain BN
    result = tr.run_transfer(config, tmp_path / "paper", device="cpu", threads=1, progress=False, report=False)
    assert len(result.cells) == 2 and all(c["steps"] == 1 for c in result.cells)
    assert result.verdicts == {}  # no ImageNet and no galaxy backbone: no claim to decide


def test_the_docs_python_example_uses_the_api_as_it_is():
    """docs/studies.md's transfer example compiles and names only TransferConfig fields and run_transfer
    arguments."""
    import ast
    import inspect

    from conftest import REPO

    text = (REPO / "docs" / "studies.md").read_text()
    section = text[text.index("## Transfer learning for clump detection"):]
    code = section[section.index("```python\n") + 10:]
    code = code[:code.index("```")]
    tree = ast.parse(code)
    calls = {n.func.id: n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert {k.arg for k in calls["TransferConfig"].keywords} <= set(TransferConfig.__dataclass_fields__)
    assert {k.arg for k in calls["run_transfer"].keywords} <= set(inspect.signature(tr.run_transfer).parameters)
    assert "verdicts" in {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}


def test_claim_three_needs_every_part():
    """Completeness AND purity >= 0.8: one part below decides 'does not hold', all above 'holds'."""
    from experiments.transfer.analysis import all_of

    assert all_of({"completeness": vd.HOLDS, "purity": vd.HOLDS})[0] == vd.HOLDS
    assert all_of({"completeness": vd.INCONCLUSIVE, "purity": vd.DOES_NOT_HOLD})[0] == vd.DOES_NOT_HOLD
    assert all_of({"completeness": vd.HOLDS, "purity": vd.INCONCLUSIVE}) == (vd.INCONCLUSIVE,
                                                                             "inconclusive: purity")
    assert all_of({"completeness": vd.HOLDS, "real": vd.UNDERPOWERED})[0] == vd.UNDERPOWERED


def test_hosts_too_small_for_the_image_size_are_refused_before_training(tmp_path, monkeypatch, capsys):
    """Issue 29 on this surface: two 8x8 PNGs would be enlarged 16x to the study's 128 px: refused (each named in a
    warning, then one error line), before any training; the same reader as `detect --hosts` and `zoobot --real`."""
    from PIL import Image

    dtrain = importlib.import_module("detectors.train")
    monkeypatch.setattr(dtrain, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("training started")))
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")).save(tiny / f"g{i}.png")
    out = tmp_path / "out"
    code = run_command("transfer", tr, ["--hosts", str(tiny), "--out", str(out), "--quiet", "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "no usable galaxy image" in err[-1] and "too small" in err[-1], err
    assert not out.exists()
