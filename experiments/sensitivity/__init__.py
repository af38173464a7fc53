"""`blindspots attack`: per image, the smallest flipping budget (over-sensitivity) beside Level Set Traversal towards
other-class images (under-sensitivity).

Rooms: `profile` (`sensitivity_profile`, `SensitivityProfile`, `plot_sensitivity`), `cli` (the command line).
"""

from .cli import HELP, add_arguments, run
from .profile import SensitivityProfile, plot_sensitivity, sensitivity_profile

__all__ = ["HELP", "add_arguments", "run", "SensitivityProfile", "sensitivity_profile", "plot_sensitivity"]
