"""The real arm: real backgrounds with labels known by construction. Each real cutout (a *host*) appears as it is
(label 0, not clumpy) and in `injections` clumpy versions (label 1): simulated clumps drawn as in the clumpy class of
the simulated task (2-8 clumps of `min_clump_flux`-8% of the host's measured flux, no stars) and added to the host
by `detectors.inject` (in the linearised flux space, with the simulator's PSF and noise).

The cutouts carry no clump labels, so a host may already be clumpy. The rule, fixed before any LST (`SCREEN_RULE`):
a host is left out when its injection fails (no galaxy found, or fewer than 2 clumps could be placed) or when the
majority of the fine-tuned classifiers (every backbone and seed that enters LST) calls its plain version clumpy.
Left-out hosts are reported with their reason; nothing is left out because of an LST outcome.

Pairs cross the class boundary: LST walks from one host's clumpy version toward another host's plain version, and
from a plain version toward another host's clumpy version. Sources and targets are the images every measured
classifier puts in their known class (as for the simulated pairs); a pair never joins two versions of one host.
The independent unit is the host: intervals resample hosts with every pair that involves them (`paired`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from blindspots import Classifier

from . import data as dt

__all__ = ["SCREEN_MAJORITY", "MIN_INJECTED_CLUMPS", "SCREEN_RULE", "RealHosts", "inject_config", "load_hosts",
           "screen_hosts", "RealArm", "real_arm", "real_accuracy", "host_surveys"]

SCREEN_MAJORITY = 0.5  # a host is left out when more than this share of the classifiers calls its plain version clumpy
MIN_INJECTED_CLUMPS = 2  # the clumpy class has 2-8 clumps: an injection that places fewer does not make one
INJECT_STREAM = 21  # injections draw from (seed, INJECT_STREAM, host, version): independent of the pairs' draws
SCREEN_RULE = (f"A real host is left out, before any LST, when its clumps cannot be injected (no galaxy found, or "
               f"fewer than {MIN_INJECTED_CLUMPS} clumps placed in a version) or when more than "
               f"{SCREEN_MAJORITY:.0%} of the fine-tuned classifiers (every backbone and seed in the comparison) call "
               "its plain version clumpy (it may already be clumpy).")


@dataclass
class RealHosts:
    """Real cutouts and their injected versions: `plain` (H, 3, S, S), `injected` (H, K, 3, S, S) (zeros where the
    injection failed), `clumps` (H, K) clumps placed, `failed` {host: reason}, `info` one record per host (survey,
    source, RA/Dec, pixel scale, stretch preset: `detectors.hosts.HostInfo`), `skipped` {source: reason} for what
    the loader left out (too small, duplicates), `units` the injected clumps' physical units (the simulator's pixel
    scale and PSF FWHM in arcsec; clump fluxes as fractions of the host's measured flux)."""

    names: list[str]
    plain: torch.Tensor
    injected: torch.Tensor
    clumps: torch.Tensor
    failed: dict[int, str] = field(default_factory=dict)
    info: list[dict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    units: dict = field(default_factory=dict)


def inject_config(size: int, fov: float, min_clump_flux: float):
    """The simulator's settings of the task's clumpy class, without stars, at the study's image size."""
    return dt.sim_config(size, fov).replace(n_clumps=(2, 8), clump_flux=(min_clump_flux, dt.MAX_CLUMP_FLUX),
                                            star_rate=0.0)


def load_hosts(folder: str | Path | Sequence[str | Path], size: int, crop: float, limit: int | None,
               injections: int, seed: int, *, fov: float = 42.0, min_clump_flux: float = 0.03,
               preset: str | None = None) -> RealHosts:
    """The hosts of `folder` (one source or several, pooled: folders of PNG/JPEG/FITS cutouts, files, 'field';
    `detectors.hosts.load_hosts`; cutouts centre-cropped to `crop` and resized to `size` px) and `injections`
    clumpy versions of each."""
    from detectors.hosts import load_hosts as read_hosts
    from detectors.inject import inject_clumps

    got = read_hosts([folder] if isinstance(folder, (str, Path)) else folder, size, crop, limit, preset, min_hosts=2)
    plain, names = got.images, got.names
    cfg = inject_config(size, fov, min_clump_flux)
    injected = torch.zeros(plain.shape[0], injections, *plain.shape[1:])
    clumps = torch.zeros(plain.shape[0], injections, dtype=torch.long)
    failed: dict[int, str] = {}
    for h in range(plain.shape[0]):
        for k in range(injections):
            try:
                x, _, params = inject_clumps(plain[h], cfg, seed=int(seed), index=(h * injections + k) * 100
                                             + INJECT_STREAM)
            except ValueError as exc:  # measure_host: nothing above the background
                failed[h] = f"injection failed: {str(exc).splitlines()[0]}"
                break
            injected[h, k], clumps[h, k] = x.clamp(0, 1), int((params.label == 1).sum())
        if h not in failed and int(clumps[h].min()) < MIN_INJECTED_CLUMPS:
            failed[h] = f"injection placed {int(clumps[h].min())} clump(s) in a version (needs {MIN_INJECTED_CLUMPS})"
    return RealHosts(names, plain, injected, clumps, failed, got.records(), dict(got.skipped), cfg.units())


@torch.no_grad()
def screen_hosts(models: Sequence[Classifier], hosts: RealHosts) -> tuple[np.ndarray, dict[int, str]]:
    """Per host, the share of classifiers calling its plain version clumpy, and every left-out host with its
    reason (`SCREEN_RULE`)."""
    votes = _predictions(models, hosts.plain).float().mean(0).numpy()
    out = dict(hosts.failed)
    for h, share in enumerate(votes):
        if h not in out and share > SCREEN_MAJORITY:
            out[h] = f"possibly clumpy already: {share:.0%} of the classifiers call the plain cutout clumpy"
    return votes, out


def _predictions(models: Sequence[Classifier], images: torch.Tensor) -> torch.Tensor:
    """(models, N) predicted classes."""
    return torch.stack([m.predict(images.to(next(m.parameters()).device))[0].cpu() for m in models])


@dataclass
class RealArm:
    """The real arm's image set: `images` (N, 3, S, S) with `labels` (0 plain, 1 injected), `host` (index into
    `names`) and `version` (-1 plain, k injected) per image, the hosts kept; `excluded` {host index: reason}."""

    images: torch.Tensor
    labels: torch.Tensor
    host: torch.Tensor
    version: torch.Tensor
    names: list[str]
    excluded: dict[int, str]

    @property
    def units(self) -> list[str]:
        """The independent unit of each image: its host's name."""
        return [self.names[int(h)] for h in self.host]

    def pairs(self, models: Sequence[Classifier], rounds: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(pool, targets, unpaired): sources are the images every model in `models` puts in its known class and
        that have such an image of the other class on another host; each gets `rounds` targets (positions into
        the pool) of the other class on other hosts, in a seeded order, different across rounds where possible."""
        if not len(self.labels):
            return torch.zeros(0, dtype=torch.long), torch.zeros(rounds, 0, dtype=torch.long), 0
        right = (_predictions(models, self.images) == self.labels).all(0)
        return _pairs(self.labels, self.host, right, rounds, seed)


def real_arm(hosts: RealHosts, excluded: Mapping[int, str]) -> RealArm:
    """The plain and injected versions of every host not `excluded` (see `screen_hosts`)."""
    keep = [h for h in range(len(hosts.names)) if h not in excluded]
    k = hosts.injected.shape[1]
    images = torch.cat([hosts.plain[keep], hosts.injected[keep].flatten(0, 1)]) if keep else hosts.plain[:0]
    labels = torch.tensor([0] * len(keep) + [1] * (len(keep) * k), dtype=torch.long)
    host = torch.tensor(keep + [h for h in keep for _ in range(k)], dtype=torch.long)
    version = torch.tensor([-1] * len(keep) + [v for _ in keep for v in range(k)], dtype=torch.long)
    return RealArm(images, labels, host, version, list(hosts.names), dict(excluded))


def _pairs(labels: torch.Tensor, host: torch.Tensor, right: torch.Tensor, rounds: int,
           seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    ok = right.nonzero().flatten().tolist()
    cand = {i: [j for j in ok if labels[j] != labels[i] and host[j] != host[i]] for i in ok}
    pool = [i for i in ok if cand[i]]
    position = {i: p for p, i in enumerate(pool)}
    rng = np.random.default_rng([int(seed), INJECT_STREAM, 1])
    targets = np.empty((rounds, len(pool)), dtype=np.int64)
    for p, i in enumerate(pool):
        order = [j for j in rng.permutation(cand[i]).tolist() if j in position]
        for r in range(rounds):
            targets[r, p] = position[order[r % len(order)]]
    return torch.tensor(pool, dtype=torch.long), torch.from_numpy(targets), len(ok) - len(pool)


def host_surveys(hosts: RealHosts) -> list[str]:
    """The survey of each host: the one its loader recorded (`info`: 'sdss', 'legacy', 'hst-xdf' for the deep field,
    a FITS file's), else the cutout's top folder ('sdss/...'), else 'unknown'."""
    found = []
    for h, name in enumerate(hosts.names):
        given = (hosts.info[h] if h < len(hosts.info) else {}).get("survey")
        found.append(str(given) if given else name.split("/")[0] if "/" in name else "unknown")
    return found


@torch.no_grad()
def real_accuracy(model: Classifier, hosts: RealHosts, excluded: Sequence[int] = ()) -> dict[str, float | int]:
    """Accuracy on the injected real hosts (plain: not clumpy, injected: clumpy) over the hosts kept: the domain
    gap beside the simulated test accuracy; `by_survey`: the same per survey (hosts from other surveys, e.g. the
    Hubble deep field's, may lie further from the simulated training images)."""
    keep = [h for h in range(len(hosts.names)) if h not in set(excluded)]
    if not keep:
        return {"accuracy": float("nan"), "plain": float("nan"), "injected": float("nan"), "images": 0, "hosts": 0}
    pred_plain = _predictions([model], hosts.plain[keep])[0]
    pred_inj = _predictions([model], hosts.injected[keep].flatten(0, 1))[0]
    right = torch.cat([pred_plain == 0, pred_inj == 1]).float()
    per_host = ((pred_plain == 0).float() + (pred_inj == 1).float().view(len(keep), -1).sum(1)) \
        / (1 + hosts.injected.shape[1])  # each host's share of its images classified right
    every = host_surveys(hosts)
    surveys = [every[h] for h in keep]
    by_survey = {s: {"accuracy": float(per_host[[i for i, x in enumerate(surveys) if x == s]].mean()),
                     "hosts": surveys.count(s)} for s in sorted(set(surveys))}
    return {"accuracy": float(right.mean()), "plain": float((pred_plain == 0).float().mean()),
            "injected": float((pred_inj == 1).float().mean()), "images": int(right.numel()), "hosts": len(keep),
            "by_survey": by_survey}
