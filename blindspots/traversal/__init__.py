"""Level Set Traversal, the engine: one package, one file per part.

- `api`: `level_set_traversal`, the entry point (its module docstring states the algorithm and its contract);
- `config`: `LSTConfig` (paper, fixed and adaptive modes), checked when made;
- `loop`: the iteration over one chunk of pairs (start noise, step, acceptance, adaptive step, logging);
- `probe`: the one-time checks (device, labels, batch independence) and the automatic batch size;
- `result`: `LSTResult` and `Trajectory`, per-sample results that save and load.

The model call itself (precision, memory format, compile, per-sample seeds) is `blindspots.engine`, shared with the
attacks. `from blindspots.traversal import level_set_traversal, LSTConfig, LSTResult` is the public path.
"""

from .api import derangement_pairs, level_set_traversal, sample_seeds
from .config import LSTConfig
from .result import LSTResult, Trajectory

__all__ = ["LSTConfig", "LSTResult", "Trajectory", "level_set_traversal", "derangement_pairs", "sample_seeds"]
