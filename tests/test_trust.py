"""No silent wrong answers: each bad input gets one clear line naming the problem, each formerly silent case is now an
error or the right value (issue 13: images by bit depth, attacks on models without class names, NaN models,
float64/16 images, minimal_epsilon's bounds, AP50 of thresholded detections, corrupt weights, math-text titles,
pretrained weights offline)."""

from __future__ import annotations

import math
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from torch import nn

import attacks
from blindspots import Classifier
from blindspots.data import load_image_folder, read_image, to_tensor
from blindspots.validation import check_labels
from conftest import LinearBinary, TinyCNN, one_line as _one_line


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------------- images


def _write_png16(path, arr: np.ndarray) -> None:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour): IHDR, one zlib IDAT, IEND."""
    arr = np.asarray(arr, dtype=">u2")
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[i].tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2 if arr.ndim == 3 else 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def test_16_bit_png_and_tiff_are_read_by_their_bit_depth(tmp_path):
    import tifffile

    from detectors.data import load_cutouts

    rng = np.random.default_rng(0)
    grey, rgb = rng.integers(0, 65536, (12, 12), dtype=np.uint16), rng.integers(0, 65536, (12, 12, 3), dtype=np.uint16)
    _write_png16(tmp_path / "a_grey16.png", grey)
    _write_png16(tmp_path / "b_rgb16.png", rgb)
    tifffile.imwrite(tmp_path / "c_rgb16.tif", rgb)
    exact_grey = torch.from_numpy(grey / 65535.0).float().expand(3, -1, -1)
    exact_rgb = torch.from_numpy(rgb / 65535.0).float().permute(2, 0, 1)
    torch.testing.assert_close(read_image(tmp_path / "a_grey16.png"), exact_grey, atol=1e-6, rtol=0)
    torch.testing.assert_close(read_image(tmp_path / "c_rgb16.tif"), exact_rgb, atol=1e-6, rtol=0)
    # Pillow reads 16-bit colour PNGs at 8-bit precision: the right scale, within one 8-bit step
    assert (read_image(tmp_path / "b_rgb16.png") - exact_rgb).abs().max() <= 1 / 255
    # the folder loaders (demo/attack --images, detectors.load_cutouts) go through the same reader
    batch, names = load_cutouts(tmp_path, size=None)
    assert names == ["a_grey16.png", "b_rgb16.png", "c_rgb16.tif"]
    torch.testing.assert_close(batch[0], exact_grey, atol=1e-6, rtol=0)
    assert float((batch == 1.0).float().mean()) < 0.01  # divided by 255 and clamped, 99% of these were 1.0


def test_arrays_of_unknown_range_are_refused():
    with pytest.raises(ValueError) as exc:
        to_tensor(np.full((4, 4, 3), 3.0, dtype=np.float32), "scan.tif")
    _one_line(exc, "scan.tif", "[0, 1]")
    with pytest.raises(ValueError) as exc:
        to_tensor(np.zeros((4, 4), dtype=np.int32), "deep.png")
    _one_line(exc, "deep.png", "int32")
    ok = to_tensor(np.array([[0.0, 0.25]], dtype=np.float64))
    assert ok.shape == (3, 1, 2) and float(ok[0, 0, 1]) == 0.25


def test_bad_files_in_an_image_folder_name_the_file(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "good.png")
    bad = tmp_path / "bad"
    bad.mkdir()
    whole = (tmp_path / "good.png").read_bytes()
    cases = {"cut.png": whole[: len(whole) // 2], "notes.jpg": b"not an image"}
    for name, data in cases.items():
        folder = bad / name.split(".")[0]
        folder.mkdir()
        (folder / "good.png").write_bytes(whole)
        (folder / name).write_bytes(data)
        with pytest.raises(ValueError) as exc:
            load_image_folder(folder, size=8)
        _one_line(exc, name, "cannot read image")
    folder = bad / "dir"
    (folder / "x.png").mkdir(parents=True)
    with pytest.raises(ValueError) as exc:
        load_image_folder(folder, size=8)
    _one_line(exc, "x.png", "is a folder")


# --------------------------------------------------------------------------------------------------- attacks


class Headless(nn.Module):
    """Three logits from a fixed linear map, no `num_classes`: the README's way to wrap your own network."""

    def __init__(self, nan_above: float | None = None, nan_gradient: bool = False) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(3, 3 * 8 * 8, generator=gen) * 0.1)
        self.nan_above, self.nan_gradient = nan_above, nan_gradient

    def forward(self, x):
        z = x.flatten(1) @ self.w.t()
        if self.nan_above is not None:  # finite at the clean images, NaN once a pixel moves past nan_above
            z = z + torch.where(x.flatten(1).amax(1, keepdim=True) > self.nan_above, float("nan"), 0.0)
        if self.nan_gradient:  # value 0, gradient 0 / (2 sqrt(0)) = NaN
            z = z + 0 * torch.sqrt(x - x.detach()).flatten(1).sum(1, keepdim=True)
        return z


