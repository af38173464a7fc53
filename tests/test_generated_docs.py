"""Docs blocks generated from results files: the mechanism, and no drift in the repository's own docs."""

from __future__ import annotations

import json

import pytest

from experiments.generated_docs import main, unplaced_blocks, update_files, update_text


def _blocks():
    return {"acc": ("res.json", lambda d: f"| model | clean |\n|---|---|\n| {d['model']} | {d['clean']:.3f} |")}


def test_block_is_rendered_from_its_results_file_and_check_reports_drift(tmp_path):
    (tmp_path / "res.json").write_text(json.dumps({"model": "m", "clean": 0.9712}))
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "page.md"
    doc.write_text("intro\n<!-- generated:acc -->\nstale | 0.5\n<!-- /generated:acc -->\noutro\n")
    assert update_files(check=True, blocks=_blocks(), root=tmp_path) == {"docs/page.md": ["acc"]}
    assert "stale" in doc.read_text()  # --check writes nothing
    update_files(blocks=_blocks(), root=tmp_path)
    assert doc.read_text() == ("intro\n<!-- generated:acc -->\n| model | clean |\n|---|---|\n| m | 0.971 |\n"
                               "<!-- /generated:acc -->\noutro\n")
    assert update_files(check=True, blocks=_blocks(), root=tmp_path) == {}
    (tmp_path / "res.json").write_text(json.dumps({"model": "m", "clean": 0.5}))  # the results changed
    assert update_files(check=True, blocks=_blocks(), root=tmp_path) == {"docs/page.md": ["acc"]}


def test_unknown_block_and_missing_results_file_are_named(tmp_path):
    with pytest.raises(KeyError, match="nosuch"):
        update_text("<!-- generated:nosuch -->\n<!-- /generated:nosuch -->", _blocks(), tmp_path)
    with pytest.raises(ValueError, match="res.json"):
        update_text("<!-- generated:acc -->\n<!-- /generated:acc -->", _blocks(), tmp_path)


def test_repository_docs_equal_their_results_files():
    assert update_files(check=True) == {}, "run `python -m experiments.generated_docs` and commit the result"


def test_blocks_of_readme_and_nested_docs_pages_in_one_pass_and_unplaced_blocks_named(tmp_path):
    (tmp_path / "res.json").write_text(json.dumps({"model": "m", "clean": 0.25}))
    (tmp_path / "docs" / "api").mkdir(parents=True)
    block = "<!-- generated:acc -->\nold\n<!-- /generated:acc -->\n"
    for page in ("README.md", "docs/api/page.md"):
        (tmp_path / page).write_text(block)
    (tmp_path / "docs" / "plain.md").write_text("no block here\n")
    blocks = {**_blocks(), "lost": ("res.json", str)}
    assert update_files(check=True, blocks=blocks, root=tmp_path) == {"README.md": ["acc"], "docs/api/page.md": ["acc"]}
    assert unplaced_blocks(blocks, tmp_path) == ["lost"]  # registered, but its section moved without it
    update_files(blocks=blocks, root=tmp_path)
    assert "| m | 0.250 |" in (tmp_path / "docs" / "api" / "page.md").read_text()
    (tmp_path / "docs" / "plain.md").write_text("<!-- generated:lost -->\n<!-- /generated:lost -->\n")
    assert unplaced_blocks(blocks, tmp_path) == []


def test_every_registered_block_sits_in_a_doc_file():
    assert unplaced_blocks() == [], "place each registered block in README.md or a docs/ page"


def test_check_names_a_registered_block_that_no_page_holds(monkeypatch, capsys):
    import experiments.generated_docs as gd

    monkeypatch.setitem(gd.BLOCKS, "nowhere", ("docs/results/zoobot.json", str))
    monkeypatch.setattr(gd, "update_files", lambda check=False: {})  # isolate the placement check from the results
    assert main(["--check"]) == 1
    assert "nowhere" in capsys.readouterr().out


def test_a_block_without_results_file_is_rendered_from_code(tmp_path):
    """A block registered with no results file (the model registry's table) is rendered from None: no file is
    looked for."""
    seen = []
    blocks = {"code": (None, lambda d: seen.append(d) or "| a |\n|---|\n")}
    text, changed = update_text("<!-- generated:code -->\nold\n<!-- /generated:code -->", blocks, tmp_path)
    assert seen == [None] and changed == ["code"]
    assert text == "<!-- generated:code -->\n| a |\n|---|\n<!-- /generated:code -->"


def test_the_readme_models_block_is_the_registry():
    """The README's model table lists every registered model, in order, and equals its renderer's output."""
    import re

    from blindspots.registry import MODELS
    from experiments.generated_docs import REPO, render_block

    body = render_block("models")
    assert [r.split("|")[1].strip().strip("`") for r in body.splitlines()[2:]] == list(MODELS)
    assert {"imagenet-lite0", "mnist-cnn"} <= set(MODELS)
    page = (REPO / "docs" / "zoo.md").read_text()
    assert re.search(r"<!-- generated:models -->\n(.*?)<!-- /generated:models -->", page, re.S)[1] == body


