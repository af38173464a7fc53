"""Markdown of the benchmarks' results file (docs/results/benchmarks.json, written by `python -m benchmarks.NAME
--results-to FILE`, see `blindspots.studies.measured`): the runs list of docs/benchmarks.md, the passes table of
docs/engine.md and the detector table of docs/detectors.md, rendered by `experiments.generated_docs` so that no
measured figure of them is typed by hand. A run copied from figures measured before the results file existed (its
`transcribed` field says from where) is shown as "transcribed, not rerun" beside its date wherever it appears.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

__all__ = ["render_runs", "render_lst_passes", "render_lst_passes_other_digits", "render_detector_table", "when",
           "ORDER", "TRANSCRIBED"]

# the order of docs/benchmarks.md's runs table (quickest first, as `python -m benchmarks` runs them)
ORDER = ("speed_geometry", "speed_attacks", "simulate_speed", "lst_passes", "speed_lst", "gpu_check", "detector_cpu",
         "train_mnist", "robust_parity")
TRANSCRIBED = "transcribed, not rerun"  # beside the date of a run copied from earlier docs: not a fresh measurement
TARGET_SAVING = 20  # lst_passes' target: adaptive mode >= 20x fewer passes than paper mode


def _machine(m: Mapping[str, Any]) -> str:
    parts = []
    if m.get("cuda"):
        parts.append(m["cuda"])
    if m.get("cpus"):
        parts.append(f"{m['cpus']} cores")
    if m.get("torch_threads"):
        parts.append(f"{m['torch_threads']} thread{'s' if m['torch_threads'] > 1 else ''}")
    if m.get("load_average") is not None:
        parts.append(f"load {m['load_average']:g}")
    if m.get("note"):
        parts.append(m["note"])
    return ", ".join(parts)


def when(run: Mapping[str, Any]) -> str:
    """The run's date, with "transcribed, not rerun" beside it when its figures were copied from earlier docs."""
    return run["measured"] + (f", {TRANSCRIBED}" if run.get("transcribed") else "")


def _commands(runs: Iterable[Mapping[str, Any]]) -> str:
    """`command` (date[, transcribed, not rerun]); ... for the distinct runs, by command."""
    seen = {r["command"]: r for r in runs}
    return "; ".join(f"`{c}` ({when(seen[c])})" for c in sorted(seen))


def render_runs(data: Mapping[str, Any]) -> str:
    """One line per recorded run (of lst_passes, those with the default settings), the verdict first: met or missed
    and the benchmark's own one-line result, then the command, when and where it was measured."""
    runs = sorted((r for r in data["runs"] if r["benchmark"] != "lst_passes" or _default_lst(r)), key=lambda r: (ORDER.index(r["benchmark"]) if r["benchmark"] in ORDER else len(ORDER),
                                               r["measured"], r["command"]))
    lines = []
    for r in runs:  # a list, not a table: the results are sentences, which a table cell would not wrap at 1280 px
        lines.append(f"- {'met' if r['met'] else '**missed**'}: {r['summary']} (`{r['command']}`; {when(r)}; "
                     f"{_machine(r.get('machine', {}))})")
    transcribed = sorted({r["transcribed"] for r in runs if r.get("transcribed")})
    if transcribed:
        lines += ["", f"Marked {TRANSCRIBED}: " + " ".join(t[:1].upper() + t[1:] for t in transcribed)
                  + " The command beside each refreshes it "
                  "(add `--results-to docs/results/benchmarks.json`, then `python -m experiments.generated_docs`)."]
    return "\n".join(lines) + "\n"


def _default_lst(run: Mapping[str, Any]) -> bool:
    """An lst_passes run with the default settings (its variants are in docs/engine.md's table)."""
    st = run["figures"]["settings"]
    return _variant({})(st) and len(st.get("fixed", ())) <= 2


