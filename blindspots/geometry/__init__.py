"""Level-set geometry around LST outputs: straight paths (is the level set star-like around the source?), the convex
hull of a source and its K LST outputs (how much of it stays confident?), and the width of the confident tube
around a path.

Every probe is a convex combination of a few vertex images, ``x = sum_k w_k v_k``; all of them go through one
batching routine (`_combination_confidence`) that builds each batch with a small matrix product and evaluates the
model under `torch.inference_mode`, across sources, in batches of `batch_size`.

Triangle statistics (the paper's Table 2) deduplicate shared probes: for K outputs the K(K-1)/2 triangles
(source, b_i, b_j) share the source, every b_i and every source edge [source, b_i]. Each grid point is keyed by its
integer barycentric weights over the K+1 vertices, so shared points are evaluated once (501 instead of 660
evaluations per source at K = 5 and grid step 0.1).

A probe counts as "confident" at tolerance delta when ``p >= p_src - delta - atol``; `atol` (1e-5) only absorbs
float rounding, so that points exactly on the source's level set count as on it.

Rooms: `common` (checks and the batching routine), `paths` (straight segments, trajectories), `hulls` (triangle
hulls and simplices), `tube` (tube width), `results_file` (the saved-results format), `report` (all of them with
figures, resumable), `cli` (the `blindspots geometry` command).
"""

from .common import ATOL, DEFAULT_DELTAS
from .hulls import (HullResult, SimplexResult, barycentric_grid, dirichlet_weights, hull_statistics,
                    hull_statistics_naive, simplex_statistics, triangle_layout)
from .paths import PathResult, path_confidence, trajectory_confidence
from .report import geometry_report
from .results_file import load_lst_results, save_lst_results
from .tube import TubeResult, tube_width

__all__ = [
    "ATOL",
    "DEFAULT_DELTAS",
    "PathResult",
    "HullResult",
    "SimplexResult",
    "TubeResult",
    "barycentric_grid",
    "dirichlet_weights",
    "path_confidence",
    "trajectory_confidence",
    "hull_statistics",
    "hull_statistics_naive",
    "simplex_statistics",
    "tube_width",
    "triangle_layout",
    "save_lst_results",
    "load_lst_results",
    "geometry_report",
]
