"""attacks: the over-sensitivity side of blindspots (adversarial examples on the same model conventions).

Every attack is a small class called on images in [0, 1] (NCHW) and int64 labels, returning an `AttackResult`
with the adversarial images, a success mask, per-sample l2 / l-inf norms and per-sample forward/backward counts::

    import attacks
    result = attacks.PGD(model, eps=8 / 255, norm="linf", steps=10, seed=0)(images, labels)
    result.success, result.linf, result.forwards

`attacks.minimal_epsilon(model, images, labels)` gives each sample's smallest flipping budget, the counterpart of
Level Set Traversal distances (see `blindspots.sensitivity_profile`); `attacks.adversarial_training(model, (x, y),
eps)` trains a model on PGD examples (Madry et al.; eps=0: normal training), resumable from per-epoch checkpoints.
"""

from .apgd import APGD
from .base import Attack, AttackResult
from .deepfool import DeepFool
from .pgd import FGSM, PGD, MinimalEpsilon, minimal_epsilon
from .training import TrainResult, adversarial_training, robust_accuracy

__all__ = ["Attack", "AttackResult", "FGSM", "PGD", "APGD", "DeepFool", "MinimalEpsilon", "minimal_epsilon",
           "adversarial_training", "TrainResult", "robust_accuracy"]