def _batch(n: int = 4) -> torch.Tensor:
    return 0.45 + 0.05 * torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))


ATTACKS = {
    "pgd": lambda m: attacks.PGD(m, eps=0.1, steps=3, seed=0),
    "apgd": lambda m: attacks.APGD(m, eps=0.1, steps=3, seed=0),
    "deepfool": lambda m: attacks.DeepFool(m, steps=3),
    "minimal_epsilon": lambda m: attacks.MinimalEpsilon(m, steps=3, search_steps=2, seed=0),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_labels_outside_the_logits_width_are_refused_without_class_names(name):
    model = Classifier(Headless())
    assert model.num_classes is None
    attack, x = ATTACKS[name](model), _batch()
    for labels, needle in (([0, -1, 1, 2], "[-1, 2]"), ([0, 3, 1, 2], "3 classes")):
        with pytest.raises(ValueError) as exc:
            attack(x, labels)
        _one_line(exc, "labels out of range", needle)
    assert attack(x, [0, 1, 2, 0]).labels.tolist() == [0, 1, 2, 0]


def test_targets_outside_the_logits_width_are_refused():
    model = Classifier(Headless())
    with pytest.raises(ValueError) as exc:
        attacks.PGD(model, eps=0.1, steps=2, seed=0)(_batch(), None, targets=[1, 1, 5, 1])
    _one_line(exc, "targets out of range", "3 classes")


def test_negative_labels_are_refused_even_without_a_class_count():
    with pytest.raises(ValueError) as exc:
        check_labels([0, -1], 2, None)
    _one_line(exc, "out of range", "start at 0")


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_nan_logits_raise_instead_of_faking_success(name):
    x = _batch()
    attack = ATTACKS[name](Classifier(Headless(nan_above=0.52)))  # finite clean, NaN after the first step
    with pytest.raises(ValueError) as exc:
        attack(x, [0, 1, 2, 0])
    _one_line(exc, "NaN or infinite logits during the attack", "samples [")
    clean_nan = ATTACKS[name](Classifier(Headless(nan_above=0.0)))
    with pytest.raises(ValueError) as exc:
        clean_nan(x)  # labels from the model's predictions on the clean images
    _one_line(exc, "NaN or infinite logits at the clean images", "[0, 1, 2, 3]")


@pytest.mark.parametrize("name", ["pgd", "deepfool"])
def test_nan_gradients_raise_instead_of_nan_images(name):
    model = Classifier(Headless(nan_gradient=True))
    with torch.no_grad():
        assert torch.isfinite(model(_batch())).all()
    with pytest.raises(ValueError) as exc:
        ATTACKS[name](model)(_batch())
    _one_line(exc, "gradient is NaN or infinite", "samples [0, 1, 2, 3]")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_images_of_any_float_dtype_are_computed_in_the_models_dtype(dtype):
    model = Classifier(TinyCNN(num_classes=4, seed=0), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()  # convolutions
    x32 = _batch(6)
    x = x32.to(dtype)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x.float()))  # cast to float32 inside, not torch's dtype error
    res = attacks.PGD(model, eps=0.05, steps=5, seed=0)(x)
    ref = attacks.PGD(model, eps=0.05, steps=5, seed=0)(x.float())
    wide = torch.promote_types(dtype, torch.float32)
    assert res.images.dtype == wide  # float16 inputs come back as the float32 images the model judged
    torch.testing.assert_close(res.images.float(), ref.images)
    assert res.success.tolist() == ref.success.tolist()
    with torch.no_grad():
        assert (model(res.images).argmax(1) != res.labels).tolist() == res.success.tolist()
    assert (res.linf <= 0.05 + 1e-6).all()


