"""Source -> target assignments for the LST paper's protocol: `rounds` permutations of the pool, each sending every
image to an image of another class, and no source to the same target twice across rounds.

Each round is drawn uniformly among the permutations valid given the earlier rounds: by rejection from uniform
permutations (exact) while that succeeds within `REJECTION_TRIES` draws, otherwise by a Markov chain on the valid
permutations (a move rotates the targets along a random cycle of k positions, P(k) = 2^(1-k); it is kept only when
every new pair is valid. The proposal is symmetric, so the chain's stationary law is uniform, and any two valid
permutations are joined by rotating the cycles of their difference one at a time, each step valid), started from
a fixed valid permutation (a maximum bipartite matching) and run for `mcmc_steps(n)` moves. No class-sorted or
cyclic fallback: classes never map as blocks.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .errors import InputError
from .validation import check_seed

__all__ = ["derangement_pairs", "REJECTION_TRIES", "mcmc_steps"]

REJECTION_TRIES = 20_000  # uniform permutations tried per round before the Markov chain takes over
_CHUNK = 500


def mcmc_steps(n: int) -> int:
    """Moves of the chain per round: 10 n ln n + 500 (random transpositions alone mix in about n ln n / 2)."""
    return int(10 * n * math.log(max(n, 2))) + 500


def _valid(perm: np.ndarray, lab: np.ndarray, used: np.ndarray) -> np.ndarray:
    """perm (k, n) -> (k,) whether every source goes to another class and to a target it had in no earlier round."""
    src = np.arange(perm.shape[-1])
    return ~np.any((lab[perm] == lab) | used[src, perm], axis=-1)


def _by_rejection(lab: np.ndarray, used: np.ndarray, rng: np.random.Generator, tries: int) -> np.ndarray | None:
    n = lab.size
    for start in range(0, tries, _CHUNK):
        perms = np.argsort(rng.random((min(_CHUNK, tries - start), n)), axis=1)
        ok = np.flatnonzero(_valid(perms, lab, used))
        if ok.size:
            return perms[ok[0]]
    return None


def _by_chain(lab: np.ndarray, used: np.ndarray, rng: np.random.Generator, steps: int) -> np.ndarray:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    n = lab.size
    ok = (lab[:, None] != lab[None, :]) & ~used
    perm = maximum_bipartite_matching(csr_matrix(ok), perm_type="column")  # a fixed valid start
    if np.any(perm < 0):
        raise InputError("no assignment sends every source to a new target of another class in this round (too "
                         "many rounds for the pool's classes)")
    allowed = [row.tobytes() for row in ok]  # bytes: fast scalar lookups in the loop
    p = perm.tolist()
    width = min(n, 8)
    lengths = np.minimum(1 + rng.geometric(0.5, size=steps), n).tolist()  # cycle length k >= 2: P(k) = 2^(1-k)
    picks = rng.integers(0, n, size=(steps, width)).tolist()
    for k, pick in zip(lengths, picks):
        if k == 2:  # half the moves: a transposition
            i, j = pick[0], pick[1]
            if i != j and allowed[i][p[j]] and allowed[j][p[i]]:
                p[i], p[j] = p[j], p[i]
            continue
        idx = pick[:k] if k <= width else rng.choice(n, k, replace=False).tolist()
        if len(set(idx)) < k:
            continue  # not k distinct positions: stay (keeps the proposal uniform over ordered k-tuples)
        moved = [p[idx[(m + 1) % k]] for m in range(k)]  # rotate the targets along the cycle
        if all(allowed[i][t] for i, t in zip(idx, moved)):
            for i, t in zip(idx, moved):
                p[i] = t
    return np.array(p, dtype=np.int64)


def derangement_pairs(labels: torch.Tensor | Sequence[int], rounds: int = 5, seed: int = 0, *,
                      rejection_tries: int = REJECTION_TRIES) -> torch.Tensor:
    """Target indices for the paper's protocol: a (rounds, N) int64 tensor; row r, column i is the target of source
    i in round r. Every target has another class than its source and no source meets a target twice. Seeded."""
    seed = check_seed(seed)
    labels_t = torch.as_tensor(labels)
    if labels_t.ndim != 1:
        raise InputError(f"labels must be a 1-D sequence of class indices, got shape {tuple(labels_t.shape)}")
    if labels_t.is_floating_point():
        if not bool((torch.isfinite(labels_t) & (labels_t == labels_t.round())).all()):
            raise InputError("labels must be integer class indices; got non-integral floats "
                             f"{labels_t[labels_t != labels_t.round()][:4].tolist()}")
    elif labels_t.is_complex():
        raise TypeError(f"labels must be integer class indices, got dtype {labels_t.dtype}")
    lab = labels_t.long().numpy()
    n = lab.size
    if n < 2:
        raise InputError("derangements need at least 2 images")
    counts = np.unique(lab, return_counts=True)[1]
    if int(counts.max()) * 2 > n:
        raise InputError(f"no pairing sends every image to another class: one class holds {int(counts.max())} of "
                         f"{n} images (more than half)")
    if rounds < 1:
        raise InputError(f"rounds must be >= 1, got {rounds}")
    if rounds > n - int(counts.max()):
        raise InputError(f"{rounds} rounds need {rounds} distinct targets of another class per source; the largest "
                         f"class ({int(counts.max())} of {n}) leaves {n - int(counts.max())}")
    rng = np.random.default_rng(seed)
    used = np.zeros((n, n), dtype=bool)
    out = np.empty((rounds, n), dtype=np.int64)
    same_class = counts[np.unique(lab, return_inverse=True)[1]]
    for r in range(rounds):
        violations = float((same_class.sum() + used.sum()) / n)  # expected invalid pairs of a uniform permutation
        likely = math.exp(-violations) * rejection_tries >= 0.01  # else rejection would almost surely fail: skip it
        perm = _by_rejection(lab, used, rng, rejection_tries) if likely else None
        if perm is None:
            perm = _by_chain(lab, used, rng, mcmc_steps(n))
        out[r] = perm
        used[np.arange(n), perm] = True
    return torch.from_numpy(out)
