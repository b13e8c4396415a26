"""Matched-pairs sentence-segment word error test (MAPSSWE), as NIST's sc_stats.

Systems A (the reference system, e.g. 32-bit) and B are aligned to the same
reference transcripts. Symbols follow shared/METHOD.md.

Segments. Walk each utterance along its reference words. A word is an anchor
word when BOTH systems recognise it correctly; an insertion by either system
breaks a run of anchor words. A segment is a stretch that contains errors of
A or B and is bounded by at least ``MIN_GOOD = 2`` consecutive anchor words, or
by the utterance's start or end. So an utterance with no such place is one
segment, and stretches without any error are no segment at all (sc_stats keeps
only segments with errors, too; counting them as Z_i = 0 would inflate n).

Statistic. For segment i, Z_i = e_A,i - e_B,i with e = S + D + I of that
system inside the segment; with n segments

    mu  = sum_i Z_i / n
    s^2 = sum_i (Z_i - mu)^2 / (n - 1)
    W   = mu / (s / sqrt(n))                 (about N(0, 1) for n > 50)
    p   = 2 * (1 - Phi(|W|)) = erfc(|W| / sqrt(2))      (two-sided)

W < 0 means A makes fewer errors, W > 0 means B does.

Degenerate cases (documented return values):
- n < 2: no variance can be estimated; W = 0 and p = 1 (no evidence of a
  difference). sc_stats reports Z = 0 here too.
- s = 0 and mu = 0 (e.g. identical systems): W = 0, p = 1.
- s = 0 and mu != 0 (every segment differs by the same amount): W = +-inf,
  p = 0. sc_stats reports Z = 0 ("no difference") here; we treat a difference
  that is the same in every one of n >= 2 segments as significant.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from espnet_mpq.scoring.alignment import CORRECT, INSERTION, Alignment

# Consecutive words correct in both systems that bound a segment (sc_stats's default).
MIN_GOOD = 2
# Significance level of the "lossless" decision (shared/METHOD.md).
ALPHA = 0.05

__all__ = ["MIN_GOOD", "ALPHA", "MapssweResult", "format_p_value", "segment_errors", "mapsswe_test", "is_lossless"]


@dataclass(frozen=True)
class MapssweResult:
    """Outcome of the test of system A against system B (from this module or from sc_stats)."""

    n_segments: int
    mean: float  # mu, mean of Z_i = e_A,i - e_B,i
    std: float  # s
    w: float  # W = mu / (s / sqrt(n)); < 0: A has fewer errors
    p_value: float  # two-sided
    p_value_text: str  # as sc_stats prints it: "0.123" or "<0.001"
    significant: bool  # the null hypothesis (no difference) is rejected at ALPHA


def format_p_value(p: float) -> str:
    """sc_stats's way: 3 decimals, and "<0.001" below that.

    >>> format_p_value(0.0512), format_p_value(2e-5)
    ('0.051', '<0.001')
    """
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _result(n: int, mu: float, s: float, w: float, p: float) -> MapssweResult:
    return MapssweResult(n, mu, s, w, p, format_p_value(p), p < ALPHA)


def _word_view(ali: Alignment) -> tuple[list[bool], list[int]]:
    """Per reference word: correct or not; per gap before word j (j = N: after the last): insertions."""
    correct: list[bool] = []
    insertions = [0]
    for op in ali.ops:
        if op == INSERTION:
            insertions[-1] += 1
        else:
            correct.append(op == CORRECT)
            insertions.append(0)
    return correct, insertions


def segment_errors(ali_a: Alignment, ali_b: Alignment, min_good: int = MIN_GOOD) -> list[tuple[int, int]]:
    """Cut one utterance into segments; return (e_A, e_B) for each segment.

    >>> from espnet_mpq.scoring.alignment import align
    >>> ref = "A B C D E F G".split()
    >>> segment_errors(align(ref, "A X C D E F G".split()), align(ref, "A B C D E Y G".split()))
    [(1, 0), (0, 1)]
    """
    ok_a, ins_a = _word_view(ali_a)
    ok_b, ins_b = _word_view(ali_b)
    if len(ok_a) != len(ok_b):
        raise ValueError(f"alignments cover {len(ok_a)} and {len(ok_b)} reference words")
    segments: list[tuple[int, int]] = []
    err_a = err_b = good = 0
    for j in range(len(ok_a) + 1):
        err_a += ins_a[j]
        err_b += ins_b[j]
        if ins_a[j] or ins_b[j]:
            good = 0
        if j == len(ok_a):
            break
        if ok_a[j] and ok_b[j]:
            good += 1
            if good == min_good and (err_a or err_b):
                segments.append((err_a, err_b))
                err_a = err_b = 0
        else:
            err_a += not ok_a[j]
            err_b += not ok_b[j]
            good = 0
    if err_a or err_b:
        segments.append((err_a, err_b))
    return segments


def mapsswe_test(alis_a: list[Alignment], alis_b: list[Alignment], min_good: int = MIN_GOOD) -> MapssweResult:
    """Run the test on two systems' alignments of the same utterances, in the same order."""
    if len(alis_a) != len(alis_b):
        raise ValueError(f"{len(alis_a)} and {len(alis_b)} utterances: the systems must score the same ones")
    z = [e_a - e_b for a, b in zip(alis_a, alis_b) for e_a, e_b in segment_errors(a, b, min_good)]
    n = len(z)
    mu = sum(z) / n if n else 0.0
    if n < 2:
        return _result(n, mu, 0.0, 0.0, 1.0)
    s = math.sqrt(sum((z_i - mu) ** 2 for z_i in z) / (n - 1))
    if s == 0.0:
        if mu == 0.0:
            return _result(n, mu, s, 0.0, 1.0)
        return _result(n, mu, s, math.copysign(math.inf, mu), 0.0)
    w = mu / (s / math.sqrt(n))
    return _result(n, mu, s, w, math.erfc(abs(w) / math.sqrt(2.0)))


def is_lossless(errors_a: int, errors_b: int, significant: bool) -> bool:
    """B is lossless against A when it is not significantly worse: no more errors, or no significant difference."""
    return errors_b <= errors_a or not significant
