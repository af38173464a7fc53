"""`blindspots robust`: robust accuracy under the AutoAttack ensemble (APGD-CE, APGD-T, FAB-T, Square; per-sample
worst case) with gradient-masking checks beside it, on any --model; `--zoo` measures the MNIST zoo's table.

    blindspots robust --model mnist-cnn-at                 # the zoo's 1,000 held-out digits, l-inf eps 0.3
    blindspots robust --model mnist-vit-at --norm l2       # l2 eps 2.0
    blindspots robust --model imagenet-lite0 --images DIR --eps 0.0157   # labels: the model's predictions
    blindspots robust --zoo --threads 2                    # every MNIST zoo model, both budgets -> mnist_robustness.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from blindspots.cli import UsageError, add_common_options, positive_int, resolve_device

HELP = "robust accuracy under the AutoAttack ensemble, with gradient-masking checks (--zoo: the MNIST zoo's table)"

DEFAULT_EPS = {"mnist": {"linf": 0.3, "l2": 2.0}, "other": {"linf": 4 / 255, "l2": 0.5}}
DEFAULT_MODEL = "mnist-cnn-at"
MNIST_SHAPE = (1, 28, 28)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--norm", choices=("linf", "l2"), default=None, help="threat model (default: linf)")
    p.add_argument("--eps", type=float, default=None,
                   help="budget in [0, 1] pixel units (default: 0.3 l-inf / 2.0 l2 for MNIST models, 4/255 / 0.5 else)")
    p.add_argument("--images", type=Path, default=None,
                   help="folder of images, labelled by the model's predictions (default: the zoo's held-out digits "
                        "for MNIST models, else the demo photos)")
    p.add_argument("--size", type=positive_int, default=224, help="--images are resized and centre-cropped to this")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="the first N samples only (the held-out digits are in seeded random order)")
    p.add_argument("--attacks", default="standard",
                   help="'standard' or a comma list of apgd-ce, apgd-t, fab-t, square (run in that order)")
    b = p.add_argument_group("budget (default: APGD-CE 100 steps, 3 target classes, Square 1,000 queries)")
    b.add_argument("--full", action="store_true",
                   help="AutoAttack's standard budget: 9 target classes, 5,000 Square queries (about 4x slower)")
    b.add_argument("--apgd-steps", type=positive_int, default=None, help="APGD-CE and APGD-T steps")
    b.add_argument("--target-classes", type=positive_int, default=None, help="APGD-T and FAB-T target classes")
    b.add_argument("--fab-steps", type=positive_int, default=None, help="FAB-T steps")
    b.add_argument("--square-queries", type=positive_int, default=None, help="Square queries per sample")
    b.add_argument("--restarts", type=positive_int, default=None, help="restarts of every attack")
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks")
    p.add_argument("--check-samples", type=positive_int, default=None,
                   help="images the checks rerun attacks on (default: 200)")
    p.add_argument("--twin", default=None, metavar="SPEC",
                   help="normal twin for the transfer check (default: mnist-X for mnist-X-at)")
    p.add_argument("--zoo", action="store_true",
                   help="every MNIST zoo model at l-inf 0.3 and l2 2.0, written to --results-to (--model, --norm, "
                        "--eps: that model, that threat model only; needs --results-to)")
    p.add_argument("--results-to", type=Path, default=None,
                   help="--zoo: the results file (default: blindspots/zoo/weights/mnist_robustness.json)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    add_common_options(p, "robust", model=None, batch_size=250, model_calls=True)
    for action in p._actions:  # None tells --zoo whether --model was given; the default is DEFAULT_MODEL
        if action.dest == "model":
            action.help = action.help.replace("%(default)s", DEFAULT_MODEL)


def _command(args: argparse.Namespace) -> str:
    """The command line that ran, as the results file records it: `blindspots robust --zoo` and every option whose
    value differs from its default (not where it writes: --out, --results-to, --restart)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    words = ["blindspots robust --zoo"]
    for action in parser._actions:
        if action.dest in ("zoo", "out", "results_to", "restart", "help") or not action.option_strings:
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = action.option_strings[-1]
        words.append(flag if isinstance(action, argparse._StoreTrueAction) else f"{flag} {value}")
    return " ".join(words)


