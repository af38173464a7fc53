"""`blindspots attack` in the study shape: the command line's defaults are `SensitivityConfig()`'s (and its run-store
key the one the command line wrote before), a bad option is one line naming it before anything loads, and
`run_sensitivity(config, out)` returns a `SensitivityResult` with what the table, the JSON and the figure use."""

from __future__ import annotations

import argparse
import json

import pytest


def _parser() -> argparse.ArgumentParser:
    from experiments.sensitivity import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def test_the_command_lines_defaults_are_the_configs():
    from blindspots import LSTConfig
    from experiments.sensitivity import SensitivityConfig, config_from_args

    args = _parser().parse_args([])
    config = config_from_args(args)
    assert config == SensitivityConfig()
    # the run store's key: every option but where and how the run goes, as the command line keyed it before
    assert config.settings() == {k: v for k, v in vars(args).items()
                                 if k not in ("quiet", "restart", "out", "device")}
    assert config.lst_config() == LSTConfig.adaptive(batch_size=64, start="keep")
    changed = config_from_args(_parser().parse_args(
        ["--norm", "l2", "--rounds", "0", "--redraw-start", "--iterations", "5", "--amp", "--digits", "2"]))
    assert (changed.norm, changed.rounds, changed.digits) == ("l2", 0, 2)
    assert changed.lst_config() == LSTConfig.adaptive(batch_size=64, start="redraw", iterations=5, amp=True)
    assert changed.attack_options() == {"amp": True, "compile": False}


@pytest.mark.parametrize("argv, line", [
    (["--rtol", "2"], "--rtol must lie in (0, 1), got 2.0"),
    (["--max-eps", "-1"], "--max-eps must be a finite number > 0, got -1.0"),
    (["--attack", "pgd"], "attack 'pgd' has a fixed budget: give eps (--eps)"),
    (["--eps", "0.1"], "attack 'minimal-epsilon' searches the smallest budget itself: eps does not apply"),
])
def test_a_bad_option_is_one_line_naming_it_before_anything_runs(argv, line, tmp_path, capsys):
    from experiments.sensitivity import main

    out = tmp_path / "a"
    assert main([*argv, "--out", str(out), "--model", "no-such-model"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"blindspots attack: error: {line}"]
    assert not out.exists()


def test_the_config_refuses_impossible_values_in_python():
    from blindspots.errors import InputError
    from experiments.sensitivity import SensitivityConfig

    for bad, match in (({"norm": "l1"}, "norm must be one of linf, l2"), ({"rounds": -1}, "rounds must be a non"),
                       ({"steps": 0}, "steps must be None or a positive integer"), ({"seed": 2 ** 31}, "seed must"),
                       ({"attack": "cw"}, "unknown attack 'cw'"), ({"amp": 1}, "amp must be True or False")):
        with pytest.raises(InputError, match=match):
            SensitivityConfig(**bad)


def test_run_sensitivity_returns_the_result_the_report_uses(tmp_path, capsys):
    from experiments.sensitivity import SensitivityConfig, SensitivityResult, main, run_sensitivity

    config = SensitivityConfig(model="mnist-cnn", limit=3, steps=2, search_steps=2, iterations=2, rounds=1)
    result = run_sensitivity(config, tmp_path / "a", device="cpu", progress=False)
    assert isinstance(result, SensitivityResult) and result.config == config and len(result.rows) == 3
    assert result.profile.pairs.shape == (1, 3) and len(result.profile.lst) == 1
    saved = json.loads(result.json.read_text())
    assert saved["model"] == "mnist-cnn" and saved["images"] == "MNIST digits" and saved["rounds"] == 1
    assert [r["name"] for r in saved["rows"]] == [r["name"] for r in result.rows]
    assert [r["min_eps_text"] for r in saved["rows"]] == [r["min_eps_text"] for r in result.rows]
    assert result.csv.read_text().count("\n") == 4 and result.figure.stat().st_size > 0
    # the command line with the same settings resumes the same run (same key) and prints the same table
    assert main(["--model", "mnist-cnn", "--limit", "3", "--steps", "2", "--search-steps", "2", "--iterations", "2",
                 "--out", str(tmp_path / "a"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:4] == ["image", "class", "min", "eps"]
    assert all(str(r["name"])[:20] in printed for r in result.rows)
    assert json.loads(result.json.read_text())["rows"] == saved["rows"]
