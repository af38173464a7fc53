"""Tests of the Zoobot vs ImageNet study (`experiments.zoobot`): the verdict rule on hand-made paired data (units,
underpowered, equivalent, gates), every pair kept (stalled ones too), the real arm with injected clumps (screening,
pairs across hosts and classes, accuracy), the paired design (one network twice gives d = 0 exactly), the proxy's
per-epoch checkpoint (resumed to the same weights), the config and its one-line refusals (ISSUE22 cases), the
documented Zoobot command, the study end to end through the Python API (resume, refusal), and the report in a real
browser."""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from blindspots import Classifier, LSTConfig
from blindspots import studies as st
from blindspots.cli import run_command
from blindspots.store import RunStore
from experiments import zoobot as zs
from blindspots import verdicts as vd
from experiments.zoobot import data as zd
from experiments.zoobot import real as zr
from experiments.zoobot.backbones import linear_probe
from experiments.zoobot.paired import Comparison, compare, index_records, stalled

ARCH = "efficientnet_lite0"
TINY = ["--size", "32", "--train", "16", "--test", "16", "--pretrain", "16", "--pretrain-epochs", "1", "--probe", "12",
        "--epochs", "1", "--scratch-epochs", "1", "--batch-size", "8", "--iterations", "2", "--rounds", "2",
        "--sim-pairs", "4", "--min-accuracy", "0", "--threads", "1", "--quiet"]


@pytest.fixture(autouse=True)
def _threads():
    """Tiny models: one thread (thread-pool synchronisation costs more than the maths, on a busy machine most)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _exit_code(argv: list[str]) -> int:
    """The command's exit code, whether it returned it or argparse raised it."""
    try:
        return run_command("zoobot", zs, argv)
    except SystemExit as exc:
        return int(exc.code)


