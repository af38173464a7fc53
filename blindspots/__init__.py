"""blindspots: probe where vision models are under-sensitive (Level Set Traversal and the geometry of its level
sets) and over-sensitive (adversarial attacks, in the sibling package `attacks`).

The core: models, the LST engine, geometry, metrics, data, plots, the run store and the study machinery. It imports
neither `attacks` nor `detectors`; `experiments` combines them (e.g. `experiments.sensitivity_profile`)."""

from .models import Classifier, load_classifier, load_state_dict_file, load_weights, probing
from .traversal import LSTConfig, LSTResult, Trajectory, derangement_pairs, level_set_traversal
from .geometry import (HullResult, PathResult, SimplexResult, TubeResult, geometry_report, hull_statistics,
                       load_lst_results, path_confidence, save_lst_results, simplex_statistics, trajectory_confidence,
                       tube_width)
from .store import RunStore
from .errors import InputError

__version__ = "0.1.0"

__all__ = [
    "Classifier",
    "load_classifier",
    "load_state_dict_file",
    "load_weights",
    "probing",
    "LSTConfig",
    "LSTResult",
    "Trajectory",
    "level_set_traversal",
    "derangement_pairs",
    "HullResult",
    "PathResult",
    "SimplexResult",
    "TubeResult",
    "path_confidence",
    "trajectory_confidence",
    "hull_statistics",
    "simplex_statistics",
    "tube_width",
    "geometry_report",
    "save_lst_results",
    "load_lst_results",
    "RunStore",
    "InputError",
]
