"""attacks: the over-sensitivity side of blindspots (adversarial examples on the same model conventions).

Every attack is a small class called on images in [0, 1] (NCHW) and int64 labels, returning an `AttackResult`
with the adversarial images, a success mask, per-sample l2 / l-inf norms and per-sample forward/backward counts::

    import attacks
    result = attacks.PGD(model, eps=8 / 255, norm="linf", steps=10, seed=0)(images, labels)
    result.success, result.linf, result.forwards

`attacks.evaluate_robustness(model, images, labels, eps, norm)` is the robust accuracy the field reports: the
AutoAttack ensemble (APGD-CE, APGD-T, FAB-T, Square) run in cascade, per-sample worst case; `attacks.masking_checks`
puts the gradient-masking checks of Carlini et al. beside it. `attacks.minimal_epsilon(model, images, labels)` gives
each sample's smallest flipping budget, the counterpart of Level Set Traversal distances (see
`experiments.sensitivity_profile`); `attacks.adversarial_training(model, (x, y), eps)` trains a model on PGD examples
(Madry et al.; eps=0: normal training), resumable from per-epoch checkpoints.

Every attack is registered where it is defined (`attacks.registry.register_attack`) with its norms, its budget
semantics (`attacks.budget`: a fixed budget, or a search for the minimal one) and a one-line description;
`attacks.registry.run_attack(name, model, images, ...)` and `blindspots attack --attack NAME` run any of them.
"""

from . import registry
from .apgd import APGD
from .apgdt import APGDT
from .base import Attack, AttackResult
from .deepfool import DeepFool
from .ensemble import EnsembleBudget, RobustnessResult, evaluate_robustness
from .fab import FAB
from .masking import Check, masking_checks
from .pgd import FGSM, PGD, MinimalEpsilon, minimal_epsilon
from .square import Square
from .training import TrainResult, adversarial_training

__all__ = ["registry", "Attack", "AttackResult", "FGSM", "PGD", "APGD", "APGDT", "FAB", "Square", "DeepFool", "MinimalEpsilon",
           "minimal_epsilon", "evaluate_robustness", "EnsembleBudget", "RobustnessResult", "masking_checks", "Check",
           "adversarial_training", "TrainResult"]
