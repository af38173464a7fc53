"""The AutoAttack ensemble and its parts (`attacks.APGDT`, `attacks.FAB`, `attacks.Square`,
`attacks.evaluate_robustness`, `attacks.masking_checks`): closed forms on linear models, parity with torchattacks
from the same start or the same random stream, the cascade's bookkeeping, checks that pass on a linear model and are
flagged on a masked one, and `blindspots robust` end to end."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import attacks
import attacks.square as square_module
from attacks.base import dlr_loss
from attacks.fab import project_hyperplane
from blindspots import Classifier
from conftest import LinearBinary, TinyCNN

pytestmark = pytest.mark.usefixtures("one_thread")


def _linear(classes: int = 5, n: int = 10, seed: int = 0):
    """A linear classifier z = W x + b on 3x8x8 images near 0.5 (the box never binds): sample i's smallest flip is
    min_k (z_y - z_k) / ||W_y - W_k||_q, q the dual norm (1 for l-inf, 2 for l2). Returns model, x, y, exact."""
    gen = torch.Generator().manual_seed(seed)
    lin = nn.Linear(3 * 8 * 8, classes)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(classes, 3 * 8 * 8, generator=gen) * 0.05)
        lin.bias.zero_()
    model = Classifier(nn.Sequential(nn.Flatten(), lin)).eval()
    x = 0.5 + 0.1 * (torch.rand(n, 3, 8, 8, generator=gen) - 0.5)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    gap = z.gather(1, y[:, None]) - z  # (n, classes)
    dw = lin.weight.detach()[y][:, None, :] - lin.weight.detach()[None]  # (n, classes, d)
    exact = {}
    for norm, q in (("linf", 1), ("l2", 2)):
        dist = gap / dw.norm(p=q, dim=2).clamp_min(1e-12)
        exact[norm] = dist.scatter(1, y[:, None], float("inf")).amin(1)
    return model, x, y, exact


def test_dlr_loss_is_autoattacks_and_ignores_the_logits_scale():
    torchattacks = pytest.importorskip("torchattacks")
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(16, 10, generator=gen)
    y = torch.randint(0, 10, (16,), generator=gen)
    t = (y + 1 + torch.randint(0, 9, (16,), generator=gen)) % 10
    assert torch.allclose(dlr_loss(z, y), torchattacks.APGD.dlr_loss(None, z, y), atol=1e-6)
    assert torch.allclose(dlr_loss(z, y, t), torchattacks.APGDT.dlr_loss_targeted(None, z, y, t), atol=1e-6)
    assert torch.allclose(dlr_loss(3 * z + 1, y), dlr_loss(z, y), atol=1e-5)
    with pytest.raises(ValueError, match="at least 4 classes"):
        dlr_loss(z[:, :3], y % 3, (y + 1) % 3)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_attacks_flip_exactly_when_the_budget_allows(norm):
    model, x, y, exact = _linear()
    factor = torch.tensor([0.95, 1.05] * (len(x) // 2))
    eps = exact[norm] * factor
    for attack in (attacks.APGDT(model, eps, norm, 20, target_classes=4, seed=0),
                   attacks.FAB(model, eps, norm, 10, target_classes=4, seed=0)):
        res = attack(x, y)
        assert res.success.tolist() == (factor > 1).tolist(), type(attack).__name__
        dist = res.linf if norm == "linf" else res.l2
        assert (dist <= eps * (1 + 1e-5) + 1e-7).all()
    # without a budget FAB-T is a minimal-norm attack: within 1% of the exact smallest flip over all classes
    res = attacks.FAB(model, None, norm, 10, target_classes=4)(x, y)
    ratio = (res.linf if norm == "linf" else res.l2) / exact[norm]
    assert res.success.all() and (ratio >= 1 - 1e-4).all() and (ratio <= 1.01).all(), ratio


def _ramp_model(seed: int = 1):
    """LinearBinary on 1x16x16 with a smooth ramp as weights (Square's windows can align with it), biased so that
    both classes occur; exact flips |z| / ||w||_1 (l-inf) and |z| / ||w||_2 (l2)."""
    lin = LinearBinary(shape=(1, 16, 16))
    ramp = torch.linspace(-1, 1, 16)
    x = 0.5 + 0.1 * (torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) - 0.5)
    with torch.no_grad():
        lin.w.copy_((ramp[:, None] + 0.5 * ramp[None, :]).view(1, 16, 16) * 0.05)
        lin.b -= lin(x)[:, 0].mean()
        z = lin(x)[:, 0]
        exact = {"linf": z.abs() / lin.w.abs().sum(), "l2": z.abs() / lin.w.norm()}
    return Classifier(lin).eval(), x, exact


@pytest.mark.parametrize("norm, above", [("linf", 1.5), ("l2", 3.0)])
def test_square_never_flips_below_the_closed_form_and_finds_flips_above_it(norm, above):
    model, x, exact = _ramp_model()
    factor = torch.tensor([0.97, above] * 4)
    res = attacks.Square(model, exact[norm] * factor, norm, 300, seed=0)(x)
    assert res.success.tolist() == (factor > 1).tolist()
    dist = res.linf if norm == "linf" else res.l2
    assert (dist <= exact[norm] * factor * (1 + 1e-5) + 1e-7).all()
    assert (res.backwards == 0).all() and (res.forwards <= 301).all()


def test_projection_and_fab_match_torchattacks():
    fab_module = pytest.importorskip("torchattacks.attacks.fab")
    import torchattacks

    gen = torch.Generator().manual_seed(0)
    p = torch.rand(40, 300, generator=gen)
    w = torch.randn(40, 300, generator=gen) * (torch.rand(40, 300, generator=gen) > 0.3)
    b = (w * torch.rand(40, 300, generator=gen)).sum(1) * torch.cat([torch.full((30,), 1.0), torch.full((10,), 40.0)])
    for norm, ref in (("linf", fab_module.projection_linf), ("l2", fab_module.projection_l2)):
        d = project_hyperplane(p, w, b, norm)  # the last 10 rows cannot reach the hyperplane within the box
        assert (d - ref(p.clone(), w.clone(), b.clone())).abs().max() <= 1e-6, norm
        assert ((p + d) >= 0).all() and ((p + d) <= 1).all()
        assert ((w * (p + d)).sum(1)[:30] - b[:30]).abs().max() <= 1e-4
    # FAB-T starts from the clean image: no randomness, so the same verdicts and images as torchattacks' FAB-T
    model = Classifier(TinyCNN(num_classes=4, seed=0)).eval()
    x = torch.rand(10, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = model(x).argmax(1)
    for norm, eps in (("linf", 0.045), ("l2", 0.9)):
        ref = torchattacks.FAB(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=15, n_restarts=1,
                               multi_targeted=True, n_classes=4, seed=0)(x, y)
        with torch.no_grad():
            ref_success = model(ref).argmax(1) != y
        ours = attacks.FAB(model, eps, norm, 15, target_classes=3, early_stop=False, channels_last=False)(x, y)
        assert 0 < int(ref_success.sum()) < len(y), "the budget should split the batch"
        assert torch.equal(ours.success, ref_success), norm
        assert (ours.images - ref).abs().max() <= 1e-5, norm
        stopped = attacks.FAB(model, eps, norm, 15, target_classes=3)(x, y)  # early stop: same verdicts
        assert torch.equal(stopped.success, ref_success)
        assert stopped.backwards.sum() <= ours.backwards.sum()


@pytest.mark.parametrize("norm, eps", [("linf", 0.045), ("l2", 0.9)])
def test_apgdt_matches_torchattacks_from_the_same_start(norm, eps):
    torchattacks = pytest.importorskip("torchattacks")
    model = Classifier(TinyCNN(num_classes=4, seed=0)).eval()
    x = torch.rand(10, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = model(x).argmax(1)
    torch.manual_seed(0)  # torchattacks' start, drawn from the global RNG after manual_seed(seed)
    if norm == "linf":
        t = 2 * torch.rand(x.shape) - 1
        init = (x + eps * t / t.flatten(1).abs().amax(1).view(-1, 1, 1, 1)).clamp(0, 1)
    else:
        t = torch.randn(x.shape)
        init = (x + eps * t / (t.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)).clamp(0, 1)
    ref = torchattacks.APGDT(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, steps=10, n_classes=2,
                             seed=0)(x, y)
    with torch.no_grad():
        ref_success = model(ref).argmax(1) != y
    ours = attacks.APGDT(model, eps, norm, 10, target_classes=1, early_stop=False, channels_last=False)(x, y,
                                                                                                       init=init)
    # the same verdicts; the iterates may part after a step-size checkpoint (torchattacks counts the loss increases
    # of the first window against a zero-filled row, APGD against the start)
    assert 0 < int(ref_success.sum()) < len(y)
    assert torch.equal(ours.success, ref_success)


def _replay_torchattacks_stream(monkeypatch, seed: int, norm: str, c: int, h: int, queries: int) -> None:
    """Make `attacks.Square` draw, for one sample, exactly the random numbers torchattacks' Square draws from the
    global RNG (same calls in the same order), mapped to Square's layout: window corners, transposes, signs."""
    gen = torch.Generator().manual_seed(seed)
    state = {"query": 0}
    p_schedule = square_module.p_schedule
    monkeypatch.setattr(square_module, "p_schedule", lambda p0, it, q: p_schedule(p0, it, queries))

    def corner(u: float, s: int) -> float:  # torchattacks: floor(u (h - s)); Square: floor(v (h - s + 1))
        return (int(u * (h - s)) + 0.5) / (h - s + 1)

    def fake(seeds, shape, kind, stream=0):
        assert len(seeds) == 1 and kind == "uniform"
        if state["query"] == 0 and shape != (square_module.CHUNK, 5 + c):  # the start
            if norm == "linf":
                u = torch.rand(c * h, generator=gen)
            else:
                blocks = (h // max(h // 5, 1)) ** 2
                u = torch.stack([torch.cat([1 - torch.rand(1, generator=gen), torch.rand(c, generator=gen)])
                                 for _ in range(blocks)])
            return (2 * u - 1).reshape(1, -1)
        rows = []
        for _ in range(shape[0]):
            i = state["query"]
            state["query"] += 1
            p = p_schedule(0.8, i, queries)
            s = round((p * h * h) ** 0.5)
            s = min(max(s, 1), h) if norm == "linf" else min(max(s, 3) + (max(s, 3) % 2 == 0), h)
            if norm == "linf":
                vh, vw = (float(torch.rand(1, generator=gen)) for _ in range(2))
                rows.append([corner(vh, s), corner(vw, s), 0, 0, 0, *torch.rand(c, generator=gen).tolist()])
            else:
                vh, vw, vh2, vw2 = (float(torch.rand(1, generator=gen)) for _ in range(4))
                flip = 1 - float(torch.rand(1, generator=gen))
                rows.append([corner(vh, s), corner(vw, s), corner(vh2, s), corner(vw2, s), flip,
                             *torch.rand(c, generator=gen).tolist()])
        return (2 * torch.tensor(rows) - 1).reshape(1, -1)

    monkeypatch.setattr(square_module, "per_sample_noise", fake)


@pytest.mark.parametrize("norm, above", [("linf", 2.0), ("l2", 4.0)])
def test_square_replays_torchattacks_from_its_random_stream(monkeypatch, norm, above):
    """Fed torchattacks' random numbers, Square takes the same path: l-inf bit for bit, l2 up to float rounding."""
    torchattacks = pytest.importorskip("torchattacks")
    model, x, exact = _ramp_model()
    with torch.no_grad():
        y = model(x).argmax(1)
    queries, verdicts = 100, []
    for i in range(6):
        eps = float(exact[norm][i]) * (above if i % 2 else 0.97)
        ref = torchattacks.Square(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, n_queries=queries, seed=i)
        ref.init_hyperparam(x[i:i + 1])
        torch.manual_seed(i)  # as Square.perturb seeds the global RNG before its run
        _, ref_best = ref.attack_single_run(x[i:i + 1], y[i:i + 1])  # its best point, fooling or not
        with monkeypatch.context() as m:
            _replay_torchattacks_stream(m, i, norm, 1, 16, queries)
            ours = attacks.Square(model, eps, norm, queries + 1, channels_last=False)(x[i:i + 1], y[i:i + 1])
        with torch.no_grad():
            fooled = bool(model(ref_best).argmax(1) != y[i])
        verdicts.append(fooled)
        assert bool(ours.success) == fooled, i
        assert (ours.images - ref_best).abs().max() <= (0 if norm == "linf" else 1e-3), i
    assert any(verdicts) and not all(verdicts)


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("this model has no gradient")


def test_square_needs_no_gradient():
    model, x, y, exact = _linear(n=4)
    blind = Classifier(nn.Sequential(_Apply(_NoBackward.apply), *model.model)).eval()
    res = attacks.Square(blind, exact["linf"] * 3, "linf", 100, seed=0)(x, y)
    assert res.success.all() and (res.backwards == 0).all()
    with pytest.raises(RuntimeError, match="no gradient"):
        attacks.APGD(blind, 0.1, steps=2, seed=0)(x, y)


class _Apply(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


SMALL = attacks.EnsembleBudget(apgd_steps=10, target_classes=2, fab_steps=10, square_queries=60)


def test_the_ensemble_keeps_the_per_sample_worst_case_and_its_books():
    model = Classifier(TinyCNN(num_classes=4, seed=0)).eval()
    x = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        labels = model(x).argmax(1)
    labels[:2] = (labels[:2] + 1) % 4  # two samples misclassified from the start
    eps = 0.045
    res = attacks.evaluate_robustness(model, x, labels, eps, "linf", budget=SMALL, batch_size=5)
    assert res.attacks == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert not res.clean_correct[:2].any() and (res.fooled_by[:2] == -1).all()
    assert 0 < res.robust_accuracy < res.clean_accuracy
    after = res.accuracy_after
    assert after == sorted(after, reverse=True) and after[-1] == res.robust_accuracy
    assert sum(res.fooled) + int(res.robust.sum()) == int(res.clean_correct.sum())
    with torch.no_grad():
        pred = model(res.images).argmax(1)
    fooled = res.fooled_by >= 0
    assert (pred[fooled] != labels[fooled]).all() and (res.linf[fooled] <= eps * (1 + 1e-5) + 1e-7).all()
    assert torch.equal(res.images[~fooled], x[~fooled])
    # the cascade: a sample APGD-CE fooled costs no further pass
    alone = attacks.evaluate_robustness(model, x, labels, eps, "linf", ["apgd-ce"], budget=SMALL)
    first = res.fooled_by == 0
    assert torch.equal(alone.fooled_by >= 0, first) and torch.equal(alone.forwards[first], res.forwards[first])
    assert sum(res.attack_forwards) + len(x) == int(res.forwards.sum())
    # per-sample seeds: the batch size changes nothing
    again = attacks.evaluate_robustness(model, x, labels, eps, "linf", budget=SMALL, batch_size=12)
    assert torch.equal(again.fooled_by, res.fooled_by) and torch.equal(again.images, res.images)
    assert json.dumps(res.summary())


class _Liar(attacks.Attack):
    """Claims every sample fooled without changing anything."""

    def _run(self, run, idx, init):
        run.set(idx, run.x[idx], torch.ones_like(idx, dtype=torch.bool), run.y[idx])


def test_a_claimed_success_the_model_does_not_confirm_leaves_the_sample_standing():
    model, x, y, exact = _linear(n=6)
    eps = float(exact["linf"].max()) * 2
    res = attacks.evaluate_robustness(model, x, y, eps, "linf", [_Liar(model), attacks.APGD(model, eps, steps=20)])
    assert res.unconfirmed == [6, 0] and res.fooled == [0, 6] and res.robust_accuracy == 0


def _rounded(model: Classifier) -> Classifier:
    """The same classifier behind a pixel quantiser whose gradient is zero: gradients are masked, scores are not."""
    return Classifier(nn.Sequential(_Apply(lambda t: torch.round(t * 8) / 8), *model.model)).eval()


def test_masking_checks_pass_on_a_linear_model_and_flag_a_masked_one():
    model, x, y, exact = _linear(n=24)
    eps = float(exact["linf"].median())
    res = attacks.evaluate_robustness(model, x, y, eps, "linf", budget=SMALL)
    checks = {c.name: c for c in attacks.masking_checks(model, x, y, res, twin=model, samples=24, budget=SMALL)}
    assert all(c.status == "pass" for c in checks.values()), [c.line() for c in checks.values()]
    masked = _rounded(model)
    with torch.no_grad():
        keep = masked(x).argmax(1) == y
    res = attacks.evaluate_robustness(masked, x[keep], y[keep], 2.5 * eps, "linf", budget=SMALL)
    checks = {c.name: c for c in attacks.masking_checks(masked, x[keep], y[keep], res, twin=model,
                                                        samples=24, budget=SMALL)}
    assert checks["black box vs white box"].status == "flagged", checks["black box vs white box"].line()
    assert checks["transfer from normal twin"].status == "flagged"
    assert checks["eps sweep: unbounded"].status == "flagged"


def test_robust_command_writes_its_record_and_resumes(tmp_path, capsys):
    from blindspots.cli import main

    args = ["robust", "--model", "mnist-cnn", "--limit", "12", "--apgd-steps", "5", "--target-classes", "1",
            "--fab-steps", "5", "--square-queries", "20", "--check-samples", "12", "--out", str(tmp_path / "r"),
            "--device", "cpu"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "worst case" in text and "transfer from normal twin" not in text.split("worst case")[0]
    rec = json.loads((tmp_path / "r" / "robustness.json").read_text())
    assert rec["n"] == 12 and rec["model"] == "mnist-cnn" and len(rec["checks"]) == 5
    assert rec["attacks"][0]["accuracy_after"] <= rec["clean_accuracy"]
    assert main(args + ["--quiet"]) == 0 and capsys.readouterr().out == ""  # resumed: the record is reused
    assert main(args[:-2] + ["--attacks", "square,bogus"]) == 2
    assert "unknown bogus" in capsys.readouterr().err
