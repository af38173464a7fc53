"""Tests of the Zoobot vs ImageNet study (`experiments.zoobot`): the verdict rule on hand-made paired data, the
paired design (one network twice gives d = 0 exactly), real targets of another predicted class, the proxy encoder
file and its probe, the documented Zoobot command, the study end to end with two seeds (resume, refusal), and the
report in a real browser."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from blindspots import Classifier, LSTConfig, derangement_pairs
from blindspots import studies as st
from blindspots.cli import run_command
from blindspots.store import RunStore
from experiments import zoobot as zs
from experiments.zoobot import data as zd
from experiments.zoobot.backbones import linear_probe
from experiments.zoobot.paired import Comparison, compare, index_records, stalled

ARCH = "efficientnet_lite0"
TINY = ["--size", "32", "--train", "16", "--test", "16", "--pretrain", "16", "--pretrain-epochs", "1", "--probe", "12",
        "--epochs", "1", "--scratch-epochs", "1", "--batch-size", "8", "--iterations", "2", "--rounds", "2",
        "--sim-pairs", "4", "--min-accuracy", "0", "--threads", "1", "--quiet"]


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def _comp(a: str, category: str, seed: int, d) -> Comparison:
    return Comparison(a, "imagenet", seed, category, np.asarray(d, dtype=float))


def _hand_made(sim: float, real: float, seeds=(0, 1), spread: float = 0.05, n: int = 20) -> list[Comparison]:
    rng = np.random.default_rng(0)
    return [_comp("proxy", cat, s, centre + spread * rng.standard_normal(n))
            for s in seeds for cat, centre in (("sim", sim), ("real cross-class", real))]


def test_verdict_rule_on_hand_made_paired_data():
    outcome, sentence = zs.verdict(_hand_made(-0.5, -0.4), "proxy", "imagenet", [0, 1])
    assert outcome == "proxy" and sentence.startswith("proxy is more under-sensitive than imagenet")
    assert "sim seed 0: 0.6" in sentence and "real cross-class seed 1" in sentence  # ratios with intervals
    assert zs.verdict(_hand_made(0.5, 0.3), "proxy", "imagenet", [0, 1])[0] == "imagenet"
    # overlapping: both centred on no difference
    assert zs.verdict(_hand_made(0.0, 0.0, spread=0.5), "proxy", "imagenet", [0, 1])[0] == "inconclusive"
    # the domains disagree
    outcome, sentence = zs.verdict(_hand_made(-0.5, 0.5), "proxy", "imagenet", [0, 1])
    assert outcome == "inconclusive" and "do not all exclude 1" in sentence
    # the seeds disagree
    comps = _hand_made(-0.5, -0.5, seeds=(0,)) + _hand_made(0.5, 0.5, seeds=(1,))
    assert zs.verdict(comps, "proxy", "imagenet", [0, 1])[0] == "inconclusive"
    # a clear difference on too few pairs, or a missing domain, decides nothing
    assert zs.verdict(_hand_made(-0.5, -0.5, n=4), "proxy", "imagenet", [0, 1])[0] == "inconclusive"
    only_sim = [c for c in _hand_made(-0.5, -0.5) if c.category == "sim"]
    assert "too few" in zs.verdict(only_sim, "proxy", "imagenet", [0, 1])[1]


def _rec(backbone, domain, key, rms, start=0.3, kept=1.0, src=0, tgt=1):
    r, s, t = key
    return {"kind": "lst", "backbone": backbone, "ft_seed": 0, "domain": domain, "round": r, "source": s,
            "target": t, "rms_l2": rms, "start_rms_l2": start, "kept_class": kept, "source_label": src,
            "target_label": tgt}


def test_paired_log_ratios_count_stalled_apart_and_split_real_pairs():
    recs = [_rec("a", "sim", (0, 1, 2), 0.1), _rec("imagenet", "sim", (0, 1, 2), 0.2),
            _rec("a", "sim", (0, 2, 1), 0.29), _rec("imagenet", "sim", (0, 2, 1), 0.1),  # a: < 5% progress
            _rec("a", "sim", (1, 1, 2), 0.05, kept=0.0), _rec("imagenet", "sim", (1, 1, 2), 0.1),  # a: class lost
            _rec("a", "real", (0, 0, 1), 0.1), _rec("imagenet", "real", (0, 0, 1), 0.1, tgt=0),  # mixed
            _rec("a", "real", (0, 1, 0), 0.2, tgt=0), _rec("imagenet", "real", (0, 1, 0), 0.1, tgt=0)]
    assert stalled(recs[2]) and stalled(recs[4]) and not stalled(recs[0])
    index = index_records(recs)
    (sim,) = compare(index, "a", "imagenet", 0, "sim")
    assert sim.total == 3 and sim.stalled_a == 2 and sim.stalled_b == 0 and sim.n == 1
    assert sim.d[0] == pytest.approx(math.log(0.5))
    assert sim.row()["sources"] == 1 and sim.row()["targets"] == 1
    real = {c.category: c for c in compare(index, "a", "imagenet", 0, "real")}
    assert set(real) == {"real mixed", "real within-class"}
    assert real["real within-class"].d[0] == pytest.approx(math.log(2.0))


def test_real_targets_prefer_the_other_predicted_class():
    consensus = torch.tensor([0, 0, 0, 0, 1, 0])
    t = zd.real_targets(consensus, 3, seed=0)
    assert t.shape == (3, 6)
    for i in range(6):
        for r in range(3):
            assert consensus[t[r, i]] != consensus[i]  # both classes present: always the other one
    same = zd.real_targets(torch.zeros(4, dtype=torch.long), 3, seed=1)  # one class only: other cutouts
    assert all(same[r, i] != i for r in range(3) for i in range(4))
    assert all(len(set(same[:, i].tolist())) == 3 for i in range(4))  # different targets across rounds


def _linear_clf(seed: int) -> Classifier:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
    return Classifier(net, None, None).eval()


def test_same_network_twice_gives_a_paired_difference_of_exactly_zero(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 16, 16, generator=gen)
    clf = _linear_clf(0)
    y = clf.predict(x)[0]
    pool = torch.cat([(y == 0).nonzero().flatten()[:4], (y == 1).nonzero().flatten()[:4]]).sort().values
    assert pool.numel() == 8
    doms = [("sim", x, y, pool, derangement_pairs(y[pool], 2, 0)),
            ("real", x[pool], None, torch.arange(8), zd.real_targets(y[pool], 2, 0))]
    cfg = LSTConfig(iterations=6, step_size=0.2, threshold=0.3)
    protocol = st.ProtocolConfig(rounds=2, seed=0, pairs_per_batch=6)
    with RunStore(tmp_path / "s", "test") as store:
        models = [("imagenet", 0, clf), ("copy", 0, _linear_clf(0)), ("other", 0, _linear_clf(1))]
        records = zs.measure(models, doms, store, cfg, protocol, st.DistInfo())
    result = zs.analyse(records, ["imagenet", "copy", "other"], [0])
    copy = [c for c in result["comparisons"] if c.a == "copy"]
    assert sum(c.total for c in copy) == 32 and sum(c.n for c in copy) > 0
    assert all(np.all(c.d == 0.0) and c.stalled_a == c.stalled_b for c in copy)
    other = [c for c in result["comparisons"] if c.a == "other"]
    assert any(np.any(c.d != 0.0) for c in other)  # the comparison can tell two networks apart
    assert result["verdicts"]["copy"][0] == "inconclusive"


def test_linear_probe_recovers_a_linear_target():
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(300, 5, generator=gen)
    y = torch.stack([f @ torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0]), torch.randn(300, generator=gen)], 1)
    r2 = linear_probe(f[:200], y[:200], f[200:], y[200:])
    assert r2[0] > 0.99 and r2[1] < 0.1
    # many more noise features than samples: the chosen penalty keeps the probe from overfitting
    wide = torch.cat([f, torch.randn(300, 600, generator=gen)], 1)
    r2 = linear_probe(wide[:200], y[:200], wide[200:], y[200:])
    assert r2[0] > 0.2 and r2[1] > -0.1
    assert linear_probe(wide[:200], y[:200], wide[200:], y[200:], ridges=(1e-3,))[1] < -0.1  # without: overfit


def _encoder_file(path: Path, arch: str, seed: int, head: bool = False) -> dict[str, torch.Tensor]:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in timm.create_model(arch, num_classes=1000 if head else 0)
             .state_dict().items()}
    save_file(state, str(path))
    return state


def _real_folder(path: Path, n: int = 4) -> Path:
    from skimage import io

    path.mkdir()
    x, _ = zd.simulated_set(n, 48, seed=9)
    for i, im in enumerate(x):
        io.imsave(path / f"g{i}.png", (im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                  check_contrast=False)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The study end to end on tiny settings with two seeds: ImageNet, a Zoobot file written here, the proxy."""
    root = tmp_path_factory.mktemp("zoobot")
    zoobot = root / "zoobot.safetensors"
    _encoder_file(zoobot, ARCH, 0)
    argv = TINY + ["--out", str(root / "out"), "--proxy-dir", str(root / "proxy"), "--seeds", "0,1",
                   "--real", str(_real_folder(root / "real")), "--zoobot-weights", str(zoobot),
                   "--backbones", "imagenet,zoobot,galaxy-proxy"]
    assert run_command("zoobot", zs, argv) == 0
    return root, argv