def test_a_hand_copied_table_of_a_generated_kind_is_reported(tmp_path):
    """A page holding, outside any block, a table with a generated table's header holds figures no results file
    backs: --check names it; inside its block the same table is fine."""
    from experiments.generated_docs import unbacked_tables

    (tmp_path / "res.json").write_text(json.dumps({"model": "m", "clean": 0.5}))
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    block = "<!-- generated:acc -->\n| model | clean |\n|---|---|\n| m | 0.500 |\n<!-- /generated:acc -->\n"
    page.write_text(block + "\nprose | not a table\n")
    assert unbacked_tables(_blocks(), tmp_path) == []
    page.write_text(block + "\n| model | clean |\n|---|---|\n| m | 0.612 |\n")  # a copy, typed beside its block
    assert unbacked_tables(_blocks(), tmp_path) == ["docs/page.md: a table like block 'acc' outside any generated block"]


def test_check_fails_on_a_hand_copied_table(monkeypatch, capsys):
    import experiments.generated_docs as gd

    monkeypatch.setattr(gd, "update_files", lambda check=False: {})
    monkeypatch.setattr(gd, "unplaced_blocks", lambda: [])
    monkeypatch.setattr(gd, "unbacked_tables", lambda: ["docs/engine.md: a table like block 'lst-passes' outside"])
    assert main(["--check"]) == 1
    assert "no results file" in capsys.readouterr().out


def test_benchmark_runs_are_recorded_and_rendered(tmp_path, monkeypatch):
    """A benchmark's --results-to run lands in the results file (replacing the earlier run of the same command) and
    the docs' runs table shows its verdict and one-line result with the command that measured it."""
    from blindspots.studies.measured import read_runs, record_run
    from experiments.benchmark_docs import render_runs

    path = tmp_path / "runs.json"
    record_run(path, "simulate_speed", ["--n", "5", "--results-to", str(path)], met=False, summary="40 images/s",
               figures={"best": 40.0})
    record_run(path, "speed_geometry", [], met=True, summary="1.32x", figures={})
    record_run(path, "simulate_speed", ["--n", "5"], met=True, summary="60 images/s", figures={"best": 60.0})
    runs = read_runs(path)
    assert [(r["command"], r["summary"]) for r in runs] == [("python -m benchmarks.speed_geometry", "1.32x"),
                                                            ("python -m benchmarks.simulate_speed --n 5", "60 images/s")]
    table = render_runs(json.loads(path.read_text())).splitlines()
    assert table[0].startswith("- met: 1.32x (`python -m benchmarks.speed_geometry`; ")  # the benchmarks' order
    assert table[1].startswith("- met: 60 images/s (`python -m benchmarks.simulate_speed --n 5`; ")
    path.write_text("{}")
    with pytest.raises(ValueError, match="runs.json is not a list of recorded runs"):
        read_runs(path)


def test_the_lst_passes_table_takes_each_column_from_its_latest_run():
    """engine.md's table: the main columns from the latest default run holding the set, the unscaled column from
    the latest `offset_scale_max=1` run, the fixed-step column from the run that tried the most steps."""
    from experiments.benchmark_docs import render_lst_passes

    def run(measured, settings, saving, fixed=None):
        return {"benchmark": "lst_passes", "command": f"cmd {measured}", "measured": measured,
                "figures": {"settings": settings, "sets": [
                    {"set": "mnist", "model": "m", "px": 28, "pairs": 8, "saving": saving, "pairs_at_quality": 8,
                     "rms_ratio": [0.5, 0.9], "ssim_diff": [0.01, -0.002], "fixed": fixed}]}}

    data = {"runs": [run("1", {}, 30.0, {"0.1 x10": 2.0, "0.2 x5": None}),
                     run("2", {}, 25.0, {"0.2 x5": None}),
                     run("3", {"adaptive": {"offset_scale_max": 1}}, 11.0)]}
    row = render_lst_passes(data).splitlines()[2]
    assert row == ("| MNIST digits | m | **25.0x** | 8/8 | 0.50, 0.90 | +0.010, -0.002 | 11.0x, 8/8 | "
                   "0.1 x 10: 2.00x |")


def test_a_study_table_shows_its_outcome_first():
    """At 1280 px the outcome of a study's table must not hide behind a horizontal scroll: it comes first, in every
    table that has one, and tables without one are left as they are."""
    from experiments.generated_docs import outcome_first

    text = ("intro | not a table\n\n| claim | value | outcome |\n|---|---|---|\n| a | 0.5 | holds |\n| b |  | mixed |\n"
            "\n| x | y |\n|---|---|\n| 1 | 2 |\n")
    assert outcome_first(text) == ("intro | not a table\n\n| outcome | claim | value |\n|---|---|---|\n"
                                   "| holds | a | 0.5 |\n| mixed | b |  |\n\n| x | y |\n|---|---|\n| 1 | 2 |\n")
    from experiments.generated_docs import render_block

    for name in ("paper-claims", "zoobot-results"):
        tables = [line for line in render_block(name).splitlines() if line.startswith("| ") and "---" not in line]
        assert any(line.startswith(("| outcome |", "| cell |")) for line in tables), name