def _comp(a: str, category: str, seed: int, d, units: int = 12) -> Comparison:
    """A comparison whose pairs join unit i % units to another unit (several pairs per unit, shared targets)."""
    d = np.asarray(d, dtype=float)
    idx = np.arange(d.size)
    src, tgt = idx % units, (idx % units + 1 + idx // units) % units
    return Comparison(a, "imagenet", seed, category, d, source_units=src.tolist(), target_units=tgt.tolist(),
                      stalled_a=np.zeros(d.size, bool), stalled_b=np.zeros(d.size, bool))


def _hand_made(sim: float, real: float, seeds=(0, 1), spread: float = 0.05, n: int = 36, units: int = 12,
               real_units: int | None = None) -> list[Comparison]:
    rng = np.random.default_rng(0)
    return [_comp("proxy", cat, s, centre + spread * rng.standard_normal(n),
                  units if cat == "sim" else (real_units or units))
            for s in seeds for cat, centre in (("sim", sim), ("real injected", real))]


def test_verdict_rule_on_hand_made_paired_data():
    """One seed-pooled rule per arm; the verdict combines the arms."""
    v = zs.verdict(_hand_made(-0.5, -0.4), "proxy", "imagenet", [0, 1])
    assert v.outcome == vd.HOLDS and v.reason.startswith("proxy is more under-sensitive than imagenet in every arm")
    assert "sim (12 images, 2 seeds, 72 pairs): geometric mean ratio 0.6" in v.reason and "real injected (12 hosts" \
        in v.reason and v.parts == {"sim": vd.HOLDS, "real injected": vd.HOLDS}
    assert zs.verdict(_hand_made(0.5, 0.3), "proxy", "imagenet", [0, 1]).outcome == vd.DOES_NOT_HOLD
    # within +-log 1.1 in both arms: equivalent, not "no difference found"
    assert zs.verdict(_hand_made(0.0, 0.01, spread=0.02), "proxy", "imagenet", [0, 1]).outcome == vd.EQUIVALENT
    # wide and centred on no difference: inconclusive, with the power at the observed effect and the units needed
    v = zs.verdict(_hand_made(0.0, 0.05, spread=1.0, seeds=(0, 1, 2)), "proxy", "imagenet", [0, 1, 2])
    assert v.outcome == vd.INCONCLUSIVE and re.search(r"power 0\.\d\d at the observed", v.reason)
    assert "80% power needs" in v.reason
    # the arms contradict each other
    assert zs.verdict(_hand_made(-0.5, 0.5), "proxy", "imagenet", [0, 1]).outcome == vd.MIXED
    # seeds that contradict each other are the seed-to-seed spread of a random effect: the pooled arm cannot decide
    comps = _hand_made(-0.5, -0.5, seeds=(0,)) + _hand_made(0.5, 0.5, seeds=(1,))
    assert zs.verdict(comps, "proxy", "imagenet", [0, 1]).outcome == vd.INCONCLUSIVE
    # a clear difference on 9 hosts (many pairs each) decides nothing: underpowered, naming the arm
    v = zs.verdict(_hand_made(-0.5, -0.5, n=90, real_units=9), "proxy", "imagenet", [0, 1])
    assert v.outcome == vd.UNDERPOWERED and "real injected (9 hosts" in v.reason and "needs n >= 10" in v.reason
    # one seed cannot be pooled
    v = zs.verdict(_hand_made(-0.5, -0.5, seeds=(0,)), "proxy", "imagenet", [0])
    assert v.outcome == vd.UNDERPOWERED and "needs >= 2 fine-tuning seeds (has 1)" in v.reason
    # a missing arm, or an arm-wide gate, leaves the verdict not evaluated
    only_sim = [c for c in _hand_made(-0.5, -0.5) if c.category == "sim"]
    assert zs.verdict(only_sim, "proxy", "imagenet", [0, 1]).outcome == vd.NOT_EVALUATED
    v = zs.verdict(_hand_made(-0.5, -0.5), "proxy", "imagenet", [0, 1], {"real injected": "no real hosts"})
    assert v.outcome == vd.NOT_EVALUATED and "no real hosts" in v.reason


def test_a_seed_below_the_floor_drops_that_seed_from_its_arm_only():
    gate = {"real injected seed 1": "imagenet seed 1: accuracy on the injected real hosts 0.4 < 0.6"}
    v = zs.verdict(_hand_made(-0.5, -0.4, seeds=(0, 1, 2)), "proxy", "imagenet", [0, 1, 2], gate)
    assert v.outcome == vd.HOLDS and "real injected (12 hosts, 2 seeds" in v.reason and "sim (12 images, 3 seeds" \
        in v.reason and "seed 1 dropped: imagenet seed 1: accuracy on the injected real hosts 0.4 < 0.6" in v.reason
    found = zs.paired.arms(_hand_made(-0.5, -0.4, seeds=(0, 1, 2)), "proxy", "imagenet", [0, 1, 2], gate)
    assert [a.seeds for a in found] == [[0, 1, 2], [0, 2]] and found[1].row()["dropped"] == {"1": gate[
        "real injected seed 1"]}
    v = zs.verdict(_hand_made(-0.5, -0.4), "proxy", "imagenet", [0, 1], gate)  # 2 seeds, one dropped: 1 left
    assert v.outcome == vd.UNDERPOWERED and v.parts == {"sim": vd.HOLDS, "real injected": vd.UNDERPOWERED}


def test_pooling_the_seeds_decides_far_more_often_than_every_seed_alone():
    """200 simulated real arms (16 hosts shared by 3 seeds, 4 pairs per source host, a host effect on the source,
    a seed effect of SD 0.1, true mean d -0.3): the old rule (every seed's own interval below 0) holds in few
    studies, the seed-pooled rule in several times as many (measured 0.07 vs 0.435; binomial s.e. <= 0.035)."""
    units, seeds, k, reps = 16, 3, 4, 200
    rng = np.random.default_rng(0)
    src = np.repeat(np.arange(units), k)
    tgt = (src + 1 + np.tile(np.arange(k), units)) % units
    d = -0.3 + 0.3 * rng.standard_normal((reps, units))[:, None, src] + \
        0.1 * rng.standard_normal((reps, seeds))[:, :, None] + 0.8 * rng.standard_normal((reps, seeds, src.size))
    pools = {"source": "host", "target": "host"}
    every = np.ones(reps, bool)
    for s in range(seeds):
        est = vd.unit_intervals(d[:, s], {"source": src, "target": tgt}, pools=pools, resamples=999, seed=s,
                                batch=100)
        every &= np.array([e.high < 0 for e in est])
    pooled = np.array([vd.seed_pooled_rows(d[r].ravel(), np.repeat(np.arange(seeds), src.size),
                                           {"source": np.tile(src, seeds), "target": np.tile(tgt, seeds)},
                                           pools=pools, resamples=999, seed=r).high < 0 for r in range(reps)])
    assert every.mean() < 0.15 and pooled.mean() > 0.3


def test_intervals_resample_hosts_and_cover_at_the_real_arm_dependence():
    """Hosts as units (12 hosts, 3 versions each, 2 targets per source on other hosts, host effects on both ends):
    the interval of the mean covers the truth in >= 90% of 200 simulated arms (the pair bootstrap would not)."""
    rng = np.random.default_rng(1)
    src = np.repeat(np.arange(12), 6)
    tgt = (src + 1 + rng.integers(0, 11, src.size)) % 12
    effects = rng.normal(0, 1, (200, 2, 12))
    d = effects[:, 0][:, src] + effects[:, 1][:, tgt] + rng.normal(0, 0.5, (200, src.size))
    est = vd.unit_intervals(d, {"source": src, "target": tgt}, pools={"source": "host", "target": "host"},
                            resamples=999)
    truth = 0.0
    covered = np.mean([e.low <= truth <= e.high for e in est])
    assert covered >= 0.9 and all(e.pools == {"host": 12} for e in est)
    c = _comp("proxy", "real injected", 0, d[0])
    assert c.unit == "host" and c.row()["units"] == 12


def test_the_unit_estimate_resamples_hosts_and_a_sparse_design_gets_no_interval():
    """Sources and targets are drawn from one pool of hosts; a design where many replicates draw no pair (two
    targets) gets no interval at all, never a narrowed one."""
    from experiments.zoobot import paired

    d = np.random.default_rng(0).normal(0.3, 0.1, size=12)
    est = paired.unit_estimate(d, list(range(12)), [(i + 1) % 12 for i in range(12)], "host", 0.95)
    assert est.has_interval and est.low < 0.3 < est.high and est.pools == {"host": 12}
    d = np.random.default_rng(0).normal(size=40)
    sparse = paired.unit_estimate(d, list(range(20)) * 2, [20, 21] * 20, "cutout", 0.95)
    assert not sparse.has_interval and "drew no observation" in sparse.note


def _rec(backbone, domain, key, rms, start=0.3, kept=1.0, src=0, tgt=1):
    r, s, t = key
    return {"kind": "lst", "backbone": backbone, "ft_seed": 0, "domain": domain, "round": r, "source": s,
            "target": t, "rms_l2": rms, "start_rms_l2": start, "kept_class": kept, "source_label": src,
            "target_label": tgt}


def test_every_pair_is_kept_stalled_ones_too_and_stalls_get_a_mcnemar_test():
    recs = [_rec("a", "sim", (0, 1, 2), 0.1), _rec("imagenet", "sim", (0, 1, 2), 0.2),
            _rec("a", "sim", (0, 2, 1), 0.29), _rec("imagenet", "sim", (0, 2, 1), 0.1),  # a: < 5% progress
            _rec("a", "sim", (1, 1, 2), 0.05, kept=0.0), _rec("imagenet", "sim", (1, 1, 2), 0.1),  # a: class lost
            _rec("a", "real", (0, 0, 1), 0.1), _rec("imagenet", "real", (0, 0, 1), 0.1, tgt=0),  # mixed
            _rec("a", "real", (0, 1, 0), 0.2, tgt=0), _rec("imagenet", "real", (0, 1, 0), 0.1, tgt=0),
            _rec("a", "injected", (0, 3, 5), 0.1), _rec("imagenet", "injected", (0, 3, 5), 0.3)]
    assert stalled(recs[2]) and stalled(recs[4]) and not stalled(recs[0])
    index = index_records(recs)
    (sim,) = compare(index, "a", "imagenet", 0, "sim")
    assert sim.n == 3 and list(sim.stalled_a) == [False, True, True] and not sim.stalled_b.any()
    assert sim.d == pytest.approx([math.log(0.5), math.log(2.9), math.log(0.5)])  # the stalled pairs' distances
    m = sim.stalls
    assert (m.only_a, m.only_b) == (2, 0) and m.p_value == pytest.approx(0.5)  # exact: 2 x 0.5^2
    row = sim.row()
    assert row["units"] == 2 and row["stalled_a"] == 2 and row["cell"] == vd.UNDERPOWERED
    real = {c.category: c for c in compare(index, "a", "imagenet", 0, "real")}
    assert set(real) == {"real mixed", "real within-class"}
    assert real["real within-class"].d[0] == pytest.approx(math.log(2.0))
    (inj,) = compare(index, "a", "imagenet", 0, "injected", units=["h0", "h0", "h1", "h2", "h1", "h3"])
    assert inj.category == "real injected" and (inj.source_units, inj.target_units) == (["h2"], ["h3"])
    rows = zs.paired.stall_tests([sim, inj])
    assert {r["pairs"] for r in rows} == {"sim", "real injected"} and rows[0]["holm_p"] == pytest.approx(0.5)


def test_real_targets_prefer_the_other_predicted_class():
    consensus = torch.tensor([0, 0, 0, 0, 1, 0])
    t = zd.real_targets(consensus, 3, seed=0)
    assert t.shape == (3, 6)
    for i in range(6):
        for r in range(3):
            assert consensus[t[r, i]] != consensus[i]  # both classes present: always the other one
    same = zd.real_targets(torch.zeros(4, dtype=torch.long), 3, seed=1)  # one class only: other cutouts
    assert all(same[r, i] != i for r in range(3) for i in range(4))
    assert all(len(set(same[:, i].tolist())) == 3 for i in range(4))  # different targets across rounds


def _linear_clf(seed: int, size: int = 32) -> Classifier:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 2))
    return Classifier(net, None, None).eval()


