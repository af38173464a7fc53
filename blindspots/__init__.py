"""blindspots: probe where vision models are under-sensitive (Level Set Traversal and the geometry of its level
sets) and over-sensitive (adversarial attacks, in the sibling package `attacks`)."""

from .models import Classifier, load_classifier, load_state_dict_file, load_weights, probing
from .traversal import LSTConfig, LSTResult, Trajectory, derangement_pairs, level_set_traversal

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
]
