"""Adversarial training (`attacks.adversarial_training`): AT buys robustness that normal training does not, on a
problem where the answer is known, and a killed run resumes to the very weights of an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attacks
from attacks.training import adversarial_training, load_checkpoint_weights
from blindspots import Classifier
from blindspots.store import RunChanged


def robust_vs_fragile(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes on 1x4x4 images (Tsipras et al.'s construction): pixel 0 is 0.5 +- 0.3 and right 90 % of the
    time (robust: a 0.15 l-inf budget cannot flip it); the other 15 pixels are 0.5 +- 0.1 plus noise of std 0.05,
    together right ~100 % of the time but flipped by a 0.15 budget. Normal training leans on the fragile pixels,
    AT at eps 0.15 must use pixel 0: its robust accuracy is ~0.9, the normal model's ~0."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    s = (2 * y - 1).float()
    agree = torch.where(torch.rand(n, generator=gen) < 0.9, 1.0, -1.0)
    x = 0.5 + 0.1 * s[:, None] + 0.05 * torch.randn(n, 16, generator=gen)
    x[:, 0] = 0.5 + 0.3 * s * agree
    return x.clamp(0, 1).view(n, 1, 4, 4), y


def mlp(seed: int, dropout: float = 0.0) -> Classifier:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 2))
    return Classifier(net, name="mlp")


def test_adversarial_training_buys_robustness_normal_training_does_not():
    train, test = robust_vs_fragile(1024, seed=0), robust_vs_fragile(512, seed=1)
    kwargs = dict(steps=5, epochs=12, batch_size=64, lr=1e-2, progress=False, seed=0,
                  eval_data=(test[0][:16], test[1][:16]))  # the per-epoch evaluation is not what is tested here
    normal = adversarial_training(mlp(0), train, 0.0, **kwargs).model
    robust = adversarial_training(mlp(0), train, 0.15, **kwargs).model
    def scores(m):
        res = attacks.evaluate_robustness(m, *test, attacks=[attacks.PGD(m, 0.15, "linf", steps=20, seed=0)])
        return res.clean_accuracy, res.robust_accuracy

    (clean_n, rob_n), (clean_a, rob_a) = scores(normal), scores(robust)
    assert clean_n > 0.97 and clean_a > 0.8
    assert rob_n < 0.2 and rob_a > 0.8, (rob_n, rob_a)


@pytest.mark.parametrize("as_dataset", [False, True])
def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, as_dataset):
    """Dropout and (for a Dataset) loader shuffling draw from the global RNG: the checkpoint must restore it too."""
    x, y = robust_vs_fragile(256, seed=0)
    data = torch.utils.data.TensorDataset(x, y) if as_dataset else (x, y)
    kwargs = dict(steps=3, epochs=3, batch_size=64, lr=1e-2, progress=False, seed=3, eval_data=(x[:64], y[:64]))
    full = adversarial_training(mlp(0, dropout=0.3), data, 0.1, checkpoint=tmp_path / "full", **kwargs)

    class Killed(Exception):
        pass

    def kill_after_first_epoch(epoch, record):
        if epoch == 0:
            raise Killed

    ckpt = tmp_path / "killed"
    with pytest.raises(Killed):
        adversarial_training(mlp(0, dropout=0.3), data, 0.1, checkpoint=ckpt, on_epoch_end=kill_after_first_epoch,
                             **kwargs)
    torch.rand(1000)  # whatever ran in between moved the global RNG
    with pytest.raises(RunChanged, match="initial_weights"):  # other starting weights: another run
        adversarial_training(mlp(7, dropout=0.3), data, 0.1, checkpoint=ckpt, **kwargs)
    resumed = adversarial_training(mlp(0, dropout=0.3), data, 0.1, checkpoint=ckpt, **kwargs)
    assert resumed.resumed_from == 1
    for k, v in full.model.model.state_dict().items():
        assert torch.equal(v, resumed.model.model.state_dict()[k]), k
    drop_time = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert drop_time(full.history) == drop_time(resumed.history)
    assert [r["epoch"] for r in full.history] == [1, 2, 3]
    saved = load_checkpoint_weights(ckpt)
    assert all(torch.equal(v, saved[k]) for k, v in resumed.model.model.state_dict().items())


def test_a_checkpoint_of_other_settings_is_refused_naming_them(tmp_path):
    x, y = robust_vs_fragile(128, seed=0)
    ckpt = tmp_path / "c"
    kwargs = dict(steps=2, epochs=1, batch_size=64, progress=False, checkpoint=ckpt)
    adversarial_training(mlp(0), (x, y), 0.1, **kwargs)
    with pytest.raises(RunChanged, match=r"settings.eps 0\.1 -> 0\.2"):
        adversarial_training(mlp(0), (x, y), 0.2, **kwargs)
    with pytest.raises(RunChanged, match="settings.data"):
        adversarial_training(mlp(0), (x.flip(0), y.flip(0)), 0.1, **kwargs)
    fresh = adversarial_training(mlp(0), (x, y), 0.2, resume=False, **kwargs)  # starts over, overwrites
    assert fresh.resumed_from == 0 and fresh.history[-1]["eps"] == 0.2
    # a constant-lr run may be extended: epochs is not part of its settings
    longer = adversarial_training(mlp(0), (x, y), 0.2, **{**kwargs, "epochs": 2})
    assert longer.resumed_from == 1 and len(longer.history) == 2
    with pytest.raises(ValueError, match="holds 2 epochs, more than epochs=1"):
        adversarial_training(mlp(0), (x, y), 0.2, **kwargs)


def test_history_warmup_and_quiet(capsys):
    x, y = robust_vs_fragile(128, seed=0)
    res = adversarial_training(mlp(0), (x, y), 0.2, steps=2, epochs=2, batch_size=64, eps_warmup=2.0,
                               progress=False)
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""
    assert [r["eps"] for r in res.history] == pytest.approx([0.1, 0.2])
    rec = res.history[0]
    assert {"loss", "train_accuracy", "eval_clean_accuracy", "eval_robust_accuracy", "lr"} <= set(rec)
    assert 0 <= rec["eval_robust_accuracy"] <= rec["eval_clean_accuracy"] <= 1
    assert not res.model.training


def test_bad_arguments_raise_one_clear_line():
    x, y = robust_vs_fragile(16, seed=0)
    with pytest.raises(ValueError, match="norm"):
        adversarial_training(mlp(0), (x, y), 0.1, norm="l3", progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adversarial_training(mlp(0), (x * 3, y), 0.1, progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        adversarial_training(mlp(0), (x, y), 0.1, optimizer="rmsprop", progress=False)


def test_clean_weight_one_is_normal_training():
    """(1 - w) CE(adv) + w CE(clean) with w = 1 takes exactly the clean gradient: the weights of eps=0 training."""
    x, y = robust_vs_fragile(128, seed=0)
    kwargs = dict(steps=2, epochs=2, batch_size=32, progress=False, eval_data=(x[:8], y[:8]))
    mixed = adversarial_training(mlp(0), (x, y), 0.2, clean_weight=1.0, **kwargs).model
    normal = adversarial_training(mlp(0), (x, y), 0.0, **kwargs).model
    half = adversarial_training(mlp(0), (x, y), 0.2, clean_weight=0.5, **kwargs).model
    for k, v in normal.model.state_dict().items():
        assert torch.equal(v, mixed.model.state_dict()[k]), k
        assert not torch.equal(v, half.model.state_dict()[k]), k
