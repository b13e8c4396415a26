"""Choosing the deployed bit-widths from the learned distributions under a storage window.

Pure math (numpy), no modules. Layer l has n_l weights, candidates b_{l,1..K_l} and
log-probabilities log p_l(k) = log_softmax(lambda^l)_k. The rule ``budget`` solves the
multiple-choice knapsack

    maximise    sum_l log p_l(k_l)
    subject to  lo <= sum_l n_l * b_{l,k_l} <= hi

that is, the most probable joint choice (the layers' distributions taken as
independent) whose quantized-weight bits fall inside the window. The caller turns a
target into the window: average bits T gives [(T - 0.05) N, T N] with N = sum_l n_l;
a size budget B gives [0.99 B, B] less the bits that do not depend on the choice
(scales, float parameters).

Solved by dynamic programming over the total cost, relative to every layer at its
cheapest candidate. The costs n_l (b_{l,k} - min_k b_{l,k}) are integers; with g
their greatest common divisor the DP is exact on the grid of g bits whenever that
grid has at most MAX_EXACT_CELLS cells times layers (small and mid-size models).
Otherwise costs are rounded to a grid of delta = (hi - lo) / (8 L): rounding moves
the total by at most L delta / 2 = (hi - lo) / 16, so that DP keeps totals inside
the window shrunk by that much on each side (every returned choice satisfies the
exact window; a choice within (hi - lo) / 16 of an edge may be missed), in about
10^8 simple operations for a HuBERT-large (L ~ 150, T = 8). Ties are broken
deterministically: the higher candidate within a layer, then the larger total
(closer to hi), so every DDP rank derives the same choice from the same logits.

``argmax`` (k_l = argmax_k lambda^l_k) is the other rule; it ignores the window.
"""
from __future__ import annotations

from typing import Sequence

import math

import numpy as np

ALLOCATIONS = ("budget", "argmax")
MAX_EXACT_CELLS = 50_000_000  # layers x cost cells of an exact DP (its choice table: one byte each)

__all__ = ["ALLOCATIONS", "InfeasibleBudget", "allocate_budget", "allocate_argmax", "feasible_range"]


class InfeasibleBudget(ValueError):
    """No choice of candidates puts the total inside the window."""


def feasible_range(numels: Sequence[int], bits: Sequence[Sequence[int]]) -> tuple[int, int]:
    """(floor, ceiling) of sum_l n_l b_{l,k_l}: every layer at its smallest / largest candidate."""
    lo = sum(n * min(b) for n, b in zip(numels, bits))
    hi = sum(n * max(b) for n, b in zip(numels, bits))
    return lo, hi


def allocate_argmax(log_probs: Sequence[Sequence[float]]) -> list[int]:
    """k_l = argmax_k log p_l(k) (the first on ties)."""
    return [int(np.argmax(np.asarray(lp))) for lp in log_probs]


def allocate_budget(
    log_probs: Sequence[Sequence[float]],
    numels: Sequence[int],
    bits: Sequence[Sequence[int]],
    lo: float,
    hi: float,
) -> list[int]:
    """Candidate index per layer maximising sum_l log p_l(k_l) with lo <= sum_l n_l b_{l,k_l} <= hi.

    Args:
        log_probs: per layer, log p_l(k) for its K_l candidates (finite).
        numels: n_l, weights per layer.
        bits: per layer, its K_l candidate bit-widths.
        lo, hi: the window on the total bits of the quantized weights, hi > lo.

    Raises InfeasibleBudget (naming the achievable range) when no choice fits.
    """
    L = len(numels)
    if not (len(log_probs) == len(bits) == L) or L == 0:
        raise ValueError(f"allocate_budget needs one entry per layer: {len(log_probs)}, {L}, {len(bits)}")
    if not hi > lo:
        raise ValueError(f"allocate_budget window [{lo}, {hi}] is empty")
    floor, ceil = feasible_range(numels, bits)
    if hi < floor or lo > ceil:
        raise InfeasibleBudget(
            f"the window [{lo:.6g}, {hi:.6g}] bits lies outside what the candidates allow: [{floor}, {ceil}]"
        )
    base_bits = sum(n * min(b) for n, b in zip(numels, bits))
    steps = [[n * (x - min(b)) for x in b] for n, b in zip(numels, bits)]
    g = math.gcd(*[d for row in steps for d in row]) or 1
    if L * ((hi - base_bits) // g + 1) <= MAX_EXACT_CELLS:  # exact grid of g bits
        costs = [np.asarray(row, dtype=np.int64) // g for row in steps]
        u_lo = max(math.ceil((lo - base_bits) / g), 0)
        u_hi = math.floor((hi - base_bits) / g)
    else:  # rounded grid of delta bits, window shrunk by the rounding bound
        delta = (hi - lo) / (8 * L)
        slack = L * delta / 2
        costs = [np.rint(np.asarray(row, dtype=np.float64) / delta).astype(np.int64) for row in steps]
        u_lo = max(math.ceil((lo - base_bits + slack) / delta), 0)
        u_hi = math.floor((hi - base_bits - slack) / delta)
    if u_hi < u_lo or u_hi < 0:
        raise InfeasibleBudget(
            f"the window [{lo:.6g}, {hi:.6g}] bits is too narrow for these layer sizes "
            f"(achievable totals range over [{floor}, {ceil}] in steps of whole layers)"
        )
    size = u_hi + 1
    value = np.full(size, -np.inf)
    value[0] = 0.0
    choice = np.zeros((L, size), dtype=np.int8)
    for layer, (lp, cost) in enumerate(zip(log_probs, costs)):
        lp = np.asarray(lp, dtype=np.float64)
        new = np.full(size, -np.inf)
        for k in reversed(range(len(cost))):  # higher candidates first: they win ties
            d = int(cost[k])
            if d >= size:
                continue
            cand = np.full(size, -np.inf)
            cand[d:] = value[: size - d] + lp[k]
            better = cand > new
            new[better] = cand[better]
            choice[layer, better] = k
        value = new
    window = value[u_lo:]
    if not np.isfinite(window).any():
        raise InfeasibleBudget(
            f"no choice of candidates puts the total inside [{lo:.6g}, {hi:.6g}] bits "
            f"(achievable totals range over [{floor}, {ceil}] in steps of whole layers)"
        )
    # The best value; on ties the largest total.
    best = u_lo + (len(window) - 1 - int(np.argmax(window[::-1])))
    picks = [0] * L
    unit = best
    for layer in reversed(range(L)):
        k = int(choice[layer, unit])
        picks[layer] = k
        unit -= int(costs[layer][k])
    total = sum(n * b[k] for n, b, k in zip(numels, bits, picks))
    assert lo <= total <= hi, (lo, total, hi)  # guaranteed by the shrunk window
    return picks