def test_a_transcribed_run_reads_transcribed_not_rerun_beside_its_date_in_every_benchmark_block():
    """A run copied from earlier docs is never shown as a fresh measurement: every block that uses it says so beside
    its date, and the runs list says where it was copied from and how to refresh it."""
    from experiments.benchmark_docs import (render_detector_table, render_lst_passes, render_lst_passes_other_digits,
                                            render_runs)

    sets = [{"set": "mnist", "model": "m", "px": 28, "pairs": 8, "saving": 21.0, "pairs_at_quality": 8,
             "rms_ratio": [0.5, 0.9], "ssim_diff": [0.01, -0.002], "fixed": None}]
    row = {"backbone": "b", "weights": "random", "score_threshold": 0.6, "completeness_bright": 0.97, "purity": 0.85,
           "at_preset_threshold": {"score_threshold": 0.3, "completeness_bright": 0.99, "purity": 0.67},
           "ap50_clump": 0.795, "real_completeness": None, "steps": 2000}
    base = {"machine": {"cpus": 2}, "met": True, "summary": "s", "transcribed": "copied from commit abc."}
    data = {"runs": [
        {**base, "benchmark": "lst_passes", "command": "cmd-a", "measured": "2026-11-30 01:04 UTC",
         "figures": {"settings": {"adaptive": {}, "mnist_start": 0, "fixed": []}, "sets": sets}},
        {**base, "benchmark": "lst_passes", "command": "cmd-b", "measured": "2026-11-30 01:30 UTC",
         "figures": {"settings": {"adaptive": {}, "mnist_start": 100}, "sets": sets}},
        {**base, "benchmark": "detector_cpu", "command": "cmd-c", "measured": "2026-11-24 03:42 UTC",
         "figures": {"rows": {"random": row}, "targets": {"completeness": 0.8, "purity": 0.8}, "settings": {}}}]}
    assert "`cmd-a` (2026-11-30 01:04 UTC, transcribed, not rerun)" in render_lst_passes(data)
    assert "The target is met on one of the one sets (m). Runs:" in render_lst_passes(data)
    assert "`cmd-b` (2026-11-30 01:30 UTC, transcribed, not rerun)" in render_lst_passes_other_digits(data)
    table = render_detector_table(data)
    assert "| random | b (random) | 0.6 | **0.970 / 0.850** | 0.990 / 0.670 | 0.795 | n/a | 2000 |" in table
    assert "`cmd-c` (2026-11-24 03:42 UTC, transcribed, not rerun)" in table
    runs = render_runs(data)
    assert runs.count("transcribed, not rerun;") == 2  # the runs list shows lst_passes with default settings only
    assert "Marked transcribed, not rerun: Copied from commit abc. The command beside each refreshes it" in runs
    fresh = {"runs": [{**r, "transcribed": None} for r in data["runs"]]}
    assert "transcribed" not in render_runs(fresh) + render_detector_table(fresh) + render_lst_passes(fresh)


def test_check_fails_when_a_benchmark_block_no_longer_matches_its_results_file(tmp_path):
    """The detector table on a page is the results file's: a figure edited by hand on the page, or a results file
    that changed, is drift that --check reports."""
    import shutil

    from experiments.generated_docs import REPO, render_block

    (tmp_path / "docs" / "results").mkdir(parents=True)
    results = tmp_path / "docs" / "results" / "benchmarks.json"
    shutil.copy(REPO / "docs" / "results" / "benchmarks.json", results)
    page = tmp_path / "docs" / "page.md"
    body = render_block("detector-table", root=tmp_path)
    page.write_text(f"<!-- generated:detector-table -->\n{body}<!-- /generated:detector-table -->\n")
    assert update_files(check=True, root=tmp_path) == {}
    page.write_text(page.read_text().replace("0.993 / 0.938", "0.999 / 0.938"))  # typed over on the page
    assert update_files(check=True, root=tmp_path) == {"docs/page.md": ["detector-table"]}
    page.write_text(f"<!-- generated:detector-table -->\n{body}<!-- /generated:detector-table -->\n")
    data = json.loads(results.read_text())
    next(r for r in data["runs"] if r["benchmark"] == "detector_cpu")["figures"]["rows"]["random"]["purity"] = 0.5
    results.write_text(json.dumps(data))  # a rerun changed a figure: the page is stale until regenerated
    assert update_files(check=True, root=tmp_path) == {"docs/page.md": ["detector-table"]}