def _check_results_to(path: Path) -> Path:
    """The results file can be written: not a folder, in a folder that exists (checked before any work)."""
    if path.is_dir():
        raise UsageError(f"--results-to {path} is a folder; give the path of the results file (.json)")
    if not path.parent.is_dir():
        raise UsageError(f"--results-to {path}: its folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"--results-to {path} cannot be written (permission denied)")
    return path


def _budget(args: argparse.Namespace):
    import dataclasses

    from attacks import EnsembleBudget

    budget = EnsembleBudget.autoattack() if args.full else EnsembleBudget()
    changes = {k: v for k, v in (("apgd_steps", args.apgd_steps), ("target_classes", args.target_classes),
                                 ("fab_steps", args.fab_steps), ("square_queries", args.square_queries),
                                 ("restarts", args.restarts)) if v is not None}
    return dataclasses.replace(budget, **changes)


def _attack_names(text: str) -> list[str] | None:
    from attacks.ensemble import ATTACKS

    if text == "standard":
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in ATTACKS]
    if bad or not names:
        raise UsageError(f"--attacks: unknown {', '.join(bad) or 'empty list'}; use 'standard' or a comma list of "
                         f"{', '.join(ATTACKS)}")
    return sorted(names, key=ATTACKS.index)


def _data(args: argparse.Namespace, is_mnist: bool):
    """(images, labels or None, description)."""
    from blindspots.data import demo_photos, load_image_folder
    from blindspots.zoo import mnist_split

    if args.images is not None:
        if is_mnist:
            raise UsageError("--images: the MNIST zoo models take 28 px one-channel digits; they are evaluated on "
                             "the zoo's held-out digits (leave out --images)")
        images, _ = load_image_folder(args.images, size=args.size, limit=args.limit)
        return images, None, f"{len(images)} images of {args.images} (labels: the model's predictions)"
    if is_mnist:
        x, y = mnist_split("test")
        if args.limit is not None:
            x, y = x[:args.limit], y[:args.limit]
        return x, y, f"{len(y):,} of the zoo's held-out digits (true labels)"
    images, _ = demo_photos(size=args.size)
    images = images[:args.limit] if args.limit is not None else images
    return images, None, f"{len(images)} demo photos (labels: the model's predictions)"