def _plain_folder(path: Path, n: int, blank: int = 0, size: int = 48) -> Path:
    """n simulated galaxies without clumps or stars (stand-ins for real hosts) and `blank` empty images."""
    from skimage import io

    from detectors.simulate import simulate

    path.mkdir()
    x = simulate(n, zd.sim_config(size, 42.0).replace(n_clumps=(0, 0), star_rate=0.0), seed=9).images.clamp(0, 1)
    x = torch.cat([x, torch.zeros(blank, 3, size, size)])
    for i, im in enumerate(x):
        io.imsave(path / f"g{i}.png", (im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                  check_contrast=False)
    return path


class Lookup(nn.Module):
    """Predicts the class listed for the nearest of `images` (an oracle for screening and pairing tests)."""

    def __init__(self, images: torch.Tensor, classes):
        super().__init__()
        self.register_buffer("images", images.flatten(1))
        self.register_buffer("classes", torch.as_tensor(classes))
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        nearest = torch.cdist(x.flatten(1), self.images).argmin(1)
        return nn.functional.one_hot(self.classes[nearest], 2).float() * 10 + self.dummy


def test_same_network_twice_gives_a_paired_difference_of_exactly_zero(tmp_path):
    """On real-host stand-ins with injected clumps: one network twice gives d = 0 on every pair; pairs join
    different hosts across the class boundary; the comparison can tell two networks apart."""
    from experiments.zoobot.study import Domain

    hosts = zr.load_hosts(_plain_folder(tmp_path / "real", 6), 32, 0.5, None, 2, seed=0)
    arm = zr.real_arm(hosts, {})
    oracle = Classifier(Lookup(arm.images, arm.labels), None, None).eval()  # picks the sources: every one right
    pool, targets, unpaired = arm.pairs([oracle], 2, seed=0)
    assert pool.numel() == 18 and unpaired == 0  # 6 plain + 12 clumpy images
    models = [("imagenet", 0, _linear_clf(0)), ("copy", 0, _linear_clf(0)), ("other", 0, _linear_clf(1))]
    doms = [Domain("injected", arm.images, arm.labels, pool, targets, arm.units, seed=0)]
    cfg = LSTConfig(iterations=6, step_size=0.2, threshold=0.3)
    protocol = st.ProtocolConfig(rounds=2, seed=0, pairs_per_batch=12)
    with RunStore(tmp_path / "s", "test") as store:
        records = zs.measure(models, doms, store, cfg, protocol, st.DistInfo())
    for r in records:  # across the class boundary, between two hosts
        assert r["source_label"] != r["target_label"] and arm.units[r["source"]] != arm.units[r["target"]]
    result = zs.analyse(records, ["imagenet", "copy", "other"], [0], units={"injected": arm.units})
    (copy,) = [c for c in result["comparisons"] if c.a == "copy"]
    assert copy.category == "real injected" and copy.n == 36 and copy.units() == 6
    assert np.all(copy.d == 0.0) and np.array_equal(copy.stalled_a, copy.stalled_b)
    (other,) = [c for c in result["comparisons"] if c.a == "other"]
    assert np.any(other.d != 0.0)  # the comparison can tell two networks apart
    # one seed, no simulated pairs: the simulated cells are not evaluated, so is the verdict
    assert result["verdicts"]["copy"].outcome == vd.NOT_EVALUATED


def test_real_hosts_are_screened_before_any_lst_and_paired_across_hosts_and_classes(tmp_path):
    hosts = zr.load_hosts(_plain_folder(tmp_path / "real", 5, blank=1), 32, 0.5, None, 2, seed=3)
    assert set(hosts.failed) == {5} and "no galaxy" in hosts.failed[5]  # the blank cutout: nothing to inject into
    assert (hosts.clumps[:5] >= zr.MIN_INJECTED_CLUMPS).all() and (hosts.clumps[:5] <= 8).all()
    again = zr.load_hosts(tmp_path / "real", 32, 0.5, None, 2, seed=3)
    assert torch.equal(again.injected, hosts.injected)  # injections depend on the seed only
    everything = torch.cat([hosts.plain, hosts.injected.flatten(0, 1)])
    truth = [0] * 6 + [1] * 12

    def model(plain_calls: dict[int, int], missed: tuple[int, ...] = ()) -> Classifier:
        classes = list(truth)
        for h, c in plain_calls.items():
            classes[h] = c
        for i in missed:  # injected image i (host i // 2, version i % 2) called plain
            classes[6 + i] = 0
        return Classifier(Lookup(everything, classes), None, None).eval()

    # host 0's plain cutout looks clumpy to 2 of 3 classifiers (left out), host 1's to 1 of 3 (kept)
    models = [model({0: 1, 1: 1}), model({0: 1}), model({}, missed=(4,))]
    votes, excluded = zr.screen_hosts(models, hosts)
    assert votes[:2] == pytest.approx([2 / 3, 1 / 3]) and set(excluded) == {0, 5}
    assert "possibly clumpy" in excluded[0] and "injection failed" in excluded[5]
    arm = zr.real_arm(hosts, excluded)
    assert arm.images.shape[0] == 4 * 3 and sorted(set(arm.units)) == ["g1.png", "g2.png", "g3.png", "g4.png"]
    pool, targets, unpaired = arm.pairs(models, 3, seed=0)
    # every classifier right: host 1's plain image (one says clumpy) and host 2's version 0 (missed) are not
    # sources; each source has 3 distinct targets of the other class on other hosts
    right = [i for i in range(12) if not (arm.host[i] == 1 and arm.labels[i] == 0)
             and not (arm.host[i] == 2 and arm.version[i] == 0)]
    assert pool.tolist() == right and unpaired == 0
    for p, i in enumerate(pool.tolist()):
        tgt = [int(pool[targets[r, p]]) for r in range(3)]
        assert all(arm.labels[j] != arm.labels[i] and arm.host[j] != arm.host[i] for j in tgt)
        candidates = [j for j in right if arm.labels[j] != arm.labels[i] and arm.host[j] != arm.host[i]]
        assert len(set(tgt)) == min(3, len(candidates))
    acc = zr.real_accuracy(models[2], hosts, list(excluded))
    assert acc == {"accuracy": pytest.approx(11 / 12), "plain": 1.0, "injected": pytest.approx(7 / 8),
                   "images": 12, "hosts": 4, "by_survey": {"unknown": {"accuracy": pytest.approx(11 / 12), "hosts": 4}}}
    hosts.info = [{"survey": "sdss"}] * 2 + [{"survey": "hst-xdf"}] * (len(hosts.names) - 2)  # per survey, the same
    by = zr.real_accuracy(models[2], hosts, list(excluded))["by_survey"]  # images, split by the host's survey
    assert sum(v["hosts"] for v in by.values()) == 4 and set(by) <= {"sdss", "hst-xdf"}
    assert sum(v["accuracy"] * v["hosts"] for v in by.values()) == pytest.approx(11 / 12 * 4)


def test_the_real_arm_is_gated_on_real_host_accuracy_and_paired_per_seed(tmp_path):
    """`domains`: every classifier screens the hosts; a backbone below the floor on the injected real hosts is kept
    out of that arm (its verdict says why); each fine-tuning seed gets its own pool from the backbones that pass."""
    from experiments.zoobot import study

    hosts = zr.load_hosts(_plain_folder(tmp_path / "real", 5), 32, 0.5, None, 2, seed=0)
    sim_x, sim_y = zd.simulated_set(8, 32, seed=1)
    everything = torch.cat([sim_x, hosts.plain, hosts.injected.flatten(0, 1)])
    truth = sim_y.tolist() + [0] * 5 + [1] * 10
    blind = truth[:13] + [0] * 10  # misses every injected clump: real-host accuracy 5 / 15

    def model(classes):
        return Classifier(Lookup(everything, classes), None, None).eval()

    models = [("imagenet", 0, model(truth)), ("imagenet", 1, model(truth)), ("galaxy-proxy", 0, model(truth)),
              ("galaxy-proxy", 1, model(blind))]
    training = {f"{k}/s{s}": {"test_accuracy": 1.0} for k, s, _ in models}
    config = zs.ZoobotConfig(size=32, rounds=2, sim_pairs=4, seeds=(0, 1), min_accuracy=0.6)
    gates: dict[str, str] = {}
    doms, real = study.domains(models, {"test_images": sim_x, "test_labels": sim_y}, config, hosts, training, gates)
    assert gates == {"real injected:galaxy-proxy:1": "galaxy-proxy seed 1: accuracy on the injected real hosts "
                                                     "0.333 < 0.6"}
    assert training["galaxy-proxy/s1"]["real_host"]["accuracy"] == pytest.approx(1 / 3)
    injected = [d for d in doms if d.name == "injected"]
    assert [(d.seed, d.kinds, d.pool.numel()) for d in injected] == [(0, ("imagenet", "galaxy-proxy"), 15),
                                                                     (1, ("imagenet",), 15)]  # seed 1 only
    assert real["per_seed"]["0"] == {"sources": 15, "pairs": 30, "hosts": 5, "plain_sources": 5,
                                     "injected_sources": 10, "unpaired": 0, "backbones": ["imagenet", "galaxy-proxy"]}
    assert real["surveys"] == {f"g{i}.png": "unknown" for i in range(5)}
    assert [d.name for d in doms] == ["sim", "injected", "injected", "real"]
    v = zs.analyse([], ["imagenet", "galaxy-proxy"], [0, 1], gates=gates)["verdicts"]["galaxy-proxy"]
    assert v.outcome == vd.NOT_EVALUATED and "0.333 < 0.6" in v.reason
    # ImageNet itself below the floor at seed 1: nothing to compare with at that seed, so no LST on the arm there
    models[1] = ("imagenet", 1, model(blind))
    gates = {}
    doms, real = study.domains(models, {"test_images": sim_x, "test_labels": sim_y}, config, hosts, training, gates)
    assert "real injected:imagenet:1" in gates and [(d.name, d.seed) for d in doms] == [
        ("sim", None), ("injected", 0), ("real", None)]


def test_pretraining_is_checkpointed_per_epoch_and_resumes_to_the_same_weights(tmp_path, monkeypatch, capsys):
    """A pretraining killed after epoch 1 resumes from the run store's checkpoint and ends with the weights of an
    uninterrupted run; one line per epoch is printed with progress off (--quiet)."""
    from safetensors.torch import load_file

    from experiments.galaxy_proxy import proxy as zp

    config = zs.ZoobotConfig(size=32, pretrain=12, pretrain_epochs=3, probe=12, batch_size=4)
    whole, _ = zp.ensure_proxy(config, torch.device("cpu"), tmp_path / "whole")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "pretraining: epoch" in ln]
    assert [ln.split(" done")[0] for ln in lines] == [f"galaxy-proxy pretraining: epoch {e}/3" for e in (1, 2, 3)]

    def killed(line: str) -> None:
        print(line)
        if "epoch 2/3" in line:
            raise KeyboardInterrupt  # as a kill right after epoch 2's checkpoint

    monkeypatch.setattr(zp, "epoch_done", killed)
    with pytest.raises(KeyboardInterrupt):
        zp.ensure_proxy(config, torch.device("cpu"), tmp_path / "killed")
    stages = sorted(p.name for p in (tmp_path / "killed" / "stages").iterdir())
    assert stages == ["pretrain-epoch002.safetensors"]  # the latest epoch only
    monkeypatch.undo()
    capsys.readouterr()
    resumed, log = zp.ensure_proxy(config, torch.device("cpu"), tmp_path / "killed")
    out = capsys.readouterr().out
    assert "resuming after epoch 2/3" in out and "epoch 3/3 done" in out and "epoch 1/3" not in out
    a, b = load_file(whole), load_file(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list((tmp_path / "killed" / "stages").iterdir())  # the last checkpoint goes with the encoder file
    assert log["pretrain_threads"] == torch.get_num_threads()


def test_linear_probe_recovers_a_linear_target():
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(300, 5, generator=gen)
    y = torch.stack([f @ torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0]), torch.randn(300, generator=gen)], 1)
    r2 = linear_probe(f[:200], y[:200], f[200:], y[200:])
    assert r2[0] > 0.99 and r2[1] < 0.1
    # many more noise features than samples: the chosen penalty keeps the probe from overfitting
    wide = torch.cat([f, torch.randn(300, 600, generator=gen)], 1)
    r2 = linear_probe(wide[:200], y[:200], wide[200:], y[200:])
    assert r2[0] > 0.2 and r2[1] > -0.1
    assert linear_probe(wide[:200], y[:200], wide[200:], y[200:], ridges=(1e-3,))[1] < -0.1  # without: overfit


