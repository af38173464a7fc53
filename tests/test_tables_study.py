"""`blindspots tables` in the study shape: the command line's defaults are `TablesConfig()`'s, a bad option is one
line naming it before anything loads, and `run_tables(config, out)` returns a `TablesResult` with what the report
and the printed tables use (on tiny seeded models and a synthetic pool: seconds)."""

from __future__ import annotations

import argparse
import json

import pytest

from blindspots import LSTConfig
from test_studies import synthetic_pool, tiny_model


def _parser() -> argparse.ArgumentParser:
    from experiments.tables import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def test_the_command_lines_defaults_are_the_configs():
    from experiments.tables import TablesConfig, config_from_args

    config = config_from_args(_parser().parse_args([]))
    assert config == TablesConfig()
    assert config.models == ("imagenet-lite0",) and config.weights == (None,) and config.lst == LSTConfig.paper()
    assert config.settings() == {"images": "skimage", "size": 224, "weights": [""]}  # the run store's key, as before
    changed = config_from_args(_parser().parse_args(
        ["--model", "a,b", "--weights", "w.pt,-", "--iterations", "7", "--no-hull", "--rounds", "1", "--amp"]))
    assert changed.models == ("a", "b") and changed.weights == ("w.pt", None) and not changed.hull
    assert changed.lst == LSTConfig.paper(iterations=7, amp=True) and changed.rounds == 1


@pytest.mark.parametrize("argv, line", [
    (["--rounds", "1"], "--rounds 1: the hull statistics (Table 2) need >= 2 rounds"),
    (["--grid-step", "0.3"], "--grid-step must divide 1 exactly"),
    (["--min-confidence", "1"], "--min-confidence must be a number in [0, 1), got 1.0"),
    (["--weights", "a,b"], "--weights has 2 entries for 1 models"),
    (["--step-size", "3"], "--step-size must be in (0, 1]"),
    (["--adv-eps", "0.5"], "--adv-eps must be in [0, 0.1]"),
])
def test_a_bad_option_is_one_line_naming_it_before_anything_runs(argv, line, tmp_path, capsys):
    from experiments.tables import main

    out = tmp_path / "t"
    assert main([*argv, "--out", str(out), "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("blindspots tables: error: " + line), err
    assert not out.exists()


def test_the_config_refuses_impossible_values_in_python():
    from blindspots.errors import InputError
    from experiments.tables import TablesConfig

    for bad, match in (({"models": ""}, "at least one model"), ({"size": 0}, "size must be a positive integer"),
                       ({"seed": -1}, "seed must be an integer"), ({"lst": "paper"}, "lst must be an LSTConfig"),
                       ({"limit": 0}, "limit must be None or a positive integer")):
        with pytest.raises(InputError, match=match):
            TablesConfig(**bad)
    assert TablesConfig(models="a, b", weights=["x", ""]).weights == ("x", None)


def test_run_tables_returns_the_result_the_report_uses(tmp_path, monkeypatch):
    """Two tiny seeded models stand in for the specs, a synthetic pool for scikit-image's photos: the result holds
    both tables (the numbers tables.json holds), the files written and the report."""
    import blindspots.data
    from experiments.tables import TablesConfig, TablesResult, run_tables
    from experiments.tables import study

    x, _ = synthetic_pool()
    names = [f"img{i}.png" for i in range(len(x))]
    monkeypatch.setattr(blindspots.data, "demo_photos", lambda size=224: (x, names))
    monkeypatch.setattr(study, "load_classifier", lambda spec, weights=None, device=None: tiny_model(int(spec[-1])))
    config = TablesConfig(models="tiny0,tiny1", rounds=2, size=12, lst=LSTConfig.paper(iterations=4), seed=3,
                          batch_size=4, limit=9)
    result = run_tables(config, tmp_path / "t", device="cpu", progress=False)
    assert isinstance(result, TablesResult) and result.config == config and result.out == tmp_path / "t"
    assert [r["model"] for r in result.table1] == ["tiny0", "tiny1"]
    assert [r["model"] for r in result.table2] == ["tiny0", "tiny1"]
    saved = json.loads((tmp_path / "t" / "tables.json").read_text())
    assert saved["table1"] == json.loads(json.dumps(result.table1)) and result.pairs == saved["pairs"] > 0
    assert set(result.files) == {"tables.json", "table1.csv", "table2.csv", "records.csv"}
    assert all(p.is_file() for p in result.files.values()) and result.report.is_file()
    assert result.skipped == ["LPIPS (no weights given)"]
    assert len(result.tables["pool"]["names"]) == len(result.tables["pool"]["indices"]) >= 2
    key = json.dumps(json.loads((tmp_path / "t" / "run.json").read_text()))
    assert '"images": "skimage"' in key and '"size": 12' in key  # config.settings() is in the run store's key