def run(args: argparse.Namespace) -> int:
    import torch

    from attacks.budget import check_budget_in_norm, check_target_classes
    from blindspots import load_classifier
    from blindspots.store import RunStore
    from blindspots.zoo import MNIST_MODELS

    from .study import ZOO_RESULTS, ZOO_THREATS, evaluate_model, format_record, twin_of, zoo_robustness

    if args.eps is not None and not args.eps > 0:
        raise UsageError(f"--eps must be > 0, got {args.eps}")
    norm = args.norm or "linf"
    try:
        check_budget_in_norm(args.eps, norm, MNIST_SHAPE if args.zoo else None)
    except ValueError as exc:
        raise UsageError(f"--eps: {exc}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    budget = _budget(args)
    names = _attack_names(args.attacks)
    options = dict(seed=args.seed, batch_size=args.batch_size, device=device, progress=not args.quiet,
                   amp=args.amp, compile=args.compile, checks=not args.no_checks)
    if args.check_samples:
        options["check_samples"] = args.check_samples
    settings = {k: v for k, v in vars(args).items() if k not in ("quiet", "restart", "out", "device", "threads",
                                                                  "results_to")}
    out = Path(args.out)
    if args.zoo:
        ignored = [flag for flag, value in (("--attacks", names), ("--images", args.images),
                                            ("--weights", args.weights), ("--twin", args.twin)) if value is not None]
        if ignored:
            raise UsageError(f"--zoo measures the standard ensemble on the held-out digits with the shipped weights "
                             f"(and twins); leave out {', '.join(ignored)}")
        if args.model is not None and args.model not in MNIST_MODELS:
            raise UsageError(f"--zoo --model {args.model}: not an MNIST zoo model ({', '.join(MNIST_MODELS)})")
        zoo_models = (args.model,) if args.model is not None else MNIST_MODELS
        threats = ZOO_THREATS if args.norm is None and args.eps is None else \
            ((norm, args.eps if args.eps is not None else DEFAULT_EPS["mnist"][norm]),)
        if (zoo_models != MNIST_MODELS or threats != ZOO_THREATS) and args.results_to is None:
            raise UsageError("--zoo with --model, --norm or --eps measures part of the zoo's table: give --results-to "
                             "FILE (the shipped table is written only by the full run)")
        results_to = _check_results_to(args.results_to or ZOO_RESULTS)
        from blindspots.zoo import load_zoo_model

        models = {name: load_zoo_model(name) for name in zoo_models}
        if args.target_classes is not None:
            for zoo_model in models.values():
                check_target_classes(args.target_classes, zoo_model.num_classes, "--target-classes")
        with RunStore(out, "robust-zoo", model=models, settings=settings, restart=args.restart) as store:
            done = {r["key"]: r["record"] for r in store.records()}

            def save(name: str, norm: str, rec: dict) -> None:
                store.append([{"key": f"{name}:{norm}", "record": rec}])
                if not args.quiet:
                    print(format_record(f"{name}, {norm} eps {rec['eps']:g}", rec), flush=True)

            zoo_robustness(results_to, budget=budget, models=zoo_models, threats=threats, limit=args.limit, done=done,
                           on_record=save, command=_command(args), store=store, **options)
        if not args.quiet:
            print(f"wrote {results_to}")
        return 0
    args.model = args.model or DEFAULT_MODEL
    is_mnist = args.model in MNIST_MODELS
    eps = args.eps if args.eps is not None else DEFAULT_EPS["mnist" if is_mnist else "other"][norm]
    model = load_classifier(args.model, weights=args.weights, device=device)
    if args.target_classes is not None and model.num_classes is not None:
        check_target_classes(args.target_classes, model.num_classes, "--target-classes")
    images, labels, what = _data(args, is_mnist)
    twin_spec = args.twin or (twin_of(args.model) if args.weights is None else None)
    twin = load_classifier(twin_spec, device=device) if twin_spec and options["checks"] else None
    inputs = {"images": images, **({"labels": labels} if labels is not None else {})}
    with RunStore(out, "robust", model=model, settings={**settings, "eps": eps}, inputs=inputs,
                  restart=args.restart) as store:
        key = f"{args.model}:{norm}"
        rec = (store.get(key) or {}).get("record")
        if rec is None:
            rec, result = evaluate_model(model, images, labels, eps, norm, budget=budget, attack_names=names,
                                         twin=twin, twin_name=twin_spec or "", store=store,
                                         stage=re.sub(r"[^A-Za-z0-9._-]", "_", args.model) + f".{norm}", **options)
            store.save("worst_case", {"images": result.images, "fooled_by": result.fooled_by,
                                      "clean_correct": result.clean_correct, "labels": result.labels})
            store.append([{"key": key, "record": rec}])
    (out / "robustness.json").write_text(json.dumps({"model": args.model, "data": what, "budget_text":
                                                      budget.describe(), **rec}, indent=1) + "\n")
    if not args.quiet:
        print(format_record(f"{args.model}, {norm} eps {eps:g}, {what}\nbudget: {budget.describe()}", rec))
        print(f"wrote {out / 'robustness.json'} (per-sample worst cases: {out / 'stages' / 'worst_case.safetensors'})")
    return 0