def _encoder_file(path: Path, arch: str, seed: int, head: bool = False) -> dict[str, torch.Tensor]:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in timm.create_model(arch, num_classes=1000 if head else 0)
             .state_dict().items()}
    save_file(state, str(path))
    return state


def _real_folder(path: Path, n: int = 4) -> Path:
    from skimage import io

    path.mkdir()
    x, _ = zd.simulated_set(n, 48, seed=9)
    for i, im in enumerate(x):
        io.imsave(path / f"g{i}.png", (im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                  check_contrast=False)
    return path


def _tiny(**changes) -> zs.ZoobotConfig:
    """TINY's settings as a config (the command line's --iterations 2 gives the study step min(4 / 2, 0.25))."""
    return zs.ZoobotConfig(size=32, train=16, test=16, pretrain=16, pretrain_epochs=1, probe=12, epochs=1,
                           scratch_epochs=1, batch_size=8, lst_iterations=2, lst_step=0.25, rounds=2, sim_pairs=4,
                           min_accuracy=0.0, **changes)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The study end to end through the Python API, tiny settings, two seeds: ImageNet, a Zoobot file written
    here, the proxy; real hosts from a folder written here."""
    root = tmp_path_factory.mktemp("zoobot")
    zoobot = root / "zoobot.safetensors"
    _encoder_file(zoobot, ARCH, 0)
    config = _tiny(seeds=(0, 1), real=str(_real_folder(root / "real")), zoobot_weights=str(zoobot),
                   backbones=("imagenet", "zoobot", "galaxy-proxy"))
    result = zs.run_zoobot(config, root / "out", threads=1, progress=False, proxy_dir=root / "proxy")
    argv = TINY + ["--out", str(root / "out"), "--proxy-dir", str(root / "proxy"), "--seeds", "0,1",
                   "--real", config.real, "--zoobot-weights", str(zoobot), "--backbones", "imagenet,zoobot,galaxy-proxy"]
    return root, argv, result


def test_study_end_to_end_two_seeds(study, monkeypatch, capsys):
    root, argv, result = study
    out = root / "out"
    assert isinstance(result, zs.ZoobotResult) and result.report == out / "report.html"
    assert set(result.verdicts) == {"zoobot", "galaxy-proxy"}
    assert all(v.outcome in vd.OUTCOMES for v in result.verdicts.values())
    tables = json.loads((out / "tables.json").read_text())
    assert tables["summary"]["seeds"] == [0, 1] and tables["lst_settings"] == "custom"
    assert {k: v["outcome"] for k, v in tables["verdicts"].items()} == {k: v.outcome for k, v in
                                                                        result.verdicts.items()}
    assert set(result.accuracy) == {f"{k}/s{s}" for k in ("imagenet", "zoobot", "galaxy-proxy") for s in (0, 1)}
    assert all(0 <= a["simulated"] <= 1 and 0 <= a["real_host"] <= 1 for a in result.accuracy.values())
    lst = RunStore.read_records(out, "lst")
    real = [r for r in lst if r["domain"] == "real"]
    assert len(real) == 3 * 2 * 4 * 2  # backbones x seeds x cutouts x rounds
    noise = {}
    for r in real:  # same start noise for every backbone and seed
        noise.setdefault((r["round"], r["source"], r["target"]), set()).add(r["seed"])
    assert len(noise) == 8 and all(len(v) == 1 for v in noise.values())
    injected = [r for r in lst if r["domain"] == "injected"]
    units = result.real["image_hosts"]  # the host of each image of the real arm
    assert {"pixel_scale_arcsec_per_px", "psf_fwhm_arcsec"} <= set(result.real["units"])  # the clumps' physical units
    for s, design in result.real["per_seed"].items():  # the report's design is what was walked
        mine = [r for r in injected if r["ft_seed"] == int(s)]
        assert len(mine) == design["pairs"] * len(result.real["backbones"])
        assert len({units[r["source"]] for r in mine} | {units[r["target"]] for r in mine}) == design["hosts"]
    assert all(r["source_label"] != r["target_label"] and units[r["source"]] != units[r["target"]]
               for r in injected)
    comps = tables["comparisons"]
    assert {c["seed"] for c in comps} == {0, 1} and all(c["units"] <= c["n"] + 1 for c in comps)
    report = (out / "report.html").read_text()
    assert report.index("Verdict rule") < report.index("arms: seeds pooled as a random effect") < \
        report.index("Each seed alone") < report.index("Settings")
    assert set(tables["arms"]) == {"zoobot", "galaxy-proxy"} and all(
        [r["pairs"] for r in rows] == ["sim", "real injected"] for rows in tables["arms"].values())
    assert tables["summary"]["arms"] == tables["arms"] and "geometric mean" in tables["rule"]
    walked = tables["summary"]["traversals"]
    assert walked == {d: sum(r["domain"] == d for r in lst) for d in {r["domain"] for r in lst}}
    assert set(tables["summary"]["proxy"]["probe_r2"]) == {"galaxy-proxy", "imagenet", "random"}
    assert tables["summary"]["cpu_seconds"] > 0
    assert "proxy for Zoobot" in report and "Linear probe" in report and "injected real hosts" in report
    assert "McNemar" in report and "family-wise level" in report
    # the proxy encoder: a Zoobot-layout file with its normalisation, loadable as zoobot:<arch> ([0, 1] inputs)
    from safetensors import safe_open

    from blindspots import load_classifier

    proxy = root / "proxy" / "galaxy-proxy-encoder.safetensors"
    with safe_open(str(proxy), framework="pt") as fh:
        assert "without mean/std" in json.loads(fh.metadata()["normalisation"])
    assert load_classifier(f"zoobot:{ARCH}", weights=proxy).mean is None
    assert set(json.loads((root / "proxy" / "proxy.json").read_text())["probe"]) == {"galaxy-proxy", "imagenet",
                                                                                      "random"}

    # The command line with the same settings resumes the API's run: nothing is trained or traversed again.
    def forbidden(*args, **kwargs):
        raise AssertionError("finished work was recomputed on resume")

    from blindspots.studies import protocol
    from experiments.zoobot import backbones

    monkeypatch.setattr(backbones, "train", forbidden)
    monkeypatch.setattr(protocol, "level_set_traversal", forbidden)
    assert result.trained_here == 6 and tables["summary"]["fine_tuned_here"] == 6
    assert run_command("zoobot", zs, argv) == 0
    resumed = json.loads((out / "tables.json").read_text())
    assert resumed["comparisons"] == comps and resumed["summary"]["fine_tuned_here"] == 0
    assert [c["fine_tuned"] for c in resumed["summary"]["invocations"]] == [6, 0]  # the work's time is kept
    for t in resumed["training"].values():  # real-host accuracy per survey: hosts and images add up
        by = t["real_host"]["by_survey"]
        assert sum(v["hosts"] for v in by.values()) == t["real_host"]["hosts"]
        assert sum(v["accuracy"] * v["hosts"] for v in by.values()) == pytest.approx(
            t["real_host"]["accuracy"] * t["real_host"]["hosts"])
    # other settings into the same folder: one line, exit 2
    capsys.readouterr()
    assert run_command("zoobot", zs, argv + ["--iterations", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different run" in err[0] and "lst_iterations" in err[0]


def test_documented_zoobot_command_with_files_written_here(tmp_path):
    zoobot, imagenet = tmp_path / "zoobot-resnet18.safetensors", tmp_path / "resnet18-imagenet.safetensors"
    enc = _encoder_file(zoobot, "resnet18", 1)
    _encoder_file(imagenet, "resnet18", 2, head=True)
    from experiments.zoobot.fetch import command

    documented = command("resnet18", zoobot, imagenet).split()  # the command fetch prints and the docs show
    assert documented[:2] == ["blindspots", "zoobot"]
    argv = documented[2:] + TINY + [
        "--out", str(tmp_path / "out"), "--real", str(_real_folder(tmp_path / "real")), "--seeds", "0"]
    assert run_command("zoobot", zs, argv) == 0
    training = json.loads((tmp_path / "out" / "training.json").read_text())
    assert set(training) == {"imagenet/s0", "zoobot/s0"}
    clf = zs.build_backbone("zoobot", "resnet18", zoobot_weights=str(zoobot))
    assert clf.mean is None and torch.equal(clf.model.encoder.state_dict()["conv1.weight"], enc["conv1.weight"])
    assert zs.build_backbone("imagenet", "resnet18", imagenet_weights=str(imagenet)).mean is not None


def test_fetch_writes_the_two_files_through_timms_download(tmp_path, monkeypatch):
    import timm

    from experiments.zoobot import fetch

    asked, real_create = [], timm.create_model

    def fake_create(name, pretrained=False, **kwargs):  # timm's download, without the network
        asked.append((name, pretrained, kwargs.get("num_classes")))
        return real_create("resnet18", pretrained=False, **kwargs)

    import blindspots.validation

    monkeypatch.setattr(timm, "create_model", fake_create)
    monkeypatch.setattr(blindspots.validation, "timm_download_blocked", lambda name: None)  # as if online
    zoobot, imagenet = fetch.fetch("resnet18", tmp_path)
    assert asked == [("hf_hub:mwalmsley/zoobot-encoder-resnet18", True, 0), ("resnet18", True, None)]
    monkeypatch.undo()
    assert zs.build_backbone("zoobot", "resnet18", zoobot_weights=str(zoobot)).mean is None
    assert zs.build_backbone("imagenet", "resnet18", imagenet_weights=str(imagenet)).mean is not None


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    cases = [(["--backbones", "imagenet,nope"], "--backbones"), (["--seeds", "0,x"], "--seeds"),
             (["--zoobot-weights", str(tmp_path / "none.safetensors")], "no such file"),
             (["--model", "timm:resnet18"], "zoobot:<arch>"), (["--crop", "0"], "--crop"),
             (["--seed", str(10 ** 30)], "--seed"), (["--threshold", "1"], "--threshold")]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "CUDA is not available"))
    for argv, words in cases:
        assert _exit_code(argv + ["--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0]
        assert not (tmp_path / "o").exists()  # refused before any work


@pytest.mark.parametrize("argv, words", [
    pytest.param(["--arch", "ABS"], "is not a timm architecture", id="ISSUE22:zoobot-arch-absolute-path"),
    pytest.param(["--arch", "../../x"], "is not a timm architecture", id="ISSUE22:zoobot-arch-dotdot"),
    pytest.param(["--arch", "nosuch"], "--arch 'nosuch' is not a timm architecture",
                 id="ISSUE22:zoobot-arch-nosuch"),
    pytest.param(["--threads", "-1"], "--threads: expected a positive integer", id="ISSUE22:zoobot-threads-negative"),
    pytest.param(["--min-accuracy", "2"], "--min-accuracy must be a number in [0, 1]",
                 id="ISSUE22:zoobot-min-accuracy-2"),
])
def test_impossible_options_are_refused_before_anything_is_created_or_trained(argv, words, tmp_path, monkeypatch,
                                                                                capsys):
    """ISSUE22: no folder appears anywhere (the proxy's folder was named from --arch and made before the check),
    no training starts, and the error is one line, not a traceback."""
    from experiments.zoobot import backbones

    def forbidden(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(backbones, "train", forbidden)
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    argv = [str(tmp_path / "abs" / "x") if a == "ABS" else a for a in argv]
    assert _exit_code(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["a", "a/b"]


def test_config_is_the_api_and_the_command_line_only_parses_into_it(tmp_path):
    from experiments.zoobot.cli import config_from_args

    p = argparse.ArgumentParser()
    zs.add_arguments(p)
    assert config_from_args(p.parse_args([])) == zs.ZoobotConfig()  # the same defaults
    paper = config_from_args(p.parse_args(["--lst", "paper"]))
    assert (paper.lst_step, paper.lst_iterations, paper.lst_threshold) == (1e-2, 400, 0.2)
    assert paper == zs.ZoobotConfig().with_lst("paper") and paper.lst_name() == "paper"
    assert config_from_args(p.parse_args(["--iterations", "80"])).lst_step == 0.05  # step x iterations = 4
    cfg = zs.ZoobotConfig().lst_config()
    assert (cfg.step_size, cfg.iterations, cfg.threshold) == (0.1, 40, 0.2)
    # weights are keyed by content, not by name
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    _encoder_file(a, "resnet18", 0)
    b.write_bytes(a.read_bytes())
    key = lambda f: zs.ZoobotConfig(arch="resnet18", zoobot_weights=str(f)).settings()  # noqa: E731
    assert key(a) == key(b) and key(a)["zoobot_weights"] != str(a)
    for bad, words in [({"arch": "/x/y"}, "arch"), ({"seeds": (0, 0)}, "seeds"), ({"min_accuracy": 1.5}, "[0, 1]"),
                       ({"injections": 0}, "injections"), ({"lst_step": math.nan}, "lst_step"),
                       ({"real": str(tmp_path / "none")}, "no such folder")]:
        with pytest.raises(ValueError, match=re.escape(words)):
            zs.ZoobotConfig(**bad)
    with pytest.raises(ValueError, match="threads"):
        zs.run_zoobot(zs.ZoobotConfig(), tmp_path / "o", threads=0)
    assert not (tmp_path / "o").exists()


def test_simulated_task_classes():
    x, y = zd.simulated_set(10, 32, seed=3, min_clump_flux=0.05)
    assert x.shape == (10, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert y.sum() == 5 and set(y.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="min_clump_flux"):
        zd.simulated_set(4, 32, seed=0, min_clump_flux=0.2)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
def test_report_fits_a_1280_px_window_in_chromium(study, tmp_path):
    from conftest import measure_in_chromium

    root, _, _ = study
    page = tmp_path / "report.html"
    page.write_text((root / "out" / "report.html").read_text())
    assert 0 < measure_in_chromium(page, "document.documentElement.scrollWidth") <= 1280  # no sideways scroll


def test_the_readme_python_example_uses_the_api_as_it_is():
    """The docs' ten lines (docs/studies.md): they compile, name only ZoobotConfig fields and run_zoobot arguments,
    and use the result's attributes."""
    import ast
    import inspect

    from conftest import REPO

    text = (REPO / "docs" / "studies.md").read_text()
    section = text[text.index("## Zoobot vs ImageNet"):]
    code = section[section.index("```python\n") + 10:]
    code = code[:code.index("```")]
    assert len(code.strip().splitlines()) <= 10
    tree = ast.parse(code)
    calls = {n.func.id: n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert {k.arg for k in calls["ZoobotConfig"].keywords} <= set(zs.ZoobotConfig.__dataclass_fields__)
    assert {k.arg for k in calls["run_zoobot"].keywords} <= set(inspect.signature(zs.run_zoobot).parameters)
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert used <= {"with_lst", "verdicts", "outcome", "reason", "comparison_rows", "accuracy"}
    assert all(hasattr(zs.ZoobotResult, a) or a in zs.ZoobotResult.__dataclass_fields__ for a in
               ("verdicts", "comparison_rows", "accuracy"))
    row_keys = {n.slice.value for n in ast.walk(tree) if isinstance(n, ast.Subscript) and
                isinstance(n.value, ast.Name) and n.value.id == "row"}
    c = _comp("proxy", "real injected", 0, np.linspace(-1, 1, 24))
    assert row_keys <= set(c.row())


def test_shared_model_and_weights_name_the_zoobot_encoder(tmp_path):
    from experiments.zoobot.cli import config_from_args

    f = tmp_path / "z.safetensors"
    _encoder_file(f, "resnet18", 0)
    p = argparse.ArgumentParser()
    zs.add_arguments(p)
    config = config_from_args(p.parse_args(["--model", "zoobot:resnet18", "--weights", str(f)]))
    assert (config.arch, config.zoobot_weights, config.backbones) == ("resnet18", str(f),
                                                                       ("imagenet", "zoobot", "galaxy-proxy"))


def test_the_default_real_arm_is_every_host_reachable_offline(tmp_path, monkeypatch):
    """No --real: the cutouts of ../shared/data/galaxies where that folder exists, and the survey field's galaxies
    always (the real arm needs the hosts); the run store's key names the sources, so a run made with other hosts is
    never reused."""
    from experiments.zoobot import data as zd

    monkeypatch.setattr(zd, "default_real", lambda: tmp_path)
    assert zs.ZoobotConfig().real_sources() == (str(tmp_path), "field")
    assert zs.ZoobotConfig().settings()["real"] == [str(tmp_path.resolve()), "field"]
    monkeypatch.setattr(zd, "default_real", lambda: tmp_path / "absent")
    assert zs.ZoobotConfig().real_sources() == ("field",)
    assert zs.ZoobotConfig(real=str(tmp_path)).real_sources() == (str(tmp_path),)  # given sources replace the default


def test_the_docs_block_says_the_traversals_the_proxy_and_the_hosts_left_out_by_reason():
    """Every figure the Zoobot section quotes comes from the results file: the traversals per pair set, wall and CPU
    time, the proxy's pretraining and probe; many hosts left out are counted per reason, a few are named."""
    from conftest import REPO
    from experiments.zoobot.report import render_readme

    data = json.loads((REPO / "docs" / "results" / "zoobot.json").read_text())
    command, run = next((c, r) for c, r in data["runs"].items() if "arms" in r)
    excluded = {f"field-{i}": "injection failed: no galaxy found in the cutout" for i in range(5)}
    excluded["sdss/a.png"] = "possibly clumpy already: 83% of the classifiers call the plain cutout clumpy"
    run = {**run, "traversals": {"sim": 1152, "injected": 900, "real": 600}, "cpu_seconds": 1500.0,
           "proxy": {"pretrain_seconds": 1278.0, "pretrain_cpu_seconds": 680.0, "pretrain_threads": 1,
                     "probe_r2": {"galaxy-proxy": 0.832, "imagenet": 0.263, "random": 0.17}},
           "real": {**run["real"], "excluded": excluded},
           "accuracy": {"imagenet/s0": {"simulated": 0.9, "real_host": 0.53,
                                        "real_by_survey": {"hst-xdf": 0.5, "legacy": 0.8}}},
           "invocations": [{"seconds": 3000.0, "cpu_seconds": 1800.0, "fine_tuned": 6},
                           {"seconds": 30.0, "cpu_seconds": 24.0, "fine_tuned": 0}],
           "seconds": 30.0, "fine_tuned_here": 0, "models": 6}
    text = render_readme({"runs": {command: run}})
    assert "50.5 min wall, 30.4 min CPU over its 2 invocations" in text and "the last, 0.5 min" in text
    assert "1152 simulated, 900 injected-host, 600 real-cutout" in text
    assert "imagenet/s0 0.900 / 0.530 (hst-xdf 0.500, legacy 0.800)" in text
    assert "pretrained in 21.3 min wall (11.3 min CPU, 1 thread(s))" in text and "galaxy-proxy 0.832" in text
    assert "left out: 6 hosts (5 injection failed; 1 possibly clumpy already)" in text
    few = render_readme({"runs": {command: {**run, "real": {**run["real"], "excluded": {"sdss/a.png": "why"}},
                                            "invocations": run["invocations"][:1], "cpu_seconds": 1500.0}}})
    assert "left out: sdss/a.png (why)" in few and "0.5 min wall, 25.0 min CPU" in few
