"""The study as a function: `run_claims(config, out) -> ClaimsResult`, the LST paper's findings checked on real
trained models, normal vs adversarially trained (AT), CNN and ViT.

Per group (`experiments.claims.groups`), the paper's protocol (`experiments.tables.run_study`): sources with
confidence > `min_confidence` (0.6, strict, as the paper's pool), `rounds` derangements (each source to a target of
another class, no pair twice), LST with the paper's settings unless told otherwise; Table 1 and Table 2 in
`OUT/<group>/`. MNIST: one pool of held-out digits every model of the group classifies correctly (the paired
comparisons need the same sources). ImageNet: there is no adversarially trained ImageNet model offline, so each
model gets its own pool, one real photo per class it predicts with p > 0.6 (`OUT/imagenet/<model>/`); with at most
24 photos its rules are underpowered, which the run says before it starts. For each (normal, AT) pair, claim 3 is
also decided with both models' outputs taken at the same RMS-l2 to their targets
(`experiments.claims.matched_distance`, `OUT/<group>/matched-<arch>/`), the triangles' sides shown beside it.

The claims and their rules are in `experiments.claims.rules` (fixed before the numbers; decided with
`blindspots.verdicts`): a verdict per model, per group, and an overall line naming the groups that decided it.
Writes `claims.json`, `claims.csv`, `triangles.png` and `report.html` (`experiments.claims.report`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from blindspots import load_classifier
from blindspots import studies as st
from blindspots.cli import OUT_ROOT, resolve_device
from blindspots.errors import InputError
from blindspots.store import RunStore

from . import rules as pv
from ..tables import run_study
from .config import ClaimsConfig
from .groups import Group
from .report import triangle_figure, write_report

__all__ = ["ClaimsResult", "run_claims"]


@dataclass
class ClaimsResult:
    """What a run found: `claims` (per claim: rows per model, a verdict per group and overall, see
    `rules.evaluate_claims`), `data` (claims.json's content: claims, rules, constants, delta, validity, power,
    settings), `tables` (Table 1 and 2 per run of the protocol), `figure` (triangles.png, None without an AT pair),
    the files written: `results` (claims.json), `csv` (claims.csv), `report` (report.html)."""

    config: ClaimsConfig
    out: Path
    claims: list[dict[str, Any]]
    data: dict[str, Any]
    tables: dict[str, Any]
    figure: Path | None
    results: Path
    csv: Path
    report: Path

    @property
    def validity(self) -> dict[str, Any]:
        return self.data["validity"]

    @property
    def power(self) -> list[str]:
        return self.data["power"]


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


def run_claims(config: ClaimsConfig, out: str | Path = OUT_ROOT / "paper", *,
               device: str | torch.device | None = None, progress: bool = True, restart: bool = False,
               results_to: str | Path | None = None, figure_to: str | Path | None = None,
               models: Mapping[str, torch.nn.Module] | None = None,
               log: Callable[[str], None] = print) -> ClaimsResult:
    """Run (or resume) the protocol on every group of `config` into `out/<group>`, then decide the claims per group.

    `device`: where the models are loaded ('cpu', 'cuda', a torch.device; None: `load_classifier`'s default);
    `models` overrides `load_classifier` by name (tests, or models of one's own `Group`); `results_to`: copy
    `claims.json` there (e.g. docs/results/claims.json for docs/studies.md); `figure_to`: copy the triangle figure
    there (docs/paper_claims_triangles.png is made so: no figure of the docs is copied by hand); `log` receives the
    power lines said before any LST runs. The config was checked when it was made (amp, rounds, threshold, groups), so nothing here
    runs with an impossible setting.
    """
    if not isinstance(config, ClaimsConfig):
        raise InputError(f"config must be a ClaimsConfig, got {type(config).__name__}")
    if isinstance(device, str):
        device = resolve_device(device)
    groups = config.group_map
    lst = config.lst
    out = Path(out)
    protocol = st.ProtocolConfig(rounds=config.rounds, seed=config.seed, pairs_per_batch=config.batch_size)
    plans: dict[str, list[_Run]] = {}
    power: list[str] = []
    for name, group in groups.items():
        nets = {m: (models or {}).get(m) or load_classifier(m, device=device) for m in group.models}
        plans[name] = _plan(name, group, nets, config.sources, config.seed, config.photo_size, config.min_confidence,
                            out)
        claims = ["outputs_look_like_target", "paths_star_like"] + (["at_hull_larger"] if group.at_pairs else [])
        power += pv.power_lines(name, {", ".join(m for m, _ in r.models): r.pool.numel() for r in plans[name]}, claims)
    for line in power:
        log(line)
    common = dict(config=lst, protocol=protocol, min_confidence=config.min_confidence, progress=progress,
                  restart=restart)
    records: dict[str, list[dict[str, Any]]] = {}
    tables: dict[str, Any] = {}
    for name, runs in plans.items():
        records[name] = []
        for r in runs:
            tables[r.name] = run_study(r.models, r.images, r.labels, r.out, image_names=r.names, pool=r.pool,
                                       settings={"group": r.name}, **common)
            records[name] += [dict(x, group=name) for x in RunStore.read_records(r.out)]
    matched_records = _matched_runs(plans, groups, tables, common, out) if config.matched else {}
    validity = pv.check_threshold([x for rs in (*records.values(), *matched_records.values()) for x in rs],
                                  lst.threshold)
    at_pairs = {g: grp.at_pairs for g, grp in groups.items()}
    claims = pv.evaluate_claims(records, at_pairs, lst.threshold, config.seed, matched_records)
    data = {"claims": claims, "rules": {k: {**r.to_dict(), "text": pv.rule_text(k)} for k, r in pv.RULES.items()},
            "constants": pv.CONSTANTS, "delta": lst.threshold, "validity": validity, "power": power,
            "settings": config.settings()}
    results = st.write_json(data, out / "claims.json")
    csv = st.write_csv([{"claim": c["claim"], **r} for c in claims for r in c["rows"]], out / "claims.csv")  # numbers
    if results_to:
        Path(results_to).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "claims.json", results_to)
    pools = {name: runs[0].images for name, runs in plans.items()}
    figure = triangle_figure(out, groups, pools, models) if any(g.at_pairs for g in groups.values()) else None
    if figure_to and figure is not None:
        Path(figure_to).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(figure, figure_to)
    report = write_report(out, data, tables, figure)
    return ClaimsResult(config=config, out=out, claims=claims, data=data, tables=tables, figure=figure,
                        results=results, csv=csv, report=report)


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
