"""Shared machinery of the attacks: the result type, the base class and the per-run bookkeeping.

Every attack is a small class: the constructor takes the model and the settings, the call takes images in [0, 1]
(NCHW), labels (int64; default: the model's predictions) and optional targets, and returns an `AttackResult` with
per-sample outcomes. The base class checks inputs (`blindspots.validation`), runs the attack inside
`blindspots.models.probing` (eval mode, no parameter gradients, both restored afterwards), counts every forward and
backward pass per sample, and returns the results on the inputs' device and dtype.

Early stop: attacks drop a sample from their working batch as soon as one of their forward passes shows it fooled
(the active set of AutoAttack's cascade), so fooled samples stop costing model evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from blindspots.metrics import l2 as l2_distance
from blindspots.metrics import linf as linf_distance
from blindspots.engine import Probe, compute_dtype, sample_seeds
from blindspots.models import Classifier, model_device, probing
from blindspots.validation import check_device, check_images, check_labels, check_logits, check_same_shape
from blindspots.errors import InputError

__all__ = ["AttackResult", "Attack", "per_sample_noise", "check_gradient", "compute_dtype", "dlr_loss", "NORMS",
           "LOSSES"]  # the budget checks and the fixed-budget / minimisation base classes: `attacks.budget`

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin", "dlr")


@dataclass
class AttackResult:
    """Per-sample outcome of an attack; every tensor has the batch as its first dimension.

    Attributes:
        images: the adversarial images (the clean image where the attack found nothing better), on the inputs'
            device and dtype.
        labels: true classes (N,) int64; `targets`: target classes for a targeted attack, else None.
        success: (N,) bool, the returned image is misclassified (untargeted) or classified as the target (targeted).
        predictions: (N,) class the model predicts on the returned image.
        clean_success: (N,) bool, the clean image was found already adversarial, and is returned unchanged. With
            early stop (or labels=None) every clean image is checked first; without, only those the attack failed
            on (a textbook PGD run then returns its last iterate for a sample misclassified from the start).
        l2, linf: (N,) norms of the perturbation `images - clean` in [0, 1] pixel space.
        forwards, backwards: (N,) int64 numbers of forward / backward passes spent on each sample.
        epsilon: (N,) smallest flipping budget found (`minimal_epsilon` only): an upper bound (PGD flipped the model
            at this budget); 0 for samples misclassified clean, inf where `max_eps` did not flip the model.
        epsilon_lower: (N,) the largest budget at which PGD failed (`minimal_epsilon` only; 0 where none failed,
            `max_eps` where none flipped): the true budget lies in [epsilon_lower, epsilon] as far as PGD can tell.
        at_floor: (N,) bool, the search flipped the model at every budget down to its floor `min_eps` (read
            `epsilon` as "<= epsilon"; `minimal_epsilon` only). See `epsilon_text`.
        seeds: (N,) per-sample seeds of the random starts.
    """

    images: torch.Tensor
    labels: torch.Tensor
    success: torch.Tensor
    predictions: torch.Tensor
    clean_success: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    forwards: torch.Tensor
    backwards: torch.Tensor
    seeds: torch.Tensor
    targets: torch.Tensor | None = None
    epsilon: torch.Tensor | None = None
    epsilon_lower: torch.Tensor | None = None
    at_floor: torch.Tensor | None = None
    attack: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def rms_l2(self) -> torch.Tensor:
        """l2 / sqrt(number of values): the dimension-free distance reported by LST."""
        return self.l2 / math.sqrt(self.images[0].numel())

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean())

    @property
    def robust_accuracy(self) -> float:
        """Fraction of samples the attack did not fool (untargeted attacks)."""
        return 1.0 - self.success_rate

    def records(self) -> list[dict[str, Any]]:
        """One plain dict per sample (JSON/CSV ready)."""
        out = []
        for i in range(len(self)):
            row: dict[str, Any] = {
                "index": i, "label": int(self.labels[i]), "success": bool(self.success[i]),
                "prediction": int(self.predictions[i]), "clean_success": bool(self.clean_success[i]),
                "l2": float(self.l2[i]), "rms_l2": float(self.rms_l2[i]), "linf": float(self.linf[i]),
                "forwards": int(self.forwards[i]), "backwards": int(self.backwards[i]), "seed": int(self.seeds[i]),
            }
            if self.targets is not None:
                row["target"] = int(self.targets[i])
            if self.epsilon is not None:
                row["epsilon"] = float(self.epsilon[i])
                if self.epsilon_lower is not None and self.at_floor is not None:
                    row["epsilon_lower"] = float(self.epsilon_lower[i])
                    row["at_floor"] = bool(self.at_floor[i])
                    row["epsilon_text"] = self.epsilon_text()[i]
            out.append(row)
        return out

    def epsilon_text(self, digits: int = 4) -> list[str]:
        """Each sample's flipping budget as a table should print it: "0" (misclassified clean), "<= x" (the search
        bottomed out at its floor), "> max_eps" (never flipped) or the value (an upper bound within the search's
        relative precision)."""
        if self.epsilon is None:
            raise InputError(f"{self.attack or 'this attack'} does not measure a flipping budget "
                             "(minimal_epsilon does)")
        out = []
        for i, e in enumerate(self.epsilon.tolist()):
            floor = self.at_floor is not None and bool(self.at_floor[i])
            if math.isinf(e):
                lower = self.epsilon_lower[i] if self.epsilon_lower is not None else self.params.get("max_eps")
                out.append(f"> {float(lower):.{digits}g}" if lower is not None else "not found")
            else:
                out.append(f"<= {e:.{digits}g}" if floor else (f"{e:.{digits}g}" if e > 0 else "0"))
        return out

    def summary(self) -> dict[str, Any]:
        """Aggregate figures: success rate, mean norms of successful perturbations, passes per sample."""
        s = self.success
        return {
            "attack": self.attack, **{k: v for k, v in self.params.items() if isinstance(v, (int, float, str, bool))},
            "n": len(self), "success_rate": self.success_rate,
            "mean_l2_success": float(self.l2[s].mean()) if bool(s.any()) else float("nan"),
            "mean_linf_success": float(self.linf[s].mean()) if bool(s.any()) else float("nan"),
            "forwards_per_sample": float(self.forwards.double().mean()),
            "backwards_per_sample": float(self.backwards.double().mean()),
        }


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Difference-of-logits ratio (Croce & Hein 2020), per sample, to be ascended; invariant to shifting and scaling
    the logits. Untargeted: (max_{i != y} z_i - z_y) / (z_pi1 - z_pi3); targeted: (z_t - z_y) / (z_pi1 - (z_pi3 +
    z_pi4) / 2), with z_pi1 >= z_pi2 >= ... the sorted logits (so it needs 3, or 4, classes)."""
    need = 3 if targets is None else 4
    if logits.shape[1] < need:
        raise InputError(f"the {'targeted ' if targets is not None else ''}DLR loss needs at least {need} classes, "
                         f"the model has {logits.shape[1]}; use loss='ce' or 'margin'")
    top = logits.sort(1, descending=True).values
    own = logits.gather(1, labels[:, None]).squeeze(1)
    if targets is None:
        other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
        return (other - own) / (top[:, 0] - top[:, 2] + 1e-12)
    aim = logits.gather(1, targets[:, None]).squeeze(1)
    return (aim - own) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def _mix(seed: int, stream: int) -> int:
    """A distinct 63-bit seed for (sample seed, restart/stream), independent of the batch."""
    return (seed * 6364136223846793005 + stream * 1442695040888963407 + 1) % (2**63 - 1)