def test_study_end_to_end_two_seeds(study, monkeypatch, capsys):
    root, argv = study
    out = root / "out"
    tables = json.loads((out / "tables.json").read_text())
    assert set(tables["verdicts"]) == {"zoobot", "galaxy-proxy"} and tables["seeds"] == [0, 1]
    training = json.loads((out / "training.json").read_text())
    assert set(training) == {f"{k}/s{s}" for k in ("imagenet", "zoobot", "galaxy-proxy") for s in (0, 1)}
    lst = [r for r in RunStore.read_records(out, "lst")]
    real = [r for r in lst if r["domain"] == "real"]
    assert len(real) == 3 * 2 * 4 * 2  # backbones x seeds x cutouts x rounds
    noise = {}
    for r in real:  # same start noise for every backbone and seed
        noise.setdefault((r["round"], r["source"], r["target"]), set()).add(r["seed"])
    assert len(noise) == 8 and all(len(v) == 1 for v in noise.values())
    comps = tables["comparisons"]
    assert {c["seed"] for c in comps} == {0, 1} and all(c["of_pairs"] >= c["n"] for c in comps)
    report = (out / "report.html").read_text()
    assert report.index("Verdict rule") < report.index("Paired comparison") < report.index("Settings")
    assert "proxy for Zoobot" in report and "Linear probe" in report
    # the proxy encoder: a Zoobot-layout file with its normalisation, loadable as zoobot:<arch> ([0, 1] inputs)
    from safetensors import safe_open

    from blindspots import load_classifier

    proxy = root / "proxy" / "galaxy-proxy-encoder.safetensors"
    with safe_open(str(proxy), framework="pt") as fh:
        assert "without mean/std" in json.loads(fh.metadata()["normalisation"])
    assert load_classifier(f"zoobot:{ARCH}", weights=proxy).mean is None
    assert set(json.loads((root / "proxy" / "proxy.json").read_text())["probe"]) == {"galaxy-proxy", "imagenet",
                                                                                      "random"}

    # Rerun into the same folder: nothing is trained or traversed again; same comparisons.
    def forbidden(*args, **kwargs):
        raise AssertionError("finished work was recomputed on resume")

    from blindspots.studies import protocol
    from experiments.zoobot import backbones

    monkeypatch.setattr(backbones, "train", forbidden)
    monkeypatch.setattr(protocol, "level_set_traversal", forbidden)
    assert run_command("zoobot", zs, argv) == 0
    assert json.loads((out / "tables.json").read_text())["comparisons"] == comps
    # other settings into the same folder: one line, exit 2
    capsys.readouterr()
    assert run_command("zoobot", zs, argv + ["--iterations", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different run" in err[0] and "iterations" in err[0]


def test_documented_zoobot_command_with_files_written_here(tmp_path):
    zoobot, imagenet = tmp_path / "zoobot-resnet18.safetensors", tmp_path / "resnet18-imagenet.safetensors"
    enc = _encoder_file(zoobot, "resnet18", 1)
    _encoder_file(imagenet, "resnet18", 2, head=True)
    from experiments.zoobot.fetch import command

    documented = command("resnet18", zoobot, imagenet).split()  # the command fetch prints and the README shows
    assert documented[:2] == ["blindspots", "zoobot"]
    argv = documented[2:] + TINY + [
        "--out", str(tmp_path / "out"), "--real", str(_real_folder(tmp_path / "real")), "--seeds", "0"]
    assert run_command("zoobot", zs, argv) == 0
    training = json.loads((tmp_path / "out" / "training.json").read_text())
    assert set(training) == {"imagenet/s0", "zoobot/s0"}
    clf = zs.build_backbone("zoobot", "resnet18", zoobot_weights=str(zoobot))
    assert clf.mean is None and torch.equal(clf.model.encoder.state_dict()["conv1.weight"], enc["conv1.weight"])
    assert zs.build_backbone("imagenet", "resnet18", imagenet_weights=str(imagenet)).mean is not None


def test_fetch_writes_the_two_files_through_timms_download(tmp_path, monkeypatch):
    import timm

    from experiments.zoobot import fetch

    asked, real_create = [], timm.create_model

    def fake_create(name, pretrained=False, **kwargs):  # timm's download, without the network
        asked.append((name, pretrained, kwargs.get("num_classes")))
        return real_create("resnet18", pretrained=False, **kwargs)

    import blindspots.validation

    monkeypatch.setattr(timm, "create_model", fake_create)
    monkeypatch.setattr(blindspots.validation, "timm_download_blocked", lambda name: None)  # as if online
    zoobot, imagenet = fetch.fetch("resnet18", tmp_path)
    assert asked == [("hf_hub:mwalmsley/zoobot-encoder-resnet18", True, 0), ("resnet18", True, None)]
    monkeypatch.undo()
    assert zs.build_backbone("zoobot", "resnet18", zoobot_weights=str(zoobot)).mean is None
    assert zs.build_backbone("imagenet", "resnet18", imagenet_weights=str(imagenet)).mean is not None


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    cases = [(["--backbones", "imagenet,nope"], "--backbones"), (["--seeds", "0,x"], "--seeds"),
             (["--zoobot-weights", str(tmp_path / "none.safetensors")], "no such file"),
             (["--model", "timm:resnet18"], "zoobot:<arch>"), (["--crop", "0"], "--crop")]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "CUDA is not available"))
    for argv, words in cases:
        assert run_command("zoobot", zs, argv + ["--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0]
        assert not (tmp_path / "o").exists()  # refused before any work


def test_simulated_task_classes():
    x, y = zd.simulated_set(10, 32, seed=3, min_clump_flux=0.05)
    assert x.shape == (10, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert y.sum() == 5 and set(y.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="min_clump_flux"):
        zd.simulated_set(4, 32, seed=0, min_clump_flux=0.2)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
def test_report_fits_a_1280_px_window_in_chromium(study, tmp_path):
    from PIL import Image

    root, _ = study
    page = tmp_path / "report.html"
    html = (root / "out" / "report.html").read_text()
    page.write_text(html.replace("</body>", "<script>document.body.setAttribute('data-sw', "
                                 "document.documentElement.scrollWidth)</script></body>"))
    flags = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--window-size=1280,900"]
    shot = tmp_path / "shot.png"
    subprocess.run(flags + [f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=120)
    assert Image.open(shot).size[0] <= 1280
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    width = int(dom.split('data-sw="')[1].split('"')[0])
    assert 0 < width <= 1280  # no horizontal scrolling: tables and figures fit the window


def test_shared_model_and_weights_name_the_zoobot_encoder(tmp_path):
    import argparse

    from experiments.zoobot import study

    f = tmp_path / "z.safetensors"
    _encoder_file(f, "resnet18", 0)
    p = argparse.ArgumentParser()
    study.add_arguments(p)
    args = p.parse_args(["--model", "zoobot:resnet18", "--weights", str(f)])
    assert study._check(args) == ["imagenet", "zoobot", "galaxy-proxy"]
    assert (args.arch, args.zoobot_weights, args.model, args.weights) == ("resnet18", str(f), None, None)
