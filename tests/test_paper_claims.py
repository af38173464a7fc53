"""The paper-claims study: its verdict rules on hand-made records, and the study end to end on two analytic models
whose hull fractions are known: a linear model (hyperplane level sets: every triangle of LST outputs stays
confident) and a ball-complement model (spherical level sets: chords between outputs dip into the ball)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from blindspots import Classifier, LSTConfig
from experiments import paper_claims as pc


def _pair(model, source, ssim, p0=0.9, p_end=0.85, round_=0):
    return {"kind": "lst", "model": model, "source": source, "round": round_, "ssim_paper": ssim,
            "initial_confidence": p0, "final_confidence": p_end}


def _hull(model, source, edge_min, frac):
    return {"kind": "hull", "model": model, "source": source, "edge_min": edge_min, "fraction@0.2": frac}


def test_claim_one_needs_the_threshold_kept_and_ssim_above_the_floor():
    good = [_pair("a", s, 0.95 + 0.01 * (s % 3), round_=r) for s in range(20) for r in range(2)]
    assert pc.claim_outputs_look_like_target(good, 0.2)["verdict"] == "holds"
    lost = good + [_pair("a", 99, 0.99, p0=0.9, p_end=0.6)]  # one pair lost the source class: against the claim
    assert pc.claim_outputs_look_like_target(lost, 0.2)["verdict"] == "does not hold"
    blurry = [_pair("b", s, 0.3 + 0.01 * (s % 5)) for s in range(20)]
    assert pc.claim_outputs_look_like_target(blurry, 0.2)["verdict"] == "does not hold"
    assert pc.claim_outputs_look_like_target(good + blurry, 0.2)["verdict"] == "mixed"
    row = pc.claim_outputs_look_like_target(good, 0.2)["rows"][0]
    assert row["n"] == 20 and row["ci_low"] <= row["value"] <= row["ci_high"] and row["threshold_held"] == 1.0


def test_claim_two_counts_sources_whose_worst_edge_stays_within_delta():
    star = [_hull("a", s, -0.05, 0.9) for s in range(60)]
    res = pc.claim_paths_star_like(star, 0.2)
    assert res["verdict"] == "holds" and res["rows"][0]["value"] == 1.0
    broken = [_hull("a", s, -0.5 if s % 2 else -0.05, 0.9) for s in range(60)]
    res = pc.claim_paths_star_like(broken, 0.2)
    assert res["verdict"] == "mixed" and res["rows"][0]["value"] == 0.5
    assert pc.claim_paths_star_like([_hull("a", s, -0.5, 0.9) for s in range(60)], 0.2)["verdict"] == \
        "does not hold"


def test_claim_three_is_a_paired_difference_per_architecture():
    recs = [_hull("cnn", s, 0, 0.5 + 0.01 * s) for s in range(30)] + [_hull("cnn-at", s, 0, 0.7 + 0.01 * s)
                                                                        for s in range(30)]
    vit_same = [_hull("vit", s, 0, 0.5) for s in range(30)] + [_hull("vit-at", s, 0, 0.5) for s in range(30)]
    pairs = [("CNN", "cnn", "cnn-at"), ("ViT", "vit", "vit-at")]
    res = pc.claim_at_hull_larger(recs, pairs[:1], 0.2)
    assert res["verdict"] == "holds" and res["rows"][0]["value"] == pytest.approx(0.2)
    res = pc.claim_at_hull_larger(recs + vit_same, pairs, 0.2)
    assert res["verdict"] == "mixed"  # the CNN shows it, the ViT (no difference at all) does not
    assert res["rows"][1]["value"] == 0.0 and res["rows"][1]["ci_low"] == res["rows"][1]["ci_high"] == 0.0
    worse = [_hull("cnn-at", s, 0, 0.3) for s in range(30)] + [_hull("cnn", s, 0, 0.6) for s in range(30)]
    assert pc.claim_at_hull_larger(worse, pairs[:1], 0.2)["verdict"] == "does not hold"


class _Linear(nn.Module):
    """Class 0 iff w.(x - 0.5) > 0: hyperplane level sets."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):
        z = ((x - 0.5) * self.w).flatten(1).sum(1)
        return torch.stack([z, -z], 1)


class _BallComplement(nn.Module):
    """Class 0 iff x lies outside the ball |x - 0.5|^2 / d < rho: spherical level sets around the centre."""

    def __init__(self, rho=0.1, k=20.0):
        super().__init__()
        self.rho, self.k = rho, k
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        z = self.k * (((x - 0.5) ** 2).flatten(1).mean(1) - self.rho) + 0 * self.dummy
        return torch.stack([z / 2, -z / 2], 1)


def _images(w, n=12, seed=0):
    """Class 0: far from the centre on w's side; class 1: near the centre, slightly to the other side, in nearly
    orthogonal directions (so the outputs' chords cut deep into the ball). Both models agree on every image."""
    g = torch.Generator().manual_seed(seed)
    sign = w.sign()

    def signs():
        return torch.where(torch.rand(w.shape, generator=g) < 0.5, 1.0, -1.0)

    far = [0.5 + 0.4 * sign * torch.where(torch.rand(w.shape, generator=g) < 0.8, 1.0, -1.0) for _ in range(n // 2)]
    near = [0.5 + 0.08 * signs() - 0.02 * sign for _ in range(n // 2)]
    x = torch.stack(far + near).clamp(0, 1)
    return x, torch.tensor([0] * (n // 2) + [1] * (n // 2))


def test_study_end_to_end_on_models_with_known_hulls(tmp_path):
    w = torch.randn(3, 12, 12, generator=torch.Generator().manual_seed(1)) * 0.05
    models = {"ball": Classifier(_BallComplement(), name="ball"), "linear": Classifier(_Linear(w), name="linear")}
    x, y = _images(w)
    for m in models.values():
        assert (m.predict(x)[0] == y).all()
    group = pc.Group(("ball", "linear"), (("toy", "ball", "linear"),), lambda limit, seed, size: (x, y, None))
    config = LSTConfig.paper(iterations=60, step_size=0.05, threshold=0.1, adv_eps=0.0)
    result = pc.run_claims(tmp_path, {"toy": group}, rounds=2, config=config, min_confidence=0.6, models=models,
                           batch_size=24)
    claims = {c["claim"]: c for c in result["claims"]}
    at = claims["at_hull_larger"]["rows"][0]
    assert at["at"] == pytest.approx(1.0)  # the linear model's triangles stay confident everywhere
    assert at["normal"] < 0.95  # chords between points of a sphere pass inside the ball
    assert claims["at_hull_larger"]["verdict"] == "holds"
    assert {r["model"] for r in claims["outputs_look_like_target"]["rows"]} == {"ball", "linear"}
    assert all(r["threshold_held"] == 1.0 for r in claims["outputs_look_like_target"]["rows"])
    saved = json.loads((tmp_path / "claims.json").read_text())
    assert [c["claim"] for c in saved["claims"]] == list(pc.CLAIM_RULES)
    assert (tmp_path / "claims.csv").read_text().count("\n") == 1 + 2 + 2 + 1
    assert (tmp_path / "triangles.png").read_bytes()[:4] == b"\x89PNG"
    html = (tmp_path / "report.html").read_text()
    assert html.index("Claims of the paper") < html.index("toy: Table 1") < html.index("Settings")
    assert len(result["tables"]["toy"]["table1"]) == 2 and len(result["tables"]["toy"]["table2"]) == 2
