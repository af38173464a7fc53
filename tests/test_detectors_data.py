"""Data and evaluation side of the clump detectors: simulator, injection into real cutouts, box tables, metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from detectors.data import BoxTable, collate, load_cutouts, read_boxes_csv, read_coco, write_boxes_csv, write_coco
from detectors.evaluate import (
    MatchRule,
    ap50,
    average_precision,
    completeness_vs_flux,
    draw_detections,
    evaluate_detections,
    loose_rule,
    match_image,
    score_sweep,
    select_threshold,
)
from detectors.inject import inject_clumps, measure_host
from detectors.simulate import SimConfig, SimulatedClumps, inverse_lupton, lupton_rgb, render_flux, simulate

GALAXIES = Path(__file__).resolve().parents[2] / "shared/data/galaxies"

# Small hosts so that the whole galaxy (and its PSF wings) falls inside the 128-px frame: flux sums are then exact.
COMPACT = SimConfig(disk_re=(2.0, 3.0), noise_scale=0.0, star_rate=1.0)


# --------------------------------------------------------------------------------------------------- simulator


@pytest.fixture(scope="module")
def compact_batch():
    return simulate(12, COMPACT, seed=7)


def test_images_are_rgb_in_unit_range():
    batch = simulate(4, SimConfig(image_size=64), seed=0)
    assert batch.images.shape == (4, 3, 64, 64) and batch.images.dtype == torch.float32
    assert 0.0 <= float(batch.images.min()) and float(batch.images.max()) <= 1.0
    assert float(batch.images.std()) > 0.01  # not blank
    for t in batch.targets:
        assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
        assert t["boxes"].shape == (t["labels"].shape[0], 4) and t["flux_fraction"].shape == t["labels"].shape
        assert set(t["labels"].tolist()) <= {1, 2}


def test_boxes_contain_their_clumps(compact_batch):
    n_checked = 0
    labels_seen = set()
    for t, p in zip(compact_batch.targets, compact_batch.params):
        boxes = t["boxes"].double().numpy()
        for k in range(p.num_sources):
            x1, y1, x2, y2 = boxes[k]
            assert x1 <= p.x[k] <= x2 and y1 <= p.y[k] <= y2
            side = p.box[k]
            assert 2.0 * p.psf_fwhm - 1e-9 <= side <= 3.0 * p.psf_fwhm + 1e-9
            assert np.allclose([x2 - x1, y2 - y1], side, atol=1e-4)  # square, not clipped for compact hosts
            alone = render_flux(p.select([k]), COMPACT, host=False)[1]  # r band, this source only
            peak = np.unravel_index(np.argmax(alone), alone.shape)
            assert x1 <= peak[1] + 0.5 <= x2 and y1 <= peak[0] + 0.5 <= y2
            ys, xs = np.mgrid[0:alone.shape[0], 0:alone.shape[1]] + 0.5
            inside = (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)
            assert alone[inside].sum() / alone.sum() > 0.6  # the box holds most of the source's light
            n_checked += 1
            labels_seen.add(int(p.label[k]))
    assert n_checked >= 20 and labels_seen == {1, 2}


def test_flux_fractions_as_asked(compact_batch):
    fractions = []
    for t, p in zip(compact_batch.targets, compact_batch.params):
        host_r = render_flux(p, COMPACT, sources=False)[1].sum()
        assert host_r == pytest.approx(p.flux_r, rel=2e-3)  # the whole host is in the frame
        for k in range(p.num_sources):
            source_r = render_flux(p.select([k]), COMPACT, host=False)[1].sum()
            assert source_r / host_r == pytest.approx(float(t["flux_fraction"][k]), rel=5e-3)
        clumps = t["flux_fraction"][t["labels"] == 1].numpy()
        fractions.extend(clumps.tolist())
        assert len(clumps) <= 8
    fractions = np.array(fractions)
    assert fractions.min() >= 0.005 and fractions.max() <= 0.08
    # a fixed fraction is honoured exactly, and the clump count range is inclusive
    fixed = simulate(3, COMPACT.replace(clump_flux=(0.03, 0.03), n_clumps=(3, 3), min_separation=0.0,
                                        star_rate=0.0), seed=1)
    for t in fixed.targets:
        assert t["labels"].tolist() == [1, 1, 1]
        assert torch.allclose(t["flux_fraction"], torch.full((3,), 0.03))


def test_clumps_are_blue_and_change_the_image():
    cfg = SimConfig(noise_scale=0.0, star_rate=0.0, n_clumps=(4, 4), clump_flux=(0.08, 0.08), disk_re=(4.0, 5.0))
    batch = simulate(2, cfg, seed=3)
    for img, p in zip(batch.images.numpy(), batch.params):
        bare = lupton_rgb(render_flux(p, cfg, sources=False), cfg)
        changed = np.abs(img - bare).max(axis=0) > 0.02
        for k in range(p.num_sources):
            i, j = int(p.y[k]), int(p.x[k])
            assert changed[i, j]
            # blue clump on a redder disk: B - R rises at the clump
            assert (img[2, i, j] - img[0, i, j]) > (bare[2, i, j] - bare[0, i, j])


def test_same_seed_same_images_and_per_index_determinism():
    a = simulate(5, SimConfig(image_size=64), seed=11)
    b = simulate(5, SimConfig(image_size=64), seed=11)
    assert torch.equal(a.images, b.images)
    assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(a.targets, b.targets))
    c = simulate(5, SimConfig(image_size=64), seed=12)
    assert not torch.equal(a.images, c.images)
    shard = simulate(2, SimConfig(image_size=64), seed=11, start=3)  # image i depends only on (seed, i)
    assert torch.equal(shard.images, a.images[3:])
    ds = SimulatedClumps(5, SimConfig(image_size=64), seed=11)
    image, target = ds[4]
    assert torch.equal(image, a.images[4]) and torch.equal(target["boxes"], a.targets[4]["boxes"])
    with pytest.raises(IndexError):
        ds[5]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_clumps=(5, 2)), ValueError, "n_clumps"),
    (dict(n_clumps=(0.5, 3)), TypeError, "n_clumps"),
    (dict(clump_flux=(0.0, 0.1)), ValueError, "clump_flux"),
    (dict(clump_flux=(0.01, 1.5)), ValueError, "clump_flux"),
    (dict(image_size=8), ValueError, "image_size"),
    (dict(psf_fwhm=(-1.0, 1.0)), ValueError, "psf_fwhm"),
    (dict(axis_ratio=(0.3, 1.2)), ValueError, "axis_ratio"),
    (dict(disk_re=5.0), ValueError, "disk_re"),
    (dict(bulge_probability=1.5), ValueError, "bulge_probability"),
    (dict(noise_scale=-1.0), ValueError, "noise_scale"),
    (dict(sky_mag=(21.0, 20.0)), ValueError, "sky_mag"),
    (dict(box_size=(3.0, float("nan"))), ValueError, "box_size"),
])
def test_bad_parameters_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        SimConfig(**kwargs)


def test_bad_calls_rejected():
    with pytest.raises(ValueError, match="n must be"):
        simulate(0)
    with pytest.raises(ValueError, match="seed"):
        simulate(2, seed=-1)
    with pytest.raises(TypeError, match="SimConfig"):
        simulate(2, config={"image_size": 64})


def test_lupton_stretch_round_trip(compact_batch):
    p = compact_batch.params[0]
    gri = render_flux(p, COMPACT)
    rgb = lupton_rgb(gri, COMPACT)
    lin = inverse_lupton(rgb, COMPACT)
    scales = np.asarray(COMPACT.rgb_scales)
    back = lupton_rgb(lin[::-1] / scales[::-1, None, None], COMPACT)
    assert np.allclose(back, rgb, atol=1e-9)
    unclipped = (rgb.max(axis=0) < 1.0) & (rgb.min(axis=0) > 0.0)
    assert unclipped.mean() > 0.5
    assert np.allclose(lin[1][unclipped] / scales[1], gri[1][unclipped], rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------------------------------- injection


def _cutouts(survey: str, size: int = 128) -> torch.Tensor:
    folder = GALAXIES / survey
    if not folder.is_dir():
        pytest.skip(f"real cutouts not found at {folder}")
    images, names = load_cutouts(folder, size=size, limit=2)
    assert len(names) == images.shape[0] >= 1
    return images


def test_inject_clumps_into_real_sdss_cutout():
    image = _cutouts("sdss")[0]
    cfg = SimConfig(noise_scale=0.0, star_rate=0.0, clump_flux=(0.05, 0.05), min_separation=2.0)
    out, target, params = inject_clumps(image, cfg, seed=3, n_clumps=3, psf_fwhm_px=2.5)
    assert out.shape == image.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    assert target["labels"].tolist() == [1, 1, 1]
    host = measure_host(image, cfg)
    assert 0.2 < host.axis_ratio <= 1.0 and host.half_light_radius > 2.0
    assert abs(host.center[0] - 64) < 10 and abs(host.center[1] - 64) < 10
    # the added light, measured back on the linearised images, is the asked fraction of the host
    scale_r = cfg.rgb_scales[1]
    added_r = (inverse_lupton(out.double().numpy(), cfg)[1] - inverse_lupton(image.double().numpy(), cfg)[1])
    assert added_r.sum() / scale_r / host.flux == pytest.approx(3 * 0.05, rel=0.1)
    # pixels beyond the reach of every clump (the PSF kernel's radius, ceil(4 g-band FWHM) + 1, plus 3 sigma of the
    # clump itself) are untouched; each box became bluer
    ys, xs = np.mgrid[0:128, 0:128] + 0.5
    near = np.zeros((128, 128), bool)
    reach = np.ceil(4 * 2.5 * 1.06) + 1 + 3 * params.sigma.max() + 1
    for x, y in zip(params.x, params.y):
        near |= (xs - x) ** 2 + (ys - y) ** 2 < reach ** 2
    assert near.mean() < 0.5
    for x1, y1, x2, y2 in target["boxes"].tolist():
        box = (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)
        diff = (out - image).numpy()[:, box].mean(axis=1)
        assert diff[2] > diff[0]  # B gains more than R
    assert torch.equal(out[:, ~torch.from_numpy(near)], image[:, ~torch.from_numpy(near)])
    again, target2, _ = inject_clumps(image, cfg, seed=3, n_clumps=3, psf_fwhm_px=2.5)
    assert torch.equal(again, out) and torch.equal(target2["boxes"], target["boxes"])


def test_inject_into_decals_and_bad_input():
    image = _cutouts("decals")[0]
    out, target, _ = inject_clumps(image, SimConfig(star_rate=0.0), seed=0, n_clumps=2)
    assert len(target["labels"]) == 2 and not torch.equal(out, image)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        inject_clumps(image[None])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inject_clumps(image * 3)


# --------------------------------------------------------------------------------------------------- box tables


def _toy_targets():
    return [
        {"boxes": torch.tensor([[1.25, 2.5, 9.125, 10.0], [20.1, 30.7, 25.3, 36.9]]),
         "labels": torch.tensor([1, 2]), "flux_fraction": torch.tensor([0.0123, 0.2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
         "flux_fraction": torch.zeros(0)},
        {"boxes": torch.tensor([[0.1, 0.2, 3.3, 4.4]]), "labels": torch.tensor([1]),
         "flux_fraction": torch.tensor([0.05])},
    ]


def _same(a, b, keys=("boxes", "labels", "flux_fraction")):
    for x, y in zip(a, b):
        for k in keys:
            assert torch.equal(x[k], y[k]), k


def test_csv_round_trip(tmp_path):
    targets = _toy_targets() + [t for t in simulate(3, SimConfig(image_size=64), seed=2).targets]
    ids = ["galA", "galB", "galC", "s0", "s1", "s2"]
    write_boxes_csv(tmp_path / "boxes.csv", targets, ids)
    table = read_boxes_csv(tmp_path / "boxes.csv")
    assert isinstance(table, BoxTable) and table.image_ids == ids and table.image_sizes is None
    _same(table.targets, targets)
    lines = (tmp_path / "boxes.csv").read_text().splitlines()
    assert lines[0] == "image_id,x1,y1,x2,y2,label,flux_fraction" and "galB,,,,,," in lines
    # predictions keep their scores; a hand-written table without label defaults to clumps
    preds = [{"boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "labels": torch.tensor([2]),
              "scores": torch.tensor([0.75])}]
    write_boxes_csv(tmp_path / "pred.csv", preds, ["x"])
    _same(read_boxes_csv(tmp_path / "pred.csv").targets, preds, ("boxes", "labels", "scores"))
    (tmp_path / "hand.csv").write_text("image_id,x1,y1,x2,y2\nimg1,1,2,3,4\nimg1,5,6,7,8\n")
    t = read_boxes_csv(tmp_path / "hand.csv").targets[0]
    assert t["labels"].tolist() == [1, 1] and t["boxes"].shape == (2, 4)


def test_csv_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("image,x1,y1\n1,2,3\n")
    with pytest.raises(ValueError, match="missing column"):
        read_boxes_csv(tmp_path / "bad.csv")
    (tmp_path / "flip.csv").write_text("image_id,x1,y1,x2,y2,label\na,5,5,1,1,1\n")
    with pytest.raises(ValueError, match="x2 >= x1"):
        read_boxes_csv(tmp_path / "flip.csv")
    with pytest.raises(ValueError, match="unique"):
        write_boxes_csv(tmp_path / "dup.csv", _toy_targets()[:2], ["a", "a"])


def test_coco_round_trip(tmp_path):
    targets = _toy_targets()
    write_coco(tmp_path / "c.json", targets, [(64, 48)] * 3, ["a.png", "b.png", "c.png"])
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["annotations"][0]["bbox"] == pytest.approx([1.25, 2.5, 7.875, 7.5])
    assert [c["name"] for c in doc["categories"]] == ["clump", "odd_clump"]
    table = read_coco(tmp_path / "c.json")
    assert table.image_ids == ["a.png", "b.png", "c.png"] and table.image_sizes == [(64, 48)] * 3
    _same(table.targets, targets)
    with pytest.raises(ValueError, match="category"):
        write_coco(tmp_path / "x.json", [{"boxes": torch.ones(1, 4), "labels": torch.tensor([5])}], [(8, 8)])


def test_collate():
    ds = SimulatedClumps(3, SimConfig(image_size=32, disk_re=(1.0, 1.5)), seed=0)
    images, targets = collate([ds[0], ds[1]])
    assert len(images) == 2 and images[0].shape == (3, 32, 32) and "boxes" in targets[1]


# --------------------------------------------------------------------------------------------------- metrics


def _t(boxes, labels=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.ones(boxes.shape[0], dtype=torch.int64) if labels is None else torch.tensor(labels)
    return {"boxes": boxes, "labels": labels}


def _p(boxes, scores, labels=None):
    d = _t(boxes, labels)
    d["scores"] = torch.tensor(scores, dtype=torch.float32)
    return d


def test_duplicates_and_misses():
    target = _t([[0, 0, 10, 10], [20, 20, 30, 30]])
    pred = _p([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8, 0.7])
    p2t, t2p = match_image(pred, target)
    assert p2t.tolist() == [0, -1, -1] and t2p.tolist() == [0, -1]
    s = evaluate_detections([pred], [target])
    assert (s.n_true, s.n_pred, s.n_matched) == (2, 3, 1)
    assert s.completeness == 0.5 and s.purity == pytest.approx(1 / 3) and s.f1 == pytest.approx(0.4)
    # the duplicate wins when it scores higher; counts are unchanged
    pred2 = _p([[0, 0, 10, 10], [1, 0, 11, 10]], [0.5, 0.9])
    assert match_image(pred2, target)[0].tolist() == [-1, 0]
    # empty images: no truths -> completeness NaN, no detections -> purity NaN, F1 still defined
    s = evaluate_detections([_p([], [])], [target])
    assert s.completeness == 0 and math.isnan(s.purity) and s.f1 == 0
    s = evaluate_detections([pred], [_t([])])
    assert math.isnan(s.completeness) and s.purity == 0


def test_ties_and_best_iou_preference():
    target = _t([[0, 0, 10, 10], [4, 0, 14, 10]])
    # equal scores: input order decides; both overlap truth 0 only above 0.5
    pred = _p([[0, 0, 10, 10], [0, 0, 10, 10]], [0.6, 0.6])
    assert match_image(pred, target)[0].tolist() == [0, -1]
    # one detection overlapping both truths takes the higher IoU (truth 1), leaving truth 0 to the next
    pred = _p([[3, 0, 13, 10], [0, 0, 10, 10]], [0.9, 0.8])
    assert match_image(pred, target)[0].tolist() == [1, 0]
    # equal IoU with both truths: the lower index
    target = _t([[0, 0, 10, 10], [10, 0, 20, 10]])
    pred = _p([[5, 0, 15, 10]], [0.9])
    assert match_image(pred, target, MatchRule(0.3))[0].tolist() == [0]
    # greedy is in score order, not optimal: the first detection ties (IoU 7/13 with both) and takes truth 0;
    # the second overlaps truth 1 at IoU 0.25 only, so one truth is lost although a perfect assignment exists
    target = _t([[0, 0, 10, 10], [6, 0, 16, 10]])
    pred = _p([[3, 0, 13, 10], [0, 0, 10, 10]], [0.9, 0.8])
    assert match_image(pred, target, MatchRule(0.3))[0].tolist() == [0, -1]


def test_loose_rule_centre_distance_and_classes():
    target = _t([[0, 0, 8, 8]])
    small = _p([[0, 0, 2, 2]], [0.9])  # IoU 4/64, centres 3*sqrt(2) = 4.24 px apart
    assert match_image(small, target)[0].tolist() == [-1]
    assert match_image(small, target, loose_rule(4.5))[0].tolist() == [0]
    assert match_image(small, target, loose_rule(4.0))[0].tolist() == [-1]
    flat = _p([[0, 0, 8, 2.8]], [0.9])  # IoU 0.35, centres 2.6 px apart
    assert match_image(flat, target, loose_rule(1.0))[0].tolist() == [0]
    assert match_image(flat, target)[0].tolist() == [-1]
    star = _p([[0, 0, 8, 8]], [0.9], [2])  # right place, wrong class
    assert match_image(star, target)[0].tolist() == [-1]
    assert match_image(star, target, class_aware=False)[0].tolist() == [0]
    s = evaluate_detections([star, _p([[0, 0, 8, 8]], [0.4])], [target, target], label=1)
    assert (s.n_true, s.n_pred, s.n_matched) == (2, 1, 1)
    with pytest.raises(ValueError, match="pair up"):
        evaluate_detections([star], [target, target])
    with pytest.raises(ValueError, match="scores"):
        evaluate_detections([target], [target])


def test_score_sweep_matches_thresholded_evaluation():
    batch = simulate(6, SimConfig(image_size=64, disk_re=(1.5, 2.5)), seed=4)
    gen = torch.Generator().manual_seed(0)
    preds = []
    for t in batch.targets:
        k = t["boxes"].shape[0]
        jitter = torch.randn(k, 4, generator=gen) * 1.5
        fake = torch.rand(2, 2, generator=gen) * 50
        boxes = torch.cat([t["boxes"] + jitter, torch.cat([fake, fake + 6], 1)])
        preds.append({"boxes": boxes.clamp(min=0), "labels": torch.cat([t["labels"], torch.ones(2, dtype=torch.int64)]),
                      "scores": torch.rand(k + 2, generator=gen)})
    th = [0.0, 0.3, 0.5, 0.9]
    sweep = score_sweep(preds, batch.targets, th, loose_rule(3.6))
    for i, t in enumerate(th):
        kept = [{k: (v[p["scores"] >= t]) for k, v in p.items()} for p in preds]
        s = evaluate_detections(kept, batch.targets, loose_rule(3.6))
        assert (sweep["n_pred"][i], sweep["n_matched"][i]) == (s.n_pred, s.n_matched)
        assert np.isclose(sweep["completeness"][i], s.completeness, equal_nan=True)
    assert np.all(np.diff(sweep["completeness"]) <= 0) and np.all(np.diff(sweep["n_pred"]) <= 0)


def test_select_threshold_maximises_f1_and_prefers_the_lowest_on_ties():
    target = _t([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]])
    # scores (exact in float32): TP 7/8, FP 6/8, TP 5/8, FP 4/8, FP 3/8.
    # F1 at t = 3/8 .. 7/8: 4/8, 4/7, 4/6, 2/5, 2/4
    pred = _p([[0, 0, 10, 10], [60, 0, 70, 10], [20, 0, 30, 10], [80, 0, 90, 10], [100, 0, 110, 10]],
              [0.875, 0.75, 0.625, 0.5, 0.375])
    best, sweep = select_threshold([pred], [target], [0.375, 0.5, 0.625, 0.75, 0.875])
    assert best == 0.625 and sweep["f1"] == pytest.approx([4 / 8, 4 / 7, 4 / 6, 2 / 5, 2 / 4])
    # F1 ties between 0.6 and 0.625 (the same detections survive both): the lower threshold wins, in any order
    assert select_threshold([pred], [target], [0.875, 0.625, 0.6])[0] == 0.6


def test_average_precision_hand_computed():
    target = _t([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]])
    # ranked: TP, FP, TP, FP -> recall 1/3, 1/3, 2/3, 2/3; precision 1, 1/2, 2/3, 1/2
    pred = _p([[0, 0, 10, 10], [60, 0, 70, 10], [20, 0, 30, 10], [80, 0, 90, 10]], [0.9, 0.8, 0.7, 0.6])
    assert average_precision([pred], [target]) == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    # the same detections split over two images pool into the same curve
    t1, t2 = _t([[0, 0, 10, 10]]), _t([[20, 0, 30, 10], [40, 0, 50, 10]])
    p1 = _p([[0, 0, 10, 10], [60, 0, 70, 10]], [0.9, 0.8])
    p2 = _p([[20, 0, 30, 10], [80, 0, 90, 10]], [0.7, 0.6])
    assert average_precision([p1, p2], [t1, t2]) == pytest.approx(5 / 9)
    res = ap50([pred], [target], score_floor=0.0)
    assert res["clump"] == pytest.approx(5 / 9) and math.isnan(res["odd_clump"]) and res["mAP50"] == res["clump"]
    # the envelope matters: TP, FP, FP, TP, TP -> precision 1, 1/2, 1/3, 1/2, 3/5 at recall 1/3 .. 1;
    # the step to recall 2/3 is credited with the later, higher precision 3/5
    pred = _p([[0, 0, 10, 10], [60, 0, 70, 10], [80, 0, 90, 10], [20, 0, 30, 10], [40, 0, 50, 10]],
              [0.9, 0.8, 0.7, 0.6, 0.5])
    assert average_precision([pred], [target]) == pytest.approx((1 + 3 / 5 + 3 / 5) / 3)
    assert average_precision([_p([], [])], [target]) == 0.0
    perfect = _p(target["boxes"].tolist(), [0.3, 0.2, 0.1])
    assert average_precision([perfect], [target]) == 1.0


def test_completeness_vs_flux():
    target = _t([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]])
    target["flux_fraction"] = torch.tensor([0.01, 0.01, 0.05])
    pred = _p([[0, 0, 10, 10], [40, 0, 50, 10], [20, 0, 30, 10]], [0.9, 0.8, 0.1])
    res = completeness_vs_flux([pred], [target], bins=[0.005, 0.02, 0.1], score_threshold=0.5)
    assert res["n_true"].tolist() == [2, 1] and res["n_matched"].tolist() == [1, 1]
    assert res["completeness"].tolist() == [0.5, 1.0]
    assert np.all(res["lower"] <= res["completeness"]) and np.all(res["completeness"] <= res["upper"])
    with pytest.raises(ValueError, match="flux_fraction"):
        completeness_vs_flux([pred], [_t([[0, 0, 1, 1]])])


def test_draw_detections(tmp_path):
    batch = simulate(1, SimConfig(image_size=64, disk_re=(1.5, 2.5), n_clumps=(2, 2), star_rate=0.0), seed=0)
    target = batch.targets[0]
    pred = _p(target["boxes"].tolist() + [[1, 1, 5, 5]], [0.9, 0.2, 0.8])
    fig = draw_detections(batch.images[0], target, pred, tmp_path / "det.png", score_threshold=0.5)
    assert len(fig.axes[0].patches) == 2 + 2  # 2 truths, 2 detections above 0.5
    assert (tmp_path / "det.png").stat().st_size > 1000
