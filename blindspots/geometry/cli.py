"""`blindspots geometry RESULTS.pt`: level-set geometry (star-like paths, triangle hulls, optional full simplex,
tube width) and its figures for LST results saved with `blindspots.geometry.save_lst_results`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import add_common_options, non_negative_int, positive_int, resolve_device
from ..errors import InputError

HELP = "level-set geometry (paths, triangle hulls, tube width) of saved LST results"


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="LST results file (lst_results.pt from `blindspots demo` or save_lst_results)")
    parser.add_argument("--grid-step", type=float, default=0.1, help="barycentric grid step of the triangles")
    parser.add_argument("--deltas", type=_floats, default=[0.0, 0.1, 0.2, 0.3],
                        help="confidence tolerances, comma-separated (default 0,0.1,0.2,0.3)")
    parser.add_argument("--path-steps", type=positive_int, default=11, help="points per straight path (ends included)")
    parser.add_argument("--simplex-samples", type=non_negative_int, default=0,
                        help="uniform samples per source over the full K-simplex (0: skip)")
    parser.add_argument("--tube-radii", type=_floats, default=[0.5, 1.0, 1.5, 2.0],
                        help="l2 radii of the tube probes in [0, 1] pixel space")
    parser.add_argument("--tube-directions", type=non_negative_int, default=64, help="random directions per tube point")
    parser.add_argument("--tube-points", type=non_negative_int, default=5, help="points along the path for the tube (0: skip)")
    parser.add_argument("--triangle-figures", type=non_negative_int, default=3, help="how many triangle maps to draw")
    parser.add_argument("--max-sources", type=positive_int, default=None, help="use only the first N sources")
    add_common_options(parser, "geometry", model=None)


def run(args: argparse.Namespace) -> int:
    from ..models import check_model_input, load_classifier
    from ..store import fingerprint_model
    from .report import geometry_report
    from .results_file import load_lst_results

    device = resolve_device(args.device)
    data = load_lst_results(args.results)
    spec = args.model or data.get("model")
    if not isinstance(spec, str) or not spec:
        raise InputError(f"{args.results} records no model spec; pass --model SPEC (and --weights FILE)")
    weights = args.weights or data.get("weights")
    model = load_classifier(spec, weights=weights, device=device)
    made_with = data.get("model_fingerprint")
    if isinstance(made_with, str) and fingerprint_model(model.model) != made_with:
        raise InputError(f"{args.results} was made with other weights than {spec}"
                         f"{' with ' + str(weights) if weights else ''} has here; pass the --model and --weights "
                         "that made it")
    sources, outputs, labels = data["sources"], data["outputs"], data["labels"]
    check_model_input(model, sources, device)
    if args.max_sources is not None:
        sources, outputs, labels = (t[:args.max_sources] for t in (sources, outputs, labels))
    report = geometry_report(
        model, sources, outputs, labels, args.out, grid_step=args.grid_step, deltas=args.deltas,
        path_steps=args.path_steps, simplex_samples=args.simplex_samples, tube_radii=args.tube_radii,
        tube_directions=args.tube_directions, tube_points=args.tube_points,
        triangle_figures=args.triangle_figures, batch_size=args.batch_size, seed=args.seed, device=device,
        progress=not args.quiet, restart=args.restart)
    if not args.quiet:
        _print_summary(report, Path(args.out))
    return 0


def _print_summary(report: dict, out: Path) -> None:
    def ms(entry: dict) -> str:
        return f"{entry['mean']:.3f} +- {entry['std']:.3f}"

    paths = report["paths"]
    print(f"straight paths ({paths['paths']}): mean p {ms(paths['mean'])}, min (p - p_src) {ms(paths['min_drop'])}")
    hull = report.get("hull")
    if hull:
        fr = "  ".join(f"{k.split('@')[1]}: {ms(v)}" for k, v in hull.items() if k.startswith("fraction@"))
        print(f"triangle hulls ({hull['sources']} sources x {hull['pairs']} pairs, {hull['evaluations']} evaluations):"
              f" p_src {ms(hull['p_src'])}, hull mean {ms(hull['hull_mean'])}, edge mean {ms(hull['edge_mean'])}")
        print(f"  fraction >= p_src - delta   {fr}")
    for note in report.get("notes", []):
        print(f"note: {note}")
    print(f"wrote {out / 'geometry.json'} and {len(report['figures'])} figures")
