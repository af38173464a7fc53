"""`blindspots attack`: per image, the smallest flipping budget (over-sensitivity) beside Level Set Traversal towards
other-class images (under-sensitivity); writes a CSV/JSON table and the scatter figure. `--attack NAME` runs any
registered attack (`attacks.registry`): a minimal-budget one searches the budget, a fixed-budget one (`--eps`) tells
per image whether eps flips the model.

    blindspots attack                                  # the demo photos on the offline ImageNet model
    blindspots attack --images DIR --norm l2 --rounds 2 --out results/attack
    blindspots attack --attack apgd --eps 0.004 --rounds 0
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from blindspots.cli import (add_common_options, add_image_options, load_images, model_call_options, non_negative_int,
                            positive_int, resolve_device)
from blindspots.store import RunStore
from blindspots.errors import InputError

HELP = "over- vs under-sensitivity: minimal flipping budget (or any registered attack) beside LST, per image"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from attacks import registry  # the package imports every attack module, so the registry is full

    ATTACKS = registry.ATTACKS

    add_image_options(p)
    listed = "; ".join(f"{e.name} ({e.budget} budget, {'/'.join(e.norms)}): {e.description}"
                       for e in ATTACKS.values())
    p.add_argument("--attack", choices=list(ATTACKS), default="minimal-epsilon", metavar="NAME",
                   help=f"the attack (default: %(default)s): {listed}")
    p.add_argument("--eps", type=float, default=None,
                   help="budget of a fixed-budget attack ([0, 1] pixel units; required by those, refused by others)")
    p.add_argument("--norm", choices=("linf", "l2"), default="linf", help="norm of the flipping budget")
    p.add_argument("--max-eps", type=float, default=None,
                   help="minimal-epsilon: largest budget searched (default 0.1 for linf, 10 for l2; [0, 1] pixels)")
    p.add_argument("--rtol", type=float, default=None,
                   help="minimal-epsilon: relative precision of the budget search (log-scale bisection; default "
                        "0.05)")
    p.add_argument("--search-steps", type=positive_int, default=None, help="minimal-epsilon: cap on bisection rounds")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="iterations of the attack (PGD steps per budget for minimal-epsilon: 20; Square: queries; "
                        "default: the attack's own)")
    p.add_argument("--rounds", type=non_negative_int, default=1, help="LST targets per image (0: skip LST)")
    p.add_argument("--redraw-start", action="store_true",
                   help="redraw LST's noisy start where it already breaks the threshold (default: keep and flag it)")
    add_common_options(p, "attack", iterations=None, model_calls=True)


def run(args: argparse.Namespace) -> int:
    from blindspots import LSTConfig, load_classifier

    from .profile import sensitivity_profile

    import torch

    from attacks.registry import attack_entry

    if args.rtol is not None and not 0 < args.rtol < 1:
        raise InputError(f"--rtol must lie in (0, 1), got {args.rtol}")
    for option, value in (("--max-eps", args.max_eps), ("--eps", args.eps)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(f"{option} must be a finite number > 0, got {value}")
    attack_entry(args.attack).make(torch.nn.Identity(), norm=args.norm, eps=args.eps, steps=args.steps,
                                   max_eps=args.max_eps, rtol=args.rtol, search_steps=args.search_steps)  # checks
    device = resolve_device(args.device)
    model = load_classifier(args.model, weights=args.weights, device=device)
    images, names = load_images(args, model, device)
    calls = model_call_options(args)
    config = LSTConfig.adaptive(batch_size=args.batch_size, **calls, start="redraw" if args.redraw_start else "keep",
                                **({"iterations": args.iterations} if args.iterations else {}))
    out = Path(args.out)
    settings = {k: v for k, v in vars(args).items() if k not in ("quiet", "restart", "out", "device")}
    with RunStore(out, "attack", model=model, settings=settings, inputs={"images": images}, restart=args.restart):
        profile = sensitivity_profile(model, images, None, names=names, attack=args.attack, eps=args.eps,
                                      norm=args.norm, max_eps=args.max_eps,
                                      search_steps=args.search_steps, rtol=args.rtol, steps=args.steps,
                                      rounds=args.rounds,
                                      config=config, seed=args.seed, device=device, progress=not args.quiet,
                                      attack_options={"amp": calls["amp"], "compile": calls["compile"]},
                                      checkpoint=out / "checkpoint", restart=args.restart)
        csv_path = profile.to_csv(out / "sensitivity.csv")
        meta = {"model": args.model, "attack_name": args.attack, "images": str(args.images) if args.images else
                ("MNIST digits" if names[0].startswith("digit") else "demo photos"),
                "size": int(images.shape[-1]), "rounds": args.rounds, "seed": args.seed}
        json_path = profile.to_json(out / "sensitivity.json", **meta)
        png_path = out / "sensitivity.png"
        profile.plot(png_path, title=f"{getattr(model, 'name', args.model)}, {args.attack}: over- vs "
                                     "under-sensitivity")
    if args.quiet:
        return 0
    unit = "l-inf" if args.norm == "linf" else "l2"
    print(f"{'image':<20} {'class':<28} {'min eps (' + unit + ')':>15} {'LST rms-l2 left':>16} {'conf kept':>10}")
    for r in profile.rows:
        print(f"{str(r['name'])[:20]:<20} {str(r['class_name'])[:28]:<28} {r['min_eps_text']:>15} {r['lst_rms_l2']:>16.4f} "
              f"{r['lst_confidence']:>10.3f}")
    print(f"wrote {csv_path}, {json_path}, {png_path}")
    return 0
