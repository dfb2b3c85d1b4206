"""Byzantine-robust aggregation math as pure functions: stacks and distance matrices in, tensors out.

Coordinate-wise rules take a stack [n, *shape] of one entry of n updates and return [*shape].
Selection rules take the n x n matrix of squared distances between updates and return the
indices they keep, in increasing order. Ties go to the lower index; the strategies order the
cohort by worker name first, so a tie always goes to the same worker whatever the arrival order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedmq.protocol.messages import Weights


def coordinate_median(stack: torch.Tensor) -> torch.Tensor:
    """Each coordinate's median over dim 0; with an even count, the mean of the two middle values."""
    n = stack.shape[0]
    ordered = stack.sort(dim=0).values
    if n % 2:
        return ordered[n // 2]
    return (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def trimmed_mean(stack: torch.Tensor, trim: int) -> torch.Tensor:
    """Each coordinate's mean after dropping its `trim` largest and `trim` smallest values."""
    n = stack.shape[0]
    if not 0 <= 2 * trim < n:
        raise ValueError(f"cannot trim {trim} from each side of {n} values")
    return stack.sort(dim=0).values[trim:n - trim].mean(dim=0)


def mean_closest_to_median(stack: torch.Tensor, keep: int) -> torch.Tensor:
    """Each coordinate's mean of the `keep` values closest to its median (Bulyan's second step).

    Equally close values are taken in stack order (stable sort).
    """
    if not 1 <= keep <= stack.shape[0]:
        raise ValueError(f"cannot keep {keep} of {stack.shape[0]} values")
    distance = (stack - coordinate_median(stack)).abs()
    nearest = distance.argsort(dim=0, stable=True)[:keep]
    return stack.gather(0, nearest).mean(dim=0)


def pairwise_sq_distances(weights: Weights, updates: Sequence[Weights]) -> torch.Tensor:
    """[n, n] float64: ||u_i - u_j||^2 summed over the model's floating entries.

    Integer entries (counters such as num_batches_tracked) are left out: they measure how many
    batches a worker ran, not where its model went. Differences are taken explicitly (cdist
    without the ||a||^2 + ||b||^2 - 2ab shortcut), so identical updates are exactly 0 apart and
    the matrix is exactly symmetric.
    """
    n = len(updates)
    distances = torch.zeros(n, n, dtype=torch.float64)
    for name, t in weights.items():
        if not t.is_floating_point():
            continue
        flat = torch.stack([u[name].reshape(-1).to(torch.float64) for u in updates])  # [n, k]
        distances += torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    return distances


def krum_scores(distances: torch.Tensor, neighbours: int) -> torch.Tensor:
    """Each update's score: the sum of its squared distances to its `neighbours` nearest others."""
    n = distances.shape[0]
    if not 0 <= neighbours <= n - 1:
        raise ValueError(f"an update has {n - 1} others, not {neighbours}")
    others = distances + torch.diag(torch.full((n,), float("inf"), dtype=distances.dtype))
    return others.sort(dim=1).values[:, :neighbours].sum(dim=1)


def multikrum_select(distances: torch.Tensor, f: int, m: int) -> list[int]:
    """Multi-Krum (Blanchard et al. 2017): the m updates with the lowest Krum scores, each score
    summing the n - f - 2 nearest. Needs n >= 2f + 3 and 1 <= m <= n."""
    n = distances.shape[0]
    if n < 2 * f + 3 or not 1 <= m <= n:
        raise ValueError(f"multi-krum needs n >= 2f + 3 and 1 <= m <= n (n={n}, f={f}, m={m})")
    order = krum_scores(distances, n - f - 2).argsort(stable=True)
    return sorted(order[:m].tolist())


def bulyan_select(distances: torch.Tensor, f: int) -> list[int]:
    """Bulyan's first step (El Mhamdi et al. 2018): theta = n - 2f updates picked one at a time,
    each the Krum winner of those not yet picked. Needs n >= 4f + 3.

    Late picks have fewer than f + 3 candidates left, where Krum's n - f - 2 neighbours would be
    none; they score with at least one neighbour so a pick still means closeness.
    """
    n = distances.shape[0]
    if n < 4 * f + 3:
        raise ValueError(f"bulyan needs n >= 4f + 3 (n={n}, f={f})")
    remaining = list(range(n))
    picked: list[int] = []
    while len(picked) < n - 2 * f:
        if len(remaining) == 1:
            best = 0
        else:
            sub = distances[remaining][:, remaining]
            best = int(krum_scores(sub, max(1, len(remaining) - f - 2)).argmin())
        picked.append(remaining.pop(best))
    return sorted(picked)
