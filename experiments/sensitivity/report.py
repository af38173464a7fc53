"""The sensitivity study's report: the scatter figure (`plot_sensitivity`: over- vs under-sensitivity per image)
and the table the command line prints."""

from __future__ import annotations

import os
from typing import Any, Sequence

__all__ = ["plot_sensitivity", "text_table"]


def text_table(rows: Sequence[dict[str, Any]], norm: str) -> str:
    """The per-image table `blindspots attack` prints: name, class, smallest flipping budget, the RMS-l2 LST
    leaves to its target and the confidence it keeps."""
    unit = "l-inf" if norm == "linf" else "l2"
    lines = [f"{'image':<20} {'class':<28} {'min eps (' + unit + ')':>15} {'LST rms-l2 left':>16} {'conf kept':>10}"]
    for r in rows:
        lines.append(f"{str(r['name'])[:20]:<20} {str(r['class_name'])[:28]:<28} {r['min_eps_text']:>15} "
                     f"{r['lst_rms_l2']:>16.4f} {r['lst_confidence']:>10.3f}")
    return "\n".join(lines)


def plot_sensitivity(profile: Any, *, path: str | os.PathLike | None = None,
                     title: str | None = None):
    """Scatter of a `SensitivityProfile`: x = smallest flipping budget (over-sensitivity), y = RMS-l2 distance LST
    leaves to other-class targets (under-sensitivity), colour = source confidence kept by LST. Images not flipped
    within the search range are drawn at its edge with a '>' marker. Returns the Figure (saved as PNG when `path`
    is given)."""
    import numpy as np

    from blindspots.plots import new_figure, save_figure

    rows = profile.rows
    x = np.array([r["min_eps"] for r in rows], dtype=float)
    y = np.array([r["lst_rms_l2"] for r in rows], dtype=float)
    c = np.array([r["lst_confidence"] for r in rows], dtype=float)
    fig = new_figure(6.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    finite = np.isfinite(x)
    params = profile.attack.params
    edge = float(params.get("max_eps", params.get("eps", np.nanmax(x[finite]) if finite.any() else 1.0)))
    xs = np.where(finite, x, edge)
    has_c = np.isfinite(c).any()
    kw = dict(c=c, cmap="viridis", vmin=0.0, vmax=1.0) if has_c else dict(color="tab:blue")
    sc = None
    for mask, marker in ((finite, "o"), (~finite, ">")):
        if mask.any():
            sc = ax.scatter(xs[mask], np.nan_to_num(y[mask], nan=0.0), marker=marker, s=40, edgecolors="k",
                            linewidths=0.5, **({k: (v[mask] if k == "c" else v) for k, v in kw.items()}))
    for r, xi, yi in zip(rows, xs, y):
        ax.annotate(str(r["name"]), (xi, 0.0 if not np.isfinite(yi) else yi), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    if has_c and sc is not None:
        fig.colorbar(sc, ax=ax, label="source confidence kept by LST")
    norm_name = "l-inf" if profile.norm == "linf" else "l2"
    ax.set_xlabel(f"over-sensitivity: smallest flipping budget ({norm_name}, [0, 1] pixels)")
    ax.set_ylabel("under-sensitivity: RMS-l2 left to other-class target")
    if np.all(xs > 0):
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.set_title(title or "Over- vs under-sensitivity per image")
    save_figure(fig, path)
    return fig
