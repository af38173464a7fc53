"""Tests of experiments.zoobot_study: the study end to end at tiny settings (every backbone, a Zoobot file
written here, table/figure/report), resume without recomputation, the accuracy gate, and the table arithmetic."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from experiments import zoobot_study as zs

ROOT = Path(__file__).resolve().parents[1]

ARCH = "efficientnet_lite0"
REAL = ROOT.parent / "shared" / "data" / "galaxies"
TINY = ["--size", "32", "--train", "8", "--test", "8", "--pretrain", "8", "--pretrain-epochs", "1", "--epochs", "1", "--scratch-epochs", "1",
        "--batch-size", "8", "--iterations", "2", "--rounds", "2", "--real-limit", "2", "--sim-pairs", "2",
        "--min-accuracy", "0", "--threads", "2", "--attack-steps", "2", "--attack-search", "1"]


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def _zoobot_file(path: Path, seed: int) -> dict[str, torch.Tensor]:
    """A Zoobot-layout encoder file: timm's model without head, seeded weights, as safetensors."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in timm.create_model(ARCH, num_classes=0).state_dict().items()}
    save_file(state, str(path))
    return state


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_zoobot_file_is_the_start_of_backbone_b(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    state_a, state_b = _zoobot_file(a, 1), _zoobot_file(b, 2)
    clf = zs.build_backbone("zoobot", ARCH, zoobot_weights=str(a))
    enc = clf.model.encoder.state_dict()
    assert set(enc) == set(state_a)
    assert all(torch.equal(enc[k], state_a[k]) for k in state_a)
    assert clf.model.head.out_features == 2 and clf.mean is None  # Zoobot takes [0, 1] images as they are
    other = zs.build_backbone("zoobot", ARCH, zoobot_weights=str(b)).model.encoder.state_dict()
    conv = next(k for k in state_a if k.endswith("conv_stem.weight"))
    assert torch.equal(other[conv], state_b[conv]) and not torch.equal(other[conv], enc[conv])
    assert zs.build_backbone("zoobot", ARCH) is None  # no file: reported as skipped, not faked
    import timm
    from safetensors.torch import save_file

    wrong = tmp_path / "resnet.safetensors"
    save_file(timm.create_model("resnet18", num_classes=0).state_dict(), str(wrong))
    with pytest.raises((ValueError, RuntimeError), match="(?i)missing|unexpected|wrong shape"):
        zs.build_backbone("zoobot", ARCH, zoobot_weights=str(wrong))


@pytest.mark.skipif(not REAL.is_dir(), reason="real cutouts (../shared/data/galaxies) not present")
def test_study_end_to_end_every_backbone_then_resume(tmp_path, monkeypatch, capsys):
    weights = tmp_path / "zoobot.safetensors"
    _zoobot_file(weights, 0)
    out = tmp_path / "study"
    argv = TINY + ["--out", str(out), "--zoobot-weights", str(weights)]
    assert zs.main(argv) == 0
    printed = capsys.readouterr().out
    for kind in zs.BACKBONES:
        assert f"{kind}: test accuracy" in printed  # accuracies are printed as each backbone finishes

    rows = _rows(out / "table.csv")
    real = {r["backbone"]: r for r in rows if r["domain"] == "real"}
    assert set(real) == set(zs.BACKBONES)  # one row per backbone, Zoobot (from the file) included
    for r in real.values():
        assert int(r["n"]) == 2 * 2  # 2 cutouts x 2 rounds
        assert 0 < float(r["rms_l2_mean"]) < 1 and 0 <= float(r["final_confidence_mean"]) <= 1
        assert 0 <= float(r["accuracy_mean"]) <= 1
        assert float(r["fraction@0.2_mean"]) >= 0 and r["path_mean_mean"] != ""
    assert float(real["imagenet"]["rms_l2_median_vs_imagenet"]) == 1.0
    r = real["galaxy-proxy"]
    assert math.isclose(float(r["rms_l2_median_vs_imagenet"]),
                        float(r["rms_l2_median"]) / float(real["imagenet"]["rms_l2_median"]))
    training = json.loads((out / "training.json").read_text())
    assert set(training) == set(zs.BACKBONES) and "pretrain_seconds" in training["galaxy-proxy"]
    assert "pretrain_seconds" not in training["imagenet"]
    report = (out / "report.html").read_text()
    assert "proxy for Zoobot" in report and "data:image/png;base64" in report
    assert (out / "under_sensitivity.png").stat().st_size > 1000
    records = (out / "records.jsonl").read_text().splitlines()
    lst = [json.loads(x) for x in records if json.loads(x)["kind"] == "lst"]
    assert {x["model"].split("/")[0] for x in lst} == set(zs.BACKBONES)
    assert all(x["iterations"] == 2 for x in lst)

    # Rerun into the same folder: nothing is simulated, trained, traversed or attacked again; same table.
    table_before = (out / "table.csv").read_text()
    ckpt_times = {p.name: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()}

    def forbidden(*args, **kwargs):
        raise AssertionError("finished work was recomputed on resume")

    import attacks
    import detectors.simulate
    from blindspots.studies import protocol as studies

    monkeypatch.setattr(detectors.simulate, "simulate", forbidden)
    monkeypatch.setattr(zs, "_train", forbidden)
    monkeypatch.setattr(studies, "level_set_traversal", forbidden)
    monkeypatch.setattr(attacks, "minimal_epsilon", forbidden)
    assert zs.main(argv) == 0
    assert "zoobot: reusing" in capsys.readouterr().out
    assert (out / "records.jsonl").read_text().splitlines() == records
    assert (out / "table.csv").read_text() == table_before
    assert {p.name: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()} == ckpt_times

    # Other settings into the same folder are refused rather than mixed in.
    with pytest.raises(ValueError, match="different run"):
        zs.main(argv[:-4] + ["--out", str(out), "--iterations", "3", "--zoobot-weights", str(weights)])


def test_backbones_below_min_accuracy_are_reported_not_measured(tmp_path, monkeypatch, capsys):
    out = tmp_path / "gate"
    argv = TINY + ["--out", str(out), "--backbones", "random", "--min-accuracy", "1.01", "--no-attacks"]

    def forbidden(*args, **kwargs):
        raise AssertionError("LST ran on a backbone below --min-accuracy")

    from blindspots.studies import protocol as studies

    monkeypatch.setattr(studies, "level_set_traversal", forbidden)
    assert zs.main(argv) == 0
    assert "skipped LST for random" in capsys.readouterr().out
    rows = _rows(out / "table.csv")
    assert len(rows) == 1 and rows[0]["domain"] == "none (LST skipped)" and rows[0]["n"] == "0"
    acc = json.loads((out / "training.json").read_text())["random"]["test_accuracy"]
    assert float(rows[0]["accuracy_mean"]) == acc
    assert "Caution: random" in (out / "report.html").read_text()


def test_simulated_task_classes():
    from detectors.simulate import simulate

    x, y = zs.simulated_set(10, 32, seed=3, min_clump_flux=0.05)
    assert x.shape == (10, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert y.sum() == 5 and set(y.tolist()) == {0, 1}
    cfg = zs.sim_config(32, 42.0)
    clumpy = simulate(5, cfg.replace(n_clumps=(2, 8), clump_flux=(0.05, zs.MAX_CLUMP_FLUX)), seed=4)
    for p in clumpy.params:
        fluxes = p.flux_fraction[p.label == 1]
        assert 2 <= len(fluxes) and (fluxes >= 0.05).all()
    with pytest.raises(ValueError, match="min_clump_flux"):
        zs.simulated_set(4, 32, seed=0, min_clump_flux=0.2)


def test_table_ratios_and_cross_class():
    def lst(b, src, tgt, rms):
        return {"key": f"lst|{b}/real|0|{src}|{tgt}", "kind": "lst", "model": f"{b}/real", "rms_l2": rms,
                "source_label": src % 2, "target_label": tgt % 2}

    # random: two pairs that got close and one traversal that stalled far from its target (0.9)
    records = [lst("imagenet", 0, 1, 0.2), lst("imagenet", 1, 3, 0.4), lst("random", 0, 1, 0.15),
               lst("random", 1, 2, 0.15), lst("random", 0, 3, 0.9)]
    rows = zs.study_tables(records, {"imagenet": {"test_accuracy": 0.9}, "random": {"test_accuracy": 0.8}},
                           ["imagenet", "random"])["rows"]
    imagenet, random = rows
    assert imagenet["backbone"] == "imagenet" and math.isclose(imagenet["rms_l2_mean"], 0.3)
    assert math.isclose(random["rms_l2_mean"], 0.4) and math.isclose(random["rms_l2_median"], 0.15)
    assert math.isclose(random["rms_l2_median_vs_imagenet"], 0.5)  # medians: the stalled pair does not decide
    assert imagenet["cross_class_mean"] == 0.5 and random["cross_class_mean"] == 1.0
    assert imagenet["accuracy_mean"] == 0.9
    assert "Most under-sensitive" in zs._verdict(rows) and "random" in zs._verdict(rows).split("Most")[1]
