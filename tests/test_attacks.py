"""Attacks: closed forms on linear classifiers, one contract over every attack on a tiny seeded CNN, parity with
torchattacks, and the sensitivity profile / CLI end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import attacks
from blindspots import Classifier
from blindspots.metrics import l2 as l2_dist
from blindspots.metrics import linf as linf_dist
from conftest import LinearBinary, TinyCNN

MEAN, STD = (0.4, 0.5, 0.6), (0.25, 0.3, 0.2)


pytestmark = pytest.mark.usefixtures("one_thread")


def _linear_setup(n: int = 6, seed: int = 0):
    """Two-class linear classifier with normalisation inside; images well inside [0, 1] so clipping never binds.

    Logits (z, 0) with z = <w, (x - mean) / std>: in pixel space the margin is z and its gradient w / std, so the
    minimal l2 flip is |z| / ||w / std||_2 and the minimal l-inf flip |z| / ||w / std||_1.
    """
    model = Classifier(LinearBinary(seed=seed), MEAN, STD).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    x = 0.5 + 0.1 * (torch.rand(n, 3, 8, 8, generator=gen) - 0.5)
    with torch.no_grad():
        z = model(x)[:, 0]
    w = model.model.w.detach() / torch.tensor(STD).view(3, 1, 1)
    return model, x, z.abs(), w


def test_deepfool_and_minimal_epsilon_match_the_closed_form_on_a_linear_classifier():
    model, x, margin, w = _linear_setup()
    exact_l2 = margin / w.norm()
    exact_linf = margin / w.abs().sum()

    df = attacks.DeepFool(model)(x)
    assert df.success.all()
    ratio = df.l2 / exact_l2
    assert (ratio >= 1.0).all() and (ratio <= 1.05).all(), ratio
    # one linearisation step lands past the boundary: clean forward + one step, one backward (1 candidate class)
    assert df.backwards.tolist() == [1] * len(x)

    for norm, exact, max_eps in (("l2", exact_l2, 1.0), ("linf", exact_linf, 0.1)):
        res = attacks.minimal_epsilon(model, x, norm=norm, max_eps=max_eps, search_steps=10, steps=20, seed=0)
        assert res.success.all()
        # success at eps implies eps >= the exact minimum; bisection resolution max_eps / 2**10
        assert (res.epsilon >= exact * (1 - 1e-4)).all(), (res.epsilon, exact)
        assert (res.epsilon <= exact * 1.05 + max_eps / 2**10).all(), (res.epsilon, exact)
        dist = res.l2 if norm == "l2" else res.linf
        assert (dist <= res.epsilon * (1 + 1e-5) + 1e-7).all()


def test_bfloat16_attacks_keep_the_closed_form_and_their_budgets():
    # the linear classifier's minimal flips are known; under bfloat16 autocast the model runs in bfloat16 (8-bit
    # mantissa) while steps and projections stay float32, so budgets hold exactly and the flips land within ~1%
    linear, x, margin, w = _linear_setup()
    layer = nn.Linear(w.numel(), 2)  # the same function as an nn.Linear, which autocast runs in bfloat16
    with torch.no_grad():
        layer.weight.copy_(torch.stack([linear.model.w.flatten(), torch.zeros(w.numel())]))
        layer.bias.copy_(torch.stack([linear.model.b, torch.zeros(())]))
    model = Classifier(nn.Sequential(nn.Flatten(), layer), MEAN, STD).eval()
    dtypes = []
    hook = layer.register_forward_hook(lambda m, inp, out: dtypes.append(out.dtype))
    exact_l2, exact_linf = margin / w.norm(), margin / w.abs().sum()
    df = attacks.DeepFool(model, amp=True)(x)
    assert torch.bfloat16 in dtypes  # the model did compute in bfloat16
    ratio = df.l2 / exact_l2
    assert df.success.all() and (ratio >= 0.99).all() and (ratio <= 1.06).all(), ratio
    res = attacks.minimal_epsilon(model, x, norm="linf", max_eps=0.1, search_steps=10, steps=20, seed=0, amp=True)
    assert res.success.all() and res.images.dtype == torch.float32
    assert (res.epsilon >= exact_linf * 0.99).all() and (res.epsilon <= exact_linf * 1.06 + 0.1 / 2**10).all()
    assert (res.linf <= res.epsilon * (1 + 1e-5) + 1e-7).all()
    factor = torch.tensor([0.9, 1.2] * (len(x) // 2))
    pgd = attacks.PGD(model, exact_linf * factor, "linf", steps=30, seed=0, amp=True)(x)
    assert (pgd.linf <= exact_linf * factor * (1 + 1e-5) + 1e-7).all()
    assert pgd.success.tolist() == (factor > 1).tolist()
    hook.remove()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_its_ball_and_flips_exactly_when_the_budget_allows(norm):
    model, x, margin, w = _linear_setup()
    exact = margin / (w.abs().sum() if norm == "linf" else w.norm())
    # per-sample budgets: half just below the minimal flip (must fail), half 20 % above (must succeed)
    factor = torch.tensor([0.95, 1.2] * (len(x) // 2))
    eps = exact * factor
    for early_stop in (True, False):
        res = attacks.PGD(model, eps, norm, steps=30, early_stop=early_stop, seed=0)(x)
        assert res.images.min() >= 0 and res.images.max() <= 1
        dist = res.linf if norm == "linf" else res.l2
        assert (dist <= eps * (1 + 1e-5) + 1e-7).all(), (dist, eps)
        assert res.success.tolist() == (factor > 1).tolist()
        with torch.no_grad():
            assert ((model(res.images).argmax(1) != 0) == res.success).all()  # z > 0 ... class 0 is never flipped
        if not early_stop:
            # 30 steps + the final iterate + the clean forward that predicted the labels
            assert (res.backwards == 30).all() and (res.forwards == 32).all()


def test_targeted_pgd_reaches_the_target_when_the_budget_allows():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    with torch.no_grad():
        lin[1].weight.normal_(0, 0.05)
        lin[1].bias.zero_()
    model = Classifier(lin).eval()
    x = 0.5 + 0.1 * (torch.rand(8, 3, 8, 8) - 0.5)
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    t = logits.argmin(1)  # the least likely class: the hardest target, not where an untargeted attack goes
    W = lin[1].weight.detach().view(3, 3, 8, 8)
    gap = (logits.gather(1, y[:, None]) - logits.gather(1, t[:, None])).squeeze(1)
    w_ty = W[t] - W[y]
    lower = gap / w_ty.flatten(1).abs().sum(1)  # no l-inf perturbation below this makes z_t >= z_y
    eps_big = 3 * lower
    corner = (x + eps_big.view(-1, 1, 1, 1) * w_ty.sign()).clamp(0, 1)
    with torch.no_grad():
        assert (model(corner).argmax(1) == t).all()  # so the budget eps_big allows the target
    res = attacks.PGD(model, eps_big, "linf", steps=40, seed=0)(x, y, targets=t)
    assert res.success.all() and (res.predictions == t).all()
    assert (res.linf <= eps_big * (1 + 1e-5)).all()
    res = attacks.PGD(model, 0.9 * lower, "linf", steps=40, seed=0)(x, y, targets=t)
    assert not res.success.any()
    assert (res.targets == t).all()


# ------------------------------------------------------------------------------------------------- the contract

EPS = 0.05


def _attacks(model):
    return {
        "fgsm": (attacks.FGSM(model, EPS), ("linf", EPS)),
        "pgd-linf": (attacks.PGD(model, EPS, "linf", steps=5, seed=0), ("linf", EPS)),
        "pgd-l2-restarts": (attacks.PGD(model, 0.5, "l2", steps=5, restarts=2, early_stop=False, seed=0), ("l2", 0.5)),
        "pgd-margin": (attacks.PGD(model, EPS, "linf", steps=5, loss="margin", random_start=False), ("linf", EPS)),
        "apgd-linf": (attacks.APGD(model, EPS, "linf", steps=8, seed=0), ("linf", EPS)),
        "apgd-l2": (attacks.APGD(model, 0.5, "l2", steps=8, restarts=2, early_stop=False, seed=0), ("l2", 0.5)),
        "apgd-t": (attacks.APGDT(model, EPS, "linf", steps=5, target_classes=2, seed=0), ("linf", EPS)),
        "fab-t-l2": (attacks.FAB(model, 0.5, "l2", steps=5, target_classes=2, early_stop=False, seed=0), ("l2", 0.5)),
        "square": (attacks.Square(model, EPS, "linf", queries=30, seed=0), ("linf", EPS)),
        "deepfool": (attacks.DeepFool(model, steps=10, candidates=3), None),
        "minimal-eps": (attacks.MinimalEpsilon(model, max_eps=EPS, search_steps=3, steps=5, seed=0), ("linf", EPS)),
    }


@pytest.fixture(scope="module")
def cnn_batch():
    model = Classifier(TinyCNN(num_classes=4, seed=0), MEAN, STD)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(8, 3, 16, 16, generator=gen)
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    labels = pred.clone()
    labels[:2] = (pred[:2] + 1) % 4  # two samples misclassified from the start
    model.train()
    return model, x, labels


@pytest.mark.parametrize("name", list(_attacks(nn.Identity())))
def test_every_attack_keeps_the_contract(cnn_batch, name):
    model, x, labels = cnn_batch
    model.train()
    flags = {p: p.requires_grad for p in model.parameters()}
    attack, ball = _attacks(model)[name]
    res = attack(x, labels)
    # model mode and parameter flags restored, no gradients left on parameters
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad == f for p, f in flags.items()) and all(p.grad is None for p in model.parameters())
    # shape / dtype / device kept, values in [0, 1], inside the budget
    assert res.images.shape == x.shape and res.images.dtype == x.dtype and res.images.device == x.device
    assert res.images.is_contiguous()  # the inputs' layout, whatever layout the model was fed
    assert res.images.min() >= 0 and res.images.max() <= 1
    assert torch.allclose(res.l2, l2_dist(res.images, x)) and torch.allclose(res.linf, linf_dist(res.images, x))
    if ball is not None:
        norm, eps = ball
        dist = res.linf if norm == "linf" else res.l2
        assert (dist <= eps * (1 + 1e-5) + 1e-7).all()
    if res.epsilon is not None:
        assert torch.isinf(res.epsilon[~res.success]).all()
        assert (res.linf[res.success] <= res.epsilon[res.success] * (1 + 1e-5) + 1e-7).all()
    # the success mask and predictions are the model's verdict (eval mode) on the returned images
    model.eval()
    with torch.no_grad():
        pred_adv, pred_clean = model(res.images).argmax(1), model(x).argmax(1)
    model.train()
    assert (res.predictions == pred_adv).all()
    assert (res.success == (pred_adv != labels)).all()
    # accuracy never increases: already-misclassified samples stay misclassified; those found so before the attack
    # (always with early stop; otherwise checked only if the attack failed) come back unchanged
    assert (pred_adv == labels).sum() <= (pred_clean == labels).sum()
    wrong = pred_clean != labels
    assert res.success[wrong].all()
    assert torch.equal(res.images[res.clean_success], x[res.clean_success])
    assert (res.clean_success == wrong).all() or not attack.early_stop
    # passes are counted: every attacked sample cost at least one forward and (but Square) one backward
    attacked = ~wrong
    assert (res.forwards >= 1).all() and (res.backwards[attacked] >= (0 if name == "square" else 1)).all()
    assert (res.backwards <= res.forwards * max(getattr(attack, "candidates", 1), 1)).all()
    assert len(res.records()) == len(x) and json.dumps(res.summary())


def test_early_stop_spends_passes_only_on_samples_not_yet_fooled(cnn_batch):
    model, x, labels = cnn_batch
    steps = 6
    full = attacks.PGD(model, EPS, steps=steps, early_stop=False, seed=0)(x, labels)
    early = attacks.PGD(model, EPS, steps=steps, early_stop=True, seed=0)(x, labels)
    attacked = ~early.clean_success
    assert (full.backwards[2:] == steps).all() and (full.forwards[2:] == steps + 1).all()
    # a sample not fooled runs every step (+ clean and final forwards); a fooled one stops at its first fooled iterate
    never = attacked & ~early.success
    assert (early.backwards[never] == steps).all() and (early.forwards[never] == steps + 2).all()
    fooled = attacked & early.success
    assert (early.backwards[fooled] < steps + 1).all()
    assert (early.backwards[early.clean_success] == 0).all() and (early.forwards[early.clean_success] == 1).all()
    assert early.backwards.sum() <= full.backwards.sum()


def test_random_starts_do_not_depend_on_batch_mates():
    model, x, _, _ = _linear_setup(n=6)
    seeds = torch.arange(100, 106)
    for cls, kw in ((attacks.PGD, {"norm": "l2", "eps": 0.3}), (attacks.APGD, {"norm": "linf", "eps": 0.02})):
        whole = cls(model, steps=5, seed=seeds, **kw)(x)
        part = cls(model, steps=5, seed=seeds[3:5], **kw)(x[3:5])
        assert torch.allclose(whole.images[3:5], part.images, atol=1e-6)
        assert torch.equal(whole.backwards[3:5], part.backwards)
        again = cls(model, steps=5, seed=seeds, **kw)(x)
        assert torch.equal(whole.images, again.images)


def test_bad_inputs_give_clear_errors(cnn_batch):
    model, x, labels = cnn_batch
    pgd = attacks.PGD(model, EPS, steps=2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd(x * 2, labels)
    with pytest.raises(ValueError, match="shape"):
        pgd(x, labels[:3])
    with pytest.raises(ValueError, match="targets equal the labels"):
        pgd(x, labels, targets=labels)
    with pytest.raises(ValueError, match="untargeted"):
        attacks.DeepFool(model)(x, labels, targets=(labels + 1) % 4)
    with pytest.raises(ValueError, match="norm"):
        attacks.PGD(model, EPS, "l1")
    with pytest.raises(ValueError, match="random_start"):
        attacks.PGD(model, EPS, restarts=3, random_start=False)
    with pytest.raises(ValueError, match="eps"):
        attacks.PGD(model, -1.0)
    with pytest.raises(TypeError, match="nn.Module"):
        attacks.APGD(lambda t: t)


@pytest.mark.parametrize("norm,channels_last", [("linf", True), ("linf", False), ("l2", True)])
def test_pgd_matches_torchattacks_from_the_same_random_start(cnn_batch, norm, channels_last):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, _ = cnn_batch
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    eps, alpha, steps = (8 / 255, 2 / 255, 10) if norm == "linf" else (0.5, 0.1, 10)
    torch.manual_seed(0)
    if norm == "linf":
        ref = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps)(x, y)
        torch.manual_seed(0)  # torchattacks' start: x + U(-eps, eps), clipped
        init = torch.clamp(x + torch.empty_like(x).uniform_(-eps, eps), 0, 1)
    else:
        ref = torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps)(x, y)
        torch.manual_seed(0)  # torchattacks' start: a normal direction scaled to eps * U(0, 1), clipped
        delta = torch.empty_like(x).normal_()
        n = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        r = torch.zeros_like(n).uniform_(0, 1)
        init = torch.clamp(x + delta * r / n * eps, 0, 1)
    ours = attacks.PGD(model, eps, norm, steps, alpha, early_stop=False, channels_last=channels_last)(x, y, init=init)
    assert (ours.images - ref).abs().max() <= 1e-5
    with torch.no_grad():
        assert torch.equal(ours.success, model(ref).argmax(1) != y)


# ------------------------------------------------------------------------------------------------- sensitivity profile

def test_sensitivity_profile_matches_closed_forms_on_a_linear_classifier(tmp_path):
    """Linear model, LST without adversarial term or start noise: LST moves orthogonally to w, so it ends at the
    target's projection onto the source's level set, RMS-l2 |z_s - z_t| / (||w|| sqrt(d)) away from the target;
    the minimal l-inf flip is |z_s| / ||w||_1."""
    from blindspots import LSTConfig
    from blindspots.store import RunChanged
    from experiments import sensitivity_profile

    model, pool, _, w = _linear_setup(n=40, seed=2)
    with torch.no_grad():
        model.model.b -= model(pool)[:, 0].median()  # centre the margins: both classes occur
        z_pool = model(pool)[:, 0]
    order = z_pool.argsort()
    idx = torch.cat([order[-3:], order[:3]])
    x, z = pool[idx], z_pool[idx]
    config = LSTConfig(step_size=0.05, iterations=200, adv_eps=0.0, init_noise=0.0)
    kw = dict(names=[f"img{i}" for i in range(6)], norm="linf", max_eps=0.1, search_steps=10, steps=20, rounds=2,
              config=config, seed=0, checkpoint=tmp_path / "ckpt")
    labels = (z < 0).long()  # logits (z, 0)
    prof = sensitivity_profile(model, x, labels, **kw)
    assert len(prof) == 6 and prof.pairs.shape == (2, 6)
    eps = torch.tensor([r["min_eps"] for r in prof.rows])
    exact = z.abs() / w.abs().sum()
    assert (eps >= exact * (1 - 1e-4)).all() and (eps <= exact * 1.05 + 0.1 / 2**10).all()
    d = x[0].numel()
    for r, res in enumerate(prof.lst):
        t = prof.pairs[r]
        expected = (z - z[t]).abs() / (w.norm() * d ** 0.5)
        assert torch.allclose(res.rms_l2, expected, rtol=0.02, atol=1e-4), (res.rms_l2, expected)
    lst_mean = torch.tensor([r["lst_rms_l2"] for r in prof.rows])
    assert torch.allclose(lst_mean, torch.stack([res.rms_l2 for res in prof.lst]).mean(0), atol=1e-6)
    assert all(abs(r["lst_confidence"] - r["lst_initial_confidence"]) < 1e-3 for r in prof.rows)
    csv_path, json_path = prof.to_csv(tmp_path / "s.csv"), prof.to_json(tmp_path / "s.json")
    assert csv_path.read_text().count("\n") == 7 and len(json.loads(json_path.read_text())["rows"]) == 6
    fig = prof.plot(tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 0 and fig.axes
    # resume: with nothing changed the saved stages are reused (no model pass at all: the model is poisoned)
    forward = model.model.forward
    model.model.forward = lambda *a: (_ for _ in ()).throw(AssertionError("recomputed a saved stage"))
    again = sensitivity_profile(model, x, labels, **kw)
    model.model.forward = forward
    assert again.rows == prof.rows
    # changed weights, a changed setting or a changed image: refused with the cause named, never the old numbers
    with torch.no_grad():
        model.model.w.mul_(1.5)
    with pytest.raises(RunChanged, match="model weights"):
        sensitivity_profile(model, x, labels, **kw)
    with torch.no_grad():
        model.model.w.div_(1.5)
    with pytest.raises(RunChanged, match="search_steps 10 -> 4"):
        sensitivity_profile(model, x, labels, **{**kw, "search_steps": 4})
    with pytest.raises(RunChanged, match="input images"):
        sensitivity_profile(model, x.flip(0), labels.flip(0), **kw)
    changed = sensitivity_profile(model, x, labels, **{**kw, "search_steps": 4, "rounds": 0, "restart": True})
    assert changed.rows[0]["min_eps"] != prof.rows[0]["min_eps"] and math.isnan(changed.rows[0]["lst_rms_l2"])


def test_attack_cli_writes_table_and_figure(tmp_path):
    from skimage import data, io

    from blindspots.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    io.imsave(folder / "a.png", data.chelsea()[:120, :120])
    io.imsave(folder / "b.png", data.rocket()[:120, :120])
    out = tmp_path / "out"
    code = main(["attack", "--images", str(folder), "--size", "32", "--steps", "2", "--search-steps", "2",
                 "--iterations", "2", "--out", str(out), "--quiet"])
    assert code == 0
    rows = json.loads((out / "sensitivity.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["a.png", "b.png"]
    assert (out / "sensitivity.csv").exists() and (out / "sensitivity.png").stat().st_size > 0


def test_model_call_options_reach_both_sides_of_the_profile_and_every_command():
    import argparse
    import importlib

    from blindspots import LSTConfig
    from blindspots.cli import model_call_options
    from experiments.sensitivity import sensitivity_profile

    torch.manual_seed(0)
    layer = nn.Linear(3 * 8 * 8, 3)  # autocast runs nn.Linear in bfloat16
    model = Classifier(nn.Sequential(nn.Flatten(), layer), MEAN, STD).eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    dtypes = []
    layer.register_forward_hook(lambda m, inp, out: dtypes.append(out.dtype))
    quick = dict(max_eps=0.1, search_steps=2, steps=3, rounds=1)
    for lst_amp, attack_amp in ((False, True), (True, False)):
        dtypes.clear()
        sensitivity_profile(model, x, **quick, config=LSTConfig.adaptive(iterations=3, amp=lst_amp),
                            attack_options={"amp": attack_amp})
        bf16 = [d == torch.bfloat16 for d in dtypes]
        assert any(bf16) and not all(bf16)  # one side in bfloat16, the other (and the labels' forward) not
    for name in ("blindspots.demo", "experiments.sensitivity", "experiments.tables", "experiments.claims"):
        parser = argparse.ArgumentParser()
        importlib.import_module(name).add_arguments(parser)
        args = parser.parse_args(["--amp", "--channels-last", "--compile"])
        assert model_call_options(args) == {"amp": True, "channels_last": True, "compile": True}, name


# ------------------------------------------------------------------------------- issue 20: the attack registry


def test_registered_attacks_report_their_budget_the_same_way_on_a_linear_classifier():
    """run_attack fills the budget fields for both semantics: a minimal attack's epsilon is the norm it found (at or
    just past the closed-form minimum); a fixed one is a one-point search: '<= eps' where eps exceeds the minimum
    (it flips), '> eps' where eps is below it (it cannot)."""
    from attacks.registry import ATTACKS, run_attack

    model, x, margin, w = _linear_setup()
    exact_l2, exact_linf = margin / w.norm(), margin / w.abs().sum()
    assert {"pgd", "apgd", "apgd-t", "square", "fgsm", "minimal-epsilon", "deepfool", "fab-t"} <= set(ATTACKS)
    df = run_attack("deepfool", model, x, norm="l2")
    assert (df.epsilon >= exact_l2 * (1 - 1e-4)).all() and (df.epsilon <= exact_l2 * 1.05).all()
    assert df.params["budget"] == "minimal" and df.epsilon_text() == [f"{e:.4g}" for e in df.epsilon.tolist()]
    eps = float(exact_linf.median())
    for name in ("pgd", "apgd"):
        res = run_attack(name, model, x, norm="linf", eps=eps, steps=20, seed=0)
        flips = exact_linf < eps * 0.99  # PGD finds the linear model's minimal flip within 20 steps
        assert res.success[flips].all() and not res.success[exact_linf > eps].any(), name
        text = res.epsilon_text()
        assert [t for t, f in zip(text, res.success) if f] == [f"<= {eps:.4g}"] * int(res.success.sum())
        assert [t for t, f in zip(text, res.success) if not f] == [f"> {eps:.4g}"] * int((~res.success).sum())
        assert torch.equal(res.epsilon.isinf(), ~res.success)


def test_the_ensemble_builds_its_members_through_the_attack_registry(monkeypatch):
    """Each AutoAttack member is a registered attack with the budget's settings, equal (same start, same seeds) to
    the class built by hand as AutoAttack runs it; a registry entry swapped for another class is what the ensemble
    then runs: it keeps no constructors of its own."""
    import dataclasses

    from attacks.ensemble import ATTACKS, MEMBERS, EnsembleBudget, make_attack
    from attacks.registry import ATTACKS as REGISTERED

    model, x, _, _ = _linear_setup(4)
    y = model(x).argmax(1)
    b = EnsembleBudget(apgd_steps=3, restarts=1, target_classes=1, fab_steps=3, square_queries=5)
    assert ATTACKS == ("apgd-ce", "apgd-t", "fab-t", "square") and tuple(MEMBERS) == ATTACKS
    built = {name: make_attack(name, model, 0.05, "linf", b, seed=[7, 8, 9, 10]) for name in ATTACKS}
    assert {n: type(a) for n, a in built.items()} == {n: REGISTERED[MEMBERS[n][0]].cls for n in ATTACKS}
    by_hand = {"apgd-ce": attacks.APGD(model, 0.05, "linf", 3, restarts=1, loss="ce", seed=[7, 8, 9, 10]),
               "apgd-t": attacks.APGDT(model, 0.05, "linf", 3, target_classes=1, restarts=1, loss="margin",
                                       seed=[7, 8, 9, 10]),  # 2 classes: the margin loss, DLR needs 4
               "fab-t": attacks.FAB(model, 0.05, "linf", 3, target_classes=1, restarts=1, seed=[7, 8, 9, 10]),
               "square": attacks.Square(model, 0.05, "linf", 5, restarts=1, seed=[7, 8, 9, 10])}
    for name in ATTACKS:
        assert built[name].params() == by_hand[name].params(), name
        assert torch.equal(built[name](x, y).images, by_hand[name](x, y).images), name

    class Swapped(attacks.Square):
        calls = 0

        def __call__(self, images, labels=None):
            Swapped.calls += 1
            return super().__call__(images, labels)

    monkeypatch.setitem(REGISTERED, "square", dataclasses.replace(REGISTERED["square"], cls=Swapped))
    result = attacks.evaluate_robustness(model, x, y, eps=0.05, attacks=["square"], budget=b)
    assert Swapped.calls == 1 and result.attacks == ["square"]
    with pytest.raises(ValueError, match="unknown attack 'cw'; the ensemble knows apgd-ce, apgd-t, fab-t, square"):
        make_attack("cw", model, 0.05, "linf", b)


def test_the_registry_refuses_settings_an_attack_would_ignore():
    from attacks.budget import FixedEpsilonAttack
    from attacks.registry import ATTACKS, attack_entry, register_attack

    model = Classifier(LinearBinary(), MEAN, STD)
    with pytest.raises(ValueError, match="fixed budget: give eps"):
        attack_entry("pgd").make(model, norm="linf")
    with pytest.raises(ValueError, match="searches the smallest budget itself"):
        attack_entry("deepfool").make(model, norm="l2", eps=0.1)
    with pytest.raises(ValueError, match="supports l2, not 'linf'"):
        attack_entry("deepfool").make(model, norm="linf")
    with pytest.raises(ValueError, match="does not take max_eps"):
        attack_entry("apgd").make(model, norm="l2", eps=0.5, max_eps=1.0)
    with pytest.raises(ValueError, match="unknown attack 'cw'; registered: pgd"):
        attack_entry("cw")
    assert attack_entry("square").make(model, norm="linf", eps=0.1, steps=7).queries == 7
    with pytest.raises(ValueError, match="registered twice"):
        register_attack("pgd", "again")(attacks.PGD)
    with pytest.raises(ValueError, match="must derive from FixedEpsilonAttack or MinimizationAttack"):
        register_attack("plain", "no budget semantics")(attacks.Attack)
    assert "plain" not in ATTACKS
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):  # the budget check of the base class
        type("Bad", (FixedEpsilonAttack,), {})(model, -1.0, "linf")


def test_a_registered_attack_is_reachable_from_the_command_line(tmp_path, capsys):
    """One decorator is all a new attack needs: `blindspots attack --attack NAME` lists it and runs it."""
    from attacks.budget import FixedEpsilonAttack
    from attacks.registry import ATTACKS, register_attack
    from blindspots.cli import main

    calls = []

    @register_attack("test-noise", "uniform noise of size eps (a test attack)")
    class Noise(FixedEpsilonAttack):
        def __init__(self, model, eps, norm="linf", *, seed=None, **options):
            super().__init__(model, eps, norm, seed=seed, **options)

        def _run(self, run, idx, init):
            calls.append(idx.numel())
            x = (run.x[idx] + self.eps * torch.sign(torch.randn_like(run.x[idx]))).clamp(0, 1)
            run.commit(idx, x, run.logits(x, idx))

    try:
        with pytest.raises(SystemExit):
            main(["attack", "--help"])
        assert "test-noise (fixed budget, linf/l2): uniform noise of size eps" in " ".join(
            capsys.readouterr().out.split())
        assert main(["attack", "--attack", "test-noise", "--eps", "0.5", "--model", "mnist-cnn", "--rounds", "0",
                     "--out", str(tmp_path), "--quiet"]) == 0
        rows = json.loads((tmp_path / "sensitivity.json").read_text())["rows"]
        assert calls and len(rows) == 10
        assert {r["min_eps_text"] for r in rows} <= {"0", "<= 0.5", "> 0.5"}
        assert main(["attack", "--attack", "test-noise", "--model", "mnist-cnn", "--out", str(tmp_path / "b")]) == 2
        assert capsys.readouterr().err.strip() == ("blindspots attack: error: attack 'test-noise' has a fixed budget: "
                                                   "give eps (--eps)")
    finally:
        ATTACKS.pop("test-noise", None)
