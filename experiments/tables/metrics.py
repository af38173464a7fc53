"""The LST paper's tables: their columns (Table 1: distances, SSIM, confidence; Table 2: the triangle hulls) and the
metrics that fill them, as pair and source metrics of the protocol (`blindspots.studies.run_pair_protocol`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from blindspots import studies as st

__all__ = ["TABLE1_FIELDS", "TABLE2_FIELDS", "HULL_DELTAS", "hull_deltas", "table2_fields", "hull_metric",
           "ssim_paper_metric", "lpips_metric"]

TABLE1_FIELDS = {"rms_l2": "RMS-l2", "linf": "l-inf", "ssim_paper": "SSIM (Gaussian 11, sigma 1.5; the paper's)",
                 "ssim": "SSIM (7x7 uniform; scikit-image)", "lpips": "LPIPS",
                 "final_confidence": "final confidence", "initial_confidence": "source confidence",
                 "acceptance_rate": "acceptance rate",
                 "unconstrained": "unconstrained (source confidence <= threshold; its mean is their share)"}
# Table 2: every triangle (source, b_i, b_j) probed on the 66-point barycentric grid of step 0.1 (vertices and edges
# included; the published code keeps 64 of them); "frac" counts probes with p >= p_src - delta (- 1e-5 for float
# rounding; the published code uses a strict '>'); per source, means over its triangles except the worst edge minimum.
TABLE2_FIELDS = {"p_src": "p_src", "hull_mean": "hull mean p", "edge_mean": "source-edge mean p",
                 "edge_min": "worst source-edge min (p - p_src)", "fraction@0": "frac p>=p_src",
                 "fraction@0.1": "frac p>=p_src-0.1", "fraction@0.2": "frac p>=p_src-0.2",
                 "fraction@0.3": "frac p>=p_src-0.3", "side_source": "triangle side source-output (RMS-l2)",
                 "side_outputs": "triangle side output-output (RMS-l2)"}
HULL_DELTAS = (0.0, 0.1, 0.2, 0.3)


def hull_deltas(threshold: float) -> tuple[float, ...]:
    """The deltas Table 2 reports: the paper's four and the run's own threshold (any value in (0, 1))."""
    return tuple(sorted(set(HULL_DELTAS) | {float(threshold)}))


def table2_fields(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """TABLE2_FIELDS plus a column for each delta of `rows` (summaries or records) beyond the paper's four."""
    keys = sorted({k.removesuffix("_mean") for r in rows for k in r if k.startswith("fraction@")} - set(TABLE2_FIELDS))
    return {**TABLE2_FIELDS, **{k: f"frac p>=p_src-{k.removeprefix('fraction@')}" for k in keys
                                if not k.endswith(("_std", "_median", "_n"))}}


def hull_metric(grid_step: float = 0.1, deltas: Sequence[float] = HULL_DELTAS, batch_size: int = 256
                ) -> st.SourceMetric:
    """Per-source triangle-hull statistics (paper Table 2) as a source metric for `run_pair_protocol`, with the
    triangles' size: mean RMS-l2 from the source to its outputs and between its outputs."""
    from blindspots.geometry import hull_statistics
    from blindspots.metrics import rms_l2

    def metric(model: nn.Module, sources: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor, **_: Any):
        res = hull_statistics(model, sources, outputs, labels, grid_step, deltas, batch_size=batch_size)
        per = res.per_source()
        s, k = outputs.shape[:2]
        i, j = torch.triu_indices(k, k, 1)
        side_src = rms_l2(outputs.flatten(0, 1), sources.repeat_interleave(k, 0)).view(s, k).mean(1)
        side_out = rms_l2(outputs[:, i].flatten(0, 1), outputs[:, j].flatten(0, 1)).view(s, -1).mean(1)
        return [{k_: float(v[n]) for k_, v in per.items()} | {
            "pairs": int(res.pairs.shape[0]), "probes_per_triangle": int(res.grid.shape[0]),
            "side_source": float(side_src[n]), "side_outputs": float(side_out[n])} for n in range(sources.shape[0])]

    return metric


def ssim_paper_metric(model, sources, outputs, targets, labels) -> dict[str, torch.Tensor]:
    """SSIM between LST outputs and targets as the paper defines it (Gaussian window 11, sigma 1.5, data range 1)."""
    from blindspots.metrics import ssim_paper

    return {"ssim_paper": ssim_paper(outputs, targets)}


def lpips_metric(weights: str | Path) -> st.PairMetric:
    """LPIPS (AlexNet) between LST outputs and targets, with AlexNet weights from a local file."""
    from blindspots.metrics import load_lpips, lpips

    load_lpips(weights)  # fail now, not after the first batch of LST, when the file is wrong

    def metric(model, sources, outputs, targets, labels):
        return {"lpips": lpips(outputs, targets, weights)}

    return metric
