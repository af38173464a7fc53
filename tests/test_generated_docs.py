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
