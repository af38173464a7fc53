"""A self-contained static HTML report (figures embedded as PNG; no server or network needed)."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any, Mapping, Sequence



def figure_to_png(fig: Any, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure as PNG (Agg) and close it; its texts are shown as typed (no math parsing)."""
    import matplotlib.pyplot as plt

    from ..plots import plain_text

    plain_text(fig)
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_html_report(path: str | os.PathLike, title: str, sections: Sequence[Mapping[str, Any]]) -> Path:
    """A self-contained static HTML page (figures embedded as base64 PNG, no server or network needed).

    Each section is a dict with optional 'heading', 'text' (plain text paragraphs), 'table' (list of dicts,
    shown as an HTML table), 'figure' (path to a PNG) and 'caption'.
    """
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
             "text-align:right}th{background:#eee}td:first-child{text-align:left}img{max-width:100%}"
             ".cap{color:#444;font-size:90%}pre{background:#f6f6f6;padding:.5em}</style></head><body>",
             f"<h1>{esc(title)}</h1>"]
    for sec in sections:
        if sec.get("heading"):
            parts.append(f"<h2>{esc(str(sec['heading']))}</h2>")
        for para in str(sec.get("text") or "").split("\n\n"):
            if para.strip():
                parts.append(f"<p>{esc(para.strip())}</p>")
        if sec.get("pre"):
            parts.append(f"<pre>{esc(str(sec['pre']))}</pre>")
        table = sec.get("table")
        if table:
            cols: list[str] = []
            for r in table:
                cols += [c for c in r if c not in cols]
            parts.append("<table><tr>" + "".join(f"<th>{esc(str(c))}</th>" for c in cols) + "</tr>")
            for r in table:
                parts.append("<tr>" + "".join(f"<td>{esc(str(r.get(c, '')))}</td>" for c in cols) + "</tr>")
            parts.append("</table>")
        fig = sec.get("figure")
        if fig and Path(fig).is_file():
            data = base64.b64encode(Path(fig).read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{esc(Path(fig).name)}' src='data:image/png;base64,{data}'>")
            if sec.get("caption"):
                parts.append(f"<figcaption class='cap'>{esc(str(sec['caption']))}</figcaption>")
            parts.append("</figure>")
        elif sec.get("caption"):
            parts.append(f"<p class='cap'>{esc(str(sec['caption']))}</p>")
    parts.append("</body></html>")
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path

