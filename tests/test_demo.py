"""The main job end to end on the real offline model and photos (few iterations, small images)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch

from blindspots import load_lst_results
from blindspots.cli import main
from blindspots.data import prepare, to_tensor

from conftest import REPO, subprocess_env


def test_demo_writes_results_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--iterations", "3", "--size", "64", "--quiet",
            "--photos", "chelsea,coffee,rocket"]
    assert main([a for a in args if a != "--quiet"]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "results.json").read_text())
    classes = data["meta"]["classes"]
    n_pairs = sum(1 for i in range(3) for j in range(3) if i != j and classes[i] != classes[j])
    assert n_pairs > 0 and len(data["pairs"]) == n_pairs
    for pair in data["pairs"]:
        assert pair["source"] != pair["target"] and pair["source_class"] != pair["target_class"]
        assert pair["iterations"] == 3 and 0 <= pair["final_confidence"] <= 1
        assert pair["rms_l2"] < pair["start_rms_l2"]  # three steps already moved towards the target
    assert (out / "grid.png").stat().st_size > 10_000 and (out / "curves.png").stat().st_size > 10_000
    assert (out / "results.csv").read_text().count("\n") == n_pairs + 1
    saved_for_geometry = load_lst_results(out / "lst_results.pt")
    assert saved_for_geometry["outputs"].shape[:2] == (3, 2) and saved_for_geometry["model"] == "imagenet-lite0"
    geometry = json.loads((out / "geometry" / "geometry.json").read_text())
    assert 0 <= geometry["hull"]["hull_mean"]["mean"] <= 1 and (out / "geometry" / "triangle_0_0_1.png").exists()
    # the geometry summary prints as a table of the saved figures (mean and std over sources), not as a raw dict
    hull = geometry["hull"]
    assert "{'" not in printed and f"triangle hulls: 3 sources x {hull['pairs']} triangle(s)" in printed
    for label, key in (("source confidence p_src", "p_src"), ("mean confidence in the triangles", "hull_mean")):
        assert f"  {label:<40} {hull[key]['mean']:>7.3f} {hull[key]['std']:>7.3f}" in printed

    # resume: saved rows are reused, not recomputed (their files stay untouched) and give the same records
    rows = sorted((out / "stages").glob("row-*.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in rows]
    assert len(rows) == len({p["source"] for p in data["pairs"]})
    assert main(args) == 0
    assert [p.stat().st_mtime_ns for p in rows] == stamps
    assert json.loads((out / "results.json").read_text())["pairs"] == data["pairs"]
    # a different setting is refused (exit 2, naming it), never answered with the old rows; --restart recomputes
    assert main(args[:4] + ["4"] + args[5:]) == 2
    assert json.loads((out / "results.json").read_text())["pairs"] == data["pairs"]
    assert main(args[:4] + ["4"] + args[5:] + ["--restart"]) == 0
    assert all(p["iterations"] == 4 for p in json.loads((out / "results.json").read_text())["pairs"])


def test_console_script_help():
    exe = REPO / ".venv" / "bin" / "blindspots"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "blindspots.cli"]
    out = subprocess.run(cmd + ["--help"], capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert out.returncode == 0 and "demo" in out.stdout


def test_image_preparation():
    rgba = (np.random.default_rng(0).random((300, 400, 4)) * 255).astype(np.uint8)
    x = prepare(to_tensor(rgba), 224)
    assert x.shape == (3, 224, 224) and 0 <= float(x.min()) and float(x.max()) <= 1
    gray = to_tensor(np.full((10, 12), 128, dtype=np.uint8))
    assert gray.shape == (3, 10, 12) and torch.allclose(gray, torch.full_like(gray, 128 / 255))
