"""The study as a function: `run_zoobot(config, out) -> ZoobotResult`. The proxy encoder, fine-tuning every
backbone at every seed, the accuracy gates, the three sets of pairs (simulated; real hosts with injected clumps;
real cutouts by predicted class, reported only), the paired LST measurement and the analysis handed to `report`.
Every finished piece (data, proxy epochs, checkpoints, LST records) is reused on a rerun into the same folder."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from blindspots import Classifier, LSTConfig
from blindspots import studies as st
from blindspots.cli import OUT_ROOT
from blindspots.models import load_weights
from blindspots.store import RunStore, fingerprint_file

from . import backbones as bb
from . import data as dt
from experiments.galaxy_proxy import proxy as px
from . import real as rl
from .config import ZoobotConfig

__all__ = ["ZoobotResult", "run_zoobot", "measure", "analyse", "domains", "gate_cells",
           "REFERENCE"]

REFERENCE = "imagenet"  # every other backbone is compared with this one


@dataclass
class ZoobotResult:
    """What a run found. `verdicts`: per backbone compared with ImageNet (`blindspots.verdicts.Verdict`: `outcome`,
    `reason` (the sentence, with every cell's interval), `parts` (each cell's outcome)); `comparisons`: the paired comparisons (per backbone, seed and pair category, with
    intervals, n and distinct units); `stalls`: stall counts with the exact McNemar test; `accuracy`: per
    backbone and seed, simulated test accuracy and accuracy on the injected real hosts; `real`: the real arm's
    design (hosts used, left out and why, pairs); `records`: one dict per LST pair; `training`: the fine-tuning
    log; `report`: report.html; `tables`: what tables.json holds."""

    config: ZoobotConfig
    out: Path
    verdicts: dict[str, Any]
    comparisons: list[Any]
    stalls: list[dict[str, Any]]
    accuracy: dict[str, dict[str, Any]]
    real: dict[str, Any]
    records: list[dict[str, Any]]
    proxy: dict[str, Any] | None
    training: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None
    seconds: float = 0.0
    tables: dict[str, Any] = field(default_factory=dict)
    trained_here: int | None = None  # models fine-tuned by this invocation (the rest reused from `out`)
    invocations: list[dict[str, Any]] = field(default_factory=list)  # every finished invocation into `out`

    def comparison_rows(self) -> list[dict[str, Any]]:
        return [c.row() for c in self.comparisons]


@dataclass
class Domain:
    """One set of pairs: `images` with true `labels` (None: each model's own prediction is the source class),
    `pool` (source indices), `targets` (rounds, len(pool)) positions into the pool, `units[i]` the independent unit
    of image i, and which models walk it (`seed`: only the models fine-tuned with that seed; `kinds`)."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None
    pool: torch.Tensor
    targets: torch.Tensor
    units: list[Any]
    seed: int | None = None
    kinds: tuple[str, ...] | None = None

    def walks(self, kind: str, seed: int) -> bool:
        return (self.seed is None or seed == self.seed) and (self.kinds is None or kind in self.kinds)


def run_zoobot(config: ZoobotConfig, out: str | Path = OUT_ROOT / "zoobot", *, device: Any = None,
               threads: int | None = None, progress: bool = True, restart: bool = False,
               proxy_dir: str | Path | None = None, report: bool = True) -> ZoobotResult | None:
    """Run (or resume) the study into `out` and return its result (None on ranks other than 0 under torchrun).

    `device`: 'cpu', 'cuda', ... (default: CUDA when present); `threads`: torch CPU threads (None: torch's own);
    `proxy_dir`: where the galaxy-proxy is pretrained and kept (default blindspots-out/zoobot-proxy/<arch>-<key>);
    `restart`: discard a different earlier run in `out`; `progress`: bars and printed tables (one line per
    pretraining epoch is printed regardless). Settings are checked when `config` is made."""

    device = st.study_device(device, threads)
    started, cpu = time.perf_counter(), time.process_time()
    kinds = list(config.backbones)
    info = st.init_distributed(device)
    out = Path(out)
    try:
        proxy_file, proxy_log = config.proxy_encoder, None
        if "galaxy-proxy" in kinds and proxy_file is None:
            if info.is_main:
                proxy_file, proxy_log = px.ensure_proxy(config, info.device, proxy_dir, restart=restart,
                                                        progress=progress)
            proxy_file, proxy_log = st.broadcast_object((proxy_file, proxy_log), info)
        hosts = _hosts(config)
        inputs = {"real_plain": hosts.plain, "real_injected": hosts.injected}
        key = config.settings()
        if proxy_file and not config.proxy_encoder:  # the proxy pretrained here: its weights decide the fine-tuning
            key["proxy_encoder"] = fingerprint_file(proxy_file)
        store = st.open_run_store(out, "zoobot", info, restart=restart, settings=key, inputs=inputs)
        with store:
            data = _task(config, out, info)
            before = set(json.loads((out / "training.json").read_text())) if (out / "training.json").is_file() \
                else set()
            models, training = _train_all(kinds, config, data, proxy_file, out, info, progress)
            measured, gates = _gate(models, training, config.min_accuracy)
            doms, real = domains(measured, data, config, hosts, training, gates)
            protocol = st.ProtocolConfig(rounds=config.rounds, seed=config.seed, pairs_per_batch=config.lst_batch)
            mine = measure(measured, doms, store, config.lst_config(), protocol, info, progress=progress)
            records = st.gather_records(mine, info)
            if records is None:
                return None
            compared = [k for k in kinds if any(k == m[0] for m in models)]
            analysis = analyse(records, compared, config.seeds, units={d.name: d.units for d in doms},
                               gates=gates)
            result = ZoobotResult(config, out, analysis["verdicts"], analysis["comparisons"], analysis["stalls"],
                                  _accuracy(training), real, records, proxy_log, training)
            result.seconds = time.perf_counter() - started
            result.trained_here = sum(f"{k}/s{s}" not in before for k, s, _ in models)
            if info.is_main:
                result.invocations = log_invocation(out, result.seconds, time.process_time() - cpu,
                                                    result.trained_here)
            if report and info.is_main:
                from .report import write_report

                result.report = write_report(result, analysis, cpu_seconds=time.process_time() - cpu,
                                             quiet=not progress)
            return result
    finally:
        st.finish_distributed(info)


def log_invocation(out: Path, seconds: float, cpu_seconds: float, fine_tuned: int) -> list[dict[str, Any]]:
    """Append this finished invocation (wall and CPU seconds, models fine-tuned) to `out/invocations.json` and return
    them all: a rerun that reuses the work reports its own time beside the time the work took."""
    path = out / "invocations.json"
    done = json.loads(path.read_text()) if path.is_file() else []
    done.append({"finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": round(seconds, 1),
                 "cpu_seconds": round(cpu_seconds, 1), "fine_tuned": int(fine_tuned)})
    st.write_json(done, path)
    return done


def _hosts(config: ZoobotConfig) -> rl.RealHosts:
    return rl.load_hosts(config.real_sources(), config.size, config.crop, config.real_limit or None, config.injections,
                         config.seed, fov=config.sim_fov, min_clump_flux=config.min_clump_flux,
                         preset=config.fits_preset)


def _task(config: ZoobotConfig, out: Path, info: st.DistInfo) -> dict[str, torch.Tensor]:
    def make() -> dict[str, torch.Tensor]:
        x, y = dt.simulated_set(config.train + config.test, config.size, config.seed, fov=config.sim_fov,
                                min_clump_flux=config.min_clump_flux)
        return {"train_images": x[:config.train], "train_labels": y[:config.train],
                "test_images": x[config.train:], "test_labels": y[config.train:]}

    return dt.cached(out / "data" / "task.safetensors", make, info.is_main, lambda: st.barrier(info))


def _backbone(kind: str, seed: int, config: ZoobotConfig, proxy_file: str | None) -> Classifier | None:
    torch.manual_seed(seed)  # the random-init backbone's weights come from the fine-tuning seed
    return bb.build_backbone(kind, config.arch, imagenet_weights=config.imagenet_weights,
                             zoobot_weights=config.zoobot_weights, proxy_weights=proxy_file)


def _train_all(kinds, config: ZoobotConfig, data, proxy_file, out: Path, info, progress: bool
               ) -> tuple[list[tuple[str, int, Classifier]], dict[str, Any]]:
    """Fine-tune every backbone at every seed (rank 0; reused from checkpoints/ when present)."""
    from safetensors.torch import load_file, save_file

    log_path = out / "training.json"
    training = json.loads(log_path.read_text()) if log_path.exists() else {}
    models = []
    for kind in kinds:
        for seed in config.seeds:
            clf = _backbone(kind, seed, config, proxy_file)
            if clf is None:
                break
            name, path = f"{kind}/s{seed}", out / "checkpoints" / f"{kind}-s{seed}.safetensors"
            if info.is_main and not (path.exists() and name in training):
                t0 = time.perf_counter()
                epochs = config.scratch_epochs if kind == "random" else config.epochs
                losses = bb.fine_tune(clf, data["train_images"], data["train_labels"], epochs=epochs,
                                      batch=config.batch_size, lr=config.lr, seed=seed, device=info.device,
                                      progress=progress)
                cls, _ = clf.predict(data["test_images"].to(info.device))
                acc = float((cls.cpu() == data["test_labels"]).float().mean())
                training[name] = {"backbone": kind, "seed": seed, "epochs": epochs, "test_accuracy": acc,
                                  "test_images": int(data["test_labels"].numel()),
                                  "seconds": round(time.perf_counter() - t0, 1), "final_loss": losses[-1]}
                path.parent.mkdir(parents=True, exist_ok=True)
                save_file({k: v.contiguous() for k, v in clf.model.state_dict().items()}, str(path))
                st.write_json(training, log_path)
                print(f"{name}: test accuracy {acc:.3f} (fine-tuned in {training[name]['seconds']} s)", flush=True)
            st.barrier(info)
            load_weights(clf.model, load_file(str(path)))
            models.append((kind, seed, clf.to(info.device).eval()))
    training = st.broadcast_object(training if info.is_main else None, info)
    return models, training


def _gate(models, training, min_accuracy: float) -> tuple[list, dict[str, str]]:
    """The (backbone, seed) models at or above `min_accuracy` on the simulated test set, and why the others are
    left out (key 'sim:<backbone>:<seed>'): a seed below the floor drops that model only, not the backbone."""
    gates = {}
    for k, s, _ in models:
        acc = training[f"{k}/s{s}"]["test_accuracy"]
        if not acc >= min_accuracy:
            gates[f"sim:{k}:{s}"] = f"{k} seed {s}: simulated test accuracy {acc:.3f} < {min_accuracy}"
    for why in gates.values():
        print(f"skipped LST: {why}", flush=True)
    return [(k, s, m) for k, s, m in models if f"sim:{k}:{s}" not in gates], gates


def domains(models, data, config: ZoobotConfig, hosts: rl.RealHosts | None, training: dict[str, Any],
            gates: dict[str, str]) -> tuple[list[Domain], dict[str, Any]]:
    """The pairs: simulated held-out sources every model classifies correctly (balanced, other-class targets);
    real hosts with injected clumps (per fine-tuning seed: the images every backbone of that seed classifies
    correctly; only backbones whose real-host accuracy passes the floor at that seed); real cutouts by predicted
    class.
    Returns them and the real arm's design (hosts used and left out, accuracies). Adds each model's real-host
    accuracy to `training` and a gate reason to `gates` where it is below the floor."""
    out: list[Domain] = []
    if not models:
        print("no backbone to measure", flush=True)
        return out, {}
    xte, yte = data["test_images"], data["test_labels"]
    pool, _ = st.select_pool([m for _, _, m in models], xte, yte)
    c0, c1 = pool[yte[pool] == 0], pool[yte[pool] == 1]
    m = min(len(c0), len(c1), config.sim_pairs // 2)
    if m >= 1:
        sim_pool = torch.cat([c0[:m], c1[:m]]).sort().values
        out.append(Domain("sim", xte, yte, sim_pool, dt.sim_targets(yte[sim_pool], config.rounds, config.seed),
                          list(range(xte.shape[0]))))
    else:
        print("skipped: simulated pairs (no correctly classified source of each class)", flush=True)
    if hosts is None:
        return out, {"note": "no real hosts"}
    design = _real_design(models, hosts, config, training, gates)
    arm = design["arm"]
    for seed, (pool, targets, _) in design["per_seed"].items():
        if pool.numel():
            out.append(Domain("injected", arm.images, arm.labels, pool, targets, arm.units, seed=seed,
                              kinds=design["kinds"][seed]))
    votes = torch.stack([mdl.predict(hosts.plain.to(next(mdl.parameters()).device))[0].cpu()
                         for _, _, mdl in models])
    consensus = (votes.float().mean(0) > 0.5).long()
    out.append(Domain("real", hosts.plain, None, torch.arange(hosts.plain.shape[0]),
                      dt.real_targets(consensus, config.rounds, config.seed), list(hosts.names)))
    return out, _describe_real(hosts, design, config)


def _describe_real(hosts: rl.RealHosts, design: dict[str, Any], config: ZoobotConfig) -> dict[str, Any]:
    """The real arm's design for the report: hosts, those left out and why, pairs and hosts per seed."""
    arm = design["arm"]
    per_seed = {}
    for s, (pool, targets, unpaired) in design["per_seed"].items():
        used = {arm.units[int(i)] for i in pool}
        per_seed[str(s)] = {"sources": int(pool.numel()), "pairs": int(pool.numel()) * config.rounds,
                            "hosts": len(used), "plain_sources": int((arm.labels[pool] == 0).sum()),
                            "injected_sources": int((arm.labels[pool] == 1).sum()), "unpaired": unpaired,
                            "backbones": list(design["kinds"][s])}
    return {"hosts": list(hosts.names), "excluded": {hosts.names[h]: why for h, why in arm.excluded.items()},
            "surveys": dict(zip(hosts.names, rl.host_surveys(hosts))),
            "clumps": hosts.clumps.tolist(), "injections": config.injections, "backbones": design["backbones"],
            "per_seed": per_seed, "rule": rl.SCREEN_RULE, "folder": ", ".join(config.real_sources()),
            "host_info": hosts.info, "loader_skipped": hosts.skipped, "units": hosts.units,
            "image_hosts": arm.units}


def _real_design(models, hosts: rl.RealHosts, config: ZoobotConfig, training: dict[str, Any],
                 gates: dict[str, str]) -> dict[str, Any]:
    """Screen the hosts with every measured classifier, measure each one's real-host accuracy (a (backbone, seed)
    below the floor is gated at that seed only: 'real injected:<backbone>:<seed>'), and pick each fine-tuning
    seed's pairs with the backbones that pass at that seed (none when ImageNet does not: nothing to compare with)."""
    _, excluded = rl.screen_hosts([m for _, _, m in models], hosts)
    for k, s, mdl in models:
        acc = rl.real_accuracy(mdl, hosts, list(excluded))
        training[f"{k}/s{s}"]["real_host"] = acc
        if not acc["accuracy"] >= config.min_accuracy:
            gates[f"real injected:{k}:{s}"] = (f"{k} seed {s}: accuracy on the injected real hosts "
                                               f"{acc['accuracy']:.3f} < {config.min_accuracy}")
    arm = rl.real_arm(hosts, excluded)
    per_seed, kinds = {}, {}
    for s in config.seeds:
        chosen = [(k, m) for k, ss, m in models if ss == s and f"real injected:{k}:{s}" not in gates]
        if any(k == REFERENCE for k, _ in chosen):
            per_seed[s] = arm.pairs([m for _, m in chosen], config.rounds, config.seed)
            kinds[s] = tuple(k for k, _ in chosen)
    backbones = [k for k in dict.fromkeys(k for k, _, _ in models) if any(k in v for v in kinds.values())]
    return {"arm": arm, "per_seed": per_seed, "backbones": backbones, "kinds": kinds}


def measure(models: Sequence[tuple[str, int, Classifier]], doms: Sequence[Domain], store: RunStore, cfg: LSTConfig,
            protocol: st.ProtocolConfig, info: st.DistInfo, progress: bool = False) -> list[dict[str, Any]]:
    """LST on the same pairs from the same start noise (seeds depend on the protocol seed, round and source only)
    for every (backbone, fine-tuning seed) that walks each domain; without true labels, each model's own
    prediction is the source class."""
    mine: list[dict[str, Any]] = []
    for dom in doms:
        for kind, seed, clf in models:
            if not dom.walks(kind, seed):
                continue
            t0 = time.perf_counter()
            lab = dom.labels if dom.labels is not None else clf.predict(dom.images.to(info.device))[0].cpu()
            mine += st.run_pair_protocol(clf, f"{kind}/s{seed}/{dom.name}", dom.images, lab, dom.pool, dom.targets,
                                         store, config=cfg, protocol=protocol, info=info,
                                         pair_metrics={"kept": _kept_class},
                                         extra={"domain": dom.name, "backbone": kind, "ft_seed": seed},
                                         progress=progress)
            if info.is_main and progress:
                print(f"{kind}/s{seed}/{dom.name}: {dom.pool.numel()} sources x {protocol.rounds} rounds in "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)
    return mine


def _kept_class(model, sources, outputs, targets, labels):
    """Per pair: does the model still predict the source class at the LST output?"""
    cls, _ = model.predict(outputs.to(next(model.parameters()).device))
    return {"kept_class": (cls.cpu() == labels.cpu()).float()}


def analyse(records: Sequence[dict[str, Any]], kinds: Sequence[str], seeds: Sequence[int],
            reference: str = REFERENCE, units: dict[str, list[Any]] | None = None,
            gates: dict[str, str] | None = None) -> dict[str, Any]:
    """Paired comparisons of every backbone against `reference` per seed and pair category (every pair kept,
    intervals over `units[domain]`), the stall tests and the verdicts (`paired.RULE`)."""
    from .paired import arms, compare, index_records, interval_level, stall_tests, verdict_of

    index = index_records(records)
    gates = dict(gates or {})
    others = [k for k in kinds if k != reference]
    level = interval_level(len(others))
    comps, verdicts, arm_rows = [], {}, {}
    doms = sorted({d for _, _, d in index})
    for kind in others:
        mine = [c for s in seeds for d in doms
                for c in compare(index, kind, reference, s, d, (units or {}).get(d), level=level)]
        comps += mine
        cells = gate_cells(gates, kind, reference, seeds)
        if reference not in kinds:
            cells["all"] = f"no {reference} backbone was measured"
        found = arms(mine, kind, reference, seeds, cells)
        verdicts[kind] = verdict_of(found)
        arm_rows[kind] = [a.row() for a in found]
    order = {"sim": 0, "real injected": 1, "real cross-class": 2, "real within-class": 3, "real mixed": 4}
    comps.sort(key=lambda c: (kinds.index(c.a), order.get(c.category, 9), str(c.seed)))
    return {"comparisons": comps, "verdicts": verdicts, "arms": arm_rows, "stalls": stall_tests(comps),
            "index": index, "level": level, "family": others, "gates": gates}


def gate_cells(gates: dict[str, str], kind: str, reference: str, seeds: Sequence[int]) -> dict[str, str]:
    """The study's gates ('sim:<backbone>:<seed>', 'real injected:<backbone>:<seed>', 'real injected') as the
    cells `paired.arms` drops for `kind` vs `reference`: a seed below a floor for either backbone leaves that seed
    out of the arm (the simulated floor: out of both arms), never the backbone at every seed."""
    out: dict[str, str] = {}
    if "real injected" in gates:
        out["real injected"] = gates["real injected"]
    for s in seeds:
        for w in (kind, reference):
            if f"sim:{w}:{s}" in gates:
                out.setdefault(f"all seed {s}", gates[f"sim:{w}:{s}"])
            if f"real injected:{w}:{s}" in gates:
                out.setdefault(f"real injected seed {s}", gates[f"real injected:{w}:{s}"])
    return out


def _accuracy(training: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: {"simulated": t["test_accuracy"], "real_host": (t.get("real_host") or {}).get("accuracy"),
                   "real_plain": (t.get("real_host") or {}).get("plain"),
                   "real_injected": (t.get("real_host") or {}).get("injected"),
                   "real_by_survey": {s: v["accuracy"] for s, v in
                                      ((t.get("real_host") or {}).get("by_survey") or {}).items()}}
            for name, t in training.items()}