def _lst_runs(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    return sorted((r for r in data["runs"] if r["benchmark"] == "lst_passes"), key=lambda r: r["measured"])


def _latest_sets(runs: Iterable[Mapping[str, Any]], keep) -> dict[tuple[str, str], dict[str, Any]]:
    """(set, model) -> that set's figures from the latest run `keep` accepts (runs come oldest first)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in runs:
        if keep(r["figures"]["settings"]):
            for s in r["figures"]["sets"]:
                out[(s["set"], s["model"])] = {**s, "run": r}
    return out


def _variant(adaptive: Mapping[str, Any], start: int = 0):
    return lambda st: st.get("adaptive", {}) == adaptive and st.get("mnist_start", 0) == start


def _fixed_cell(s: Mapping[str, Any] | None) -> str:
    if not s or not s.get("fixed"):
        return "-"
    met = {k: v for k, v in s["fixed"].items() if v is not None}
    if not met:
        keys = list(s["fixed"])
        return f"none of {keys[0].replace(' x', ' x ')} ... {keys[-1].replace(' x', ' x ')}"
    best = min(met, key=met.get)  # its passes over adaptive's: the cheapest fixed step has the smallest
    return f"{best.replace(' x', ' x ')}: {met[best]:.2f}x"


def _set_label(s: Mapping[str, Any]) -> str:
    return {"photos": f"photos, {s['px']} px", "galaxies": f"real galaxies, {s['px']} px",
            "mnist": "MNIST digits"}.get(s["set"], s["set"])


def render_lst_passes(data: Mapping[str, Any]) -> str:
    """docs/engine.md's table: per set, the latest run of the default settings, beside the latest run with the
    offset unscaled (`--adaptive offset_scale_max=1`) and the latest run with the most fixed steps."""
    runs = _lst_runs(data)
    main = _latest_sets(runs, _variant({}))
    unscaled = _latest_sets(runs, _variant({"offset_scale_max": 1}))
    grid: dict[tuple[str, str], dict[str, Any]] = {}
    for r in runs:  # the fixed-step column: the run that tried the most fixed steps on the set
        if _variant({})(r["figures"]["settings"]):
            for s in r["figures"]["sets"]:
                key = (s["set"], s["model"])
                if s.get("fixed") and len(s["fixed"]) >= len(grid.get(key, {}).get("fixed") or {}):
                    grid[key] = {**s, "run": r}
    lines = ["| set | model | paper / adaptive passes | pairs at paper's quality | RMS-l2 / paper's: median, worst "
             "| SSIM - paper's: median, worst | offset unscaled | cheapest fixed step at paper's quality: adaptive's "
             "saving |", "|---|---|---|---|---|---|---|---|"]
    for key, s in main.items():
        saving = f"{s['saving']:.1f}x"
        met = s["saving"] >= TARGET_SAVING and s["pairs_at_quality"] == s["pairs"]
        u = unscaled.get(key)
        u_cell = f"{u['saving']:.1f}x, {u['pairs_at_quality']}/{u['pairs']}" if u else "-"
        lines.append(
            f"| {_set_label(s)} | {s['model']} | {f'**{saving}**' if met else saving} | "
            f"{s['pairs_at_quality']}/{s['pairs']} | {s['rms_ratio'][0]:.2f}, {s['rms_ratio'][1]:.2f} | "
            f"{s['ssim_diff'][0]:+.3f}, {s['ssim_diff'][1]:+.3f} | "
            f"{u_cell} | {_fixed_cell(grid.get(key))} |")
    met = [s["model"] if s["set"] == "mnist" else s["set"] for s in main.values()
           if s["saving"] >= TARGET_SAVING and s["pairs_at_quality"] == s["pairs"]]
    words = {0: "none", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
    lines += ["", f"The target is met on {words.get(len(met), len(met))} of the {words.get(len(main), len(main))} "
              f"sets{' (' + ', '.join(met) + ')' if met else ''}"
              f"{' and missed on the others' if len(met) < len(main) else ''}. Runs: "
              + _commands(s["run"] for d in (main, unscaled, grid) for s in d.values())
              + " (docs/results/benchmarks.json)."]
    return "\n".join(lines) + "\n"


def render_lst_passes_other_digits(data: Mapping[str, Any]) -> str:
    """The sentence on digits other than those adaptive mode was tuned on (`--mnist-start 100`)."""
    runs = _lst_runs(data)
    main = _latest_sets(runs, _variant({}, 100))
    unscaled = _latest_sets(runs, _variant({"offset_scale_max": 1}, 100))
    if not main:
        return "No run on other digits is recorded (`python -m benchmarks.lst_passes --sets mnist --mnist-start 100`).\n"

    def each(sets: Mapping[tuple[str, str], Mapping[str, Any]], name: bool) -> str:
        quality = " pairs at paper's quality"
        return ", ".join(f"{s['model'] + ' ' if name else ''}{s['saving']:.1f}x ({s['pairs_at_quality']}/{s['pairs']}"
                         f"{quality if name and i == 0 else ''})" for i, s in enumerate(sets.values()))

    text = f"On other digits (`--mnist-start 100`) adaptive mode gives {each(main, True)}"
    if unscaled:
        text += f"; with the offset unscaled {each(unscaled, False)}"
    return text + " (" + _commands(x["run"] for sets in (main, unscaled) for x in sets.values()) + ").\n"


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def render_detector_table(data: Mapping[str, Any]) -> str:
    """docs/detectors.md's table: per row name, the latest detector_cpu run of it among the runs with the latest
    run's settings (rows run side by side by separate calls are compared together), then the commands."""
    runs = sorted((r for r in data["runs"] if r["benchmark"] == "detector_cpu"), key=lambda r: r["measured"])
    if not runs:
        return "No run recorded yet (`python -m benchmarks.detector_cpu --results-to docs/results/benchmarks.json`).\n"
    settings = runs[-1]["figures"].get("settings")
    rows: dict[str, tuple[dict[str, Any], Mapping[str, Any]]] = {}
    for r in runs:
        if r["figures"].get("settings") == settings:
            for name, row in r["figures"]["rows"].items():
                rows[name] = (row, r)
    t = runs[-1]["figures"]["targets"]
    lines = ["| row | backbone (weights) | threshold (validation) | simulated test | at the paper's 0.3 "
             "| AP50 clump | real hosts, completeness | training steps |", "|---|---|---|---|---|---|---|---|"]
    for name, (row, _) in rows.items():
        at = row["at_preset_threshold"]
        met = ((row["completeness_bright"] or 0) >= t["completeness"] and (row["purity"] or 0) >= t["purity"])
        sim = f"{_num(row['completeness_bright'])} / {_num(row['purity'])}"
        lines.append(f"| {name} | {row['backbone']} ({row['weights']}) | {row['score_threshold']:g} "
                     f"| {f'**{sim}**' if met else sim} | {_num(at['completeness_bright'])} / {_num(at['purity'])} "
                     f"| {_num(row['ap50_clump'])} | {_num(row['real_completeness'])} "
                     f"| {'n/a' if row.get('steps') is None else row['steps']} |")
    lines += ["", f"Completeness for clumps >= 3% of the host's flux / purity; in bold where both reach the target "
                  f"(>= {t['completeness']:g} / >= {t['purity']:g}). Runs: "
              + _commands(r for _, r in rows.values()) + " (docs/results/benchmarks.json)."]
    notes = sorted({r["figures"]["note"] for _, r in rows.values() if r["figures"].get("note")})
    if notes:
        lines[-1] += " " + " ".join(notes)
    return "\n".join(lines) + "\n"
