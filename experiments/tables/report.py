"""The tables study's report: `report.html` with Table 1 and 2, the hull fractions and example LST outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from blindspots import studies as st

from .metrics import TABLE1_FIELDS, table2_fields

__all__ = ["write_report"]


def _example_figure(out: Path, records: Sequence[dict[str, Any]], images: torch.Tensor, model_order: Sequence[str],
                    per_model: int = 3) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from safetensors.torch import load_file

    rows = []
    for m in model_order:
        recs = [r for r in records if r["kind"] == "lst" and r["model"] == m and r["round"] == 0][:per_model]
        rows += recs
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), 3, figsize=(7, 2.4 * len(rows)), squeeze=False)
    cache: dict[str, dict[str, torch.Tensor]] = {}
    for ax, r in zip(axes, rows):
        arr = cache.setdefault(r["array"], load_file(str(out / r["array"])))["images"][r["array_index"]]
        for a, img, title in zip(ax, (images[r["source"]], arr, images[r["target"]]),
                                 (f"source #{r['source']} (class {r['source_label']})",
                                  f"LST output, p_src {r['final_confidence']:.3f}\nRMS {r['rms_l2']:.4f}",
                                  f"target #{r['target']} (class {r['target_label']})")):
            a.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            a.set_title(title, fontsize=8)
            a.axis("off")
        ax[0].set_ylabel(r["model"], fontsize=8)
    fig.suptitle("LST outputs look like their targets while the model keeps the source class", fontsize=9)
    return st.figure_to_png(fig, out / "examples.png")


def _hull_figure(out: Path, table2: Sequence[dict[str, Any]]) -> Path | None:
    if not table2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("fraction@0", "fraction@0.1", "fraction@0.2", "fraction@0.3") if f"{k}_mean" in table2[0]]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.8 / len(table2)
    for i, row in enumerate(table2):
        xs = [j + i * width for j in range(len(keys))]
        ax.bar(xs, [row[f"{k}_mean"] for k in keys], width, yerr=[row[f"{k}_std"] for k in keys],
               label=row["model"], capsize=3)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
    ax.set_xticklabels([k.replace("fraction@", "delta=") for k in keys])
    ax.set_ylabel("fraction of hull probes with p >= p_src - delta")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    return st.figure_to_png(fig, out / "hull_fractions.png")


def write_report(out: Path, tables: dict[str, Any], records: Sequence[dict[str, Any]], images: torch.Tensor,
                 model_order: Sequence[str]) -> Path:
    """report.html beside the records: both tables, example LST outputs and the hull fractions."""
    t1 = st.display_rows(tables["table1"], ["model"], TABLE1_FIELDS)
    t2 = st.display_rows(tables["table2"], ["model"], table2_fields(tables["table2"]))
    sections: list[dict[str, Any]] = [
        {"text": f"{tables['pairs']} LST pairs over {len(tables['pool']['indices'])} correctly classified sources "
                 "(mean ± std over rounds and sources; n = pairs)."
                 + (" Skipped: " + "; ".join(tables["skipped"]) + "." if tables.get("skipped") else "")},
        {"heading": "Table 1: LST output vs target, and the source confidence kept", "table": t1},
    ]
    if t2:
        sections.append({"heading": "Table 2: triangle hull (source, b_i, b_j) statistics (n = sources)",
                         "table": t2})
        sections.append({"figure": _hull_figure(out, tables["table2"]),
                         "caption": "Fraction of probes of the triangles spanned by a source and two LST outputs "
                                    "where the source class stays confident (mean ± std over sources)."})
    ex = _example_figure(out, records, images, model_order)
    if ex is not None:
        sections.append({"heading": "Examples (round 0)", "figure": ex,
                         "caption": "Source, LST output and target for the first sources of the pool."})
    return st.write_html_report(out / "report.html", "LST paper tables", sections)


# ----------------------------------------------------------------------------------------------- command line