# --------------------------------------------------------------------------------------------------- minimal eps


def test_minimal_epsilon_brackets_the_closed_form_and_flags_floor_and_not_found():
    """Logits (w.x + b, 0) with b = -w.0.5 and x = 0.5 + t sign(w): the margin is t ||w||_1, so the smallest l-inf
    flip is exactly t (clipping never binds)."""
    lin = LinearBinary(seed=3)
    with torch.no_grad():
        lin.b.fill_(-float((lin.w * 0.5).sum()))
    model = Classifier(lin)
    t = torch.tensor([0.05, 0.003, 2e-6, 0.2, -0.01])
    x = 0.5 + t.view(-1, 1, 1, 1) * lin.w.detach().sign()
    labels = torch.tensor([0, 0, 0, 0, 0])  # the last one sits on the other side: misclassified clean
    res = attacks.minimal_epsilon(model, x, labels, norm="linf", max_eps=0.1, min_eps=1e-4, rtol=0.05, steps=20,
                                  seed=0)
    assert res.params["search_steps"] == math.ceil(math.log2(math.log(1e3) / math.log(1.05)))  # 8
    eps, low = res.epsilon.tolist(), res.epsilon_lower.tolist()
    for i in (0, 1):  # bracketed: lower < exact <= upper, within the relative precision
        assert low[i] < float(t[i]) <= eps[i] <= low[i] * 1.05 + 1e-12, (i, low[i], eps[i])
        assert not res.at_floor[i]
    assert res.at_floor[2] and eps[2] <= 1e-4 * 1.05 and low[2] == 0.0  # below the floor: only "<= x"
    assert math.isinf(eps[3]) and not res.success[3] and low[3] == pytest.approx(0.1)  # not found, not max_eps
    assert eps[4] == 0.0 and res.clean_success[4]
    text = res.epsilon_text()
    assert text[2].startswith("<= ") and text[3] == "> 0.1" and text[4] == "0" and text[0] == f"{eps[0]:.4g}"
    assert res.records()[2]["at_floor"] is True and res.records()[3]["epsilon_text"] == "> 0.1"
    assert (res.linf[:3] <= res.epsilon[:3] * (1 + 1e-5)).all()


def test_minimal_epsilon_of_a_batch_misclassified_clean_is_zero_not_missing():
    model = Classifier(LinearBinary(seed=0))
    x = _batch(3)
    with torch.no_grad():
        wrong = 1 - model(x).argmax(1)
    res = attacks.minimal_epsilon(model, x, wrong, steps=2, seed=0)
    assert res.epsilon.tolist() == [0.0] * 3 and not res.at_floor.any() and res.epsilon_text() == ["0"] * 3


def test_minimal_epsilon_settings_are_checked():
    model = Classifier(LinearBinary(seed=0))
    for kwargs, needle in ((dict(min_eps=0.2, max_eps=0.1), "below max_eps"), (dict(rtol=0.0), "rtol"),
                           (dict(search_steps=-1), "search_steps"), (dict(max_eps=float("nan")), "max_eps")):
        with pytest.raises(ValueError) as exc:
            attacks.MinimalEpsilon(model, **kwargs)
        _one_line(exc, needle)


# --------------------------------------------------------------------------------------------------- AP50