def per_sample_noise(seeds: torch.Tensor, shape: Sequence[int], kind: str, stream: int = 0) -> torch.Tensor:
    """One noise tensor per sample from its own generator (so a sample's start does not depend on its batch-mates).

    kind "uniform": U(-1, 1) per value; "normal": N(0, 1) per value, plus the l2 random start's radius fraction
    u ~ U(0, 1) returned as an extra last value of the flattened sample. `stream` separates restarts.
    """
    numel = int(np.prod(shape))
    out = torch.empty((len(seeds), numel + (kind == "normal")))
    gen = torch.Generator()
    for i, s in enumerate(seeds.tolist()):
        gen.manual_seed(_mix(int(s), stream))
        if kind == "uniform":
            out[i].uniform_(-1.0, 1.0, generator=gen)
        elif kind == "normal":
            out[i, :numel].normal_(generator=gen)
            out[i, numel:].uniform_(0.0, 1.0, generator=gen)
        else:
            raise InputError(f"unknown noise kind {kind!r}")
    return out


def _layout(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if (t.ndim == 4 and not t.is_contiguous()
                                   and t.is_contiguous(memory_format=torch.channels_last)) else torch.contiguous_format


def _view(t: torch.Tensor) -> torch.Tensor:
    """Per-sample vector -> broadcastable over images."""
    return t.view(-1, 1, 1, 1)


def check_gradient(g: torch.Tensor, idx: torch.Tensor) -> None:
    """A NaN or infinite input gradient would turn into NaN images: refuse it, naming the samples."""
    finite = torch.isfinite(g.flatten(1)).all(1)
    if not bool(finite.all()):
        bad = idx[~finite.to(idx.device)].tolist()
        raise InputError(f"the model's input gradient is NaN or infinite during the attack for samples {bad[:10]}")


class _Run:
    """Bookkeeping of one attack call: the clean batch, labels/targets, per-sample pass counters and outputs."""

    def __init__(self, probe: Probe, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None,
                 seeds: torch.Tensor) -> None:
        self.probe = probe
        self.x, self.y, self.t = x, y, t
        self.targeted = t is not None
        self.seeds = seeds
        n = x.shape[0]
        dev = x.device
        self.forwards = torch.zeros(n, dtype=torch.long, device=dev)
        self.backwards = torch.zeros(n, dtype=torch.long, device=dev)
        self.out = x.clone()
        self.success = torch.zeros(n, dtype=torch.bool, device=dev)
        self.clean_success = torch.zeros(n, dtype=torch.bool, device=dev)
        self.clean_known = torch.zeros(n, dtype=torch.bool, device=dev)
        self.pred = y.clone()
        self.extra: dict[str, Any] = {}  # additional per-sample result fields (e.g. epsilon)
        self.labels_checked = False  # labels/targets against the logits' width, at the first forward

    # ----------------------------------------------------------------------------------------- model passes
    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The model's float logits at x (samples `idx`; no counting), checked: finite, and the first time, every
        label and target below the logits' width (a model without class names is checked this way)."""
        logits = self.probe.float_logits(x)
        labels = None
        if not self.labels_checked:
            labels = {"labels": self.y, "targets": self.t}
            self.labels_checked = True
        return check_logits(logits, labels, samples=idx, where="during the attack")

    def logits(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Logits at x (samples `idx`), no gradient: one forward each."""
        with torch.no_grad():
            out = self.forward(x, idx)
        self.forwards[idx] += 1
        return out

    def logits_and_grad(self, x: torch.Tensor, idx: torch.Tensor, loss: str
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, per-sample objective and its gradient w.r.t. x: one forward and one backward each.

        The objective is summed over samples before the backward, so each sample's gradient is its own (no 1/N).
        """
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = self.forward(xg, idx)
            obj = self.objective(logits, idx, loss)
            (g,) = torch.autograd.grad(obj.sum(), xg)
        self.forwards[idx] += 1
        self.backwards[idx] += 1
        check_gradient(g, idx)
        return logits.detach(), obj.detach(), g

    def objective(self, logits: torch.Tensor, idx: torch.Tensor, loss: str) -> torch.Tensor:
        """Per-sample quantity the attack ascends: CE of the label (untargeted) or minus CE of the target
        (targeted); "margin": best other logit minus the label's (untargeted) or target logit minus best other;
        "dlr": Croce & Hein's difference-of-logits ratio (`dlr_loss`)."""
        if loss == "dlr":
            return dlr_loss(logits, self.y[idx], self.t[idx] if self.targeted else None)
        cls = self.t[idx] if self.targeted else self.y[idx]
        if loss == "ce":
            ce = F.cross_entropy(logits, cls, reduction="none")
            return -ce if self.targeted else ce
        own = logits.gather(1, cls[:, None]).squeeze(1)
        other = logits.scatter(1, cls[:, None], float("-inf")).amax(1)
        return own - other if self.targeted else other - own

    def is_adv(self, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        pred = logits.argmax(1)
        return pred == self.t[idx] if self.targeted else pred != self.y[idx]

    # ----------------------------------------------------------------------------------------- outputs
    def commit(self, idx: torch.Tensor, images: torch.Tensor, logits: torch.Tensor) -> None:
        """Return `images` for samples `idx`; `logits` (the model's output on them) give success and prediction."""
        self.set(idx, images, self.is_adv(logits, idx), logits.argmax(1))

    def set(self, idx: torch.Tensor, images: torch.Tensor, success: torch.Tensor, pred: torch.Tensor) -> None:
        """Record returned images, success flags and predictions of samples `idx`."""
        self.out[idx] = images.detach().to(self.out.dtype)
        self.success[idx] = success
        self.pred[idx] = pred

    def mark_clean(self, idx: torch.Tensor, logits: torch.Tensor) -> None:
        """The model's logits on the clean images of `idx` are known: samples already adversarial are returned
        unchanged (and need no attack)."""
        self.clean_known[idx] = True
        adversarial = self.is_adv(logits, idx)
        hit = idx[adversarial]
        self.clean_success[hit] = True
        self.out[hit] = self.x[hit]
        self.success[hit] = True
        self.pred[hit] = logits.argmax(1)[adversarial]

    def eps(self, eps: float | torch.Tensor) -> torch.Tensor:
        """A scalar or per-sample budget as an (N,) tensor on the batch's device and dtype."""
        if isinstance(eps, torch.Tensor):
            if eps.shape[0] != self.x.shape[0]:
                raise InputError(f"a per-sample eps must hold one value per image ({self.x.shape[0]}), got "
                                 f"{eps.shape[0]}")
            return eps.to(device=self.x.device, dtype=self.x.dtype)
        return torch.full((self.x.shape[0],), float(eps), device=self.x.device, dtype=self.x.dtype)


class Attack:
    """Base class: model wrapping, input checks, pass counting, clean check, per-sample results.

    Subclasses implement `_run(run, idx)`: attack the samples `idx` (int64 positions into the batch, all clean-
    correct as far as is known) and `run.commit(...)` an image and a success flag for each of them.

    Args:
        model: a `blindspots.Classifier` (or any module mapping [0, 1] images to logits).
        early_stop: drop a sample from the working batch once it is fooled.
        seed: per-sample seeds for random starts: an int (sample i uses seed + i), a sequence, or None.
        device: where to compute (default: the model's device); results come back on the inputs' device.
        progress: show a tqdm progress bar.
        channels_last: feed the model channels_last tensors (same results up to float rounding; convolutions run
            markedly faster on CPU with oneDNN, and on GPU). Results are returned in the inputs' layout.
        amp: run the model under bfloat16 autocast (CPU and CUDA; logits and input gradients come back in float32,
            so steps, projections and budgets stay exact in float32).
        compile: `torch.compile` the model's forward (and so its backward) for each call.
    """

    name = "attack"
    norm: str | None = None
    supports_targeted = True

    def __init__(self, model: nn.Module, *, early_stop: bool = True, seed: int | Sequence[int] | None = None,
                 device: str | torch.device | None = None, progress: bool = False,
                 channels_last: bool = True, amp: bool = False, compile: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module (ideally a blindspots.Classifier), got {type(model).__name__}")
        classes = model.num_classes if isinstance(model, Classifier) else None
        if classes is not None and classes < 2:
            raise InputError(f"{type(self).__name__} needs a model with at least 2 classes, {model.name} has {classes}")
        self.model = model
        self.early_stop = bool(early_stop)
        self.seed = seed
        self.device = device
        self.progress = progress
        self.channels_last = bool(channels_last)
        self.amp = bool(amp)
        self.compile = bool(compile)

    # settings shown in results and reports
    def params(self) -> dict[str, Any]:
        return {"early_stop": self.early_stop}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def _needs_clean_first(self) -> bool:
        """Check the clean images before attacking (so already-fooled samples cost one forward only)."""
        return self.early_stop

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | Sequence[int] | None = None, *,
                 targets: torch.Tensor | Sequence[int] | None = None,
                 init: torch.Tensor | None = None) -> AttackResult:
        """Attack `images` (N, C, H, W) in [0, 1].

        Args:
            labels: true classes (N,); None uses the model's predictions (one extra forward per sample).
            targets: target classes (N,) for a targeted attack (success = classified as the target).
            init: optional starting points (N, C, H, W) for the first restart instead of a random start (projected
                onto the budget and [0, 1]); e.g. to reproduce another library's random start.
        """
        check_images(images, "images")
        self._check_images(images)
        n = images.shape[0]
        num_classes = self.model.num_classes if isinstance(self.model, Classifier) else None
        if labels is not None:
            labels = check_labels(labels, n, num_classes)
        if targets is not None:
            if not self.supports_targeted:
                raise InputError(f"{type(self).__name__} is untargeted; call it without targets")
            targets = check_labels(targets, n, num_classes, "targets")
        if init is not None:
            check_images(init, "init")
            check_same_shape(images, init, "images", "init")
        device = check_device(self.device) if self.device is not None else model_device(self.model)
        seeds = sample_seeds(self.seed, n)
        x = images.detach().to(device=device, dtype=compute_dtype(self.model))  # float64/16 images: model's dtype
        everyone = torch.arange(n, device=device)
        with probing(self.model):
            self._check_model(x)
            probe = Probe(self.model, amp=self.amp, channels_last=self.channels_last, compile=self.compile,
                          device=device)
            clean_logits = None
            if labels is None:
                with torch.no_grad():
                    clean_logits = check_logits(probe.float_logits(x), {"targets": targets},
                                                where="at the clean images")
                labels = clean_logits.argmax(1)
            y = labels.to(device)
            t = targets.to(device) if targets is not None else None
            if t is not None and bool((t == y).any()):
                bad = (t == y).nonzero().flatten().tolist()
                raise InputError(f"targets equal the labels for samples {bad[:10]}; pick a different target class")
            run = _Run(probe, x, y, t, seeds)
            if clean_logits is not None:
                run.forwards += 1
                run.mark_clean(everyone, clean_logits)
            elif self._needs_clean_first():
                run.mark_clean(everyone, run.logits(x, everyone))
            todo = (~run.success).nonzero().flatten()
            if todo.numel():
                self._run(run, todo, None if init is None else init.detach().to(device=device, dtype=x.dtype))
            # lazy clean check: a failed sample whose clean image was never evaluated may have been fooled already
            lazy = (~run.success & ~run.clean_known).nonzero().flatten()
            if lazy.numel():
                run.mark_clean(lazy, run.logits(x[lazy], lazy))
            if self.amp or self.compile:
                self._confirm(run)
        return self._result(images, run, **run.extra)

    def _check_images(self, images: torch.Tensor) -> None:
        """Hook: settings that can only be checked against the images (an l2 budget against their diameter)."""

    @torch.no_grad()
    def _check_model(self, x: torch.Tensor) -> None:
        """Once per call, in plain float32 (not counted in `forwards`: at most 2 single-image forwards and one of 4
        images): the model returns finite logits for at least 2 classes (with one logit nothing can be flipped, and
        an attack would report it robust), and its output for an image does not depend on the other images of the
        batch (the check LST makes: attacks evaluate many samples at once and report each one's result)."""
        from blindspots.traversal.probe import check_batch_independence

        plain = Probe(self.model, device=x.device)
        m = min(4, x.shape[0])
        alone_ids = range(min(2, m))
        outputs = [plain.logits(x[i:i + 1]) for i in alone_ids]
        for out in outputs:
            if out.ndim != 2:
                check_logits(out)  # one line naming the shape
        alone = torch.cat(outputs)
        if alone.shape[1] < 2:
            raise InputError(f"{type(self).__name__} needs a model with at least 2 classes; the model returns "
                             f"{alone.shape[1]} logit(s)")
        if m > 1 and bool(torch.isfinite(alone).all()):  # NaN logits are refused by the attack, naming every sample
            check_batch_independence(self.model, plain.logits(x[:m])[:len(alone_ids)], alone,
                                     lambda: torch.cat([plain.logits(x[i:i + 1]) for i in alone_ids]),
                                     user=type(self).__name__)

    def _confirm(self, run: _Run) -> None:
        """The final verdicts, confirmed by one plain forward of the returned images in the model's own precision
        (no bfloat16 autocast, no compiled kernels): an attack run with `amp` or `compile` judged its images in
        another precision, and at the decision boundary where minimal attacks end, that verdict can flip. The plain
        forward decides `success` and `predictions` (one more forward per sample, counted)."""
        everyone = torch.arange(run.x.shape[0], device=run.x.device)
        with torch.no_grad():
            logits = check_logits(Probe(self.model, device=run.x.device).float_logits(run.out),
                                  where="at the returned images")
        run.forwards += 1
        success = run.is_adv(logits, everyone)
        changed = (success != run.success).nonzero().flatten()
        run.success, run.pred = success, logits.argmax(1)
        run.clean_success &= success
        if changed.numel():
            self._verdicts_changed(run, changed)

    def _verdicts_changed(self, run: _Run, idx: torch.Tensor) -> None:
        """Hook: samples `idx` whose success the plain forward of `_confirm` reversed (e.g. to update a budget)."""

    def _result(self, images: torch.Tensor, run: _Run, **extra: Any) -> AttackResult:
        """Results on the inputs' device, in the wider of the inputs' and the model's dtype (so the returned images
        are the ones the model judged: float16 inputs to a float32 model come back as float32)."""
        dev, dtype = images.device, torch.promote_types(images.dtype, run.x.dtype)
        adv = run.out.to(device=dev, dtype=dtype).contiguous(memory_format=_layout(images))
        clean = images.detach().to(dtype)
        return AttackResult(
            images=adv, labels=run.y.to(dev), success=run.success.to(dev), predictions=run.pred.to(dev),
            clean_success=run.clean_success.to(dev), l2=l2_distance(adv, clean), linf=linf_distance(adv, clean),
            forwards=run.forwards.to(dev), backwards=run.backwards.to(dev), seeds=run.seeds,
            targets=None if run.t is None else run.t.to(dev), attack=type(self).__name__, params=self.params(),
            **{k: v.to(dev) for k, v in extra.items()})

    def _run(self, run: _Run, idx: torch.Tensor, init: torch.Tensor | None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
