"""experiments: the jobs that combine the core (`blindspots`) with its siblings (`attacks`, `detectors`): the
over- vs under-sensitivity profile, robust accuracy under the AutoAttack ensemble (`experiments.robustness`), the
paper's tables, the Zoobot vs ImageNet study, and their subcommands.
Nothing below imports this package."""

from .sensitivity import SensitivityProfile, plot_sensitivity, sensitivity_profile

__all__ = ["SensitivityProfile", "sensitivity_profile", "plot_sensitivity"]