def test_ap50_of_thresholded_detections_is_stated_as_such():
    from detectors.evaluate import ap50

    def det(boxes, scores):
        return {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
                "labels": torch.ones(len(scores), dtype=torch.int64)}

    target = {"boxes": torch.tensor([[0, 0, 10, 10], [20, 0, 30, 10.0]]), "labels": torch.ones(2, dtype=torch.int64)}
    full = det([[0, 0, 10, 10], [60, 0, 70, 10], [20, 0, 30, 10]], [0.9, 0.8, 0.2])  # TP, FP, TP
    cut = det([[0, 0, 10, 10], [60, 0, 70, 10]], [0.9, 0.8])  # the same detector cut at 0.3
    all_ap = ap50([full], [target], classes=(1,), score_floor=0.0)
    cut_ap = ap50([cut], [target], classes=(1,), score_floor=0.3)
    assert all_ap["clump"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # the detector's AP
    assert cut_ap["clump"] == pytest.approx(0.5) and cut_ap["score_floor"] == 0.3  # a lower bound, and says so
    with pytest.raises(ValueError) as exc:
        ap50([cut], [target])
    _one_line(exc, "score_floor")
    with pytest.raises(ValueError) as exc:
        ap50([full], [target], score_floor=0.3)
    _one_line(exc, "lower scores", "[0]")


# --------------------------------------------------------------------------------------------------- weights


def test_corrupt_weight_files_name_the_file(tmp_path):
    from safetensors.torch import save_file

    from blindspots.models import load_state_dict_file

    save_file({"w": torch.zeros(64)}, str(tmp_path / "ok.safetensors"))
    torch.save({"w": torch.zeros(64)}, tmp_path / "ok.pt")
    st, pt = (tmp_path / "ok.safetensors").read_bytes(), (tmp_path / "ok.pt").read_bytes()
    files = {"cut.safetensors": st[:40], "junk.safetensors": b"junk", "cut.pt": pt[: len(pt) // 2],
             "junk.pt": b"garbage", "empty.pth": b""}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError) as exc:
            load_state_dict_file(tmp_path / name)
        _one_line(exc, str(tmp_path / name), "corrupt")
    torch.save({"w": torch.zeros(2), "f": Headless()}, tmp_path / "code.pt")
    with pytest.raises(ValueError) as exc:
        load_state_dict_file(tmp_path / "code.pt")
    _one_line(exc, "code.pt", "pickled objects")


def test_pretrained_weights_offline_fail_fast(tmp_path, monkeypatch):
    import socket

    import huggingface_hub

    from blindspots.models import create_timm_model

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)  # nothing cached here
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(RuntimeError) as exc:
        create_timm_model("resnet18", pretrained=True)
    _one_line(exc, "timm:resnet18", "HF_HUB_OFFLINE", "weights=PATH")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with socket.socket() as s:  # a port nobody listens on: the probe is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(RuntimeError) as exc:
        create_timm_model("resnet18", pretrained=True)
    _one_line(exc, f"127.0.0.1:{port} cannot be reached")
    assert time.perf_counter() - start < 10  # hub retries took 51 s


# --------------------------------------------------------------------------------------------------- figures


def test_names_with_dollar_signs_are_not_math_text(tmp_path):
    from blindspots.plots import lst_grid, plot_triangle
    from detectors.evaluate import draw_detections

    names = ["cat_$x^$.png", r"$\notacommand$.jpg"]
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    outputs = images[None].expand(2, -1, -1, -1, -1).clone()
    fig = lst_grid(images, outputs, torch.full((2, 2), 0.9), names=names, path=tmp_path / "grid.png")
    assert (tmp_path / "grid.png").is_file()
    shown = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_parse_math") and not a.get_parse_math())]
    assert any(names[1] in s for s in shown)
    w = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]])
    plot_triangle(w, torch.tensor([0.9, 0.8, 0.7]), (1.0, 1.0, 1.0), title=names[1], path=tmp_path / "tri.png")
    draw_detections(images[0], None, None, tmp_path / "det.png", title=names[1])
    assert (tmp_path / "tri.png").is_file() and (tmp_path / "det.png").is_file()


# --------------------------------------------------------------------------------------------------- box tables


def test_box_csv_ids_that_spreadsheets_would_run_are_escaped_and_round_trip(tmp_path):
    from detectors.data import read_boxes_csv, write_boxes_csv

    ids = ['=HYPERLINK("http://x","y")', "@SUM(A1)", "+cmd", "-1", "-x.png", "plain.png"]
    targets = [{"boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "labels": torch.tensor([1])} for _ in ids]
    path = write_boxes_csv(tmp_path / "boxes.csv", targets, ids)
    cells = [line.split(",")[0] for line in path.read_text().splitlines()[1:]]
    assert not any(c.startswith(("=", "@", "+")) for c in cells) and "-1" in cells and "'-x.png" in cells
    assert read_boxes_csv(path).image_ids == ids
