"""What the study prints and what the docs show: `format_record` (the printed report of one record) and
`render_zoo_robustness` (the docs' table of the zoo's results file, docs/zoo.md, through
`experiments.generated_docs`)."""

from __future__ import annotations

from typing import Any

from attacks.ensemble import LABELS

__all__ = ["format_record", "format_result", "render_zoo_robustness"]


def format_record(title: str, rec: dict[str, Any]) -> str:
    """The printed report of one record: accuracy after each attack, the worst case with its interval, the checks."""
    n = rec["n"]
    lines = [title, f"{'step':<12} {'robust acc.':>11} {'fooled':>7} {'fwd/sample':>11} {'bwd/sample':>11} "
                    f"{'seconds':>8}",
             f"{'clean':<12} {rec['clean_accuracy']:>11.3f}"]
    for i, a in enumerate(rec["attacks"]):
        name = ("+ " if i else "") + LABELS.get(a["name"], a["name"])
        lines.append(f"{name:<12} {a['accuracy_after']:>11.3f} {a['fooled']:>7} {a['forwards_per_sample']:>11.1f} "
                     f"{a['backwards_per_sample']:>11.1f} {a['seconds']:>8.1f}"
                     + (f"  ({a['unconfirmed']} claimed successes not confirmed)" if a["unconfirmed"] else ""))
    lo, hi = rec["robust_ci95"]
    lines.append(f"{'worst case':<12} {rec['robust_accuracy']:>11.3f}  95% CI [{lo:.3f}, {hi:.3f}] (Wilson), n={n:,}")
    if rec["checks"]:
        tol = ", ".join(f"{k}={v:g}" for k, v in rec["tolerances"].items())
        lines.append(f"gradient-masking checks ({tol}):")
        for c in rec["checks"]:
            shown = "-" if c["value"] is None else f"{c['value']:.3f}"
            lines.append(f"  {c['name']:<26} {c['status'].upper():<8} {shown:>6} <= {c['limit']:<5g} n={c['n']:<5} "
                         f"{c['detail']}")
    load = rec["load_average"]
    lines.append(f"wall time: ensemble {rec['seconds_ensemble']:.0f} s, checks {rec['seconds_checks']:.0f} s; CPU time "
                 f"{rec['cpu_seconds_ensemble']:.0f} s and {rec['cpu_seconds_checks']:.0f} s ({rec['threads']} "
                 f"threads, load average {load[0]:.1f} -> {load[1]:.1f})")
    return "\n".join(lines)


def render_zoo_robustness(data: dict[str, Any]) -> str:
    """The docs' table of `mnist_robustness.json` (docs/zoo.md): accuracy after each attack of the cascade and the
    checks."""
    threats = {"linf": "l-inf", "l2": "l2"}
    rows = ["| model | threat | clean | APGD-CE | + APGD-T | + FAB-T | + Square = worst case (95% CI) | masking "
            "checks | CPU time |", "|---|---|---|---|---|---|---|---|---|"]
    flagged, sizes, threads = [], set(), set()
    for name, entry in data["models"].items():
        for norm in ("linf", "l2"):
            rec = entry.get(norm)
            if rec is None:
                continue
            sizes.add(rec["n"])
            threads.add(rec["threads"])
            after = {a["name"]: a["accuracy_after"] for a in rec["attacks"]}
            lo, hi = rec["robust_ci95"]
            bad = [c["name"] for c in rec["checks"] if c["status"] == "flagged"]
            ran = [c for c in rec["checks"] if c["status"] != "not run"]
            flagged += [f"{name} ({threats[norm]}): {c}" for c in bad]
            checks = f"{len(ran) - len(bad)}/{len(ran)} pass" + (f"; flagged: {', '.join(bad)}" if bad else "")
            cells = [f"{after[a]:.3f}" if a in after else "-" for a in ("apgd-ce", "apgd-t", "fab-t")]
            cpu = rec["cpu_seconds_ensemble"] + rec["cpu_seconds_checks"]
            rows.append(f"| {name} | {threats[norm]} {rec['eps']:g} | {rec['clean_accuracy']:.3f} | "
                        f"{' | '.join(cells)} | **{rec['robust_accuracy']:.3f}** ({lo:.3f}-{hi:.3f}) | {checks} | "
                        f"{cpu / 60:.1f} min |")
    tol = ", ".join(f"`{k}` = {v:g}" for k, v in data["tolerances"].items())
    n = ", ".join(f"{v:,}" for v in sorted(sizes))
    lines = [f"Measured with `{data['command']}` on {data['data']}; budget: {data['budget_text']}.", "",
             *rows, "",
             "Each column is the robust accuracy after the attacks up to it (each runs on the samples still standing), "
             f"the last one the per-sample worst case with its Wilson interval (n = {n}). Checks run: eps sweep "
             "(monotone, unbounded), black box vs white box, more steps and restarts, and for the AT models transfer "
             f"from the normal twin; tolerances: {tol}. CPU time: ensemble and checks, one process with "
             f"{', '.join(map(str, sorted(threads)))} torch thread(s) (wall times and load averages are in the file).",
             "", ("Flagged: " + "; ".join(flagged) + ". Where a check is flagged, the attacks were stopped on some "
              "samples by something other than robustness (the gradients, or a loss that misleads them): read that "
              "row's robust accuracy as an upper bound.") if flagged else "No check was flagged."]
    return "\n".join(lines) + "\n"


def format_result(result) -> str:
    """The printed report of a `RobustResult`: the model, threat model, data and budget, then `format_record`."""
    c = result.config
    return format_record(f"{c.model}, {c.norm} eps {c.eps:g}, {result.data}\nbudget: {result.budget_text}",
                         result.record)
