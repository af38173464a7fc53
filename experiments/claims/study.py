"""The LST paper's findings checked on real trained models: normal vs adversarially trained (AT), CNN and ViT.

    blindspots paper                          # MNIST: mnist-cnn[-at], mnist-vit[-at]; ImageNet: lite0, MobileNetV2
    blindspots paper --groups mnist --sources 100 --iterations 400
    blindspots paper --results-to docs/results/claims.json     # the file docs/studies.md's claims block is made from

Per group, the paper's protocol (`experiments.tables.run_study`): sources with confidence > `min_confidence`
(0.6, strict, as the paper's pool), `rounds` derangements (each source to a target of another class, no pair twice),
LST with the paper's settings unless told otherwise; Table 1 and Table 2 in `OUT/<group>/`. MNIST: one pool of
held-out digits every model of the group classifies correctly (the paired comparisons need the same sources).
ImageNet: there is no adversarially trained ImageNet model offline, so each model gets its own pool, one real photo
per class it predicts with p > 0.6 (`OUT/imagenet/<model>/`); with at most 24 photos its rules are underpowered,
which the run says before it starts. For each (normal, AT) pair, claim 3 is also decided with both models' outputs
taken at the same RMS-l2 to their targets (`experiments.claims.matched_distance`, `OUT/<group>/matched-<arch>/`), the
triangles' sides shown beside it.

The claims and their rules are in `experiments.claims.rules` (fixed before the numbers; decided with
`blindspots.verdicts`): a verdict per model, per group, and an overall line naming the groups that decided it.
Writes `claims.json`, `claims.csv`, `triangles.png` and `report.html`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from blindspots import LSTConfig, load_classifier
from blindspots import studies as st
from blindspots.cli import add_common_options, model_call_options, positive_int, resolve_device
from blindspots.store import RunStore

from . import rules as pv
from ..tables import TABLE1_FIELDS, open_unit_float, run_study, table2_fields
from blindspots.errors import InputError

HELP = "the LST paper's claims on real normal and adversarially trained models (MNIST CNN/ViT, ImageNet)"


@dataclass(frozen=True)
class Group:
    """Models probed on one image set, their (architecture, normal, AT) pairs, and whether each model gets its own
    pool (labels: its own predictions) instead of the pool every model classifies correctly."""

    models: tuple[str, ...]
    at_pairs: tuple[tuple[str, str, str], ...]
    images: Callable[[Sequence[torch.nn.Module], int | None, int, int, float],
                     tuple[torch.Tensor, torch.Tensor | None, list[str] | None]]
    per_model: bool = False


def _mnist_images(models, limit: int | None, seed: int, size: int, min_confidence: float):
    """Held-out MNIST digits (the 1,000 of the zoo's split), a seeded class-balanced subset of `limit`."""
    from blindspots.zoo import mnist_split

    x, y = mnist_split("test")
    if limit is not None and limit < len(y):
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        per_class = -(-limit // 10)
        keep = torch.cat([order[y[order] == c][:per_class] for c in range(10)])[:limit].sort().values
        x, y = x[keep], y[keep]
    return x, y, [f"mnist-test-{i}" for i in range(len(y))]


def _photo_images(models, limit: int | None, seed: int, size: int, min_confidence: float):
    """One real photo per class the model predicts with p > min_confidence, at `size` pixels (labels: its
    predictions)."""
    from blindspots.photos import agreed_photo_pool

    pool = agreed_photo_pool(models, size=size, min_confidence=min_confidence)
    n = len(pool) if limit is None else min(limit, len(pool))
    if n < 2 or len(set(pool.classes[:n].tolist())) < 2:
        raise InputError(f"imagenet: {', '.join(getattr(m, 'name', '?') for m in models)} puts {len(pool)} of "
                         f"{pool.candidates} photos in a class with p > {min_confidence:g} at {size} px; the protocol "
                         "needs 2 of different classes (a larger --photo-size helps; default 128)")
    return pool.images[:n], None, list(pool.names[:n])


GROUPS: dict[str, Group] = {
    "mnist": Group(("mnist-cnn", "mnist-cnn-at", "mnist-vit", "mnist-vit-at"),
                   (("CNN", "mnist-cnn", "mnist-cnn-at"), ("ViT", "mnist-vit", "mnist-vit-at")), _mnist_images),
    "imagenet": Group(("imagenet-lite0", "imagenet-mobilenetv2"), (), _photo_images, per_model=True),
}


@dataclass
class _Run:
    """One run of the protocol: its models (name, net), images, labels, names, pool and output folder."""

    name: str
    models: list[tuple[str, torch.nn.Module]]
    images: torch.Tensor
    labels: torch.Tensor | None
    names: list[str] | None
    pool: torch.Tensor
    out: Path


def _plan(name: str, group: Group, nets: Mapping[str, torch.nn.Module], sources, seed, photo_size, min_confidence,
          out: Path) -> list[_Run]:
    """The runs of a group with their pools, chosen before any LST (so that power can be checked first)."""
    runs = []
    for models in ([[m] for m in group.models] if group.per_model else [list(group.models)]):
        pairs = [(m, nets[m]) for m in models]
        images, labels, names = group.images([n for _, n in pairs], sources, seed, photo_size, min_confidence)
        pool, _ = st.select_pool([n for _, n in pairs], images, labels, min_confidence=min_confidence)
        if pool.numel() < 2:
            raise InputError(f"{name}: {', '.join(models)} classify {pool.numel()} of {len(images)} images correctly "
                             f"with p > {min_confidence:g}; the protocol needs at least 2")
        runs.append(_Run(name if not group.per_model else f"{name}/{st.slug(models[0])}", pairs, images, labels,
                         names, pool, out / name / (st.slug(models[0]) if group.per_model else "")))
    return runs


def run_claims(out: str | Path, groups: Mapping[str, Group] | Sequence[str] = ("mnist", "imagenet"), *,
               sources: int | None = 60, rounds: int = 5, config: LSTConfig | None = None,
               min_confidence: float = 0.6, seed: int = 0, device=None, batch_size: int = 50, photo_size: int = 128,
               matched: bool = True, progress: bool = False, restart: bool = False,
               results_to: str | Path | None = None, models: Mapping[str, torch.nn.Module] | None = None,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the protocol on every group into `out/<group>`, then decide the claims per group.

    `groups`: names of `GROUPS` or Group objects by name; `models` overrides `load_classifier` by name (tests);
    `sources`: at most this many images per group before the confidence filter; `photo_size`: the ImageNet
    photos' size in pixels (128 by default, to fit a CPU; the paper uses 224); `matched`: also run claim 3 at
    matched distance; `results_to`: copy `claims.json` there (e.g. docs/results/claims.json for docs/studies.md).
    Refuses `config.amp` (the hull probes run in float32, so LST's bfloat16 confidences would not match them) and
    fewer than 2 rounds (a triangle needs two LST outputs per source), before anything runs.
    """
    config = config or LSTConfig.paper()
    groups = {g: GROUPS[g] for g in groups} if not isinstance(groups, Mapping) else dict(groups)
    if not groups:
        raise InputError(f"groups: give at least one of {', '.join(GROUPS)}")
    if config.amp:
        raise InputError("amp: refused for this study; LST under bfloat16 and the hull probes in float32 would judge "
                         "p >= p_src - delta by different numbers")
    if rounds < 2:
        raise InputError(f"rounds {rounds}: the claims need >= 2 rounds (a triangle needs two LST outputs per source)")
    if not 0 < config.threshold < 1:
        raise InputError(f"threshold must lie in (0, 1), got {config.threshold}")
    out = Path(out)
    protocol = st.ProtocolConfig(rounds=rounds, seed=seed, pairs_per_batch=batch_size)
    plans: dict[str, list[_Run]] = {}
    power: list[str] = []
    for name, group in groups.items():
        nets = {m: (models or {}).get(m) or load_classifier(m, device=device) for m in group.models}
        plans[name] = _plan(name, group, nets, sources, seed, photo_size, min_confidence, out)
        claims = ["outputs_look_like_target", "paths_star_like"] + (["at_hull_larger"] if group.at_pairs else [])
        power += pv.power_lines(name, {", ".join(m for m, _ in r.models): r.pool.numel() for r in plans[name]}, claims)
    for line in power:
        log(line)
    common = dict(config=config, protocol=protocol, min_confidence=min_confidence, progress=progress, restart=restart)
    records: dict[str, list[dict[str, Any]]] = {}
    tables: dict[str, Any] = {}
    for name, runs in plans.items():
        records[name] = []
        for r in runs:
            tables[r.name] = run_study(r.models, r.images, r.labels, r.out, image_names=r.names, pool=r.pool,
                                       settings={"group": r.name}, **common)
            records[name] += [dict(x, group=name) for x in RunStore.read_records(r.out)]
    matched_records = _matched_runs(plans, groups, tables, common, out) if matched else {}
    validity = pv.check_threshold([x for rs in (*records.values(), *matched_records.values()) for x in rs],
                                  config.threshold)
    at_pairs = {g: grp.at_pairs for g, grp in groups.items()}
    claims = pv.evaluate_claims(records, at_pairs, config.threshold, seed, matched_records)
    data = {"claims": claims, "rules": {k: {**r.to_dict(), "text": pv.rule_text(k)} for k, r in pv.RULES.items()},
            "constants": pv.CONSTANTS,
            "delta": config.threshold, "validity": validity, "power": power,
            "settings": {"config": config.to_dict(), "rounds": rounds, "sources": sources, "photo_size": photo_size,
                         "min_confidence": min_confidence, "seed": seed, "groups": list(groups), "matched": matched}}
    st.write_json(data, out / "claims.json")
    st.write_csv([{"claim": c["claim"], **r} for c in claims for r in c["rows"]], out / "claims.csv")  # numbers
    if results_to:
        Path(results_to).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "claims.json", results_to)
    pools = {name: runs[0].images for name, runs in plans.items()}
    figure = triangle_figure(out, groups, pools, models) if any(g.at_pairs for g in groups.values()) else None
    write_report(out, data, tables, figure)
    return {"claims": claims, "tables": tables, "figure": figure, "data": data}


def _matched_runs(plans, groups, tables, common, out: Path) -> dict[str, list[dict[str, Any]]]:
    """Per (normal, AT) pair, claim 3's records at matched distance (`experiments.claims.matched_distance`), on the
    group's pool and pairs, into `out/<group>/matched-<arch>/`."""
    from .matched_distance import matched_hull_records

    found: dict[str, list[dict[str, Any]]] = {}
    for name, group in groups.items():
        for arch, normal, at in group.at_pairs:
            run = next(r for r in plans[name] if {normal, at} <= {m for m, _ in r.models})
            nets = dict(run.models)
            labels = torch.tensor(tables[run.name]["labels"])
            targets = torch.tensor(tables[run.name]["targets"])
            recs = matched_hull_records([(normal, nets[normal]), (at, nets[at])], run.images, labels, run.pool,
                                        targets, out / name / f"matched-{st.slug(arch)}", config=common["config"],
                                        protocol=common["protocol"], restart=common["restart"],
                                        settings={"group": name, "architecture": arch}, progress=common["progress"])
            found.setdefault(name, []).extend(dict(x, group=name) for x in recs)
    return found


def triangle_figure(out: Path, groups: Mapping[str, Group], pools: Mapping[str, torch.Tensor],
                    models: Mapping[str, torch.nn.Module] | None) -> Path | None:
    """For the first source every (normal, AT) pair shares, its triangle (source, b_0, b_1) coloured by each
    model's confidence: one row per architecture, normal left, AT right."""
    import matplotlib.pyplot as plt

    from blindspots.geometry import hull_statistics, triangle_layout
    from blindspots.plots import plot_triangle

    rows = [(name, arch, normal, at) for name, g in groups.items() for arch, normal, at in g.at_pairs]
    fig, axes = plt.subplots(len(rows), 2, figsize=(9, 4 * len(rows)), squeeze=False, layout="constrained")
    for (name, arch, normal, at), ax_row in zip(rows, axes):
        for model_name, ax in zip((normal, at), ax_row):
            reader = RunStore.reader(out / name)
            first = next(r for r in reader.records("lst") if r["model"] == model_name and r["round"] == 0)
            outputs = reader.load(first["array"].removeprefix("stages/").removesuffix(".safetensors"))[0]["images"]
            k = sum(1 for r in reader.records("lst") if r["model"] == model_name and r["source"] == first["source"])
            model = (models or {}).get(model_name) or load_classifier(model_name)
            src_image = pools[name][first["source"]]
            outs = outputs[first["array_index"]:first["array_index"] + k][None]
            hull = hull_statistics(model, src_image[None], outs, [first["source_label"]])
            plot_triangle(hull.grid, hull.confidence[0, 0], triangle_layout(src_image, outs[0, 0], outs[0, 1]),
                          p_src=float(hull.p_src[0]), vertex_names=("source", "b0", "b1"),
                          title=f"{model_name} (p_src {float(hull.p_src[0]):.2f})", ax=ax)
    return st.figure_to_png(fig, out / "triangles.png")


def write_report(out: Path, data: Mapping[str, Any], tables, figure: Path | None) -> Path:
    """report.html: the findings and the claims table first, then each run's tables and the figure, settings last."""
    sections: list[dict[str, Any]] = [
        {"heading": "Claims of the paper, checked", "pre": "\n".join(pv.findings(data)),
         "table": pv.claims_table(data["claims"])},
        {"heading": "Claim 3's triangles: paper settings and matched distance",
         "table": pv.triangle_table(data["claims"])},
        {"heading": "Rules and constants (fixed before the numbers)",
         "pre": "\n".join([f"{k}: {r['text']}" for k, r in data["rules"].items()] +
                          [f"{k} = {v:g}" for k, v in data["constants"].items()] + list(data["power"]))},
    ]
    if figure is not None:
        sections.append({"figure": figure, "caption": "One source's triangle (source, b0, b1): the source-class "
                                                      "confidence of the normal (left) and the AT model (right)."})
    for name, t in tables.items():
        sections.append({"heading": f"{name}: Table 1", "table": st.display_rows(t["table1"], ["model"],
                                                                                  TABLE1_FIELDS, digits=3)})
        if t["table2"]:
            sections.append({"heading": f"{name}: Table 2", "table": st.display_rows(
                t["table2"], ["model"], table2_fields(t["table2"]), digits=3)})
    sections.append({"heading": "Settings", "pre": str(dict(data["settings"]))})
    return st.write_html_report(out / "report.html", "LST paper claims on real models", sections)


# ------------------------------------------------------------------------------------------------ command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--groups", default="mnist,imagenet", help="comma-separated: mnist, imagenet")
    p.add_argument("--sources", type=positive_int, default=60,
                   help="images per group before the pool filter (claim 2's Wilson bound needs >= 35 sources to "
                        "reach 0.9 at all)")
    p.add_argument("--rounds", type=positive_int, default=5, help="derangement rounds (LST outputs per source; >= 2)")
    p.add_argument("--min-confidence", type=float, default=0.6, help="pool: confidence above this (the paper's 0.6)")
    p.add_argument("--photo-size", type=positive_int, default=128,
                   help="ImageNet photos' size in pixels (the paper: 224, about 3x longer)")
    p.add_argument("--threshold", type=open_unit_float, default=None, help="delta, in (0, 1) (the paper's 0.2)")
    p.add_argument("--no-matched", action="store_true", help="skip claim 3 at matched distance (a second LST run)")
    p.add_argument("--results-to", default=None, metavar="FILE", help="also copy claims.json to FILE")
    add_common_options(p, "paper", model=None, iterations=None, batch_size=50, model_calls=True)


def run(args: argparse.Namespace) -> int:
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if not groups or unknown:
        raise InputError(f"--groups {args.groups!r}: choose one or more of {', '.join(GROUPS)}")
    if args.model is not None or args.weights is not None:
        raise InputError("--model/--weights: this study probes its fixed model groups (see --groups)")
    overrides = {k: v for k, v in (("iterations", args.iterations), ("threshold", args.threshold)) if v}
    result = run_claims(args.out, groups, sources=args.sources, rounds=args.rounds,
                        config=LSTConfig.paper(**overrides, **model_call_options(args)),
                        min_confidence=args.min_confidence, seed=args.seed, device=resolve_device(args.device),
                        batch_size=args.batch_size, photo_size=args.photo_size, matched=not args.no_matched,
                        progress=not args.quiet, restart=args.restart, results_to=args.results_to,
                        log=(lambda s: None) if args.quiet else print)
    if not args.quiet:
        print(st.markdown_table(pv.claims_table(result["claims"])))
        print("\n" + "\n".join(pv.findings(result["data"])))
        print(f"\nreport: {Path(args.out) / 'report.html'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from blindspots.cli import run_command

    return run_command("paper", sys.modules[__name__], list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
